//! The append-only audit log, hash-chained per merchant.
//!
//! Each entry's hash covers its fields and the previous entry's hash, so an
//! edited, inserted or deleted row breaks the chain. The chain is per merchant
//! so replicas writing for different merchants never wait on each other; every
//! `audit_anchor_every` entries an anchor record (also written to the log for
//! external retention) pins the chain's head.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use crate::db::{Db, Tx};
use crate::{on_db, on_tx};

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One state change, as recorded. Ids and business fields only.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub merchant_id: Uuid,
    pub at: DateTime<Utc>,
    pub actor_kind: String,
    pub actor_id: String,
    pub request_id: String,
    pub action: String,
    pub subject_id: String,
    pub before: serde_json::Value,
    pub after: serde_json::Value,
}

#[allow(clippy::too_many_arguments)]
fn entry_hash(
    merchant_id: Uuid,
    chain_seq: i64,
    at: DateTime<Utc>,
    actor_kind: &str,
    actor_id: &str,
    request_id: &str,
    action: &str,
    subject_id: &str,
    before: &str,
    after: &str,
    prev_hash: &str,
) -> String {
    let canonical = serde_json::json!([
        merchant_id.to_string(),
        chain_seq,
        at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        actor_kind,
        actor_id,
        request_id,
        action,
        subject_id,
        before,
        after,
        prev_hash
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

const AUDIT_COLUMNS: usize = 12;
/// Rows per multi-row insert (well under both backends' parameter limits).
const CHUNK: usize = 400;

/// Appends entries, in order, inside the caller's transaction. Each
/// merchant's chain head is locked once, extended in memory and written back.
pub async fn append_all(tx: &mut Tx, entries: &[AuditEntry], anchor_every: i64) -> Result<(), sqlx::Error> {
    // Chain heads are locked in one order everywhere, so two writers never deadlock.
    let mut merchants: Vec<Uuid> = entries.iter().map(|e| e.merchant_id).collect();
    merchants.sort_unstable();
    merchants.dedup();
    for merchant in merchants {
        let mine: Vec<&AuditEntry> = entries.iter().filter(|e| e.merchant_id == merchant).collect();
        let count = mine.len() as i64;
        on_tx!(&mut *tx, c => {
            sqlx::query(
                "INSERT INTO audit_heads (merchant_id, chain_seq, entry_hash) VALUES ($1, 0, $2) \
                 ON CONFLICT (merchant_id) DO NOTHING",
            )
            .bind(merchant)
            .bind(GENESIS_HASH)
            .execute(&mut *c)
            .await?;
        });
        // Moving the head locks the merchant's chain until commit.
        let (last_seq, mut prev): (i64, String) = on_tx!(&mut *tx, c => {
            sqlx::query_as(
                "UPDATE audit_heads SET chain_seq = chain_seq + $2 WHERE merchant_id = $1 RETURNING chain_seq, entry_hash",
            )
            .bind(merchant)
            .bind(count)
            .fetch_one(&mut *c)
            .await?
        });
        let first_seq = last_seq - count + 1;
        let mut rows = Vec::with_capacity(mine.len());
        for (i, entry) in mine.iter().enumerate() {
            let chain_seq = first_seq + i as i64;
            let before = entry.before.to_string();
            let after = entry.after.to_string();
            let hash = entry_hash(
                merchant,
                chain_seq,
                entry.at,
                &entry.actor_kind,
                &entry.actor_id,
                &entry.request_id,
                &entry.action,
                &entry.subject_id,
                &before,
                &after,
                &prev,
            );
            rows.push((chain_seq, *entry, before, after, prev.clone(), hash.clone()));
            prev = hash;
        }
        for chunk in rows.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO audit_log (merchant_id, chain_seq, at, actor_kind, actor_id, request_id, action, \
                 subject_id, before_state, after_state, prev_hash, entry_hash) VALUES {}",
                crate::db::placeholders(chunk.len(), AUDIT_COLUMNS)
            );
            on_tx!(&mut *tx, c => {
                let mut query = sqlx::query(AssertSqlSafe(sql.clone()));
                for (chain_seq, entry, before, after, prev_hash, hash) in chunk {
                    query = query
                        .bind(merchant)
                        .bind(*chain_seq)
                        .bind(entry.at)
                        .bind(&entry.actor_kind)
                        .bind(&entry.actor_id)
                        .bind(&entry.request_id)
                        .bind(&entry.action)
                        .bind(&entry.subject_id)
                        .bind(before)
                        .bind(after)
                        .bind(prev_hash)
                        .bind(hash);
                }
                query.execute(&mut *c).await?;
            });
        }
        on_tx!(&mut *tx, c => {
            sqlx::query("UPDATE audit_heads SET entry_hash = $2 WHERE merchant_id = $1")
                .bind(merchant)
                .bind(&prev)
                .execute(&mut *c)
                .await?;
        });
        for (chain_seq, entry, _, _, _, hash) in rows.iter().filter(|r| r.0 % anchor_every == 0) {
            on_tx!(&mut *tx, c => {
                sqlx::query("INSERT INTO audit_anchors (merchant_id, chain_seq, entry_hash, at) VALUES ($1, $2, $3, $4)")
                    .bind(merchant)
                    .bind(*chain_seq)
                    .bind(hash)
                    .bind(entry.at)
                    .execute(&mut *c)
                    .await?;
            });
            tracing::info!(target: "xianlu::audit_anchor", merchant = %merchant, chain_seq, entry_hash = %hash, "audit anchor");
        }
    }
    Ok(())
}

/// The chain of platform-wide actions (users and roles not tied to a merchant).
pub const PLATFORM_CHAIN: Uuid = Uuid::nil();

/// Appends one entry in a transaction of its own.
pub async fn record(db: &Db, entry: AuditEntry, anchor_every: i64) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    append_all(&mut tx, &[entry], anchor_every).await?;
    tx.commit().await
}

/// What `audit verify` found.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    pub merchants: usize,
    pub entries: u64,
    pub anchors: u64,
    /// Every break found; empty when the log is intact.
    pub problems: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    chain_seq: i64,
    at: DateTime<Utc>,
    actor_kind: String,
    actor_id: String,
    request_id: String,
    action: String,
    subject_id: String,
    before_state: String,
    after_state: String,
    prev_hash: String,
    entry_hash: String,
}

/// Walks every merchant's chain and reports any edited, inserted or deleted row.
pub async fn verify(db: &Db) -> Result<VerifyReport, sqlx::Error> {
    let mut report = VerifyReport::default();
    let heads: Vec<(Uuid, i64, String)> = on_db!(db, pool => {
        sqlx::query_as("SELECT merchant_id, chain_seq, entry_hash FROM audit_heads ORDER BY merchant_id")
            .fetch_all(pool)
            .await?
    });
    let logged: Vec<(Uuid,)> = on_db!(db, pool => {
        sqlx::query_as("SELECT DISTINCT merchant_id FROM audit_log").fetch_all(pool).await?
    });
    for (merchant,) in &logged {
        if !heads.iter().any(|(m, _, _)| m == merchant) {
            report.problems.push(format!("merchant {merchant}: entries without a chain head"));
        }
    }
    report.merchants = heads.len();
    for (merchant, head_seq, head_hash) in heads {
        let mut expected_seq = 1_i64;
        let mut prev = GENESIS_HASH.to_owned();
        let mut after_seq = 0_i64;
        loop {
            let rows: Vec<Row> = on_db!(db, pool => {
                sqlx::query_as(
                    "SELECT chain_seq, at, actor_kind, actor_id, request_id, action, subject_id, before_state, \
                     after_state, prev_hash, entry_hash FROM audit_log WHERE merchant_id = $1 AND chain_seq > $2 \
                     ORDER BY chain_seq LIMIT 1000",
                )
                .bind(merchant)
                .bind(after_seq)
                .fetch_all(pool)
                .await?
            });
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                report.entries += 1;
                if row.chain_seq != expected_seq {
                    report.problems.push(format!(
                        "merchant {merchant}: entry {} found where {expected_seq} was expected (deleted or inserted rows)",
                        row.chain_seq
                    ));
                }
                if row.prev_hash != prev {
                    report.problems.push(format!(
                        "merchant {merchant}: entry {} does not link to the entry before it",
                        row.chain_seq
                    ));
                }
                let recomputed = entry_hash(
                    merchant,
                    row.chain_seq,
                    row.at,
                    &row.actor_kind,
                    &row.actor_id,
                    &row.request_id,
                    &row.action,
                    &row.subject_id,
                    &row.before_state,
                    &row.after_state,
                    &row.prev_hash,
                );
                if recomputed != row.entry_hash {
                    report.problems.push(format!("merchant {merchant}: entry {} was edited", row.chain_seq));
                }
                prev = row.entry_hash.clone();
                expected_seq = row.chain_seq + 1;
                after_seq = row.chain_seq;
            }
        }
        if after_seq != head_seq || prev != head_hash {
            report.problems.push(format!(
                "merchant {merchant}: the chain ends at entry {after_seq} but its head says {head_seq} (entries deleted from the end?)"
            ));
        }
        let anchors: Vec<(i64, String)> = on_db!(db, pool => {
            sqlx::query_as("SELECT chain_seq, entry_hash FROM audit_anchors WHERE merchant_id = $1 ORDER BY chain_seq")
                .bind(merchant)
                .fetch_all(pool)
                .await?
        });
        for (seq, hash) in anchors {
            report.anchors += 1;
            let found: Option<(String,)> = on_db!(db, pool => {
                sqlx::query_as("SELECT entry_hash FROM audit_log WHERE merchant_id = $1 AND chain_seq = $2")
                    .bind(merchant)
                    .bind(seq)
                    .fetch_optional(pool)
                    .await?
            });
            if found.map(|(h,)| h) != Some(hash) {
                report.problems.push(format!("merchant {merchant}: anchor at entry {seq} does not match the log"));
            }
        }
    }
    Ok(report)
}
