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
    /// Kubernetes streams only: who the agent impersonates towards the API
    /// server. Absent on every other kind, so their header is byte for byte
    /// what version-1 agents read; NOVAS only sends it to agents that
    /// announce the [`KUBERNETES_CAPABILITY`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube: Option<KubeStream>,
}

/// The capability (in `Hello`) of an agent that serves kubernetes streams
/// and understands [`StreamOpen::kube`].
pub const KUBERNETES_CAPABILITY: &str = "kubernetes";

/// Prefix of the capability that names the cluster an agent serves:
/// `kubernetes-cluster=prod-eu`.
pub const KUBERNETES_CLUSTER_CAPABILITY: &str = "kubernetes-cluster=";

/// The version of [`KubeStream`] this build writes. An agent refuses a
/// version it does not know (`bad_request`) instead of guessing.
pub const KUBE_STREAM_VERSION: u16 = 1;

/// The identity a kubernetes stream acts as. After the agent's `ok` the
/// stream carries HTTP/1.1 requests from NOVAS (already authorised); the
/// agent sends them to its API server with its own credentials plus
/// `Impersonate-User` / `Impersonate-Group` from here, and drops any
/// `Authorization` or `Impersonate-*` header found in the requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeStream {
    /// [`KUBE_STREAM_VERSION`].
    pub v: u16,
    /// The Kubernetes user name to impersonate (never empty).
    pub user: String,
    /// The Kubernetes groups to impersonate.
    #[serde(default)]
    pub groups: Vec<String>,
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
    fn header_without_kube_is_the_version_1_shape() {
        let h = StreamOpen {
            session_id: "s".into(),
            target: "10.0.0.1:5432".into(),
            kind: StreamKind::Postgres,
            kube: None,
        };
        let json = serde_json::to_string(&h).expect("ser");
        assert_eq!(
            json,
            r#"{"session_id":"s","target":"10.0.0.1:5432","kind":"postgres"}"#
        );
        let back: StreamOpen = serde_json::from_str(&json).expect("de");
        assert!(back.kube.is_none());
    }

    #[test]
    fn kube_header_round_trips_and_refuses_unknown_fields() {
        let json = r#"{"session_id":"s","target":"","kind":"kubernetes","kube":{"v":1,"user":"dev","groups":["nova:dev"]}}"#;
        let h: StreamOpen = serde_json::from_str(json).expect("de");
        assert_eq!(
            h.kube,
            Some(KubeStream {
                v: 1,
                user: "dev".into(),
                groups: vec!["nova:dev".into()],
            })
        );
        assert_eq!(serde_json::to_string(&h).expect("ser"), json);
        let extra = r#"{"session_id":"s","target":"","kind":"kubernetes","kube":{"v":1,"user":"dev","uid":"0"}}"#;
        assert!(serde_json::from_str::<StreamOpen>(extra).is_err());
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
