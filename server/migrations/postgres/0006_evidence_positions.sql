-- Evidence (signatures, photos, photographed delivery notes), content-addressed
-- within its order by the digest the capturing device computed. The image kept is the server's
-- re-encoding; uploaded bytes are never stored or served.
CREATE TABLE evidence (
    sha256 TEXT NOT NULL,
    order_id UUID NOT NULL REFERENCES orders(id),
    merchant_id UUID NOT NULL,
    customer_id UUID NOT NULL,
    kind TEXT NOT NULL,
    content_type TEXT NOT NULL,
    image BYTEA NOT NULL,
    image_sha256 TEXT NOT NULL,
    width BIGINT NOT NULL,
    height BIGINT NOT NULL,
    strokes TEXT,
    line_no BIGINT,
    exception_kind TEXT,
    taken_at TIMESTAMPTZ NOT NULL,
    lat DOUBLE PRECISION,
    lng DOUBLE PRECISION,
    uploaded_by TEXT NOT NULL,
    uploaded_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (order_id, sha256)
);
CREATE INDEX evidence_customer ON evidence (customer_id);

-- Courier positions, one row per fix; a replayed fix has the same device sequence.
CREATE TABLE courier_positions (
    courier_id UUID NOT NULL REFERENCES couriers(id),
    device_seq BIGINT NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    lat DOUBLE PRECISION NOT NULL,
    lng DOUBLE PRECISION NOT NULL,
    accuracy_m REAL NOT NULL,
    speed_mps REAL,
    heading_deg REAL,
    flagged BOOLEAN NOT NULL DEFAULT FALSE,
    received_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (courier_id, device_seq)
);
CREATE INDEX courier_positions_at ON courier_positions (courier_id, at);
