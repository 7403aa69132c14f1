-- Courier operations: a merchant's thresholds, fences, what was seen at each
-- stop, the history travel times are learned from, live ETAs and alerts.
CREATE TABLE merchant_operations (
    merchant_id UUID PRIMARY KEY REFERENCES merchants(id),
    settings TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- A warehouse's drawn fence (JSON ring of WGS-84 points); none means a circle.
ALTER TABLE warehouses ADD COLUMN fence TEXT;
-- A customer's quiet hours (JSON, merchant's time zone); none means always.
ALTER TABLE customers ADD COLUMN quiet_hours TEXT;

-- Geofence arrivals per order and delivery attempt: one of each, ever.
CREATE TABLE stop_visits (
    order_id UUID NOT NULL REFERENCES orders(id),
    kind TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    courier_id UUID NOT NULL,
    merchant_id UUID NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    left_at TIMESTAMPTZ,
    dwell_s BIGINT,
    PRIMARY KEY (order_id, kind, attempt)
);
CREATE INDEX stop_visits_merchant ON stop_visits (merchant_id, kind, at);

-- Completed legs: the road's free-flow time and the time it really took.
CREATE TABLE travel_observations (
    merchant_id UUID NOT NULL,
    hour INTEGER NOT NULL,
    zone TEXT NOT NULL,
    free_flow_s DOUBLE PRECISION NOT NULL,
    actual_s DOUBLE PRECISION NOT NULL,
    observed_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX travel_observations_merchant ON travel_observations (merchant_id, observed_at);

-- The live estimate of each order on the road, the first one made, and the arrival.
CREATE TABLE order_etas (
    order_id UUID PRIMARY KEY REFERENCES orders(id),
    merchant_id UUID NOT NULL,
    courier_id UUID NOT NULL,
    eta TIMESTAMPTZ NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    window_end TIMESTAMPTZ NOT NULL,
    stops_before INTEGER NOT NULL,
    computed_at TIMESTAMPTZ NOT NULL,
    first_eta TIMESTAMPTZ NOT NULL,
    first_window_start TIMESTAMPTZ NOT NULL,
    first_window_end TIMESTAMPTZ NOT NULL,
    notified_at TIMESTAMPTZ,
    actual_at TIMESTAMPTZ
);
CREATE INDEX order_etas_merchant ON order_etas (merchant_id, actual_at);

CREATE TABLE alerts (
    id UUID PRIMARY KEY,
    merchant_id UUID NOT NULL,
    order_id UUID NOT NULL REFERENCES orders(id),
    order_number TEXT NOT NULL,
    rule TEXT NOT NULL,
    severity TEXT NOT NULL,
    reason TEXT NOT NULL,
    raised_at TIMESTAMPTZ NOT NULL,
    cleared_at TIMESTAMPTZ,
    acknowledged_at TIMESTAMPTZ,
    acknowledged_by TEXT
);
-- One open alert per rule per order.
CREATE UNIQUE INDEX alerts_open ON alerts (order_id, rule) WHERE cleared_at IS NULL;
CREATE INDEX alerts_merchant ON alerts (merchant_id, raised_at);
