-- Evidence (signatures, photos, photographed delivery notes), content-addressed
-- within its order by the digest the capturing device computed. The image kept is the server's
-- re-encoding; uploaded bytes are never stored or served.
CREATE TABLE evidence (
    sha256 TEXT NOT NULL,
    order_id BLOB NOT NULL REFERENCES orders(id),
    merchant_id BLOB NOT NULL,
    customer_id BLOB NOT NULL,
    kind TEXT NOT NULL,
    content_type TEXT NOT NULL,
    image BLOB NOT NULL,
    image_sha256 TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    strokes TEXT,
    line_no INTEGER,
    exception_kind TEXT,
    taken_at TEXT NOT NULL,
    lat REAL,
    lng REAL,
    uploaded_by TEXT NOT NULL,
    uploaded_at TEXT NOT NULL,
    PRIMARY KEY (order_id, sha256)
);
CREATE INDEX evidence_customer ON evidence (customer_id);

-- Courier positions, one row per fix; a replayed fix has the same device sequence.
CREATE TABLE courier_positions (
    courier_id BLOB NOT NULL REFERENCES couriers(id),
    device_seq INTEGER NOT NULL,
    at TEXT NOT NULL,
    lat REAL NOT NULL,
    lng REAL NOT NULL,
    accuracy_m REAL NOT NULL,
    speed_mps REAL,
    heading_deg REAL,
    flagged INTEGER NOT NULL DEFAULT 0,
    received_at TEXT NOT NULL,
    PRIMARY KEY (courier_id, device_seq)
);
CREATE INDEX courier_positions_at ON courier_positions (courier_id, at);
