//! KAC authentication: NOVAS-issued bearer tokens. `novas kubeconfig`
//! creates one (256 random bits, shown once, stored as its SHA-256) bound to
//! a user and a cluster, with an expiry; every request's token is looked up
//! by its hash and checked here. Tokens never appear in logs or audit.
//!
//! Client certificates are not accepted (yet): a bearer token works with
//! every kubectl and is revocable in the store.

use http::HeaderMap;
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::store::KubeTokenRecord;

/// Prefix of NOVAS tokens: recognisable in a leaked-secret scan.
pub const TOKEN_PREFIX: &str = "novak_";

/// Why a request is not authenticated. The message is what kubectl shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("NOVAS: no bearer token; use the kubeconfig `novas kubeconfig` prints")]
    Missing,
    #[error("NOVAS: the bearer token is not one NOVAS issued (unknown or revoked); get a new kubeconfig with `novas kubeconfig`")]
    Unknown,
    #[error("NOVAS: the token expired at {at}; get a new kubeconfig with `novas kubeconfig`")]
    Expired { at: String },
    #[error("NOVAS: the token was issued for cluster {issued:?}, not {asked:?}")]
    WrongCluster { issued: String, asked: String },
    #[error("NOVAS: user {0:?} is disabled")]
    Disabled(String),
    #[error("NOVAS: the user store is unavailable; try again later")]
    Store,
}

impl AuthError {
    /// A short reason for the audit record (never the token).
    pub fn audit_reason(&self) -> &'static str {
        match self {
            Self::Missing => "no bearer token",
            Self::Unknown => "unknown token",
            Self::Expired { .. } => "expired token",
            Self::WrongCluster { .. } => "token for another cluster",
            Self::Disabled(_) => "user disabled",
            Self::Store => "store unavailable",
        }
    }
}

/// A fresh token (shown to the operator once) and its stored hash.
pub fn new_token() -> (String, String) {
    let bytes: [u8; 32] = rand::rng().random();
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
    let hash = hash(&token);
    (token, hash)
}

/// The stored form of a token.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The bearer token of a request, if it has exactly one well-formed one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let v = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let v = v.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Checks a stored token against the cluster asked for at `now_ms`.
pub fn check(rec: &KubeTokenRecord, cluster: &str, now_ms: i64) -> Result<(), AuthError> {
    if now_ms >= rec.expires_at_ms {
        return Err(AuthError::Expired {
            at: humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH
                    + std::time::Duration::from_millis(rec.expires_at_ms.max(0) as u64),
            )
            .to_string(),
        });
    }
    if rec.cluster != cluster {
        return Err(AuthError::WrongCluster {
            issued: rec.cluster.clone(),
            asked: cluster.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn rec(expires: i64) -> KubeTokenRecord {
        KubeTokenRecord {
            token_sha256: "x".into(),
            user: "alice".into(),
            cluster: "prod".into(),
            created_at_ms: 0,
            expires_at_ms: expires,
        }
    }

    #[test]
    fn expiry_and_cluster_binding() {
        assert_eq!(check(&rec(1_000), "prod", 999), Ok(()));
        let e = check(&rec(1_000), "prod", 1_000).expect_err("expired at the instant");
        assert!(matches!(e, AuthError::Expired { .. }), "{e}");
        assert!(e.to_string().contains("1970-01-01T00:00:01Z"), "{e}");
        let e = check(&rec(1_000), "dev", 5).expect_err("other cluster");
        assert!(e.to_string().contains("\"prod\""), "{e}");
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (t1, h1) = new_token();
        let (t2, h2) = new_token();
        assert_ne!(t1, t2);
        assert!(t1.starts_with(TOKEN_PREFIX) && t1.len() == TOKEN_PREFIX.len() + 64);
        assert_eq!(h1, hash(&t1));
        assert_ne!(h1, h2);
        assert!(!h1.contains(&t1[TOKEN_PREFIX.len()..]));
    }

    #[test]
    fn bearer_header_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert("authorization", HeaderValue::from_static("Bearer abc"));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert("authorization", HeaderValue::from_static("bearer  abc "));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert("authorization", HeaderValue::from_static("Basic YTpi"));
        assert_eq!(bearer(&h), None);
        h.insert("authorization", HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
        h.insert("authorization", HeaderValue::from_static("Bearer a"));
        h.append("authorization", HeaderValue::from_static("Bearer b"));
        assert_eq!(bearer(&h), None, "two tokens: neither is trusted");
    }

    #[test]
    fn messages_never_carry_the_token() {
        for e in [AuthError::Missing, AuthError::Unknown] {
            assert!(e.to_string().contains("novas kubeconfig"));
        }
    }
}
