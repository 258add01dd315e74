//! NOVAS users as the front ends see them: look-ups in the store, password
//! checks off the async threads, and answers that do not tell an unknown
//! user from a wrong password.

use std::sync::Arc;

use rand::Rng;
use sha2::{Digest, Sha256};

use crate::{
    access::{password, Identity},
    store::{Store, UserRecord},
};

/// Why a login fails. The message is what the user reads.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoginError {
    /// Unknown user or wrong password: deliberately the same answer.
    #[error("password authentication failed for user {0:?}")]
    Failed(String),
    /// Right password, but the account is disabled.
    #[error("user {0:?} is disabled")]
    Disabled(String),
    /// The store cannot be read: nobody logs in (fail closed).
    #[error("the user store is unavailable; try again later")]
    Store(String),
}

impl LoginError {
    /// A short reason for the audit record.
    pub fn audit_reason(&self) -> String {
        match self {
            Self::Failed(_) => "bad password or unknown user".into(),
            Self::Disabled(_) => "user disabled".into(),
            Self::Store(e) => format!("store unavailable: {e}"),
        }
    }
}

/// A user found for a login, or a stand-in that can never succeed (so that
/// the protocol runs the same for unknown users).
pub enum Candidate {
    Known(Box<UserRecord>),
    Unknown { name: String },
}

impl Candidate {
    pub fn name(&self) -> &str {
        match self {
            Self::Known(u) => &u.name,
            Self::Unknown { name } => name,
        }
    }
}

#[derive(Clone)]
pub struct Users {
    store: Store,
    /// Process-wide secret for stand-in salts: stable per name within a
    /// process, so repeated probes of an unknown name look like a real user.
    decoy_key: Arc<[u8; 32]>,
}

impl Users {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            decoy_key: Arc::new(rand::rng().random()),
        }
    }

    pub async fn find(&self, name: &str) -> Result<Candidate, LoginError> {
        match self.store.get_user(name).await {
            Ok(Some(u)) => Ok(Candidate::Known(Box::new(u))),
            Ok(None) => Ok(Candidate::Unknown { name: name.into() }),
            Err(e) => {
                tracing::warn!(error = %e, "user store unavailable");
                Err(LoginError::Store(e.to_string()))
            }
        }
    }

    /// 16 bytes that stand in for a salt of an unknown user.
    pub fn decoy_salt(&self, name: &str) -> [u8; 16] {
        let mut h = Sha256::new();
        h.update(self.decoy_key.as_slice());
        h.update(name.as_bytes());
        let d = h.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&d[..16]);
        out
    }

    /// Checks a cleartext password against the argon2 hash.
    pub async fn check_password(&self, name: &str, pw: &str) -> Result<Identity, LoginError> {
        let cand = self.find(name).await?;
        let hash = match &cand {
            Candidate::Known(u) => Some(u.password_argon2.clone()),
            Candidate::Unknown { .. } => None,
        };
        let pw = pw.to_string();
        // Unknown users cost the same time as known ones.
        let ok = tokio::task::spawn_blocking(move || {
            password::verify(&hash.unwrap_or_else(decoy_hash), &pw)
        })
        .await
        .unwrap_or(false);
        match cand {
            Candidate::Known(u) if ok => admit(&u),
            _ => Err(LoginError::Failed(name.into())),
        }
    }
}

/// After a successful proof: the identity, unless the user is disabled.
pub fn admit(u: &UserRecord) -> Result<Identity, LoginError> {
    if u.disabled {
        return Err(LoginError::Disabled(u.name.clone()));
    }
    Ok(Identity {
        user: u.name.clone(),
        roles: u.roles.clone(),
    })
}

/// An argon2 hash of a random string nobody knows: verifying against it
/// costs what a real verification costs.
fn decoy_hash() -> String {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY
        .get_or_init(|| {
            let secret = hex::encode(rand::rng().random::<[u8; 16]>());
            password::hash(&secret).unwrap_or_default()
        })
        .clone()
}
