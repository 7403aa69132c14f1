-- Electronic scales and temperature sensors. A device authenticates with an
-- API key (stored only as a hash) and may do nothing but post its own
-- readings, for the one warehouse or vehicle it is scoped to.
CREATE TABLE devices (
    id BLOB PRIMARY KEY,
    merchant_id BLOB NOT NULL REFERENCES merchants(id),
    kind TEXT NOT NULL,
    warehouse_id BLOB REFERENCES warehouses(id),
    courier_id BLOB REFERENCES couriers(id),
    key_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
