//! Per-session streams: NOVAS opens one stream per user connection and
//! writes a [`StreamOpen`] header; the agent answers with one
//! [`StreamReply`] frame, and after `Ok` the stream carries raw bytes.

use serde::{Deserialize, Serialize};

/// What a session stream carries; lets the agent apply kind-specific rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    Tcp,
    Postgres,
    Mysql,
    Ssh,
    Kubernetes,
}

impl StreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
            Self::Ssh => "ssh",
            Self::Kubernetes => "kubernetes",
        }
    }
}

/// Header of a session stream, server → agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOpen {
    /// Correlates the agent's logs with the server's session and audit.
    pub session_id: String,
    /// `host:port` the agent should dial.
    pub target: String,
    pub kind: StreamKind,
}

/// Why an agent did not connect a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamErrorCode {
    /// The target is outside the agent's allowlist.
    NotAllowed,
    /// The target's name did not resolve.
    ResolveFailed,
    /// The target refused or reset the connection.
    ConnectFailed,
    /// The target did not answer within the dial timeout.
    Timeout,
    /// The header was malformed or names an unsupported kind.
    BadRequest,
    /// The agent is shutting down.
    ShuttingDown,
}

/// The agent's answer to a [`StreamOpen`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum StreamReply {
    Ok,
    Error {
        code: StreamErrorCode,
        message: String,
    },
}

/// Splits `host:port` (IPv6 in brackets) and checks the port.
pub fn split_target(target: &str) -> Result<(&str, u16), String> {
    let (host, port) = target
        .rsplit_once(':')
        .ok_or_else(|| format!("target {target:?} is not host:port"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(format!("target {target:?} has no host"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("target {target:?} has an invalid port"))?;
    if port == 0 {
        return Err(format!("target {target:?} has port 0"));
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(split_target("10.0.1.5:5432"), Ok(("10.0.1.5", 5432)));
        assert_eq!(split_target("[fd00::1]:22"), Ok(("fd00::1", 22)));
        assert_eq!(split_target("db.internal:3306"), Ok(("db.internal", 3306)));
        for bad in ["db", ":22", "db:0", "db:99999", "db:x"] {
            assert!(split_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reply_wire_shape() {
        let ok = serde_json::to_string(&StreamReply::Ok).expect("ser");
        assert_eq!(ok, r#"{"result":"ok"}"#);
        let err: StreamReply = serde_json::from_str(
            r#"{"result":"error","code":"not_allowed","message":"10.0.0.1:22 outside allowlist"}"#,
        )
        .expect("de");
        assert!(matches!(
            err,
            StreamReply::Error {
                code: StreamErrorCode::NotAllowed,
                ..
            }
        ));
    }
}
