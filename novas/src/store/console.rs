//! The console's login sessions. Only a SHA-256 of the session id is
//! stored: whoever reads the table cannot use the rows as cookies.

use super::{dialect::Col, int_at, text_at, SqlValue, Store, StoreError};

/// One console login session.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsoleSessionRecord {
    /// Hex SHA-256 of the session id (the cookie value).
    pub id_hash: String,
    pub user: String,
    /// The per-session CSRF token.
    pub csrf_token: String,
    pub created_ms: i64,
    pub last_seen_ms: i64,
}

impl std::fmt::Debug for ConsoleSessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSessionRecord")
            .field("user", &self.user)
            .field("created_ms", &self.created_ms)
            .field("last_seen_ms", &self.last_seen_ms)
            .finish_non_exhaustive()
    }
}

const COLS: [Col; 5] = [Col::Text, Col::Text, Col::Text, Col::Int, Col::Int];

fn text(s: &str) -> SqlValue {
    SqlValue::Text(Some(s.to_string()))
}

impl Store {
    pub async fn insert_console_session(&self, r: &ConsoleSessionRecord) -> Result<(), StoreError> {
        let args = [
            text(&r.id_hash),
            text(&r.user),
            text(&r.csrf_token),
            SqlValue::Int(Some(r.created_ms)),
            SqlValue::Int(Some(r.last_seen_ms)),
        ];
        self.execute(
            "insert console session",
            &self.dialect.insert_console_session(),
            &args,
        )
        .await
        .map(drop)
    }

    pub async fn console_session(
        &self,
        id_hash: &str,
    ) -> Result<Option<ConsoleSessionRecord>, StoreError> {
        let rows = self
            .fetch(
                "get console session",
                &self.dialect.get_console_session(),
                &[text(id_hash)],
                &COLS,
            )
            .await?;
        Ok(rows.first().map(|r| ConsoleSessionRecord {
            id_hash: text_at(r, 0).unwrap_or_default(),
            user: text_at(r, 1).unwrap_or_default(),
            csrf_token: text_at(r, 2).unwrap_or_default(),
            created_ms: int_at(r, 3).unwrap_or(0),
            last_seen_ms: int_at(r, 4).unwrap_or(0),
        }))
    }

    pub async fn touch_console_session(
        &self,
        id_hash: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.execute(
            "touch console session",
            &self.dialect.touch_console_session(),
            &[SqlValue::Int(Some(now_ms)), text(id_hash)],
        )
        .await
        .map(drop)
    }

    pub async fn delete_console_session(&self, id_hash: &str) -> Result<(), StoreError> {
        self.execute(
            "delete console session",
            &self.dialect.delete_console_session(),
            &[text(id_hash)],
        )
        .await
        .map(drop)
    }

    /// Removes sessions created before `created_before` or idle since
    /// before `seen_before`; returns how many.
    pub async fn delete_stale_console_sessions(
        &self,
        created_before: i64,
        seen_before: i64,
    ) -> Result<u64, StoreError> {
        self.execute(
            "delete stale console sessions",
            &self.dialect.delete_stale_console_sessions(),
            &[
                SqlValue::Int(Some(created_before)),
                SqlValue::Int(Some(seen_before)),
            ],
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_util::sqlite_store;

    #[tokio::test]
    async fn console_sessions_crud() {
        let (store, _dir) = sqlite_store().await;
        let r = ConsoleSessionRecord {
            id_hash: "h1".into(),
            user: "root".into(),
            csrf_token: "c1".into(),
            created_ms: 100,
            last_seen_ms: 100,
        };
        store.insert_console_session(&r).await.expect("insert");
        assert!(
            store.insert_console_session(&r).await.is_err(),
            "ids are unique"
        );
        assert_eq!(
            store.console_session("h1").await.expect("get"),
            Some(r.clone())
        );
        store.touch_console_session("h1", 500).await.expect("touch");
        let got = store
            .console_session("h1")
            .await
            .expect("get")
            .expect("row");
        assert_eq!(got.last_seen_ms, 500);
        assert!(!format!("{got:?}").contains("c1"), "Debug hides the token");
        let mut old = r.clone();
        old.id_hash = "h2".into();
        old.last_seen_ms = 50;
        store.insert_console_session(&old).await.expect("insert");
        assert_eq!(
            store
                .delete_stale_console_sessions(0, 60)
                .await
                .expect("gc"),
            1
        );
        assert!(store.console_session("h2").await.expect("get").is_none());
        store.delete_console_session("h1").await.expect("delete");
        assert!(store.console_session("h1").await.expect("get").is_none());
    }
}
