//! The persistent store: users, policies and the audit trail, in embedded SQLite by
//! default or in a shared MySQL/MariaDB or PostgreSQL for several NOVAS.
//!
//! One typed sqlx pool per backend; the SQL text for each comes from
//! [`dialect`], and [`Store`] binds and decodes through the small
//! [`SqlValue`] vocabulary so the table logic is written once.
//!
//! - [`url`]: `NOVAS_STORE_URL` parsing and password redaction.
//! - [`dialect`]: every SQL statement, per backend.
//! - `schema`: versioned, idempotent migrations under a cross-process lock.
//! - `users`, `events`: users and the audit trail.
//! - `ssh`: users' SSH public keys and pinned target host keys (SAC).
//! - `policies`: the policy document every node enforces, versioned.
//! - `console`: the web console's login sessions.
//! - `kube`: NOVAS-issued Kubernetes bearer tokens, stored hashed (KAC).

mod console;
pub mod dialect;
mod events;
mod kube;
mod policies;
mod schema;
mod ssh;
pub mod url;
mod users;

use std::{path::Path, str::FromStr, time::Duration};

use sqlx::{
    mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions},
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    },
    AssertSqlSafe, Row,
};

pub use console::ConsoleSessionRecord;
pub use dialect::{Dialect, SqlValue};
pub use kube::KubeTokenRecord;
pub use policies::{digest as policy_digest, PolicyDoc};
pub use ssh::{HostKeyRecord, UserKeyRecord};
pub use url::{redact, StoreUrl};
pub use users::UserRecord;

use dialect::Col;

/// How long a statement waits for a pooled connection before failing; short
/// so an unreachable database shows as an error, not a hang.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long SQLite waits on another writer's lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Store failures. None of them carries the URL's password.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is malformed or names no supported backend.
    #[error("NOVAS_STORE_URL {url}: {msg}")]
    BadUrl { url: String, msg: String },
    /// The database could not be opened or reached at start.
    #[error("cannot open the store at {url}: {msg}")]
    Connect { url: String, msg: String },
    /// Creating or migrating the schema failed.
    #[error("store schema migration to version {version}: {msg}")]
    Schema { version: i64, msg: String },
    /// A statement failed (database down, table missing, constraint, …).
    #[error("store {op}: {cause}")]
    Query {
        op: &'static str,
        cause: sqlx::Error,
    },
    /// A stored row could not be read back into its type.
    #[error("store row in {table}: {msg}")]
    Corrupt { table: &'static str, msg: String },
}

impl StoreError {
    fn query(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |cause| StoreError::Query { op, cause }
    }
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    MySql(MySqlPool),
}

/// Runs `$body` with `$p` bound to whichever typed pool `$pool` holds: the
/// body is written once and compiled for each backend.
macro_rules! with_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            Pool::Sqlite($p) => $body,
            Pool::Postgres($p) => $body,
            Pool::MySql($p) => $body,
        }
    };
}

/// Binds `$args` (`&[SqlValue]`) to the query `$q`, in order.
macro_rules! bind_all {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                SqlValue::Text(v) => q.bind(v.as_deref()),
                SqlValue::Shared(v) => q.bind(v.clone()),
                SqlValue::Int(v) => q.bind(*v),
            };
        }
        q
    }};
}

/// Decodes `$row` into values of the given column types.
macro_rules! decode_row {
    ($row:expr, $cols:expr) => {{
        let row = $row;
        $cols
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Ok(match c {
                    Col::Text => SqlValue::Text(row.try_get::<Option<String>, _>(i)?),
                    Col::Int => SqlValue::Int(row.try_get::<Option<i64>, _>(i)?),
                })
            })
            .collect::<Result<Vec<SqlValue>, sqlx::Error>>()
    }};
}

/// A handle on the store; cheap to clone (the pools are shared).
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    dialect: Dialect,
    /// The URL without its password, for logs.
    url: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("url", &self.url).finish()
    }
}

impl Store {
    /// Opens (creating a SQLite file if missing) and migrates the store.
    /// Several processes may open one shared database at once.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let parsed = StoreUrl::parse(url)?;
        let shown = redact(url.trim());
        let password = parsed.password();
        let connect_err = |e: sqlx::Error| StoreError::Connect {
            url: shown.clone(),
            msg: url::scrub(e.to_string(), password.as_deref()),
        };
        let (pool, dialect) = match &parsed {
            StoreUrl::Sqlite { path } => {
                prepare_sqlite_file(path).map_err(|e| StoreError::Connect {
                    url: shown.clone(),
                    msg: e.to_string(),
                })?;
                let opts = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    // 1 MiB of page cache per connection instead of 2: the
                    // audit table is written, not read, in the hot path.
                    .pragma("cache_size", "-1024");
                let pool = SqlitePoolOptions::new()
                    .max_connections(4)
                    .min_connections(1)
                    .idle_timeout(Duration::from_secs(60))
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(opts)
                    .await
                    .map_err(connect_err)?;
                (Pool::Sqlite(pool), Dialect::Sqlite)
            }
            StoreUrl::Postgres { url } => {
                let opts = PgConnectOptions::from_str(url).map_err(connect_err)?;
                let pool = PgPoolOptions::new()
                    .max_connections(5)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(opts)
                    .await
                    .map_err(connect_err)?;
                (Pool::Postgres(pool), Dialect::Postgres)
            }
            StoreUrl::MySql { url } => {
                let opts = MySqlConnectOptions::from_str(url).map_err(connect_err)?;
                let pool = MySqlPoolOptions::new()
                    .max_connections(5)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(opts)
                    .await
                    .map_err(connect_err)?;
                (Pool::MySql(pool), Dialect::MySql)
            }
        };
        let store = Store {
            pool,
            dialect,
            url: shown,
        };
        schema::migrate(&store).await?;
        Ok(store)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The URL with any password masked.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Succeeds when the database answers and the audit table is readable.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.execute("ping", &self.dialect.ping(), &[])
            .await
            .map(|_| ())
    }

    /// Closes every pooled connection; later calls fail.
    pub async fn close(&self) {
        with_pool!(&self.pool, p => p.close().await)
    }

    /// Runs one statement; returns the rows affected.
    async fn execute(
        &self,
        op: &'static str,
        sql: &str,
        args: &[SqlValue],
    ) -> Result<u64, StoreError> {
        let sql = AssertSqlSafe(sql.to_string());
        with_pool!(&self.pool, p => bind_all!(sqlx::query(sql), args)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(StoreError::query(op))
    }

    /// Runs a query; returns its rows decoded as `cols`.
    async fn fetch(
        &self,
        op: &'static str,
        sql: &str,
        args: &[SqlValue],
        cols: &[Col],
    ) -> Result<Vec<Vec<SqlValue>>, StoreError> {
        let sql = AssertSqlSafe(sql.to_string());
        with_pool!(&self.pool, p => {
            let rows = bind_all!(sqlx::query(sql), args).fetch_all(p).await;
            rows.and_then(|rows| rows.iter().map(|r| decode_row!(r, cols)).collect())
        })
        .map_err(StoreError::query(op))
    }

    /// Runs statements in one transaction.
    async fn execute_in_tx(
        &self,
        op: &'static str,
        statements: &[(String, Vec<SqlValue>)],
    ) -> Result<(), StoreError> {
        with_pool!(&self.pool, p => {
            async {
                let mut tx = p.begin().await?;
                for (sql, args) in statements {
                    bind_all!(sqlx::query(AssertSqlSafe(sql.clone())), args)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await
            }
            .await
        })
        .map_err(StoreError::query(op))
    }
}

/// Creates the SQLite file's directory, and the file itself with mode 0600
/// (it holds password hashes and statement text); SQLite gives its WAL and
/// shared-memory files the same mode.
fn prepare_sqlite_file(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path).map(drop)
}

/// Text of column `i`, or `None` if NULL or not text.
fn text_at(row: &[SqlValue], i: usize) -> Option<String> {
    match row.get(i) {
        Some(SqlValue::Text(v)) => v.clone(),
        Some(SqlValue::Shared(v)) => v.as_deref().map(str::to_string),
        _ => None,
    }
}

/// Integer of column `i`, or `None` if NULL or not an integer.
fn int_at(row: &[SqlValue], i: usize) -> Option<i64> {
    match row.get(i) {
        Some(SqlValue::Int(v)) => *v,
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::Store;
    use crate::audit::{AuditEvent, Decision, EventKind};

    /// One event of each kind, at times `t`, `t+1`, `t+2`, `t+3`.
    pub fn sample_events(t: i64) -> Vec<AuditEvent> {
        let mut v = vec![
            AuditEvent::new(EventKind::SessionOpen {
                agent: Some("novac-1".into()),
                client_addr: "10.0.0.9:51000".into(),
                account: Some("app_ro".into()),
            }),
            AuditEvent::new(EventKind::Statement {
                text: "SELECT * FROM orders WHERE note LIKE '50%_off'".into(),
                kind: "select".into(),
                decision: Decision::Allow,
                policy: "dev-read".into(),
                duration_us: Some(1234),
                rows: Some(42),
                error: None,
            }),
            AuditEvent::new(EventKind::Statement {
                text: "DROP TABLE orders".into(),
                kind: "ddl".into(),
                decision: Decision::Deny,
                policy: "no-ddl".into(),
                duration_us: None,
                rows: None,
                error: Some("denied by policy no-ddl".into()),
            }),
            AuditEvent::new(EventKind::SessionClose {
                outcome: "client closed".into(),
                bytes_up: 100,
                bytes_down: u64::MAX,
                duration_ms: 5000,
                exit_status: None,
            }),
        ];
        for (i, ev) in v.iter_mut().enumerate() {
            ev.time_ms = t + i as i64;
            ev.node = "n1".into();
            ev.session_id = Some("s-1".into());
            ev.user = Some("alice".into());
            ev.resource = Some("orders-db".into());
            ev.resource_kind = Some("postgres".into());
        }
        let mut failure = AuditEvent::new(EventKind::LoginFailure {
            client_addr: "10.0.0.66:40000".into(),
            reason: "bad password".into(),
        });
        failure.time_ms = t + 4;
        failure.node = "n1".into();
        failure.user = Some("mallory".into());
        v.push(failure);
        v
    }

    /// A SQLite store in a fresh temp dir (kept alive by the returned dir).
    pub async fn sqlite_store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("novas.db").display());
        let store = Store::open(&url).await.expect("open sqlite store");
        (store, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_creates_a_private_wal_file_and_is_idempotent() {
        let (store, dir) = test_util::sqlite_store().await;
        store.ping().await.expect("ping");
        let path = dir.path().join("novas.db");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .expect("db file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(dir.path().join("novas.db-wal").exists(), "WAL mode");
        // Reopening (and several opening at once) finds the schema in place.
        let url = format!("sqlite://{}", path.display());
        let opens = (0..4).map(|_| Store::open(&url));
        for r in futures::future::join_all(opens).await {
            r.expect("concurrent open");
        }
        assert_eq!(
            schema::version(&store).await.expect("version"),
            schema::LATEST
        );
    }

    #[tokio::test]
    async fn bad_urls_fail_clearly() {
        let e = Store::open("mysql://root:hunter2@127.0.0.1:1/x")
            .await
            .expect_err("nothing listens on port 1");
        let msg = e.to_string();
        assert!(matches!(e, StoreError::Connect { .. }), "{msg}");
        assert!(
            !msg.contains("hunter2") && msg.contains("root:***@"),
            "{msg}"
        );
        assert!(matches!(
            Store::open("ftp://x").await,
            Err(StoreError::BadUrl { .. })
        ));
    }
}
