//! Secrets that never print, and a constant-time comparison for tokens.

use std::fmt;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// A string secret (enrollment token, password). `Debug` and `Display`
/// redact it, so it cannot leak through a log line or an error message.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Compares two tokens in time that depends only on their lengths, never on
/// where they first differ.
pub fn token_eq(a: &Secret, b: &Secret) -> bool {
    a.0.as_bytes().ct_eq(b.0.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_and_redact() {
        let a = Secret::new("abc".into());
        assert!(token_eq(&a, &Secret::new("abc".into())));
        assert!(!token_eq(&a, &Secret::new("abd".into())));
        assert!(!token_eq(&a, &Secret::new("abcd".into())));
        assert!(!token_eq(&a, &Secret::new(String::new())));
        assert_eq!(format!("{a} {a:?}"), "*** Secret(***)");
    }
}
