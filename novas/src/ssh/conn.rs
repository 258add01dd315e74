//! What one client connection shares with its channel tasks: the access
//! decision made at login, the upstream connection (opened by the first
//! channel that needs it, then shared), the exit status, and the audit.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::Instant,
};

use super::{upstream, SshError, SshFront};
use crate::{
    access::{Identity, Policy},
    audit::{AuditEvent, AuditUnavailable, EventKind},
    resources::{Account, Resource},
};

/// What the login may do, decided once after authentication.
pub enum Access {
    Granted(Box<Grant>),
    /// Authenticated, but refused: the text the user reads.
    Refused(String),
}

pub struct Grant {
    pub resource: Arc<Resource>,
    pub account: Account,
    pub policy: Policy,
}

pub struct ConnState {
    pub front: Arc<SshFront>,
    pub session_id: String,
    pub client: SocketAddr,
    /// The connection's span, entered by the channel tasks.
    pub span: tracing::Span,
    pub identity: OnceLock<Identity>,
    pub access: OnceLock<Access>,
    upstream: tokio::sync::OnceCell<Result<Arc<upstream::Upstream>, String>>,
    /// The exit status of the last command or shell that reported one.
    pub exit_status: Mutex<Option<u32>>,
    started: Instant,
    channels: AtomicU32,
}

impl ConnState {
    pub fn new(
        front: Arc<SshFront>,
        session_id: String,
        client: SocketAddr,
        span: tracing::Span,
    ) -> Self {
        Self {
            front,
            session_id,
            client,
            span,
            identity: OnceLock::new(),
            access: OnceLock::new(),
            upstream: tokio::sync::OnceCell::new(),
            exit_status: Mutex::new(None),
            started: Instant::now(),
            channels: AtomicU32::new(0),
        }
    }

    pub fn grant(&self) -> Option<&Grant> {
        match self.access.get() {
            Some(Access::Granted(g)) => Some(g),
            _ => None,
        }
    }

    /// A fresh number for the next channel (names its recording).
    pub fn next_channel(&self) -> u32 {
        self.channels.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn user(&self) -> Option<&str> {
        self.identity.get().map(|i| i.user.as_str())
    }

    /// Queues an event with this session's id, user and resource.
    pub fn emit(&self, event: EventKind) -> Result<(), AuditUnavailable> {
        let mut ev = AuditEvent::new(event).session(&self.session_id);
        if let Some(u) = self.user() {
            ev = ev.user(u);
        }
        if let Some(g) = self.grant() {
            ev = ev.resource(&g.resource.name, "ssh");
        }
        let r = self.front.dac.auditor.record(ev);
        if let Err(e) = &r {
            tracing::error!(error = %e, "audit event not recorded");
        }
        r
    }

    /// Records a refusal the user was told about.
    pub fn denied(&self, reason: &str) {
        let _ = self.emit(EventKind::AccessDenied {
            client_addr: self.client.to_string(),
            reason: reason.to_string(),
        });
    }

    /// The connection to the target, opened on first use and shared by the
    /// session's channels. The error is the message the user reads.
    pub async fn upstream(&self) -> Result<Arc<upstream::Upstream>, String> {
        self.upstream
            .get_or_init(|| async {
                let Some(g) = self.grant() else {
                    return Err("no resource granted".to_string());
                };
                // Fail closed: no session the audit cannot record.
                if self.front.dac.auditor.check().is_err() {
                    let e = SshError::Audit.to_string();
                    self.denied(&e);
                    return Err(e);
                }
                let front = &self.front;
                match upstream::connect(
                    &self.session_id,
                    &g.resource,
                    &g.account,
                    &front.dac.registry,
                    &front.store,
                )
                .await
                {
                    Ok(up) => {
                        self.span.record("agent.name", up.agent.name.as_str());
                        let open = EventKind::SessionOpen {
                            agent: Some(up.agent.name.clone()),
                            client_addr: self.client.to_string(),
                            account: Some(g.account.name.clone()),
                        };
                        if self.emit(open).is_err() {
                            return Err(SshError::Audit.to_string());
                        }
                        tracing::info!(agent.name = %up.agent.name, login = %g.account.username, "ssh session connected to the target");
                        Ok(Arc::new(up))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "ssh session could not reach the target");
                        let msg = e.to_string();
                        self.denied(&msg);
                        Err(msg)
                    }
                }
            })
            .await
            .clone()
    }

    /// At the end of the connection: the close event (if the session
    /// reached its target) and the upstream disconnect.
    pub async fn finish(&self, outcome: String) {
        let Some(Ok(up)) = self.upstream.get() else {
            return;
        };
        let exit_status = self.exit_status.lock().ok().and_then(|g| *g);
        let _ = self.emit(EventKind::SessionClose {
            outcome: outcome.clone(),
            bytes_up: up.counters.sent.load(Ordering::Relaxed),
            bytes_down: up.counters.received.load(Ordering::Relaxed),
            duration_ms: self.started.elapsed().as_millis() as u64,
            exit_status,
        });
        tracing::info!(%outcome, ?exit_status, "ssh session closed");
        let _ = up
            .handle
            .disconnect(russh::Disconnect::ByApplication, "session ended", "")
            .await;
    }
}
