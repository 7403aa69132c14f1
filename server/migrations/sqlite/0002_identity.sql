-- People and devices who may call the API. A user's role decides which
-- actions it may take; the links decide on which objects.
CREATE TABLE users (
    id BLOB PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    merchant_id BLOB REFERENCES merchants(id),
    warehouse_id BLOB REFERENCES warehouses(id),
    courier_id BLOB REFERENCES couriers(id),
    customer_id BLOB REFERENCES customers(id),
    failed_logins BIGINT NOT NULL DEFAULT 0,
    locked_until TEXT,
    created_at TEXT NOT NULL
);

-- One row per refresh token. A refresh replaces its row with a new one in
-- the same family; presenting a replaced token again revokes the family.
CREATE TABLE sessions (
    id BLOB PRIMARY KEY,
    family_id BLOB NOT NULL,
    user_id BLOB NOT NULL REFERENCES users(id),
    refresh_hash TEXT NOT NULL UNIQUE,
    expires_at TEXT NOT NULL,
    replaced_at TEXT,
    revoked_at TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_family ON sessions (family_id);
