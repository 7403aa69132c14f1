-- Route planning: what a van carries, and each courier's planned route.
ALTER TABLE couriers ADD COLUMN capacity_kg BIGINT NOT NULL DEFAULT 500;

-- The planner's latest route per courier: ordered stops with planned times (JSON).
CREATE TABLE courier_routes (
    courier_id BLOB PRIMARY KEY REFERENCES couriers(id),
    merchant_id BLOB NOT NULL,
    plan_id BLOB NOT NULL,
    stops TEXT NOT NULL,
    planned_at TEXT NOT NULL
);
CREATE INDEX courier_routes_merchant ON courier_routes (merchant_id);

-- Each plan's outcome, kept for "why is this order not assigned".
CREATE TABLE plans (
    id BLOB PRIMARY KEY,
    merchant_id BLOB NOT NULL,
    planned_at TEXT NOT NULL,
    summary TEXT NOT NULL
);
CREATE INDEX plans_merchant ON plans (merchant_id, planned_at);
