//! The shared policy document: every NOVAS on one store enforces the same
//! policies. Each change is a new numbered row (nothing is overwritten), so
//! nodes poll one cheap `MAX(version)` and an operator can see who changed
//! what, and when.

use sha2::{Digest, Sha256};

use super::{dialect::Col, int_at, text_at, SqlValue, Store, StoreError};
use crate::audit::now_ms;

/// One version of the policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDoc {
    pub version: i64,
    /// Hex SHA-256 of `document`: the same file imported twice is one version.
    pub sha256: String,
    /// The YAML text (empty in [`Store::policy_history`] rows).
    pub document: String,
    /// Where it came from, e.g. `NOVAS_POLICIES /etc/novas/policies.yaml`.
    pub source: String,
    /// The node or operator that stored it.
    pub created_by: String,
    pub created_at_ms: i64,
}

const DOC_COLS: [Col; 6] = [
    Col::Int,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Int,
];
/// Concurrent imports race for the next version number; the loser retries.
const INSERT_ATTEMPTS: usize = 5;

/// Hex SHA-256 of a document.
pub fn digest(document: &str) -> String {
    hex::encode(Sha256::digest(document.as_bytes()))
}

fn from_row(r: &[SqlValue]) -> PolicyDoc {
    PolicyDoc {
        version: int_at(r, 0).unwrap_or(0),
        sha256: text_at(r, 1).unwrap_or_default(),
        document: text_at(r, 2).unwrap_or_default(),
        source: text_at(r, 3).unwrap_or_default(),
        created_by: text_at(r, 4).unwrap_or_default(),
        created_at_ms: int_at(r, 5).unwrap_or(0),
    }
}

fn is_unique_violation(e: &StoreError) -> bool {
    matches!(e, StoreError::Query { cause: sqlx::Error::Database(db), .. } if db.is_unique_violation())
}

impl Store {
    /// The newest version number, `None` while no document was stored.
    pub async fn latest_policy_version(&self) -> Result<Option<i64>, StoreError> {
        let rows = self
            .fetch(
                "latest policy version",
                &self.dialect.latest_policy_version(),
                &[],
                &[Col::Int],
            )
            .await?;
        Ok(rows.first().and_then(|r| int_at(r, 0)))
    }

    pub async fn policy_doc(&self, version: i64) -> Result<Option<PolicyDoc>, StoreError> {
        let rows = self
            .fetch(
                "get policy document",
                &self.dialect.policy_doc(),
                &[SqlValue::Int(Some(version))],
                &DOC_COLS,
            )
            .await?;
        Ok(rows.first().map(|r| from_row(r)))
    }

    /// The newest document, if any.
    pub async fn current_policy_doc(&self) -> Result<Option<PolicyDoc>, StoreError> {
        match self.latest_policy_version().await? {
            Some(v) => self.policy_doc(v).await,
            None => Ok(None),
        }
    }

    /// The newest `limit` versions, newest first, without their text.
    pub async fn policy_history(&self, limit: i64) -> Result<Vec<PolicyDoc>, StoreError> {
        let rows = self
            .fetch(
                "policy history",
                &self.dialect.policy_history(),
                &[SqlValue::Int(Some(limit))],
                &DOC_COLS,
            )
            .await?;
        Ok(rows.iter().map(|r| from_row(r)).collect())
    }

    /// Stores `document` as the next version, unless it is already the
    /// current one. Returns the version in force and whether it is new.
    /// The caller validates the document first.
    pub async fn put_policy_doc(
        &self,
        document: &str,
        source: &str,
        created_by: &str,
    ) -> Result<(i64, bool), StoreError> {
        let sha = digest(document);
        let mut last_err = None;
        for _ in 0..INSERT_ATTEMPTS {
            let current = self.current_policy_doc().await?;
            if let Some(c) = &current {
                if c.sha256 == sha {
                    return Ok((c.version, false));
                }
            }
            let version = current.map_or(1, |c| c.version + 1);
            let args = [
                SqlValue::Int(Some(version)),
                SqlValue::Text(Some(sha.clone())),
                SqlValue::Text(Some(document.to_string())),
                SqlValue::Text(Some(source.to_string())),
                SqlValue::Text(Some(created_by.to_string())),
                SqlValue::Int(Some(now_ms())),
            ];
            match self
                .execute(
                    "store policy document",
                    &self.dialect.insert_policy_doc(),
                    &args,
                )
                .await
            {
                Ok(_) => return Ok((version, true)),
                Err(e) if is_unique_violation(&e) => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or(StoreError::Corrupt {
            table: "policy_docs",
            msg: "could not take a version number".into(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::store::test_util::sqlite_store;

    #[tokio::test]
    async fn versions_history_and_idempotent_import() {
        let (store, _dir) = sqlite_store().await;
        assert_eq!(store.latest_policy_version().await.expect("latest"), None);
        assert_eq!(store.current_policy_doc().await.expect("current"), None);

        let a = "policies: []\n";
        let b = "policies: [{name: p, users: [u], resources: [r]}]\n";
        assert_eq!(
            store
                .put_policy_doc(a, "file a", "node-1")
                .await
                .expect("put"),
            (1, true)
        );
        // The same text again is no new version.
        assert_eq!(
            store
                .put_policy_doc(a, "file a", "node-2")
                .await
                .expect("put"),
            (1, false)
        );
        assert_eq!(
            store
                .put_policy_doc(b, "cli", "root@host")
                .await
                .expect("put"),
            (2, true)
        );
        // Back to an older text is a new version: history is append-only.
        assert_eq!(
            store
                .put_policy_doc(a, "file a", "node-1")
                .await
                .expect("put"),
            (3, true)
        );
        let cur = store
            .current_policy_doc()
            .await
            .expect("current")
            .expect("some");
        assert_eq!((cur.version, cur.document.as_str()), (3, a));
        assert_eq!(cur.sha256, super::digest(a));
        let two = store.policy_doc(2).await.expect("get").expect("v2");
        assert_eq!(
            (two.document.as_str(), two.created_by.as_str()),
            (b, "root@host")
        );

        let h = store.policy_history(10).await.expect("history");
        let versions: Vec<i64> = h.iter().map(|d| d.version).collect();
        assert_eq!(versions, vec![3, 2, 1]);
        assert!(
            h.iter().all(|d| d.document.is_empty()),
            "history has no text"
        );
        assert_eq!(store.policy_history(1).await.expect("history").len(), 1);
    }

    #[tokio::test]
    async fn concurrent_imports_get_distinct_versions() {
        let (store, _dir) = sqlite_store().await;
        let docs: Vec<String> = (0..4).map(|i| format!("policies: []\n# {i}\n")).collect();
        let puts = docs.iter().map(|d| store.put_policy_doc(d, "t", "t"));
        let mut got: Vec<i64> = futures::future::join_all(puts)
            .await
            .into_iter()
            .map(|r| r.expect("put").0)
            .collect();
        got.sort();
        assert_eq!(got, vec![1, 2, 3, 4]);
    }
}
