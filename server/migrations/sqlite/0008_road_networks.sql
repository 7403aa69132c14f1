-- Road networks imported from OpenStreetMap or generated; the newest is the
-- one routes and ETAs use. `data` is the network as JSON (nodes, edges).
CREATE TABLE road_networks (
    id BLOB PRIMARY KEY,
    source TEXT NOT NULL,
    osm INTEGER NOT NULL,
    nodes INTEGER NOT NULL,
    edges INTEGER NOT NULL,
    data BLOB NOT NULL,
    imported_at TEXT NOT NULL
);
