-- Merchant staff's overrides of the planner: an order pinned to a courier,
-- a courier's route locked as it is.
CREATE TABLE order_pins (
    order_id UUID PRIMARY KEY REFERENCES orders(id),
    courier_id UUID NOT NULL REFERENCES couriers(id),
    pinned_by TEXT NOT NULL,
    pinned_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE route_locks (
    courier_id UUID PRIMARY KEY REFERENCES couriers(id),
    locked_by TEXT NOT NULL,
    locked_at TIMESTAMPTZ NOT NULL
);

-- Who plans a merchant now: one process at a time, whichever took the lease.
CREATE TABLE planning_leases (
    merchant_id UUID PRIMARY KEY,
    holder TEXT NOT NULL,
    until TIMESTAMPTZ NOT NULL
);
