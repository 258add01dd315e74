//! `caching_sha2_password`'s server-side cache, as in MySQL: a full
//! authentication (the password over TLS, checked against the argon2
//! hash) leaves `SHA256(SHA256(password))` behind, and later logins of the
//! same user prove the password against it without sending it (the fast
//! path). Entries live in memory only and are tied to the user's current
//! password hash: changing the password voids them.

use std::{collections::HashMap, sync::Mutex};

use sha2::{Digest, Sha256};

use super::auth;
use crate::store::UserRecord;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// SHA-256 of the argon2 hash the entry was made under.
    stamp: [u8; 32],
    verifier: [u8; 32],
}

/// Name → fast-path verifier. Only a proven password adds an entry, so
/// its size is bounded by the number of users.
#[derive(Debug, Default)]
pub struct Sha2Cache {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Sha2Cache {
    /// The verifier for `u`, if one was left under its current password.
    pub fn get(&self, u: &UserRecord) -> Option<[u8; 32]> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let e = entries.get(&u.name)?;
        (e.stamp == stamp(u)).then_some(e.verifier)
    }

    /// After `password` was checked against `u`'s stored hash.
    pub fn put(&self, u: &UserRecord, password: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(
            u.name.clone(),
            Entry {
                stamp: stamp(u),
                verifier: auth::sha2_verifier(password),
            },
        );
    }
}

fn stamp(u: &UserRecord) -> [u8; 32] {
    Sha256::digest(u.password_argon2.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(hash: &str) -> UserRecord {
        UserRecord {
            name: "alice".into(),
            roles: vec![],
            password_argon2: hash.into(),
            scram_sha256: String::new(),
            mysql_native: String::new(),
            disabled: false,
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    #[test]
    fn entries_follow_the_password_hash() {
        let cache = Sha2Cache::default();
        let u = user("$argon2id$one");
        assert_eq!(cache.get(&u), None);
        cache.put(&u, "pw");
        assert_eq!(cache.get(&u), Some(auth::sha2_verifier("pw")));
        // The password changed: the old entry no longer counts.
        assert_eq!(cache.get(&user("$argon2id$two")), None);
    }
}
