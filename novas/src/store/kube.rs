//! KAC table: bearer tokens `novas kubeconfig` issues, kept as the SHA-256
//! of the token (tokens are 256 random bits, so a fast hash is enough: there
//! is nothing to brute-force), bound to a user and a cluster, with expiry.

use super::{dialect::Col, int_at, text_at, SqlValue, Store, StoreError};

/// One issued token, by its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeTokenRecord {
    /// Lower-case hex SHA-256 of the token.
    pub token_sha256: String,
    pub user: String,
    /// The kubernetes resource (cluster) it was issued for.
    pub cluster: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

const COLS: [Col; 5] = [Col::Text, Col::Text, Col::Text, Col::Int, Col::Int];

fn text(s: &str) -> SqlValue {
    SqlValue::Text(Some(s.to_string()))
}

impl Store {
    pub async fn add_kube_token(&self, t: &KubeTokenRecord) -> Result<(), StoreError> {
        let args = [
            text(&t.token_sha256),
            text(&t.user),
            text(&t.cluster),
            SqlValue::Int(Some(t.created_at_ms)),
            SqlValue::Int(Some(t.expires_at_ms)),
        ];
        self.execute("add kube token", &self.dialect.insert_kube_token(), &args)
            .await
            .map(drop)
    }

    pub async fn kube_token(&self, sha256: &str) -> Result<Option<KubeTokenRecord>, StoreError> {
        let rows = self
            .fetch(
                "get kube token",
                &self.dialect.get_kube_token(),
                &[text(sha256)],
                &COLS,
            )
            .await?;
        Ok(rows.first().map(|r| KubeTokenRecord {
            token_sha256: text_at(r, 0).unwrap_or_default(),
            user: text_at(r, 1).unwrap_or_default(),
            cluster: text_at(r, 2).unwrap_or_default(),
            created_at_ms: int_at(r, 3).unwrap_or(0),
            expires_at_ms: int_at(r, 4).unwrap_or(0),
        }))
    }

    /// Revokes every token of a user; the number removed.
    pub async fn revoke_kube_tokens(&self, user: &str) -> Result<u64, StoreError> {
        self.execute(
            "revoke kube tokens",
            &self.dialect.delete_user_kube_tokens(),
            &[text(user)],
        )
        .await
    }

    /// Forgets tokens that expired before `now_ms`; the number removed.
    pub async fn purge_expired_kube_tokens(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.execute(
            "purge expired kube tokens",
            &self.dialect.delete_expired_kube_tokens(),
            &[SqlValue::Int(Some(now_ms))],
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_util::sqlite_store;

    #[tokio::test]
    async fn tokens_round_trip_and_revoke() {
        let (store, _dir) = sqlite_store().await;
        let t = KubeTokenRecord {
            token_sha256: "ab".repeat(32),
            user: "alice".into(),
            cluster: "prod".into(),
            created_at_ms: 1,
            expires_at_ms: 1_000,
        };
        store.add_kube_token(&t).await.expect("add");
        assert!(store.add_kube_token(&t).await.is_err(), "same hash twice");
        assert_eq!(
            store.kube_token(&t.token_sha256).await.expect("get"),
            Some(t.clone())
        );
        assert_eq!(store.kube_token("cd").await.expect("get"), None);
        assert_eq!(
            store.purge_expired_kube_tokens(999).await.expect("purge"),
            0
        );
        assert_eq!(store.revoke_kube_tokens("alice").await.expect("revoke"), 1);
        assert_eq!(store.kube_token(&t.token_sha256).await.expect("get"), None);
    }

    #[tokio::test]
    async fn kube_request_events_round_trip() {
        use crate::audit::{AuditEvent, AuditQuery, Decision, EventKind, KubeRequest};
        let (store, _dir) = sqlite_store().await;
        let mut ev = AuditEvent::new(EventKind::KubeRequest(Box::new(KubeRequest {
            client_addr: "127.0.0.1:5000".into(),
            text: "GET /api/v1/namespaces/default/pods?watch=true".into(),
            verb: "watch".into(),
            api_group: String::new(),
            resource: "pods".into(),
            subresource: String::new(),
            namespace: "default".into(),
            name: String::new(),
            decision: Decision::Allow,
            policy: "dev".into(),
            kube_user: "nova-dev".into(),
            kube_groups: vec!["nova:dev".into()],
            status: 200,
            bytes_up: 10,
            bytes_down: 20,
            duration_ms: 30,
            agent: Some("a".into()),
            error: None,
            recording: Some("kube-1".into()),
        })))
        .user("alice")
        .resource("prod", "kubernetes");
        ev.node = "n".into();
        store
            .insert_events(std::slice::from_ref(&ev))
            .await
            .expect("insert");
        let got = store
            .query_events(&AuditQuery::default())
            .await
            .expect("query");
        assert_eq!(got, vec![ev]);
    }
}
