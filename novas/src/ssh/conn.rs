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
    access::{choose_login, Identity, Policy},
    audit::{AuditEvent, AuditUnavailable, EventKind},
    resources::{Account, Resource},
};

/// What the login may do, decided once after authentication.
pub enum Access {
    Granted(Box<Grant>),
    /// Authenticated, but refused: the text the user reads.
    Refused(String),
    /// No resource in the login name: a shell gets a menu of these.
    Choose(Vec<String>),
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
    /// The decision after a choice in the menu, if any.
    chosen: OnceLock<Access>,
    upstream: tokio::sync::OnceCell<Result<Arc<upstream::Upstream>, String>>,
    /// The exit status of the last command or shell that reported one.
    pub exit_status: Mutex<Option<u32>>,
    started: Instant,
    channels: AtomicU32,
    /// Offered public keys that are not registered: (user, fingerprints).
    key_rejections: Mutex<Option<(String, Vec<String>)>>,
    /// This connection in the live-session registry.
    pub live: Arc<crate::sessions::Live>,
}

impl ConnState {
    pub fn new(
        front: Arc<SshFront>,
        session_id: String,
        client: SocketAddr,
        span: tracing::Span,
        live: Arc<crate::sessions::Live>,
    ) -> Self {
        Self {
            front,
            session_id,
            client,
            span,
            identity: OnceLock::new(),
            access: OnceLock::new(),
            chosen: OnceLock::new(),
            upstream: tokio::sync::OnceCell::new(),
            exit_status: Mutex::new(None),
            started: Instant::now(),
            channels: AtomicU32::new(0),
            key_rejections: Mutex::new(None),
            live,
        }
    }

    /// The access in force: the menu choice, else the login's.
    pub fn current(&self) -> Option<&Access> {
        self.chosen.get().or_else(|| self.access.get())
    }

    pub fn grant(&self) -> Option<&Grant> {
        match self.current() {
            Some(Access::Granted(g)) => Some(g),
            _ => None,
        }
    }

    /// Records the menu choice (the first one made wins) and audits a
    /// refusal.
    pub fn choose(&self, resource: &str) -> &Access {
        let Some(who) = self.identity.get() else {
            return self
                .chosen
                .get_or_init(|| Access::Refused("not logged in".into()));
        };
        self.chosen.get_or_init(|| {
            let a = self.decide(who, Some(resource), None);
            match &a {
                Access::Granted(g) => {
                    self.span.record("resource", g.resource.name.as_str());
                    self.live.set_resource(&g.resource.name);
                }
                Access::Refused(r) => self.denied(r),
                Access::Choose(_) => {}
            }
            a
        })
    }

    /// The resources `who` may use.
    pub fn reachable(&self, who: &Identity) -> Vec<String> {
        self.front
            .resources
            .iter()
            .filter(|r| self.front.dac.policies.authorize(who, &r.name).is_ok())
            .map(|r| r.name.clone())
            .collect()
    }

    /// What `who` may do with `resource` as `login`. Every refusal text
    /// names what to change.
    pub fn decide(&self, who: &Identity, resource: Option<&str>, login: Option<&str>) -> Access {
        let yours = || {
            let names = self.reachable(who);
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        };
        let Some(name) = resource else {
            let names = self.reachable(who);
            if names.is_empty() {
                return Access::Refused(format!(
                    "no policy grants {} access to any ssh resource",
                    who.user
                ));
            }
            return Access::Choose(names);
        };
        let Some(res) = self.front.resource(name) else {
            return Access::Refused(
                SshError::UnknownResource {
                    name: name.to_string(),
                    hint: format!("; resources you may use: {}", yours()),
                }
                .to_string(),
            );
        };
        let permit = match self.front.dac.policies.authorize(who, name) {
            Ok(p) => p,
            Err(_) => {
                return Access::Refused(format!("no policy grants {} access to {name}", who.user))
            }
        };
        match choose_login(&permit.policy, res, login) {
            Ok(account) => Access::Granted(Box::new(Grant {
                resource: res.clone(),
                account: account.clone(),
                policy: permit.policy,
            })),
            Err(m) => Access::Refused(m),
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

    /// A failed login, audited at once.
    pub fn login_failure(&self, user: &str, reason: String) {
        tracing::info!(user, %reason, "ssh login failed");
        let ev = AuditEvent::new(EventKind::LoginFailure {
            client_addr: self.client.to_string(),
            reason,
        })
        .session(&self.session_id)
        .user(user);
        let _ = self.front.dac.auditor.record(ev);
    }

    /// Notes an offered key that is not registered (see [`Self::end_login`]).
    pub fn key_rejected(&self, user: &str, fingerprint: String) {
        if let Ok(mut g) = self.key_rejections.lock() {
            let entry = g.get_or_insert_with(|| (user.to_string(), Vec::new()));
            if entry.1.len() < 16 && !entry.1.contains(&fingerprint) {
                entry.1.push(fingerprint);
            }
        }
    }

    /// At the end of a connection that never logged in: one login failure
    /// for the unregistered keys it offered.
    pub fn end_login(&self) {
        if self.identity.get().is_some() {
            return;
        }
        let taken = self.key_rejections.lock().ok().and_then(|mut g| g.take());
        if let Some((user, fps)) = taken {
            let reason = format!(
                "ssh public key not registered for this user: {}",
                fps.join(", ")
            );
            self.login_failure(&user, reason);
        }
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
                    self.live.bytes.clone(),
                )
                .await
                {
                    Ok(up) => {
                        self.span.record("agent.name", up.agent.name.as_str());
                        self.live.set_agent(&up.agent.name);
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
