-- Vans fill by volume as well as weight (leafy greens are bulky): what a
-- van holds, litres, and the room a SKU takes, millilitres per kilogram
-- (weighed goods) or per piece (counted goods).
ALTER TABLE couriers ADD COLUMN capacity_l BIGINT NOT NULL DEFAULT 1000;
ALTER TABLE stock ADD COLUMN volume_ml BIGINT;
