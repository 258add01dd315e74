//! Password hashing for NOVAS users. The argon2 hash is the one that proves
//! a password; the protocol verifiers (SCRAM for PostgreSQL, the MySQL
//! native hash) exist because those handshakes cannot work from argon2.

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};

/// Longest password accepted anywhere; longer input is refused before any
/// hashing work.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Why a password cannot be set.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password is empty")]
    Empty,
    #[error("password is longer than {MAX_PASSWORD_LEN} bytes")]
    TooLong,
    #[error("hashing failed: {0}")]
    Hash(String),
}

/// An argon2id hash in PHC string form, with a fresh random salt.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    if password.is_empty() {
        return Err(PasswordError::Empty);
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(PasswordError::TooLong);
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches the stored PHC string. A malformed stored
/// hash never matches.
pub fn verify(stored: &str, password: &str) -> bool {
    if password.is_empty() || password.len() > MAX_PASSWORD_LEN {
        return false;
    }
    match PasswordHash::new(stored) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify(&h, "correct horse"));
        assert!(!verify(&h, "correct horsE"));
        assert!(!verify("not a hash", "correct horse"));
        assert_ne!(hash("correct horse").expect("hash"), h, "salted");
        assert!(matches!(hash(""), Err(PasswordError::Empty)));
        let long = "x".repeat(MAX_PASSWORD_LEN + 1);
        assert!(matches!(hash(&long), Err(PasswordError::TooLong)));
        assert!(!verify(&h, &long));
    }
}
