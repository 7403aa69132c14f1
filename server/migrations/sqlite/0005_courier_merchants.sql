-- A courier may drive for several merchants: one courier record per merchant,
-- all linked to the same user.
CREATE TABLE user_couriers (
    user_id BLOB NOT NULL REFERENCES users(id),
    courier_id BLOB NOT NULL REFERENCES couriers(id),
    PRIMARY KEY (user_id, courier_id)
);
INSERT INTO user_couriers (user_id, courier_id) SELECT id, courier_id FROM users WHERE courier_id IS NOT NULL;
