//! Road networks in the database: `import-map` stores one, the server loads
//! the newest. Stored is the network's largest connected part, as the
//! router uses it.

use uuid::Uuid;
use xianlu_roads::{RoadNetwork, Router};

use crate::clock::wall_now;
use crate::db::Db;
use crate::{on_db, on_db_write};

/// What was stored.
#[derive(Debug, Clone)]
pub struct StoredNetwork {
    pub id: Uuid,
    pub source: String,
    pub osm: bool,
    pub nodes: usize,
    pub edges: usize,
    pub kilometres: f64,
}

/// Prepares the network (which checks it) and stores it.
pub async fn store(db: &Db, network: RoadNetwork) -> anyhow::Result<(StoredNetwork, Router)> {
    let router = tokio::task::spawn_blocking(move || Router::new(network)).await??;
    let prepared = router.network();
    let data = serde_json::to_vec(prepared)?;
    let stored = StoredNetwork {
        id: Uuid::now_v7(),
        source: prepared.source.clone(),
        osm: prepared.osm,
        nodes: prepared.nodes.len(),
        edges: prepared.edges.len(),
        kilometres: prepared.kilometres(),
    };
    on_db_write!(db, pool => {
        sqlx::query(
            "INSERT INTO road_networks (id, source, osm, nodes, edges, data, imported_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(stored.id)
        .bind(&stored.source)
        .bind(stored.osm)
        .bind(stored.nodes as i64)
        .bind(stored.edges as i64)
        .bind(&data)
        .bind(wall_now())
        .execute(pool)
        .await?;
    });
    Ok((stored, router))
}

/// The newest stored network, prepared for routing.
pub async fn load_latest(db: &Db) -> anyhow::Result<Option<Router>> {
    let row: Option<(Vec<u8>,)> = on_db!(db, pool => {
        sqlx::query_as("SELECT data FROM road_networks ORDER BY imported_at DESC, id DESC LIMIT 1")
            .fetch_optional(pool)
            .await?
    });
    let Some((data,)) = row else { return Ok(None) };
    let network: RoadNetwork = serde_json::from_slice(&data)?;
    Ok(Some(tokio::task::spawn_blocking(move || Router::new(network)).await??))
}
