-- Parties. Business data only; personal data lives in `personal_data`.
CREATE TABLE merchants (
    id BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    order_prefix TEXT NOT NULL,
    time_zone TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE warehouses (
    id BLOB PRIMARY KEY,
    merchant_id BLOB NOT NULL REFERENCES merchants(id),
    name TEXT NOT NULL,
    address TEXT NOT NULL,
    lat DOUBLE PRECISION NOT NULL,
    lng DOUBLE PRECISION NOT NULL
);

CREATE TABLE customers (
    id BLOB PRIMARY KEY,
    merchant_id BLOB NOT NULL REFERENCES merchants(id),
    business_name TEXT NOT NULL,
    kind TEXT NOT NULL,
    address TEXT NOT NULL,
    lat DOUBLE PRECISION NOT NULL,
    lng DOUBLE PRECISION NOT NULL,
    payment_terms TEXT NOT NULL
);

CREATE TABLE contacts (
    id BLOB PRIMARY KEY,
    customer_id BLOB NOT NULL REFERENCES customers(id)
);

CREATE TABLE couriers (
    id BLOB PRIMARY KEY,
    merchant_id BLOB NOT NULL REFERENCES merchants(id),
    vehicle TEXT NOT NULL,
    refrigerated BOOLEAN NOT NULL
);

-- Names and phones of contacts and couriers. Nothing else refers to these
-- columns, so they can be encrypted or erased without touching business data.
CREATE TABLE personal_data (
    subject_id BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    phone TEXT NOT NULL
);

CREATE TABLE stock (
    warehouse_id BLOB NOT NULL REFERENCES warehouses(id),
    sku TEXT NOT NULL,
    name TEXT NOT NULL,
    dimension TEXT NOT NULL,
    on_hand_base BIGINT NOT NULL CHECK (on_hand_base >= 0),
    reserved_base BIGINT NOT NULL CHECK (reserved_base >= 0),
    PRIMARY KEY (warehouse_id, sku)
);

CREATE TABLE orders (
    id BLOB PRIMARY KEY,
    merchant_id BLOB NOT NULL REFERENCES merchants(id),
    number TEXT NOT NULL,
    status TEXT NOT NULL,
    version BIGINT NOT NULL,
    warehouse_id BLOB NOT NULL,
    customer_id BLOB NOT NULL,
    courier_id BLOB,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    doc TEXT NOT NULL,
    UNIQUE (merchant_id, number)
);
CREATE INDEX orders_merchant_created ON orders (merchant_id, created_at, id);
CREATE INDEX orders_courier ON orders (courier_id, created_at, id);
CREATE INDEX orders_status ON orders (status, created_at, id);

CREATE TABLE order_number_counters (
    merchant_id BLOB NOT NULL,
    business_date TEXT NOT NULL,
    last_seq BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, business_date)
);

-- The single counter row that hands out stream sequences inside each writing
-- transaction: gap-free, in commit order.
CREATE TABLE stream_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO stream_head (id, seq) VALUES (1, 0);

-- The event log, and the transactional outbox: consumers (push, webhooks, a
-- broker) read it by sequence and keep their own cursor in `outbox_cursors`.
CREATE TABLE events (
    seq BIGINT PRIMARY KEY,
    order_id BLOB NOT NULL,
    order_number TEXT NOT NULL,
    merchant_id BLOB NOT NULL,
    courier_id BLOB,
    version BIGINT NOT NULL,
    kind TEXT NOT NULL,
    at TEXT NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX events_order ON events (order_id, seq);
CREATE INDEX events_merchant ON events (merchant_id, seq);
CREATE INDEX events_courier ON events (courier_id, seq);

CREATE TABLE outbox_cursors (
    consumer TEXT PRIMARY KEY,
    seq BIGINT NOT NULL
);

CREATE TABLE idempotency (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status INTEGER,
    content_type TEXT,
    body BLOB,
    created_at TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_created ON idempotency (created_at);

-- Append-only audit log, hash-chained per merchant.
CREATE TABLE audit_log (
    merchant_id BLOB NOT NULL,
    chain_seq BIGINT NOT NULL,
    at TEXT NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    action TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    before_state TEXT NOT NULL,
    after_state TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    entry_hash TEXT NOT NULL,
    PRIMARY KEY (merchant_id, chain_seq)
);

CREATE TABLE audit_heads (
    merchant_id BLOB PRIMARY KEY,
    chain_seq BIGINT NOT NULL,
    entry_hash TEXT NOT NULL
);

CREATE TABLE audit_anchors (
    merchant_id BLOB NOT NULL,
    chain_seq BIGINT NOT NULL,
    entry_hash TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (merchant_id, chain_seq)
);

CREATE TABLE payment_notifications (
    gateway TEXT NOT NULL,
    reference TEXT NOT NULL,
    order_id BLOB NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (gateway, reference)
);
