-- After-sales matters: raised after sign-off, their own records (the order
-- stays signed); the document holds kind, lines, note and photo digests.
CREATE TABLE after_sales (
    id UUID PRIMARY KEY,
    order_id UUID NOT NULL REFERENCES orders(id),
    merchant_id UUID NOT NULL,
    status TEXT NOT NULL,
    doc TEXT NOT NULL,
    opened_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX after_sales_order ON after_sales (order_id);
CREATE INDEX after_sales_merchant ON after_sales (merchant_id, status, opened_at);
