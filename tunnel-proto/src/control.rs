//! The control stream: the first stream an agent opens on a new tunnel.
//!
//! Call order, agent side: write [`PREFACE`] + `Hello`; read one frame, which is
//! `Welcome` (registered) or `Reject` (the connection is then closed). After
//! `Welcome`, both sides send `Ping` every heartbeat interval and answer each
//! `Ping` with a `Pong` of the same `seq`; a side that hears nothing for
//! [`dead_after`] intervals treats the peer as dead. `Goodbye` announces a
//! deliberate close (shutdown, or replacement by a newer registration).
//!
//! The preface carries the wire version in plain bytes so that a peer of
//! another version gets a clear `Reject` instead of a parse error or a hang.
//! The `Reject` shape never changes between versions for that reason.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{secret::Secret, tags::Tags};

/// The control protocol version this build speaks.
pub const PROTO_VERSION: u16 = 1;

/// Magic bytes that open every control stream.
pub const MAGIC: &[u8; 4] = b"NOVA";

/// Preface length: magic plus a big-endian `u16` version.
pub const PREFACE_LEN: usize = 6;

/// The preface bytes for [`PROTO_VERSION`].
pub fn preface() -> [u8; PREFACE_LEN] {
    let v = PROTO_VERSION.to_be_bytes();
    [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], v[0], v[1]]
}

/// What a received preface says.
#[derive(Debug, PartialEq, Eq)]
pub enum Preface {
    /// Magic and version match.
    Ok,
    /// Right magic, other version.
    Version(u16),
    /// Not a NOVA peer at all.
    NotNova,
}

/// Parses the first [`PREFACE_LEN`] bytes of a control stream.
pub fn check_preface(bytes: &[u8; PREFACE_LEN]) -> Preface {
    if &bytes[..4] != MAGIC {
        return Preface::NotNova;
    }
    match u16::from_be_bytes([bytes[4], bytes[5]]) {
        PROTO_VERSION => Preface::Ok,
        other => Preface::Version(other),
    }
}

/// How many silent heartbeat intervals make a peer dead.
pub const DEAD_AFTER_INTERVALS: u32 = 3;

/// Time without any frame from the peer after which it is considered dead.
pub fn dead_after(interval: Duration) -> Duration {
    interval * DEAD_AFTER_INTERVALS
}

/// Why a server refused an agent. Stable across versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    /// The enrollment token is wrong.
    BadToken,
    /// The agent speaks another protocol version.
    UnsupportedVersion,
    /// The Hello is malformed or has invalid fields.
    BadRequest,
    /// The server is shutting down or overloaded.
    Unavailable,
}

impl RejectCode {
    /// The wire name, as logs and users see it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadToken => "bad_token",
            Self::UnsupportedVersion => "unsupported_version",
            Self::BadRequest => "bad_request",
            Self::Unavailable => "unavailable",
        }
    }
}

/// A control-stream message.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Control {
    /// Agent → server, first message.
    Hello {
        proto_version: u16,
        token: Secret,
        name: String,
        tags: Tags,
        agent_version: String,
        /// Stream kinds and features the agent serves, e.g. `"tcp"`.
        capabilities: Vec<String>,
    },
    /// Server → agent: registered.
    Welcome {
        /// Name of the NOVAS node that holds this tunnel.
        server_node: String,
        server_version: String,
        /// Heartbeat interval both sides use, in milliseconds.
        heartbeat_ms: u64,
    },
    /// Server → agent: refused; the server closes the connection after it.
    Reject { code: RejectCode, message: String },
    /// Either way: liveness probe.
    Ping { seq: u64 },
    /// Either way: answer to `Ping` with the same `seq`.
    Pong { seq: u64 },
    /// Either way: a deliberate close is coming.
    Goodbye { reason: String },
}

/// Limits on agent names; they appear in logs, URLs and selectors.
pub const MAX_NAME_LEN: usize = 128;

/// Checks an agent name: 1–128 characters of `[A-Za-z0-9._-]`.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!("name must be 1-{MAX_NAME_LEN} characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "name {name:?} has the character {c:?}; use letters, digits, '.', '_' or '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preface_round_trip() {
        assert_eq!(check_preface(&preface()), Preface::Ok);
        let mut other = preface();
        other[5] = other[5].wrapping_add(1);
        assert_eq!(
            check_preface(&other),
            Preface::Version(PROTO_VERSION.wrapping_add(1))
        );
        assert_eq!(check_preface(b"GET / "), Preface::NotNova);
    }

    #[test]
    fn hello_debug_never_shows_the_token() {
        let hello = Control::Hello {
            proto_version: PROTO_VERSION,
            token: Secret::new("s3cr3t-token".into()),
            name: "a".into(),
            tags: Tags::default(),
            agent_version: "0".into(),
            capabilities: vec![],
        };
        let dbg = format!("{hello:?}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
    }

    #[test]
    fn unknown_fields_and_types_are_refused() {
        assert!(serde_json::from_str::<Control>(r#"{"type":"ping","seq":1,"x":2}"#).is_err());
        assert!(serde_json::from_str::<Control>(r#"{"type":"launch","seq":1}"#).is_err());
        assert!(serde_json::from_str::<Control>(r#"{"type":"ping","seq":-1}"#).is_err());
    }

    #[test]
    fn names() {
        assert!(validate_name("novac-7f9c.prod_1").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name(&"x".repeat(129)).is_err());
    }
}
