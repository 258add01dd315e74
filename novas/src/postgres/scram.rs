//! SCRAM-SHA-256 (RFC 5802, RFC 7677) the way PostgreSQL speaks it, both
//! sides, as state machines that take and return message bodies.
//!
//! Server (NOVAS to psql), against a verifier in `pg_authid` format:
//! `AuthenticationSASL` → [`ScramServer::client_first`] → `SASLContinue` →
//! [`ScramServer::client_final`] → `SASLFinal` + `AuthenticationOk`.
//! Client (NOVAS to the upstream): [`ScramClient::initial_response`] →
//! [`ScramClient::server_first`] → [`ScramClient::server_final`].
//!
//! As PostgreSQL: the user name in client-first is ignored (the
//! StartupMessage names the user), channel binding is not offered (`n` and
//! `y` flags accepted, `p` refused), and passwords go through SASLprep,
//! falling back to the raw bytes when SASLprep rejects them.

use std::{borrow::Cow, fmt, str::FromStr};

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{auth::SaslInitialResponse, error::Peer};

/// The only mechanism NOVAS offers and uses.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// PostgreSQL's default `scram_iterations`.
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// PostgreSQL's salt length.
pub const DEFAULT_SALT_LEN: usize = 16;
/// Most PBKDF2 rounds the client side will run for an upstream: bounds the
/// CPU a hostile server can make NOVAS burn on one login.
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// Random bytes in our nonce part (PostgreSQL's `SCRAM_RAW_NONCE_LEN`).
const NONCE_LEN: usize = 18;
const KEY_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;
type Key = [u8; KEY_LEN];

/// Why a SCRAM exchange failed. After any error the state machine refuses
/// further steps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// A message does not follow RFC 5802's grammar.
    #[error("{peer} sent a malformed SCRAM message: {reason}")]
    Malformed { peer: Peer, reason: &'static str },
    /// The client picked a mechanism we did not offer.
    #[error("client selected SASL mechanism {0:?}, which was not offered")]
    UnsupportedMechanism(String),
    /// The client wants channel binding (`p=`), which needs
    /// SCRAM-SHA-256-PLUS; NOVAS does not offer it.
    #[error("client requested SCRAM channel binding, which is not offered")]
    ChannelBindingNotOffered,
    /// The client sent an authorization identity (`a=`), which PostgreSQL
    /// does not support either.
    #[error("client uses an authorization identity, which is not supported")]
    AuthzidUnsupported,
    /// A mandatory extension (`m=`) we do not know.
    #[error("{peer} requires an unsupported SCRAM extension")]
    UnsupportedExtension { peer: Peer },
    /// The channel-binding field of client-final does not repeat the gs2
    /// header of client-first.
    #[error("client sent channel binding data that does not match its first message")]
    ChannelBindingMismatch,
    /// A nonce that does not continue the exchange (replay or tampering).
    #[error("{peer} sent a nonce that does not match the exchange")]
    NonceMismatch { peer: Peer },
    /// The client proof does not verify: wrong password, or a mock
    /// exchange for an unknown user.
    #[error("client proof does not match: wrong password")]
    WrongPassword,
    /// The server could not prove it knows the password.
    #[error("server signature does not match: the server does not know the password")]
    ServerSignatureMismatch,
    /// The server ended the exchange with `e=`.
    #[error("server rejected the SCRAM exchange: {0}")]
    ServerError(String),
    /// The server asked for more than [`MAX_ITERATIONS`] rounds.
    #[error("server asked for {0} PBKDF2 iterations, above the {MAX_ITERATIONS} limit")]
    TooManyIterations(u32),
    /// A step was called twice, out of order, or after a failure.
    #[error("SCRAM step called out of order")]
    OutOfOrder,
    /// A stored verifier is not `SCRAM-SHA-256$<iter>:<salt>$<stored>:<server>`.
    #[error("invalid SCRAM verifier: {0}")]
    InvalidVerifier(&'static str),
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Key {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// `Hi()` of RFC 5802: PBKDF2-HMAC-SHA-256 with one output block.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> Key {
    let base = HmacSha256::new_from_slice(password).expect("HMAC accepts keys of any length");
    let mut m = base.clone();
    m.update(salt);
    m.update(&1u32.to_be_bytes());
    let mut u: Key = m.finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..iterations {
        let mut m = base.clone();
        m.update(&u);
        u = m.finalize().into_bytes().into();
        out.iter_mut().zip(u.iter()).for_each(|(o, x)| *o ^= x);
    }
    out
}

/// SASLprep as PostgreSQL applies it: the normalized form if the password
/// is valid for SASLprep, else the password unchanged.
fn prep(password: &str) -> Cow<'_, str> {
    stringprep::saslprep(password).unwrap_or(Cow::Borrowed(password))
}

fn salted_password(password: &str, salt: &[u8], iterations: u32) -> Key {
    hi(prep(password).as_bytes(), salt, iterations)
}

fn random_nonce() -> String {
    B64.encode(rand::rng().random::<[u8; NONCE_LEN]>())
}

/// What PostgreSQL stores for a SCRAM password: enough to verify a client
/// and prove ourselves to it, but not to log in elsewhere.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: Key,
    server_key: Key,
}

impl ScramVerifier {
    pub fn new(password: &str, salt: &[u8], iterations: u32) -> Self {
        let salted = salted_password(password, salt, iterations);
        let client_key = hmac(&salted, &[b"Client Key"]);
        Self {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, &[b"Server Key"]),
        }
    }

    /// A verifier with a fresh random salt and PostgreSQL's defaults.
    pub fn generate(password: &str) -> Self {
        let salt = rand::rng().random::<[u8; DEFAULT_SALT_LEN]>();
        Self::new(password, &salt, DEFAULT_ITERATIONS)
    }

    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    pub fn salt(&self) -> &[u8] {
        &self.salt
    }
}

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, the text
/// `pg_authid.rolpassword` holds.
pub fn scram_verifier(password: &str, salt: &[u8], iterations: u32) -> String {
    ScramVerifier::new(password, salt, iterations).to_string()
}

impl fmt::Display for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCRAM_SHA_256}${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The keys are password-equivalent for this server: keep them out of logs.
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .field("salt", &B64.encode(&self.salt))
            .finish_non_exhaustive()
    }
}

impl FromStr for ScramVerifier {
    type Err = ScramError;

    fn from_str(s: &str) -> Result<Self, ScramError> {
        let bad = ScramError::InvalidVerifier;
        let rest = s
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or(bad("must start with SCRAM-SHA-256$"))?;
        let (params, keys) = rest
            .split_once('$')
            .ok_or(bad("missing '$' before the keys"))?;
        let (iter, salt) = params
            .split_once(':')
            .ok_or(bad("missing ':' between iterations and salt"))?;
        let (stored, server) = keys
            .split_once(':')
            .ok_or(bad("missing ':' between StoredKey and ServerKey"))?;
        let iterations: u32 = iter
            .parse()
            .map_err(|_| bad("iterations is not a number"))?;
        if iterations == 0 {
            return Err(bad("iterations must be positive"));
        }
        let salt = B64.decode(salt).map_err(|_| bad("salt is not base64"))?;
        if salt.is_empty() {
            return Err(bad("salt is empty"));
        }
        let key = |k: &str| -> Result<Key, ScramError> {
            B64.decode(k)
                .ok()
                .and_then(|v| Key::try_from(v).ok())
                .ok_or(bad("keys must be 32 bytes of base64"))
        };
        Ok(Self {
            iterations,
            salt,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }
}

/// Splits `attr=value` off the front of `s` (up to the next `,`), checking
/// the attribute letter.
fn attr<'a>(
    s: &mut &'a [u8],
    name: u8,
    peer: Peer,
    reason: &'static str,
) -> Result<&'a [u8], ScramError> {
    let rest = *s;
    if rest.len() < 2 || rest[0] != name || rest[1] != b'=' {
        return Err(ScramError::Malformed { peer, reason });
    }
    let end = rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
    *s = rest.get(end + 1..).unwrap_or(&[]);
    Ok(&rest[2..end])
}

/// A nonce must be printable ASCII without commas (RFC 5802 `printable`).
fn valid_nonce(n: &[u8]) -> bool {
    !n.is_empty() && n.iter().all(|&b| (0x21..=0x7e).contains(&b) && b != b',')
}

enum ServerState {
    AwaitClientFirst,
    AwaitClientFinal {
        gs2_header: Vec<u8>,
        client_first_bare: Vec<u8>,
        server_first: String,
        nonce: String,
    },
    Finished,
}

/// Server side of one SCRAM exchange.
pub struct ScramServer {
    verifier: ScramVerifier,
    /// Mock exchange for an unknown user: runs every step, then fails.
    doomed: bool,
    server_nonce: String,
    state: ServerState,
}

impl ScramServer {
    pub fn new(verifier: ScramVerifier) -> Self {
        Self {
            verifier,
            doomed: false,
            server_nonce: random_nonce(),
            state: ServerState::AwaitClientFirst,
        }
    }

    /// An exchange that looks like a real one but always ends in
    /// [`ScramError::WrongPassword`], for a user that does not exist, so
    /// probing cannot tell users apart (PostgreSQL's mock authentication).
    /// Derive `salt` from the user name and a server secret so repeated
    /// probes see the same salt.
    pub fn mock(salt: &[u8], iterations: u32) -> Self {
        let random = rand::rng().random::<[u8; 32]>();
        let mut s = Self::new(ScramVerifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(random).into(),
            server_key: hmac(&random, &[b"Server Key"]),
        });
        s.doomed = true;
        s
    }

    /// Handles the SASLInitialResponse; returns the server-first-message
    /// for AuthenticationSASLContinue.
    pub fn client_first(&mut self, msg: &SaslInitialResponse) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, ServerState::AwaitClientFirst) {
            return Err(ScramError::OutOfOrder);
        }
        self.state = ServerState::Finished;
        if msg.mechanism != SCRAM_SHA_256 {
            return Err(ScramError::UnsupportedMechanism(msg.mechanism.clone()));
        }
        let data = msg.data.as_deref().ok_or(ScramError::Malformed {
            peer: Peer::Client,
            reason: "no client-first-message",
        })?;
        let malformed = |reason| ScramError::Malformed {
            peer: Peer::Client,
            reason,
        };
        // gs2-header: cbind-flag "," [authzid] ","
        let header_len = match data {
            [b'n' | b'y', b',', rest @ ..] => {
                if rest.starts_with(b"a=") {
                    return Err(ScramError::AuthzidUnsupported);
                }
                if rest.first() != Some(&b',') {
                    return Err(malformed(
                        "unexpected characters after the channel binding flag",
                    ));
                }
                3
            }
            [b'p', b'=', ..] => return Err(ScramError::ChannelBindingNotOffered),
            _ => return Err(malformed("invalid channel binding flag")),
        };
        let (gs2_header, bare) = data.split_at(header_len);
        if bare.starts_with(b"m=") {
            return Err(ScramError::UnsupportedExtension { peer: Peer::Client });
        }
        let mut rest = bare;
        attr(&mut rest, b'n', Peer::Client, "expected n= (user name)")?;
        let client_nonce = attr(&mut rest, b'r', Peer::Client, "expected r= (nonce)")?;
        if !valid_nonce(client_nonce) {
            return Err(malformed("nonce is empty or not printable"));
        }
        // Optional extensions after the nonce are ignored, as PostgreSQL does.
        let nonce = format!(
            "{}{}",
            String::from_utf8_lossy(client_nonce),
            self.server_nonce
        );
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&self.verifier.salt),
            self.verifier.iterations
        );
        self.state = ServerState::AwaitClientFinal {
            gs2_header: gs2_header.to_vec(),
            client_first_bare: bare.to_vec(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok(server_first.into_bytes())
    }

    /// Handles the SASLResponse; on success returns the
    /// server-final-message for AuthenticationSASLFinal (follow it with
    /// AuthenticationOk). [`ScramError::WrongPassword`] means: answer
    /// `ErrorResponse::auth_failed`.
    pub fn client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        let ServerState::AwaitClientFinal {
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, ServerState::Finished)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let malformed = |reason| ScramError::Malformed {
            peer: Peer::Client,
            reason,
        };
        let proof_at = find_last(data, b",p=").ok_or(malformed("missing proof (p=)"))?;
        let without_proof = &data[..proof_at];
        let proof_b64 = &data[proof_at + 3..];

        let mut rest = without_proof;
        let cbind = attr(
            &mut rest,
            b'c',
            Peer::Client,
            "expected c= (channel binding)",
        )?;
        let cbind = B64
            .decode(cbind)
            .map_err(|_| malformed("channel binding is not base64"))?;
        if cbind != gs2_header {
            return Err(ScramError::ChannelBindingMismatch);
        }
        let got_nonce = attr(&mut rest, b'r', Peer::Client, "expected r= (nonce)")?;
        if got_nonce != nonce.as_bytes() {
            return Err(ScramError::NonceMismatch { peer: Peer::Client });
        }
        let proof: Key = B64
            .decode(proof_b64)
            .ok()
            .and_then(|p| Key::try_from(p).ok())
            .ok_or(malformed("proof must be 32 bytes of base64"))?;

        let auth_message = [
            &client_first_bare[..],
            b",",
            server_first.as_bytes(),
            b",",
            without_proof,
        ];
        let signature = hmac(&self.verifier.stored_key, &auth_message);
        let mut client_key = proof;
        client_key
            .iter_mut()
            .zip(signature.iter())
            .for_each(|(k, s)| *k ^= s);
        let stored: Key = Sha256::digest(client_key).into();
        let matches: bool = stored.ct_eq(&self.verifier.stored_key).into();
        if !matches || self.doomed {
            return Err(ScramError::WrongPassword);
        }
        let server_signature = hmac(&self.verifier.server_key, &auth_message);
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }

    #[cfg(test)]
    fn with_nonce(verifier: ScramVerifier, server_nonce: &str) -> Self {
        let mut s = Self::new(verifier);
        s.server_nonce = server_nonce.to_owned();
        s
    }
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

enum ClientState {
    Initial,
    SentFirst,
    SentFinal { server_signature: Key },
    Finished,
}

/// Client side of one SCRAM exchange, logging in with a password.
pub struct ScramClient {
    password: String,
    user: String,
    nonce: String,
    state: ClientState,
}

impl ScramClient {
    /// Sends an empty user name, as libpq does: the server takes the user
    /// from the StartupMessage.
    pub fn new(password: &str) -> Self {
        Self::with_nonce("", password, &random_nonce())
    }

    fn with_nonce(user: &str, password: &str, nonce: &str) -> Self {
        Self {
            password: password.to_owned(),
            user: user.to_owned(),
            nonce: nonce.to_owned(),
            state: ClientState::Initial,
        }
    }

    fn client_first_bare(&self) -> String {
        format!("n={},r={}", self.user, self.nonce)
    }

    /// The SASLInitialResponse to send after AuthenticationSASL offered
    /// [`SCRAM_SHA_256`].
    pub fn initial_response(&mut self) -> SaslInitialResponse {
        self.state = ClientState::SentFirst;
        SaslInitialResponse {
            mechanism: SCRAM_SHA_256.to_owned(),
            data: Some(format!("n,,{}", self.client_first_bare()).into()),
        }
    }

    /// Handles AuthenticationSASLContinue; returns the client-final-message
    /// to send as a SASLResponse.
    pub fn server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(
            std::mem::replace(&mut self.state, ClientState::Finished),
            ClientState::SentFirst
        ) {
            return Err(ScramError::OutOfOrder);
        }
        let malformed = |reason| ScramError::Malformed {
            peer: Peer::Server,
            reason,
        };
        if data.starts_with(b"m=") {
            return Err(ScramError::UnsupportedExtension { peer: Peer::Server });
        }
        let mut rest = data;
        let nonce = attr(&mut rest, b'r', Peer::Server, "expected r= (nonce)")?;
        if !valid_nonce(nonce)
            || nonce.len() <= self.nonce.len()
            || !nonce.starts_with(self.nonce.as_bytes())
        {
            return Err(ScramError::NonceMismatch { peer: Peer::Server });
        }
        let salt = attr(&mut rest, b's', Peer::Server, "expected s= (salt)")?;
        let salt = B64
            .decode(salt)
            .map_err(|_| malformed("salt is not base64"))?;
        let iterations = attr(&mut rest, b'i', Peer::Server, "expected i= (iterations)")?;
        let iterations: u32 = std::str::from_utf8(iterations)
            .ok()
            .and_then(|i| i.parse().ok())
            .filter(|&i| i > 0)
            .ok_or(malformed("iteration count is not a positive number"))?;
        if iterations > MAX_ITERATIONS {
            return Err(ScramError::TooManyIterations(iterations));
        }

        let without_proof = format!("c=biws,r={}", String::from_utf8_lossy(nonce));
        let bare = self.client_first_bare();
        let auth_message = [bare.as_bytes(), b",", data, b",", without_proof.as_bytes()];
        let salted = salted_password(&self.password, &salt, iterations);
        let client_key = hmac(&salted, &[b"Client Key"]);
        let stored_key: Key = Sha256::digest(client_key).into();
        let signature = hmac(&stored_key, &auth_message);
        let mut proof = client_key;
        proof
            .iter_mut()
            .zip(signature.iter())
            .for_each(|(p, s)| *p ^= s);
        let server_key = hmac(&salted, &[b"Server Key"]);
        self.state = ClientState::SentFinal {
            server_signature: hmac(&server_key, &auth_message),
        };
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Handles AuthenticationSASLFinal: succeeds only if the server proved
    /// it knows the password.
    pub fn server_final(&mut self, data: &[u8]) -> Result<(), ScramError> {
        let ClientState::SentFinal { server_signature } =
            std::mem::replace(&mut self.state, ClientState::Finished)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let mut rest = data;
        if data.starts_with(b"e=") {
            let e = attr(&mut rest, b'e', Peer::Server, "expected e=")?;
            return Err(ScramError::ServerError(
                String::from_utf8_lossy(e).into_owned(),
            ));
        }
        let v = attr(&mut rest, b'v', Peer::Server, "expected v= (verifier)")?;
        let v = B64.decode(v).map_err(|_| ScramError::Malformed {
            peer: Peer::Server,
            reason: "verifier is not base64",
        })?;
        if bool::from(v.as_slice().ct_eq(&server_signature[..])) {
            Ok(())
        } else {
            Err(ScramError::ServerSignatureMismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    // RFC 7677 section 3.
    const PASSWORD: &str = "pencil";
    const CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SALT_B64: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_verifier() -> ScramVerifier {
        let salt = B64.decode(SALT_B64).expect("salt");
        ScramVerifier::new(PASSWORD, &salt, 4096)
    }

    fn initial(data: &str) -> SaslInitialResponse {
        SaslInitialResponse {
            mechanism: SCRAM_SHA_256.into(),
            data: Some(Bytes::copy_from_slice(data.as_bytes())),
        }
    }

    #[test]
    fn rfc7677_client() {
        let mut c = ScramClient::with_nonce("user", PASSWORD, CLIENT_NONCE);
        let first = c.initial_response();
        assert_eq!(first.data.as_deref(), Some(CLIENT_FIRST.as_bytes()));
        let fin = c
            .server_first(SERVER_FIRST.as_bytes())
            .expect("server-first");
        assert_eq!(String::from_utf8_lossy(&fin), CLIENT_FINAL);
        c.server_final(SERVER_FINAL.as_bytes())
            .expect("server-final");
        assert_eq!(
            c.server_final(SERVER_FINAL.as_bytes()),
            Err(ScramError::OutOfOrder)
        );
    }

    #[test]
    fn rfc7677_server() {
        let mut s = ScramServer::with_nonce(rfc_verifier(), SERVER_NONCE);
        let first = s
            .client_first(&initial(CLIENT_FIRST))
            .expect("client-first");
        assert_eq!(String::from_utf8_lossy(&first), SERVER_FIRST);
        let fin = s
            .client_final(CLIENT_FINAL.as_bytes())
            .expect("client-final");
        assert_eq!(String::from_utf8_lossy(&fin), SERVER_FINAL);
        assert_eq!(
            s.client_final(CLIENT_FINAL.as_bytes()),
            Err(ScramError::OutOfOrder)
        );
    }

    #[test]
    fn verifier_format_round_trips() {
        let v = rfc_verifier();
        let text = v.to_string();
        assert!(
            text.starts_with("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"),
            "{text}"
        );
        assert_eq!(text.parse::<ScramVerifier>(), Ok(v.clone()));
        assert_eq!(scram_verifier(PASSWORD, v.salt(), 4096), text);
        assert!(!format!("{v:?}").contains(&B64.encode(v.stored_key)));
        for bad in [
            "md5abc",
            "SCRAM-SHA-256$4096:c2FsdA==",
            "SCRAM-SHA-256$x:c2FsdA==$a:b",
            "SCRAM-SHA-256$0:c2FsdA==$a:b",
            "SCRAM-SHA-256$4096:$a:b",
            "SCRAM-SHA-256$4096:c2FsdA==$YQ==:YQ==",
        ] {
            assert!(bad.parse::<ScramVerifier>().is_err(), "{bad}");
        }
    }

    /// Generated by PostgreSQL 15 (`password_encryption = 'scram-sha-256'`,
    /// password `sekret`) and read back from `pg_authid`.
    #[test]
    fn reproduces_a_postgres_verifier() {
        const PG: &str = "SCRAM-SHA-256$4096:JBeQXLQEDPkcmuy7y1099A==$/DpYfXLxHAwigwBl+gqBKndYiIwZ0n7W2+VvimVqUpc=:zUFp6yg9SRcvIUqvNBjgr96FnFlnab2gv5DqUmBgo0c=";
        let v: ScramVerifier = PG.parse().expect("parse");
        assert_eq!(scram_verifier("sekret", v.salt(), v.iterations()), PG);
        // And it logs in our client.
        let mut s = ScramServer::new(v);
        let mut c = ScramClient::new("sekret");
        let first = s.client_first(&c.initial_response()).expect("first");
        let fin = c.server_first(&first).expect("server-first");
        let server_final = s.client_final(&fin).expect("proof");
        c.server_final(&server_final).expect("signature");
    }

    #[test]
    fn round_trip_and_wrong_password() {
        let verifier = ScramVerifier::generate("correct horse");
        for (password, ok) in [("correct horse", true), ("wrong", false), ("", false)] {
            let mut s = ScramServer::new(verifier.clone());
            let mut c = ScramClient::new(password);
            let first = s.client_first(&c.initial_response()).expect("client-first");
            let fin = c.server_first(&first).expect("server-first");
            match s.client_final(&fin) {
                Ok(server_final) => {
                    assert!(ok, "{password:?} accepted");
                    c.server_final(&server_final).expect("server proves itself");
                }
                Err(e) => {
                    assert!(!ok, "{password:?} refused");
                    assert_eq!(e, ScramError::WrongPassword);
                }
            }
        }
    }

    #[test]
    fn y_flag_accepted_with_matching_binding() {
        // RFC vector with the gs2 flag "y": the proof changes because c=
        // (part of AuthMessage) changes; compute it with the client math.
        let salt = B64.decode(SALT_B64).expect("salt");
        let bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let nonce = format!("{CLIENT_NONCE}{SERVER_NONCE}");
        let without_proof = format!("c=eSws,r={nonce}");
        let auth = format!("{bare},{SERVER_FIRST},{without_proof}");
        let salted = salted_password(PASSWORD, &salt, 4096);
        let ck = hmac(&salted, &[b"Client Key"]);
        let sk: Key = Sha256::digest(ck).into();
        let sig = hmac(&sk, &[auth.as_bytes()]);
        let proof: Vec<u8> = ck.iter().zip(sig.iter()).map(|(a, b)| a ^ b).collect();
        let mut s = ScramServer::with_nonce(rfc_verifier(), SERVER_NONCE);
        s.client_first(&initial(&format!("y,,{bare}")))
            .expect("first");
        let fin = format!("{without_proof},p={}", B64.encode(proof));
        assert!(s.client_final(fin.as_bytes()).is_ok());
    }

    #[test]
    fn server_rejects_bad_client_first() {
        let cases: &[(&str, ScramError)] = &[
            (
                "p=tls-server-end-point,,n=,r=abc",
                ScramError::ChannelBindingNotOffered,
            ),
            ("n,a=admin,n=,r=abc", ScramError::AuthzidUnsupported),
            (
                "n,,m=ext,n=,r=abc",
                ScramError::UnsupportedExtension { peer: Peer::Client },
            ),
            (
                "x,,n=,r=abc",
                ScramError::Malformed {
                    peer: Peer::Client,
                    reason: "invalid channel binding flag",
                },
            ),
            (
                "n,,n=,r=",
                ScramError::Malformed {
                    peer: Peer::Client,
                    reason: "nonce is empty or not printable",
                },
            ),
            (
                "n,,r=abc",
                ScramError::Malformed {
                    peer: Peer::Client,
                    reason: "expected n= (user name)",
                },
            ),
        ];
        for (data, want) in cases {
            let mut s = ScramServer::new(rfc_verifier());
            assert_eq!(s.client_first(&initial(data)).as_ref(), Err(want), "{data}");
        }
        let mut s = ScramServer::new(rfc_verifier());
        let mut other = initial(CLIENT_FIRST);
        other.mechanism = "SCRAM-SHA-256-PLUS".into();
        assert!(matches!(
            s.client_first(&other),
            Err(ScramError::UnsupportedMechanism(_))
        ));
        let mut s = ScramServer::new(rfc_verifier());
        assert!(s
            .client_first(&SaslInitialResponse {
                mechanism: SCRAM_SHA_256.into(),
                data: None
            })
            .is_err());
    }

    #[test]
    fn server_rejects_tampered_client_final() {
        let tampered = [
            // Proof altered.
            (
                CLIENT_FINAL.replace("p=dHzb", "p=dHzc"),
                ScramError::WrongPassword,
            ),
            // Nonce altered.
            (
                CLIENT_FINAL.replace("k0,p=", "k1,p="),
                ScramError::NonceMismatch { peer: Peer::Client },
            ),
            // Channel binding claims "y" after "n".
            (
                CLIENT_FINAL.replace("c=biws", "c=eSws"),
                ScramError::ChannelBindingMismatch,
            ),
            (
                CLIENT_FINAL.replace(",p=", ",x="),
                ScramError::Malformed {
                    peer: Peer::Client,
                    reason: "missing proof (p=)",
                },
            ),
            (
                CLIENT_FINAL.replace("p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", "p=YQ=="),
                ScramError::Malformed {
                    peer: Peer::Client,
                    reason: "proof must be 32 bytes of base64",
                },
            ),
        ];
        for (msg, want) in tampered {
            let mut s = ScramServer::with_nonce(rfc_verifier(), SERVER_NONCE);
            s.client_first(&initial(CLIENT_FIRST)).expect("first");
            assert_eq!(s.client_final(msg.as_bytes()), Err(want), "{msg}");
        }
        // The correct proof fails against a mock exchange.
        let salt = B64.decode(SALT_B64).expect("salt");
        let mut s = ScramServer::mock(&salt, 4096);
        s.server_nonce = SERVER_NONCE.into();
        let first = s.client_first(&initial(CLIENT_FIRST)).expect("first");
        assert_eq!(String::from_utf8_lossy(&first), SERVER_FIRST);
        assert_eq!(
            s.client_final(CLIENT_FINAL.as_bytes()),
            Err(ScramError::WrongPassword)
        );
    }

    #[test]
    fn client_rejects_bad_server() {
        let run = |server_first: &str| {
            let mut c = ScramClient::with_nonce("user", PASSWORD, CLIENT_NONCE);
            c.initial_response();
            c.server_first(server_first.as_bytes())
        };
        assert_eq!(
            run("r=someoneelse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
            Err(ScramError::NonceMismatch { peer: Peer::Server })
        );
        assert_eq!(
            run("r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
            Err(ScramError::NonceMismatch { peer: Peer::Server })
        );
        assert_eq!(
            run("r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999"),
            Err(ScramError::TooManyIterations(99_999_999))
        );
        assert!(run("r=rOprNGfwEbeRWgbNEkqOx,s=!!,i=1").is_err());
        assert!(run("r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0").is_err());
        assert_eq!(
            run("m=x,r=rOprNGfwEbeRWgbNEkqOx"),
            Err(ScramError::UnsupportedExtension { peer: Peer::Server })
        );

        let final_with = |server_final: &str| {
            let mut c = ScramClient::with_nonce("user", PASSWORD, CLIENT_NONCE);
            c.initial_response();
            c.server_first(SERVER_FIRST.as_bytes()).expect("first");
            c.server_final(server_final.as_bytes())
        };
        assert_eq!(
            final_with("v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(ScramError::ServerSignatureMismatch)
        );
        assert_eq!(
            final_with("e=invalid-proof"),
            Err(ScramError::ServerError("invalid-proof".into()))
        );
        let mut c = ScramClient::new("x");
        assert_eq!(
            c.server_first(SERVER_FIRST.as_bytes()),
            Err(ScramError::OutOfOrder)
        );
    }

    #[test]
    fn saslprep_applies_to_non_ascii() {
        // U+00A0 (no-break space) maps to a plain space under SASLprep, so
        // both spellings derive the same keys, as in PostgreSQL.
        let salt = b"0123456789abcdef";
        assert_eq!(
            ScramVerifier::new("a\u{a0}b", salt, 16),
            ScramVerifier::new("a b", salt, 16)
        );
        // A prohibited character: PostgreSQL falls back to the raw bytes.
        assert_ne!(
            ScramVerifier::new("a\u{7}b", salt, 16),
            ScramVerifier::new("ab", salt, 16)
        );
    }
}
