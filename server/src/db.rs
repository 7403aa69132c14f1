//! The two storage backends behind one interface.
//!
//! We do not use `sqlx::Any`: each backend keeps its own types (UUID and
//! TIMESTAMPTZ on PostgreSQL), its own migrations and its own transaction
//! start. Queries are written once and type-checked per backend by the
//! `on_db!` / `on_tx!` macros, which expand the same code for each pool type.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};

/// A connection pool on either backend.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePools),
    Postgres(PgPool),
}

/// SQLite has one writer at a time: writes queue for the single write
/// connection (a fair async queue) instead of sleeping in SQLite's busy
/// handler; reads use their own connections, which WAL never blocks.
///
/// The writer never checkpoints the WAL itself (that would stall a commit
/// while the database file is written and flushed); a background task does,
/// on its own connection, see [`Db::checkpoint`].
#[derive(Clone, Debug)]
pub struct SqlitePools {
    pub read: SqlitePool,
    pub write: SqlitePool,
    checkpoint: SqlitePool,
}

/// An open transaction on either backend.
pub enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// Runs the same read-only query code against whichever pool `$db` holds.
#[macro_export]
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite(pools) => {
                let $pool = &pools.read;
                $body
            }
            $crate::db::Db::Postgres($pool) => $body,
        }
    };
}

/// Runs the same writing statement (outside a transaction) on either backend.
#[macro_export]
macro_rules! on_db_write {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite(pools) => {
                let $pool = &pools.write;
                $body
            }
            $crate::db::Db::Postgres($pool) => $body,
        }
    };
}

/// Runs the same query code inside whichever transaction `$tx` holds;
/// `$conn` is the `&mut` connection to pass to `execute`/`fetch_*`.
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $tx {
            $crate::db::Tx::Sqlite(tx) => {
                let $conn = &mut **tx;
                $body
            }
            $crate::db::Tx::Postgres(tx) => {
                let $conn = &mut **tx;
                $body
            }
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// How the server connects to its database.
#[derive(Debug, Clone)]
pub struct DbOptions {
    pub url: String,
    /// SQLite only: `NORMAL` or `FULL` (WAL is always on).
    pub sqlite_synchronous: String,
    pub max_connections: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database URL (use sqlite://PATH or postgres://…): {0}")]
    UnsupportedUrl(String),
    #[error("sqlite_synchronous must be NORMAL or FULL, not {0}")]
    BadSynchronous(String),
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Db {
    /// Connects; creates the SQLite file (and its directory) on first start.
    pub async fn connect(options: &DbOptions) -> Result<Db, DbError> {
        let url = options.url.as_str();
        if url.starts_with("sqlite:") {
            let synchronous = match options.sqlite_synchronous.to_ascii_uppercase().as_str() {
                "NORMAL" => SqliteSynchronous::Normal,
                "FULL" => SqliteSynchronous::Full,
                other => return Err(DbError::BadSynchronous(other.to_owned())),
            };
            let connect = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(synchronous)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10))
                // Every commit resets the other connections' page caches (WAL):
                // reads through a shared memory map, not a copy per connection,
                // keep a busy day's reads off the disk path.
                .pragma("mmap_size", "268435456")
                .pragma("cache_size", "-16384");
            if let Some(dir) = connect.get_filename().parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(|e| DbError::Sqlx(sqlx::Error::Io(e)))?;
            }
            let write = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(connect.clone().pragma("wal_autocheckpoint", "0"))
                .await?;
            let checkpoint = SqlitePoolOptions::new().max_connections(1).connect_with(connect.clone()).await?;
            let read = SqlitePoolOptions::new()
                .max_connections(options.max_connections.max(1))
                .connect_with(connect.read_only(true))
                .await?;
            Ok(Db::Sqlite(SqlitePools { read, write, checkpoint }))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let connect = PgConnectOptions::from_str(url)?;
            let pool =
                PgPoolOptions::new().max_connections(options.max_connections.max(2)).connect_with(connect).await?;
            Ok(Db::Postgres(pool))
        } else {
            Err(DbError::UnsupportedUrl(url.to_owned()))
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies the pending migrations of this backend.
    pub async fn migrate(&self) -> Result<(), DbError> {
        match self {
            Db::Sqlite(pools) => SQLITE_MIGRATIONS.run(&pools.write).await?,
            Db::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    /// Starts a writing transaction. On SQLite it takes the write lock at
    /// once (`BEGIN IMMEDIATE`), so a transaction never fails half-way
    /// because another writer got there first.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Db::Sqlite(pools) => Tx::Sqlite(pools.write.begin_with("BEGIN IMMEDIATE").await?),
            Db::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// Reads rows about many ids: `sql` names the list as `{ids}`, which is
    /// bound in chunks (every parameter of the statement is an id).
    pub async fn fetch_in<T>(&self, sql: &str, ids: &[uuid::Uuid]) -> Result<Vec<T>, sqlx::Error>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + Send
            + Unpin,
    {
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let statement = sql.replace("{ids}", &in_list(chunk.len()));
            let rows: Vec<T> = on_db!(self, pool => {
                let mut query = sqlx::query_as(sqlx::AssertSqlSafe(statement.clone()));
                for id in chunk {
                    query = query.bind(*id);
                }
                query.fetch_all(pool).await?
            });
            out.extend(rows);
        }
        Ok(out)
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        on_db!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
    }

    /// SQLite: copies committed WAL pages into the database file without
    /// blocking the writer (a passive checkpoint). Nothing to do on PostgreSQL.
    pub async fn checkpoint(&self) -> Result<(), sqlx::Error> {
        if let Db::Sqlite(pools) = self {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pools.checkpoint).await?;
        }
        Ok(())
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite(pools) => {
                pools.read.close().await;
                pools.write.close().await;
                pools.checkpoint.close().await;
            }
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

impl Tx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
    }

    /// `FOR UPDATE` where the backend has row locks (SQLite's write lock is
    /// already held by `BEGIN IMMEDIATE`).
    pub fn lock_clause(&self) -> &'static str {
        match self {
            Tx::Sqlite(_) => "",
            Tx::Postgres(_) => " FOR UPDATE",
        }
    }
}

/// `($1, $2, …), ($n+1, …)` for a multi-row insert of `rows` rows of `columns` values.
/// `$1, $2, …, $count`
pub fn in_list(count: usize) -> String {
    (1..=count).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

pub fn placeholders(rows: usize, columns: usize) -> String {
    let mut out = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for column in 0..columns {
            if column > 0 {
                out.push_str(", ");
            }
            out.push('$');
            out.push_str(&(row * columns + column + 1).to_string());
        }
        out.push(')');
    }
    out
}
