-- Electronic scales and temperature sensors. A device authenticates with an
-- API key (stored only as a hash) and may do nothing but post its own
-- readings, for the one warehouse or vehicle it is scoped to.
CREATE TABLE devices (
    id UUID PRIMARY KEY,
    merchant_id UUID NOT NULL REFERENCES merchants(id),
    kind TEXT NOT NULL,
    warehouse_id UUID REFERENCES warehouses(id),
    courier_id UUID REFERENCES couriers(id),
    key_hash TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);
