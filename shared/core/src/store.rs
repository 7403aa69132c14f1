//! Local storage for the outbox, the push cursor, device counters and the
//! order cache: SQLite in the app's data directory natively, memory in the
//! browser (the tracking page keeps nothing across reloads).

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::error::{CoreError, CoreResult};

/// Where an outbox item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemState {
    /// Waiting to be sent (or to be sent again).
    Pending,
    /// The server refused it for a reason retrying cannot fix, or the row is
    /// unreadable: it waits for the user, and holds back later items of its lane.
    Attention,
}

impl ItemState {
    /// Anything unrecognised needs a person to look at it.
    #[cfg_attr(not(feature = "native"), allow(dead_code))]
    fn parse(text: &str) -> ItemState {
        if text == "pending" { ItemState::Pending } else { ItemState::Attention }
    }
}

/// An item as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredItem {
    pub id: i64,
    /// The idempotency key the server sees.
    pub key: String,
    /// Items of one lane are sent strictly in id order.
    pub lane: String,
    /// The operation, as JSON (see `outbox::Operation`).
    pub body: String,
    pub state: ItemState,
    /// Send attempts begun. Above zero, the server may have applied it.
    pub attempts: u32,
    pub next_attempt_ms: i64,
    /// The last failure, as JSON (a problem document) or text.
    pub last_error: Option<String>,
    pub created_ms: i64,
}

/// A new item.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub key: String,
    pub lane: String,
    pub body: String,
    pub created_ms: i64,
}

/// What the core keeps on the device.
pub trait Store: Send + Sync {
    /// Appends items atomically (evidence and the command naming it go together).
    fn enqueue(&self, items: &[NewItem]) -> CoreResult<Vec<i64>>;
    /// Every item, in id order.
    fn items(&self) -> CoreResult<Vec<StoredItem>>;
    /// The first item of each lane, if pending and due, in id order.
    fn heads(&self, now_ms: i64, limit: usize) -> CoreResult<Vec<StoredItem>>;
    /// Items stored, how many of them need attention, and how many lanes
    /// have a pending item first in line (something that can be sent).
    fn counts(&self) -> CoreResult<(usize, usize, usize)>;
    /// When the earliest waiting lane head is due, if any is pending.
    fn next_due(&self) -> CoreResult<Option<i64>>;
    /// Records that a send begins (durably, before it does).
    fn begin_attempt(&self, id: i64) -> CoreResult<()>;
    /// The server acknowledged it: gone.
    fn ack(&self, id: i64) -> CoreResult<()>;
    /// Try again after `next_attempt_ms`.
    fn defer(&self, id: i64, next_attempt_ms: i64, error: &str) -> CoreResult<()>;
    /// Needs the user.
    fn needs_attention(&self, id: i64, error: &str) -> CoreResult<()>;
    /// Puts an item needing attention back in line under a new key.
    fn retry(&self, id: i64, new_key: &str, now_ms: i64) -> CoreResult<bool>;
    /// Removes an item that was never sent or that the server refused.
    fn cancel(&self, id: i64) -> CoreResult<bool>;
    fn meta(&self, key: &str) -> CoreResult<Option<String>>;
    fn set_meta(&self, key: &str, value: &str) -> CoreResult<()>;
    /// Adds `by` to a counter and returns the first of the reserved values.
    fn reserve(&self, key: &str, by: u64) -> CoreResult<u64>;
    fn cache_put(&self, id: &str, version: u64, json: &str) -> CoreResult<()>;
    fn cache_get(&self, id: &str) -> CoreResult<Option<(u64, String)>>;
    fn cache_all(&self) -> CoreResult<Vec<(String, u64, String)>>;
}

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

/// In memory: the browser, and tests of the core alone.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    next_id: i64,
    items: BTreeMap<i64, StoredItem>,
    meta: BTreeMap<String, String>,
    cache: BTreeMap<String, (u64, String)>,
}

impl MemoryStore {
    fn with<T>(&self, f: impl FnOnce(&mut MemoryState) -> T) -> CoreResult<T> {
        let mut state = self.state.lock().map_err(|_| CoreError::Storage("store lock poisoned".into()))?;
        Ok(f(&mut state))
    }
}

impl Store for MemoryStore {
    fn enqueue(&self, items: &[NewItem]) -> CoreResult<Vec<i64>> {
        self.with(|s| {
            items
                .iter()
                .map(|new| {
                    s.next_id += 1;
                    let id = s.next_id;
                    s.items.insert(
                        id,
                        StoredItem {
                            id,
                            key: new.key.clone(),
                            lane: new.lane.clone(),
                            body: new.body.clone(),
                            state: ItemState::Pending,
                            attempts: 0,
                            next_attempt_ms: 0,
                            last_error: None,
                            created_ms: new.created_ms,
                        },
                    );
                    id
                })
                .collect()
        })
    }

    fn items(&self) -> CoreResult<Vec<StoredItem>> {
        self.with(|s| s.items.values().cloned().collect())
    }

    fn heads(&self, now_ms: i64, limit: usize) -> CoreResult<Vec<StoredItem>> {
        self.with(|s| {
            let mut seen = std::collections::HashSet::new();
            s.items
                .values()
                .filter(|i| seen.insert(i.lane.clone()))
                .filter(|i| i.state == ItemState::Pending && i.next_attempt_ms <= now_ms)
                .take(limit)
                .cloned()
                .collect()
        })
    }

    fn counts(&self) -> CoreResult<(usize, usize, usize)> {
        self.with(|s| {
            let mut seen = std::collections::HashSet::new();
            let sendable = s
                .items
                .values()
                .filter(|i| seen.insert(i.lane.clone()))
                .filter(|i| i.state == ItemState::Pending)
                .count();
            (s.items.len(), s.items.values().filter(|i| i.state == ItemState::Attention).count(), sendable)
        })
    }

    fn next_due(&self) -> CoreResult<Option<i64>> {
        self.with(|s| {
            let mut seen = std::collections::HashSet::new();
            s.items
                .values()
                .filter(|i| seen.insert(i.lane.clone()))
                .filter(|i| i.state == ItemState::Pending)
                .map(|i| i.next_attempt_ms)
                .min()
        })
    }

    fn begin_attempt(&self, id: i64) -> CoreResult<()> {
        self.with(|s| {
            if let Some(item) = s.items.get_mut(&id) {
                item.attempts += 1;
            }
        })
    }

    fn ack(&self, id: i64) -> CoreResult<()> {
        self.with(|s| {
            s.items.remove(&id);
        })
    }

    fn defer(&self, id: i64, next_attempt_ms: i64, error: &str) -> CoreResult<()> {
        self.with(|s| {
            if let Some(item) = s.items.get_mut(&id) {
                item.next_attempt_ms = next_attempt_ms;
                item.last_error = Some(error.to_owned());
            }
        })
    }

    fn needs_attention(&self, id: i64, error: &str) -> CoreResult<()> {
        self.with(|s| {
            if let Some(item) = s.items.get_mut(&id) {
                item.state = ItemState::Attention;
                item.last_error = Some(error.to_owned());
            }
        })
    }

    fn retry(&self, id: i64, new_key: &str, now_ms: i64) -> CoreResult<bool> {
        self.with(|s| match s.items.get_mut(&id) {
            Some(item) if item.state == ItemState::Attention => {
                item.state = ItemState::Pending;
                item.key = new_key.to_owned();
                item.attempts = 0;
                item.next_attempt_ms = now_ms;
                true
            }
            _ => false,
        })
    }

    fn cancel(&self, id: i64) -> CoreResult<bool> {
        self.with(|s| match s.items.get(&id) {
            Some(item) if item.attempts == 0 || item.state == ItemState::Attention => {
                s.items.remove(&id);
                true
            }
            _ => false,
        })
    }

    fn meta(&self, key: &str) -> CoreResult<Option<String>> {
        self.with(|s| s.meta.get(key).cloned())
    }

    fn set_meta(&self, key: &str, value: &str) -> CoreResult<()> {
        self.with(|s| {
            s.meta.insert(key.to_owned(), value.to_owned());
        })
    }

    fn reserve(&self, key: &str, by: u64) -> CoreResult<u64> {
        self.with(|s| {
            let first = s.meta.get(key).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + 1;
            s.meta.insert(key.to_owned(), (first + by - 1).to_string());
            first
        })
    }

    fn cache_put(&self, id: &str, version: u64, json: &str) -> CoreResult<()> {
        self.with(|s| {
            let newer = s.cache.get(id).is_none_or(|(v, _)| *v <= version);
            if newer {
                s.cache.insert(id.to_owned(), (version, json.to_owned()));
            }
        })
    }

    fn cache_get(&self, id: &str) -> CoreResult<Option<(u64, String)>> {
        self.with(|s| s.cache.get(id).cloned())
    }

    fn cache_all(&self) -> CoreResult<Vec<(String, u64, String)>> {
        self.with(|s| s.cache.iter().map(|(k, (v, j))| (k.clone(), *v, j.clone())).collect())
    }
}

#[cfg(feature = "native")]
pub use sqlite::SqliteStore;

#[cfg(feature = "native")]
mod sqlite {
    use std::path::Path;
    use std::sync::Mutex;

    use rusqlite::{Connection, OptionalExtension, params};

    use super::{ItemState, NewItem, Store, StoredItem};
    use crate::error::{CoreError, CoreResult};

    /// The schema this code writes. A file from a newer app is refused, not misread.
    const SCHEMA_VERSION: i64 = 1;

    const SCHEMA: &str = "
        CREATE TABLE IF NOT EXISTS outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            key TEXT NOT NULL,
            lane TEXT NOT NULL,
            body TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_ms INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            created_ms INTEGER NOT NULL
        );
        CREATE INDEX IF NOT EXISTS outbox_lane ON outbox (lane, id);
        CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS order_cache (
            id TEXT PRIMARY KEY, version INTEGER NOT NULL, view TEXT NOT NULL
        );
    ";

    /// One SQLite file (WAL, synchronous FULL: an enqueued change survives
    /// a crash or a dead battery the moment `enqueue` returns).
    pub struct SqliteStore {
        conn: Mutex<Connection>,
    }

    impl std::fmt::Debug for SqliteStore {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("SqliteStore")
        }
    }

    impl SqliteStore {
        pub fn open(path: &Path) -> CoreResult<SqliteStore> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| CoreError::Storage(format!("{}: {e}", dir.display())))?;
            }
            let conn = Connection::open(path)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if version > SCHEMA_VERSION {
                return Err(CoreError::Storage(format!(
                    "{} was written by a newer version of the app (schema {version}); update the app",
                    path.display()
                )));
            }
            conn.execute_batch(SCHEMA)?;
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            Ok(SqliteStore { conn: Mutex::new(conn) })
        }

        fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> CoreResult<T> {
            let mut conn = self.conn.lock().map_err(|_| CoreError::Storage("store lock poisoned".into()))?;
            Ok(f(&mut conn)?)
        }
    }

    fn item(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredItem> {
        Ok(StoredItem {
            id: row.get(0)?,
            key: row.get(1)?,
            lane: row.get(2)?,
            body: row.get(3)?,
            state: ItemState::parse(&row.get::<_, String>(4)?),
            attempts: row.get::<_, i64>(5)?.clamp(0, i64::from(u32::MAX)) as u32,
            next_attempt_ms: row.get(6)?,
            last_error: row.get(7)?,
            created_ms: row.get(8)?,
        })
    }

    const COLUMNS: &str = "id, key, lane, body, state, attempts, next_attempt_ms, last_error, created_ms";

    impl Store for SqliteStore {
        fn enqueue(&self, items: &[NewItem]) -> CoreResult<Vec<i64>> {
            self.with(|conn| {
                let tx = conn.transaction()?;
                let mut ids = Vec::with_capacity(items.len());
                {
                    let mut insert = tx.prepare_cached(
                        "INSERT INTO outbox (key, lane, body, created_ms) VALUES (?1, ?2, ?3, ?4) RETURNING id",
                    )?;
                    for new in items {
                        ids.push(insert.query_row(params![new.key, new.lane, new.body, new.created_ms], |r| r.get(0))?);
                    }
                }
                tx.commit()?;
                Ok(ids)
            })
        }

        fn items(&self) -> CoreResult<Vec<StoredItem>> {
            self.with(|conn| {
                let mut query = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM outbox ORDER BY id"))?;
                query.query_map([], item)?.collect()
            })
        }

        fn heads(&self, now_ms: i64, limit: usize) -> CoreResult<Vec<StoredItem>> {
            self.with(|conn| {
                let mut query = conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM outbox o WHERE state = 'pending' AND next_attempt_ms <= ?1 \
                     AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.lane = o.lane AND p.id < o.id) \
                     ORDER BY id LIMIT ?2"
                ))?;
                query.query_map(params![now_ms, limit as i64], item)?.collect()
            })
        }

        fn counts(&self) -> CoreResult<(usize, usize, usize)> {
            self.with(|conn| {
                conn.prepare_cached(
                    "SELECT (SELECT COUNT(*) FROM outbox), (SELECT COUNT(*) FROM outbox WHERE state <> 'pending'), \
                     (SELECT COUNT(*) FROM outbox WHERE id IN (SELECT MIN(id) FROM outbox GROUP BY lane) \
                      AND state = 'pending')",
                )?
                .query_row([], |r| {
                    Ok((r.get::<_, i64>(0)? as usize, r.get::<_, i64>(1)? as usize, r.get::<_, i64>(2)? as usize))
                })
            })
        }

        fn next_due(&self) -> CoreResult<Option<i64>> {
            self.with(|conn| {
                conn.prepare_cached(
                    "SELECT MIN(next_attempt_ms) FROM outbox WHERE id IN (SELECT MIN(id) FROM outbox GROUP BY lane) \
                     AND state = 'pending'",
                )?
                .query_row([], |r| r.get(0))
            })
        }

        fn begin_attempt(&self, id: i64) -> CoreResult<()> {
            self.with(|conn| {
                conn.prepare_cached("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?1")?.execute([id])?;
                Ok(())
            })
        }

        fn ack(&self, id: i64) -> CoreResult<()> {
            self.with(|conn| {
                conn.prepare_cached("DELETE FROM outbox WHERE id = ?1")?.execute([id])?;
                Ok(())
            })
        }

        fn defer(&self, id: i64, next_attempt_ms: i64, error: &str) -> CoreResult<()> {
            self.with(|conn| {
                conn.prepare_cached("UPDATE outbox SET next_attempt_ms = ?2, last_error = ?3 WHERE id = ?1")?
                    .execute(params![id, next_attempt_ms, error])?;
                Ok(())
            })
        }

        fn needs_attention(&self, id: i64, error: &str) -> CoreResult<()> {
            self.with(|conn| {
                conn.prepare_cached("UPDATE outbox SET state = 'attention', last_error = ?2 WHERE id = ?1")?
                    .execute(params![id, error])?;
                Ok(())
            })
        }

        fn retry(&self, id: i64, new_key: &str, now_ms: i64) -> CoreResult<bool> {
            self.with(|conn| {
                let n = conn
                    .prepare_cached(
                        "UPDATE outbox SET state = 'pending', key = ?2, attempts = 0, next_attempt_ms = ?3 \
                         WHERE id = ?1 AND state <> 'pending'",
                    )?
                    .execute(params![id, new_key, now_ms])?;
                Ok(n == 1)
            })
        }

        fn cancel(&self, id: i64) -> CoreResult<bool> {
            self.with(|conn| {
                let n = conn
                    .prepare_cached("DELETE FROM outbox WHERE id = ?1 AND (attempts = 0 OR state <> 'pending')")?
                    .execute([id])?;
                Ok(n == 1)
            })
        }

        fn meta(&self, key: &str) -> CoreResult<Option<String>> {
            self.with(|conn| {
                conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?.query_row([key], |r| r.get(0)).optional()
            })
        }

        fn set_meta(&self, key: &str, value: &str) -> CoreResult<()> {
            self.with(|conn| {
                conn.prepare_cached(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
                )?
                .execute([key, value])?;
                Ok(())
            })
        }

        fn reserve(&self, key: &str, by: u64) -> CoreResult<u64> {
            self.with(|conn| {
                let tx = conn.transaction()?;
                let current: Option<String> =
                    tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?;
                let first = current.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + 1;
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
                    params![key, (first + by - 1).to_string()],
                )?;
                tx.commit()?;
                Ok(first)
            })
        }

        fn cache_put(&self, id: &str, version: u64, json: &str) -> CoreResult<()> {
            self.with(|conn| {
                conn.prepare_cached(
                    "INSERT INTO order_cache (id, version, view) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (id) DO UPDATE SET version = ?2, view = ?3 WHERE order_cache.version <= ?2",
                )?
                .execute(params![id, version as i64, json])?;
                Ok(())
            })
        }

        fn cache_get(&self, id: &str) -> CoreResult<Option<(u64, String)>> {
            self.with(|conn| {
                conn.prepare_cached("SELECT version, view FROM order_cache WHERE id = ?1")?
                    .query_row([id], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
                    .optional()
            })
        }

        fn cache_all(&self) -> CoreResult<Vec<(String, u64, String)>> {
            self.with(|conn| {
                let mut query = conn.prepare_cached("SELECT id, version, view FROM order_cache ORDER BY id")?;
                query.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?)))?.collect()
            })
        }
    }
}
