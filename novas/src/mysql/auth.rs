//! The two password plugins, as pure functions: scrambles (client side),
//! stored verifiers and their checks (server side), and nonces.
//!
//! - `mysql_native_password`: the client sends
//!   `SHA1(pw) XOR SHA1(nonce + SHA1(SHA1(pw)))`; the server keeps
//!   `SHA1(SHA1(pw))`, recovers `SHA1(pw)` by XOR and hashes it again.
//! - `caching_sha2_password`: the fast path sends
//!   `SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + nonce)` and the server
//!   checks it against `SHA256(SHA256(pw))` from an in-memory cache filled
//!   by an earlier full authentication (the cleartext password once, over
//!   TLS). [`fast_auth`] has the AuthMoreData codes.
//!
//! Comparisons are constant-time: how far a guess matched must not show
//! in the response time.

use rand::RngCore;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Nonce length of both plugins.
pub const SCRAMBLE_LEN: usize = 20;

/// An authentication plugin NOVAS speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthPlugin {
    /// `mysql_native_password`
    Native,
    /// `caching_sha2_password`
    CachingSha2,
}

impl AuthPlugin {
    pub fn name(self) -> &'static str {
        match self {
            Self::Native => "mysql_native_password",
            Self::CachingSha2 => "caching_sha2_password",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "mysql_native_password" => Some(Self::Native),
            "caching_sha2_password" => Some(Self::CachingSha2),
            _ => None,
        }
    }

    /// The plugin's first answer for `password` and `nonce` (empty for an
    /// empty password, as the clients do).
    pub fn scramble(self, password: &[u8], nonce: &[u8]) -> Vec<u8> {
        if password.is_empty() {
            return Vec::new();
        }
        match self {
            Self::Native => native_scramble(password, nonce).to_vec(),
            Self::CachingSha2 => sha2_scramble(password, nonce).to_vec(),
        }
    }
}

/// AuthMoreData codes of `caching_sha2_password`.
pub mod fast_auth {
    /// Client → server: "send me your RSA public key" (not supported).
    pub const REQUEST_PUBLIC_KEY: u8 = 0x02;
    /// Server → client: the fast path succeeded; an OK follows.
    pub const FAST_AUTH_OK: u8 = 0x03;
    /// Server → client: send the password in full.
    pub const PERFORM_FULL_AUTH: u8 = 0x04;
}

/// A fresh nonce from the thread-local CSPRNG (seeded from the OS). Like
/// the servers, bytes are kept to 7 bits and avoid NUL and `$`, because
/// clients read the nonce from NUL-terminated fields.
pub fn new_scramble() -> [u8; SCRAMBLE_LEN] {
    let mut s = [0u8; SCRAMBLE_LEN];
    rand::rng().fill_bytes(&mut s);
    for b in &mut s {
        *b &= 0x7F;
        if *b == 0 || *b == b'$' {
            *b += 1;
        }
    }
    s
}

fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn xor<const N: usize>(a: &[u8; N], b: &[u8; N]) -> [u8; N] {
    let mut out = [0u8; N];
    for i in 0..N {
        out[i] = a[i] ^ b[i];
    }
    out
}

/// `SHA1(pw) XOR SHA1(nonce + SHA1(SHA1(pw)))`.
pub fn native_scramble(password: &[u8], nonce: &[u8]) -> [u8; 20] {
    let stage1 = sha1(&[password]);
    let stage2 = sha1(&[&stage1]);
    xor(&stage1, &sha1(&[nonce, &stage2]))
}

/// The value to store for a `mysql_native_password` user:
/// `SHA1(SHA1(password))` as 40 lower-case hex digits (MySQL's
/// `mysql.user` form is the same digits upper-case behind a `*`;
/// [`native_verify`] accepts both).
pub fn native_verifier(password: &str) -> String {
    hex::encode(sha1(&[&sha1(&[password.as_bytes()])]))
}

fn parse_native_verifier(stored: &str) -> Option<[u8; 20]> {
    let digits = stored.strip_prefix('*').unwrap_or(stored);
    let mut out = [0u8; 20];
    hex::decode_to_slice(digits, &mut out).ok()?;
    Some(out)
}

/// Checks a client's `mysql_native_password` answer against the stored
/// verifier, in constant time. A malformed verifier or an answer of the
/// wrong length (an empty password) never matches.
pub fn native_verify(stored: &str, nonce: &[u8], response: &[u8]) -> bool {
    let Some(stage2) = parse_native_verifier(stored) else {
        return false;
    };
    let Ok(response) = <[u8; 20]>::try_from(response) else {
        return false;
    };
    let stage1 = xor(&response, &sha1(&[nonce, &stage2]));
    sha1(&[&stage1]).ct_eq(&stage2).into()
}

/// `SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + nonce)`.
pub fn sha2_scramble(password: &[u8], nonce: &[u8]) -> [u8; 32] {
    let stage1 = sha256(&[password]);
    let stage2 = sha256(&[&stage1]);
    xor(&stage1, &sha256(&[&stage2, nonce]))
}

/// The `caching_sha2_password` cache entry for a password:
/// `SHA256(SHA256(password))`. The glue stores it in memory after a
/// successful full authentication and drops it when the password changes.
pub fn sha2_verifier(password: &str) -> [u8; 32] {
    sha256(&[&sha256(&[password.as_bytes()])])
}

/// Checks a fast-path `caching_sha2_password` answer against a cache
/// entry, in constant time.
pub fn sha2_verify(cached: &[u8; 32], nonce: &[u8], response: &[u8]) -> bool {
    let Ok(response) = <[u8; 32]>::try_from(response) else {
        return false;
    };
    let stage1 = xor(&response, &sha256(&[cached, nonce]));
    sha256(&[&stage1]).ct_eq(cached).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &[u8; 20] = b"0123456789abcdefghij";

    /// The scramble rebuilt step by step from the definition, with the
    /// digests written out independently of the helpers above.
    #[test]
    fn native_scramble_matches_the_definition() {
        let pw = b"secret";
        let s1: [u8; 20] = Sha1::digest(pw).into();
        let s2: [u8; 20] = Sha1::digest(s1).into();
        let mut h = Sha1::new();
        h.update(NONCE);
        h.update(s2);
        let mask: [u8; 20] = h.finalize().into();
        let expect: Vec<u8> = s1.iter().zip(mask).map(|(a, b)| a ^ b).collect();
        assert_eq!(native_scramble(pw, NONCE).to_vec(), expect);
        // SHA1(SHA1("secret")), as MySQL's PASSWORD('secret') shows it.
        assert_eq!(
            native_verifier("secret"),
            "14e65567abdb5135d0cfd9a70b3032c179a49ee7"
        );
    }

    #[test]
    fn native_verify_accepts_right_and_rejects_wrong() {
        let stored = native_verifier("hunter2");
        let good = native_scramble(b"hunter2", NONCE);
        assert!(native_verify(&stored, NONCE, &good));
        let mysql_form = format!("*{}", stored.to_uppercase());
        assert!(native_verify(&mysql_form, NONCE, &good));
        assert!(!native_verify(
            &stored,
            NONCE,
            &native_scramble(b"hunter3", NONCE)
        ));
        assert!(!native_verify(&stored, b"another-nonce-000000", &good));
        assert!(!native_verify(&stored, NONCE, &good[..19]));
        assert!(!native_verify(&stored, NONCE, b""));
        assert!(!native_verify("not hex", NONCE, &good));
    }

    #[test]
    fn sha2_scramble_matches_the_definition() {
        let pw = b"secret";
        let s1: [u8; 32] = Sha256::digest(pw).into();
        let s2: [u8; 32] = Sha256::digest(s1).into();
        let mut h = Sha256::new();
        h.update(s2);
        h.update(NONCE);
        let mask: [u8; 32] = h.finalize().into();
        let expect: Vec<u8> = s1.iter().zip(mask).map(|(a, b)| a ^ b).collect();
        assert_eq!(sha2_scramble(pw, NONCE).to_vec(), expect);
        assert_eq!(sha2_verifier("secret"), s2);
    }

    #[test]
    fn sha2_verify_accepts_right_and_rejects_wrong() {
        let cached = sha2_verifier("hunter2");
        let good = sha2_scramble(b"hunter2", NONCE);
        assert!(sha2_verify(&cached, NONCE, &good));
        assert!(!sha2_verify(
            &cached,
            NONCE,
            &sha2_scramble(b"hunter3", NONCE)
        ));
        assert!(!sha2_verify(&cached, b"another-nonce-000000", &good));
        assert!(!sha2_verify(&cached, NONCE, &good[..31]));
    }

    #[test]
    fn scrambles_are_fresh_and_safe_in_c_strings() {
        let a = new_scramble();
        let b = new_scramble();
        assert_ne!(a, b);
        for s in [a, b] {
            assert!(s.iter().all(|&c| c != 0 && c != b'$' && c < 0x80));
        }
    }

    #[test]
    fn plugin_names() {
        for p in [AuthPlugin::Native, AuthPlugin::CachingSha2] {
            assert_eq!(AuthPlugin::from_name(p.name()), Some(p));
        }
        assert_eq!(AuthPlugin::from_name("client_ed25519"), None);
        assert!(AuthPlugin::Native.scramble(b"", NONCE).is_empty());
    }
}
