//! What the protocol-aware front ends (PostgreSQL, MySQL) share: who the
//! users are, what the policies say, where events go, and one way to
//! record a session's events.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use crate::{
    audit::{AuditEvent, Auditor, EventKind},
    live_policies::LivePolicies,
    registry::Registry,
    resources::Resource,
    users::Users,
};

pub struct Dac {
    pub registry: Arc<Registry>,
    pub users: Users,
    pub policies: Arc<LivePolicies>,
    pub auditor: Auditor,
}

/// Records the events of one session with its id, user and resource.
pub struct SessionAudit {
    auditor: Auditor,
    session_id: String,
    resource: String,
    kind: &'static str,
    pub client: SocketAddr,
    pub user: Option<String>,
}

impl SessionAudit {
    pub fn new(auditor: &Auditor, session_id: &str, res: &Resource, client: SocketAddr) -> Self {
        Self {
            auditor: auditor.clone(),
            session_id: session_id.to_string(),
            resource: res.name.clone(),
            kind: res.kind.as_str(),
            client,
            user: None,
        }
    }

    /// Queues one event. The auditor keeps events even while the store
    /// fails; a refusal here means shutdown or an overflowing queue, and is
    /// logged once per event with what was lost.
    pub fn emit(&self, event: EventKind) {
        let mut ev = AuditEvent::new(event)
            .session(&self.session_id)
            .resource(&self.resource, self.kind);
        if let Some(u) = &self.user {
            ev = ev.user(u);
        }
        if let Err(e) = self.auditor.record(ev) {
            tracing::error!(error = %e, "audit event not recorded");
        }
    }

    pub fn login_failure(&self, user: &str, reason: String) {
        let ev = AuditEvent::new(EventKind::LoginFailure {
            client_addr: self.client.to_string(),
            reason,
        })
        .session(&self.session_id)
        .resource(&self.resource, self.kind)
        .user(user);
        if let Err(e) = self.auditor.record(ev) {
            tracing::error!(error = %e, "audit event not recorded");
        }
    }
}

/// How a front end's relay ended.
#[derive(Debug)]
pub enum End {
    ClientClosed,
    ServerClosed,
    ClientError(String),
    ServerError(String),
}

impl End {
    pub fn outcome(&self) -> String {
        match self {
            Self::ClientClosed => "closed by client".into(),
            Self::ServerClosed => "closed by database".into(),
            Self::ClientError(e) => format!("client error: {e}"),
            Self::ServerError(e) => format!("database error: {e}"),
        }
    }
}

/// The session-close event, with the time since `started`.
pub fn close_event(outcome: String, started: Instant, up: u64, down: u64) -> EventKind {
    EventKind::SessionClose {
        outcome,
        bytes_up: up,
        bytes_down: down,
        duration_ms: started.elapsed().as_millis() as u64,
        exit_status: None,
    }
}
