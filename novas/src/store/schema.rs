//! Versioned schema migrations. Every NOVAS sharing a database runs them at
//! start, so they hold a lock that the other processes wait on: SQLite's
//! write lock (`BEGIN IMMEDIATE`), a PostgreSQL transaction advisory lock,
//! a MySQL named lock. The statements are idempotent as well.

use sqlx::AssertSqlSafe;

use super::{Dialect, Pool, Store, StoreError};
use crate::audit::now_ms;

/// The schema version this NOVAS writes.
pub(crate) const LATEST: i64 = 5;

/// Advisory-lock key for PostgreSQL ("NOVAS" and a 1).
const PG_LOCK_KEY: i64 = 0x4e4f_5641_5300_0001;
/// Named lock for MySQL/MariaDB.
const MYSQL_LOCK: &str = "novas_schema";
/// Seconds MySQL waits for another process's migration.
const MYSQL_LOCK_WAIT_S: i64 = 60;

/// Applies the migrations `conn` (an executor for one connection or
/// transaction) still lacks.
macro_rules! apply {
    ($conn:expr, $dialect:expr) => {{
        let d: Dialect = $dialect;
        sqlx::query(AssertSqlSafe(d.create_schema_version()))
            .execute(&mut *$conn)
            .await?;
        let current: Option<i64> = sqlx::query_scalar(AssertSqlSafe(d.current_version()))
            .fetch_one(&mut *$conn)
            .await?;
        let current = current.unwrap_or(0);
        if current > LATEST {
            tracing::warn!(
                store.version = current,
                novas.version = LATEST,
                "the store's schema is newer than this NOVAS; using it as is"
            );
        }
        for (i, statements) in d.migrations().iter().enumerate() {
            let version = i as i64 + 1;
            if version <= current {
                continue;
            }
            for s in statements {
                sqlx::query(AssertSqlSafe(s.clone()))
                    .execute(&mut *$conn)
                    .await?;
            }
            sqlx::query(AssertSqlSafe(d.record_version()))
                .bind(version)
                .bind(now_ms())
                .execute(&mut *$conn)
                .await?;
            tracing::info!(store.backend = d.name(), version, "store schema migrated");
        }
        Ok::<(), sqlx::Error>(())
    }};
}

pub(crate) async fn migrate(store: &Store) -> Result<(), StoreError> {
    let d = store.dialect;
    let result: Result<(), sqlx::Error> = match &store.pool {
        Pool::Sqlite(p) => {
            async {
                let mut tx = p.begin_with("BEGIN IMMEDIATE").await?;
                apply!(tx, d)?;
                tx.commit().await
            }
            .await
        }
        Pool::Postgres(p) => {
            async {
                let mut tx = p.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(PG_LOCK_KEY)
                    .execute(&mut *tx)
                    .await?;
                apply!(tx, d)?;
                tx.commit().await
            }
            .await
        }
        Pool::MySql(p) => {
            async {
                let mut conn = p.acquire().await?;
                let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
                    .bind(MYSQL_LOCK)
                    .bind(MYSQL_LOCK_WAIT_S)
                    .fetch_one(&mut *conn)
                    .await?;
                if got != Some(1) {
                    return Err(sqlx::Error::Protocol(format!(
                        "timed out waiting for lock {MYSQL_LOCK:?} held by another NOVAS migrating"
                    )));
                }
                let applied = apply!(conn, d);
                // Released on disconnect anyway; explicit so the pooled
                // connection does not keep it.
                let released = sqlx::query("SELECT RELEASE_LOCK(?)")
                    .bind(MYSQL_LOCK)
                    .execute(&mut *conn)
                    .await;
                applied.and(released.map(drop))
            }
            .await
        }
    };
    result.map_err(|e| StoreError::Schema {
        version: LATEST,
        msg: e.to_string(),
    })
}

/// The version recorded in the store.
#[cfg(test)]
pub(crate) async fn version(store: &Store) -> Result<i64, StoreError> {
    let rows = store
        .fetch(
            "schema version",
            &store.dialect.current_version(),
            &[],
            &[super::Col::Int],
        )
        .await?;
    Ok(rows.first().and_then(|r| super::int_at(r, 0)).unwrap_or(0))
}
