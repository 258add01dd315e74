//! The audit event: one typed record per thing NOVAS audits.

use std::{
    fmt,
    str::FromStr,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

/// Longest name-like field kept (user, resource, node, policy, session):
/// the shared stores index these as `VARCHAR(255)`.
pub const NAME_MAX_CHARS: usize = 255;
/// Longest statement text kept, in bytes; the rest is cut so one huge
/// statement cannot stall the writer or bloat the store.
pub const TEXT_MAX_BYTES: usize = 64 * 1024;
/// Longest free-text detail kept (error, reason, outcome), in bytes.
pub const DETAIL_MAX_BYTES: usize = 4 * 1024;

/// One audited occurrence. `id` is unique (a UUID), so writing the same
/// event twice (a retried batch, a replayed spool) stores it once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub id: String,
    /// Unix time in milliseconds.
    pub time_ms: i64,
    /// The NOVAS node that saw it (filled in by the auditor when empty).
    pub node: String,
    pub session_id: Option<String>,
    /// The NOVAS user (not the target account).
    pub user: Option<String>,
    pub resource: Option<String>,
    /// postgres, mysql, ssh, kubernetes, tcp.
    pub resource_kind: Option<String>,
    pub event: EventKind,
}

/// What happened. Serialised with a `type` tag (`kind` is a statement field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    SessionOpen {
        /// The agent the session goes through.
        agent: Option<String>,
        client_addr: String,
        /// The target account NOVAS logs in as.
        account: Option<String>,
    },
    SessionClose {
        /// e.g. `ok`, `client closed`, `target error: …`.
        outcome: String,
        bytes_up: u64,
        bytes_down: u64,
        duration_ms: u64,
        /// SSH: the exit status of the session's last command or shell.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_status: Option<u32>,
    },
    Statement {
        text: String,
        /// Statement kind as classified by the front end (select, insert, …).
        kind: String,
        decision: Decision,
        /// The policy that decided; explains the decision.
        policy: String,
        duration_us: Option<u64>,
        rows: Option<u64>,
        error: Option<String>,
    },
    LoginFailure {
        client_addr: String,
        reason: String,
    },
    /// SSH: a command, shell, subsystem or port forward asked for in a
    /// session, and whether it ran.
    Command {
        /// `exec`, `shell`, `subsystem` or `direct-tcpip`.
        channel: String,
        /// The command line, subsystem name or forward target.
        text: String,
        decision: Decision,
        policy: String,
        error: Option<String>,
    },
    /// An authenticated user refused before reaching the target: no policy,
    /// a changed host key, an unknown resource.
    AccessDenied {
        client_addr: String,
        reason: String,
    },
    /// A change to what NOVAS enforces, e.g. a new policy version; `user`
    /// of the event is who made it, where known.
    AdminChange {
        /// e.g. `policy_import`.
        action: String,
        /// What changed, e.g. `policies v3`.
        object: String,
        detail: String,
    },
    /// An agent registered its tunnel with this node.
    AgentConnect {
        agent: String,
        remote_addr: String,
        /// `K=V;K=V`.
        tags: String,
        agent_version: String,
    },
    /// An agent's tunnel to this node ended.
    AgentDisconnect {
        agent: String,
        reason: String,
        /// How long the tunnel was up.
        connected_ms: u64,
    },
    /// KAC: one Kubernetes API request ([`KubeRequest`]).
    KubeRequest(Box<KubeRequest>),
}

/// KAC: one Kubernetes API request (recorded when its response ends, so a
/// watch or an exec session is one event with its whole length). Boxed in
/// [`EventKind::KubeRequest`]: it is the largest event by far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeRequest {
    pub client_addr: String,
    /// `GET /api/v1/namespaces/default/pods?watch=true` (the path
    /// inside the cluster, with its query: exec's command is there).
    pub text: String,
    /// get, list, watch, create, update, patch, delete, deletecollection;
    /// `discovery` for /api, /apis, /version, /openapi.
    pub verb: String,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    pub decision: Decision,
    pub policy: String,
    /// The identity the agent impersonated: `user` and `groups`.
    pub kube_user: String,
    pub kube_groups: Vec<String>,
    /// HTTP status sent to the client (101 for exec and port-forward).
    pub status: u16,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration_ms: u64,
    pub agent: Option<String>,
    pub error: Option<String>,
    /// Exec and attach: the asciicast recording's id
    /// (`novas recordings play ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<String>,
}

/// A policy decision on a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Deny,
}

/// The variant of an [`EventKind`] without its data: the `type` tag, and
/// the `kind=` filter of the API and CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    SessionOpen,
    SessionClose,
    Statement,
    LoginFailure,
    Command,
    AccessDenied,
    AdminChange,
    AgentConnect,
    AgentDisconnect,
    KubeRequest,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}

impl FromStr for Decision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "allow" => Ok(Decision::Allow),
            "deny" => Ok(Decision::Deny),
            _ => Err(format!("{s:?} is not allow or deny")),
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EventType {
    pub const ALL: [EventType; 10] = [
        EventType::SessionOpen,
        EventType::SessionClose,
        EventType::Statement,
        EventType::LoginFailure,
        EventType::Command,
        EventType::AccessDenied,
        EventType::AdminChange,
        EventType::AgentConnect,
        EventType::AgentDisconnect,
        EventType::KubeRequest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::SessionOpen => "session_open",
            EventType::SessionClose => "session_close",
            EventType::Statement => "statement",
            EventType::LoginFailure => "login_failure",
            EventType::Command => "command",
            EventType::AccessDenied => "access_denied",
            EventType::AdminChange => "admin_change",
            EventType::AgentConnect => "agent_connect",
            EventType::AgentDisconnect => "agent_disconnect",
            EventType::KubeRequest => "kube_request",
        }
    }
}

impl FromStr for EventType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase().replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|t| t.as_str()).collect();
                format!("{s:?} is not one of {}", names.join(", "))
            })
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EventKind {
    pub fn event_type(&self) -> EventType {
        match self {
            EventKind::SessionOpen { .. } => EventType::SessionOpen,
            EventKind::SessionClose { .. } => EventType::SessionClose,
            EventKind::Statement { .. } => EventType::Statement,
            EventKind::LoginFailure { .. } => EventType::LoginFailure,
            EventKind::Command { .. } => EventType::Command,
            EventKind::AccessDenied { .. } => EventType::AccessDenied,
            EventKind::AdminChange { .. } => EventType::AdminChange,
            EventKind::AgentConnect { .. } => EventType::AgentConnect,
            EventKind::AgentDisconnect { .. } => EventType::AgentDisconnect,
            EventKind::KubeRequest(_) => EventType::KubeRequest,
        }
    }

    pub fn decision(&self) -> Option<Decision> {
        match self {
            EventKind::Statement { decision, .. } | EventKind::Command { decision, .. } => {
                Some(*decision)
            }
            EventKind::KubeRequest(k) => Some(k.decision),
            _ => None,
        }
    }

    pub fn policy(&self) -> Option<&str> {
        match self {
            EventKind::Statement { policy, .. } | EventKind::Command { policy, .. } => Some(policy),
            EventKind::KubeRequest(k) => Some(&k.policy),
            _ => None,
        }
    }

    pub fn text(&self) -> Option<&str> {
        match self {
            EventKind::Statement { text, .. } | EventKind::Command { text, .. } => Some(text),
            EventKind::AdminChange { object, .. } => Some(object),
            EventKind::KubeRequest(k) => Some(&k.text),
            _ => None,
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A fresh id for an event or a session: a UUIDv7, so that later ids sort
/// later and the store's indexes on them (the events' primary key, their
/// session index) grow at one end. Random v4 ids made every insert touch a
/// random index page: several page reads and writes per event in SQLite.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl AuditEvent {
    /// A new event with a fresh id, stamped now; set the other fields with
    /// the builder methods or directly.
    pub fn new(event: EventKind) -> Self {
        Self {
            id: new_id(),
            time_ms: now_ms(),
            node: String::new(),
            session_id: None,
            user: None,
            resource: None,
            resource_kind: None,
            event,
        }
    }

    pub fn session(mut self, id: impl Into<String>) -> Self {
        self.session_id = Some(id.into());
        self
    }

    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    pub fn resource(mut self, name: impl Into<String>, kind: impl Into<String>) -> Self {
        self.resource = Some(name.into());
        self.resource_kind = Some(kind.into());
        self
    }

    /// Cuts fields to what every store backend accepts and removes NUL
    /// characters (PostgreSQL text rejects them), so that no event can make
    /// a batch fail and stall auditing.
    pub fn normalize(&mut self) {
        let name = |s: &mut String| clean(s, CharLimit::Chars(NAME_MAX_CHARS));
        let opt_name = |s: &mut Option<String>| {
            if let Some(s) = s {
                clean(s, CharLimit::Chars(NAME_MAX_CHARS))
            }
        };
        let detail = |s: &mut String| clean(s, CharLimit::Bytes(DETAIL_MAX_BYTES));
        if self.id.len() > 64 || self.id.is_empty() {
            self.id = new_id();
        }
        name(&mut self.node);
        opt_name(&mut self.session_id);
        opt_name(&mut self.user);
        opt_name(&mut self.resource);
        opt_name(&mut self.resource_kind);
        match &mut self.event {
            EventKind::SessionOpen {
                agent,
                client_addr,
                account,
            } => {
                if let Some(a) = agent {
                    name(a);
                }
                if let Some(a) = account {
                    name(a);
                }
                name(client_addr);
            }
            EventKind::SessionClose { outcome, .. } => detail(outcome),
            EventKind::Statement {
                text,
                kind,
                policy,
                error,
                ..
            } => {
                clean(text, CharLimit::Bytes(TEXT_MAX_BYTES));
                name(kind);
                name(policy);
                if let Some(e) = error {
                    detail(e);
                }
            }
            EventKind::LoginFailure {
                client_addr,
                reason,
            }
            | EventKind::AccessDenied {
                client_addr,
                reason,
            } => {
                name(client_addr);
                detail(reason);
            }
            EventKind::KubeRequest(k) => {
                let KubeRequest {
                    client_addr,
                    text,
                    verb,
                    api_group,
                    resource,
                    subresource,
                    namespace,
                    name: object,
                    policy,
                    kube_user,
                    kube_groups,
                    agent,
                    error,
                    recording,
                    ..
                } = &mut **k;
                name(client_addr);
                clean(text, CharLimit::Bytes(TEXT_MAX_BYTES));
                for f in [
                    verb,
                    api_group,
                    resource,
                    subresource,
                    namespace,
                    object,
                    policy,
                    kube_user,
                ] {
                    name(f);
                }
                kube_groups.iter_mut().for_each(&name);
                for f in [agent, recording].into_iter().flatten() {
                    name(f);
                }
                if let Some(e) = error {
                    detail(e);
                }
            }
            EventKind::Command {
                channel,
                text,
                policy,
                error,
                ..
            } => {
                name(channel);
                clean(text, CharLimit::Bytes(TEXT_MAX_BYTES));
                name(policy);
                if let Some(e) = error {
                    detail(e);
                }
            }
            EventKind::AgentConnect {
                agent,
                remote_addr,
                tags,
                agent_version,
            } => {
                name(agent);
                name(remote_addr);
                detail(tags);
                name(agent_version);
            }
            EventKind::AgentDisconnect { agent, reason, .. } => {
                name(agent);
                detail(reason);
            }
            EventKind::AdminChange {
                action,
                object,
                detail: d,
            } => {
                name(action);
                name(object);
                detail(d);
            }
        }
    }
}

enum CharLimit {
    Chars(usize),
    Bytes(usize),
}

const CUT_MARK: &str = "…[cut]";

fn clean(s: &mut String, limit: CharLimit) {
    if s.contains('\0') {
        *s = s.replace('\0', "\u{FFFD}");
    }
    let cut_at = match limit {
        CharLimit::Chars(max) => s.char_indices().nth(max).map(|_| {
            // Room for the mark, counted in characters.
            let keep = max.saturating_sub(CUT_MARK.chars().count());
            s.char_indices().nth(keep).map_or(s.len(), |(i, _)| i)
        }),
        CharLimit::Bytes(max) if s.len() > max => {
            let mut i = max.saturating_sub(CUT_MARK.len());
            while !s.is_char_boundary(i) {
                i -= 1;
            }
            Some(i)
        }
        CharLimit::Bytes(_) => None,
    };
    if let Some(i) = cut_at {
        s.truncate(i);
        s.push_str(CUT_MARK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(text: &str) -> EventKind {
        EventKind::Statement {
            text: text.into(),
            kind: "select".into(),
            decision: Decision::Allow,
            policy: "p".into(),
            duration_us: Some(5),
            rows: Some(1),
            error: None,
        }
    }

    #[test]
    fn json_shape_is_tagged_by_type() {
        let ev = AuditEvent::new(statement("select 1"))
            .user("alice")
            .resource("db", "postgres");
        let v = serde_json::to_value(&ev).expect("json");
        assert_eq!(v["event"]["type"], "statement");
        assert_eq!(v["event"]["kind"], "select");
        assert_eq!(v["event"]["decision"], "allow");
        let back: AuditEvent = serde_json::from_value(v).expect("parse");
        assert_eq!(back, ev);
    }

    #[test]
    fn names_parse_both_ways() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>(), Ok(t));
        }
        assert_eq!("Session-Open".parse(), Ok(EventType::SessionOpen));
        assert!("query".parse::<EventType>().is_err());
        assert_eq!("DENY".parse(), Ok(Decision::Deny));
        assert!("maybe".parse::<Decision>().is_err());
    }

    #[test]
    fn normalize_cuts_long_fields_and_nul() {
        let long = "é".repeat(TEXT_MAX_BYTES);
        let mut ev = AuditEvent::new(statement(&long)).user("u\0ser".repeat(100));
        ev.normalize();
        let user = ev.user.as_deref().expect("user");
        assert_eq!(user.chars().count(), NAME_MAX_CHARS);
        assert!(!user.contains('\0') && user.ends_with(CUT_MARK));
        let text = ev.event.text().expect("text");
        assert!(text.len() <= TEXT_MAX_BYTES && text.ends_with(CUT_MARK));
        let mut short = AuditEvent::new(statement("select 1")).user("bob");
        let before = short.clone();
        short.normalize();
        assert_eq!(short, before);
    }
}
