-- Road networks imported from OpenStreetMap or generated; the newest is the
-- one routes and ETAs use. `data` is the network as JSON (nodes, edges).
CREATE TABLE road_networks (
    id UUID PRIMARY KEY,
    source TEXT NOT NULL,
    osm BOOLEAN NOT NULL,
    nodes BIGINT NOT NULL,
    edges BIGINT NOT NULL,
    data BYTEA NOT NULL,
    imported_at TIMESTAMPTZ NOT NULL
);
