-- People and devices who may call the API. A user's role decides which
-- actions it may take; the links decide on which objects.
CREATE TABLE users (
    id UUID PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    merchant_id UUID REFERENCES merchants(id),
    warehouse_id UUID REFERENCES warehouses(id),
    courier_id UUID REFERENCES couriers(id),
    customer_id UUID REFERENCES customers(id),
    failed_logins BIGINT NOT NULL DEFAULT 0,
    locked_until TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL
);

-- One row per refresh token. A refresh replaces its row with a new one in
-- the same family; presenting a replaced token again revokes the family.
CREATE TABLE sessions (
    id UUID PRIMARY KEY,
    family_id UUID NOT NULL,
    user_id UUID NOT NULL REFERENCES users(id),
    refresh_hash TEXT NOT NULL UNIQUE,
    expires_at TIMESTAMPTZ NOT NULL,
    replaced_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_family ON sessions (family_id);
