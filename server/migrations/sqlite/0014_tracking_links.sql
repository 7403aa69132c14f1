-- Tracking links: an unguessable, expiring token showing one order to
-- whoever holds it. Only the token's SHA-256 is kept.
CREATE TABLE tracking_links (
    token_sha256 TEXT PRIMARY KEY,
    order_id BLOB NOT NULL REFERENCES orders(id),
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX tracking_links_order ON tracking_links (order_id);
