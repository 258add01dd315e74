//! The users table: NOVAS identities and their password hashes.

use std::fmt;

use super::{
    dialect::{SqlValue, USER_COLUMN_TYPES},
    int_at, text_at, Store, StoreError,
};

/// A stored NOVAS user. The hashes are computed elsewhere and kept as opaque
/// text; `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub name: String,
    pub roles: Vec<String>,
    pub password_argon2: String,
    pub scram_sha256: String,
    pub mysql_native: String,
    pub disabled: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |h: &str| {
            if h.is_empty() {
                "<empty>"
            } else {
                "<redacted>"
            }
        };
        f.debug_struct("UserRecord")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .field("password_argon2", &hidden(&self.password_argon2))
            .field("scram_sha256", &hidden(&self.scram_sha256))
            .field("mysql_native", &hidden(&self.mysql_native))
            .field("disabled", &self.disabled)
            .field("created_at_ms", &self.created_at_ms)
            .field("updated_at_ms", &self.updated_at_ms)
            .finish()
    }
}

impl UserRecord {
    fn to_args(&self) -> Vec<SqlValue> {
        let text = |s: &str| SqlValue::Text(Some(s.to_string()));
        vec![
            text(&self.name),
            // Vec<String> always serialises.
            text(&serde_json::to_string(&self.roles).unwrap_or_else(|_| "[]".into())),
            text(&self.password_argon2),
            text(&self.scram_sha256),
            text(&self.mysql_native),
            SqlValue::Int(Some(i64::from(self.disabled))),
            SqlValue::Int(Some(self.created_at_ms)),
            SqlValue::Int(Some(self.updated_at_ms)),
        ]
    }

    fn from_row(row: &[SqlValue]) -> Result<Self, StoreError> {
        let corrupt = |msg: String| StoreError::Corrupt {
            table: "users",
            msg,
        };
        let name = text_at(row, 0).ok_or_else(|| corrupt("NULL name".into()))?;
        let roles_json = text_at(row, 1).unwrap_or_default();
        let roles = serde_json::from_str(&roles_json)
            .map_err(|e| corrupt(format!("user {name:?}: roles are not a JSON list: {e}")))?;
        Ok(Self {
            roles,
            password_argon2: text_at(row, 2).unwrap_or_default(),
            scram_sha256: text_at(row, 3).unwrap_or_default(),
            mysql_native: text_at(row, 4).unwrap_or_default(),
            disabled: int_at(row, 5).unwrap_or(0) != 0,
            created_at_ms: int_at(row, 6).unwrap_or(0),
            updated_at_ms: int_at(row, 7).unwrap_or(0),
            name,
        })
    }
}

impl Store {
    /// Inserts or replaces the user named `user.name`; an existing user
    /// keeps its `created_at_ms`.
    pub async fn upsert_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        self.execute("upsert user", &self.dialect.upsert_user(), &user.to_args())
            .await
            .map(drop)
    }

    pub async fn get_user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let rows = self
            .fetch(
                "get user",
                &self.dialect.get_user(),
                &[SqlValue::Text(Some(name.to_string()))],
                &USER_COLUMN_TYPES,
            )
            .await?;
        rows.first().map(|r| UserRecord::from_row(r)).transpose()
    }

    /// Every user, by name.
    pub async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let rows = self
            .fetch(
                "list users",
                &self.dialect.list_users(),
                &[],
                &USER_COLUMN_TYPES,
            )
            .await?;
        rows.iter().map(|r| UserRecord::from_row(r)).collect()
    }

    /// Removes the user; `false` if there was none.
    pub async fn delete_user(&self, name: &str) -> Result<bool, StoreError> {
        self.execute(
            "delete user",
            &self.dialect.delete_user(),
            &[SqlValue::Text(Some(name.to_string()))],
        )
        .await
        .map(|n| n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_util::sqlite_store;

    pub(crate) fn alice(t: i64) -> UserRecord {
        UserRecord {
            name: "alice".into(),
            roles: vec!["dba".into(), "dev".into()],
            password_argon2: "$argon2id$v=19$secret".into(),
            scram_sha256: "SCRAM-SHA-256$4096:secret".into(),
            mysql_native: "*SECRETHASH".into(),
            disabled: false,
            created_at_ms: t,
            updated_at_ms: t,
        }
    }

    #[test]
    fn debug_redacts_hashes() {
        let s = format!("{:?}", alice(1));
        assert!(s.contains("alice") && s.contains("<redacted>"), "{s}");
        assert!(!s.to_lowercase().contains("secret"), "{s}");
    }

    #[tokio::test]
    async fn users_crud() {
        let (store, _dir) = sqlite_store().await;
        assert_eq!(store.get_user("alice").await.expect("get"), None);
        store.upsert_user(&alice(10)).await.expect("insert");
        let mut bob = alice(20);
        bob.name = "bob".into();
        bob.roles = vec![];
        store.upsert_user(&bob).await.expect("insert bob");
        assert_eq!(store.get_user("alice").await.expect("get"), Some(alice(10)));

        let mut changed = alice(99);
        changed.disabled = true;
        changed.roles = vec!["auditor".into()];
        store.upsert_user(&changed).await.expect("update");
        let got = store.get_user("alice").await.expect("get").expect("exists");
        assert!(got.disabled);
        assert_eq!(got.roles, vec!["auditor".to_string()]);
        assert_eq!((got.created_at_ms, got.updated_at_ms), (10, 99));

        let names: Vec<String> = store
            .list_users()
            .await
            .expect("list")
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, ["alice", "bob"]);
        assert!(store.delete_user("alice").await.expect("delete"));
        assert!(!store.delete_user("alice").await.expect("delete again"));
        assert_eq!(store.list_users().await.expect("list").len(), 1);
        // Names compare exactly.
        assert_eq!(store.get_user("BOB").await.expect("get"), None);
    }
}
