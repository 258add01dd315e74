//! SAC tables: users' registered SSH public keys, and the host key pinned
//! for each ssh resource on first use.

use super::{dialect::Col, int_at, text_at, SqlValue, Store, StoreError};

/// A public key a user may log in to NOVAS's SSH listener with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserKeyRecord {
    pub user: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The OpenSSH one-line form (`ssh-ed25519 AAAA… comment`).
    pub public_key: String,
    pub added_at_ms: i64,
}

/// The host key NOVAS trusts for an ssh resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKeyRecord {
    pub resource: String,
    /// The target it was first seen at (for display).
    pub target: String,
    pub fingerprint: String,
    pub public_key: String,
    pub first_seen_ms: i64,
}

const KEY_COLS: [Col; 4] = [Col::Text, Col::Text, Col::Text, Col::Int];
const HOST_COLS: [Col; 5] = [Col::Text, Col::Text, Col::Text, Col::Text, Col::Int];

fn text(s: &str) -> SqlValue {
    SqlValue::Text(Some(s.to_string()))
}

fn host_from_row(r: &[SqlValue]) -> HostKeyRecord {
    HostKeyRecord {
        resource: text_at(r, 0).unwrap_or_default(),
        target: text_at(r, 1).unwrap_or_default(),
        fingerprint: text_at(r, 2).unwrap_or_default(),
        public_key: text_at(r, 3).unwrap_or_default(),
        first_seen_ms: int_at(r, 4).unwrap_or(0),
    }
}

impl Store {
    /// Registers a key; fails (constraint) if the user already has it.
    pub async fn add_user_key(&self, k: &UserKeyRecord) -> Result<(), StoreError> {
        let args = [
            text(&k.user),
            text(&k.fingerprint),
            text(&k.public_key),
            SqlValue::Int(Some(k.added_at_ms)),
        ];
        self.execute("add user key", &self.dialect.insert_user_key(), &args)
            .await
            .map(drop)
    }

    pub async fn user_keys(&self, user: &str) -> Result<Vec<UserKeyRecord>, StoreError> {
        let rows = self
            .fetch(
                "user keys",
                &self.dialect.user_keys(),
                &[text(user)],
                &KEY_COLS,
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| UserKeyRecord {
                user: text_at(r, 0).unwrap_or_default(),
                fingerprint: text_at(r, 1).unwrap_or_default(),
                public_key: text_at(r, 2).unwrap_or_default(),
                added_at_ms: int_at(r, 3).unwrap_or(0),
            })
            .collect())
    }

    /// Removes a key; `false` if the user had no such key.
    pub async fn remove_user_key(&self, user: &str, fingerprint: &str) -> Result<bool, StoreError> {
        self.execute(
            "remove user key",
            &self.dialect.delete_user_key(),
            &[text(user), text(fingerprint)],
        )
        .await
        .map(|n| n > 0)
    }

    /// Pins a host key; fails (constraint) if one is pinned already.
    pub async fn pin_host_key(&self, k: &HostKeyRecord) -> Result<(), StoreError> {
        let args = [
            text(&k.resource),
            text(&k.target),
            text(&k.fingerprint),
            text(&k.public_key),
            SqlValue::Int(Some(k.first_seen_ms)),
        ];
        self.execute("pin host key", &self.dialect.insert_host_key(), &args)
            .await
            .map(drop)
    }

    pub async fn host_key(&self, resource: &str) -> Result<Option<HostKeyRecord>, StoreError> {
        let rows = self
            .fetch(
                "get host key",
                &self.dialect.get_host_key(),
                &[text(resource)],
                &HOST_COLS,
            )
            .await?;
        Ok(rows.first().map(|r| host_from_row(r)))
    }

    pub async fn host_keys(&self) -> Result<Vec<HostKeyRecord>, StoreError> {
        let rows = self
            .fetch(
                "list host keys",
                &self.dialect.list_host_keys(),
                &[],
                &HOST_COLS,
            )
            .await?;
        Ok(rows.iter().map(|r| host_from_row(r)).collect())
    }

    /// Forgets a pinned key (the next connection pins anew); `false` if none.
    pub async fn forget_host_key(&self, resource: &str) -> Result<bool, StoreError> {
        self.execute(
            "forget host key",
            &self.dialect.delete_host_key(),
            &[text(resource)],
        )
        .await
        .map(|n| n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_util::sqlite_store;

    #[tokio::test]
    async fn keys_round_trip() {
        let (store, _dir) = sqlite_store().await;
        let k = UserKeyRecord {
            user: "alice".into(),
            fingerprint: "SHA256:abc".into(),
            public_key: "ssh-ed25519 AAAA alice@x".into(),
            added_at_ms: 5,
        };
        store.add_user_key(&k).await.expect("add");
        assert!(store.add_user_key(&k).await.is_err(), "duplicate");
        assert_eq!(store.user_keys("alice").await.expect("list"), vec![k]);
        assert!(store.user_keys("bob").await.expect("list").is_empty());
        assert!(store
            .remove_user_key("alice", "SHA256:abc")
            .await
            .expect("rm"));
        assert!(!store
            .remove_user_key("alice", "SHA256:abc")
            .await
            .expect("rm"));

        let h = HostKeyRecord {
            resource: "web-1".into(),
            target: "10.0.0.1:22".into(),
            fingerprint: "SHA256:host".into(),
            public_key: "ssh-ed25519 BBBB".into(),
            first_seen_ms: 7,
        };
        assert_eq!(store.host_key("web-1").await.expect("get"), None);
        store.pin_host_key(&h).await.expect("pin");
        assert!(store.pin_host_key(&h).await.is_err(), "already pinned");
        assert_eq!(store.host_key("web-1").await.expect("get"), Some(h.clone()));
        assert_eq!(store.host_keys().await.expect("list"), vec![h]);
        assert!(store.forget_host_key("web-1").await.expect("forget"));
        assert_eq!(store.host_key("web-1").await.expect("get"), None);
    }
}
