//! Live user sessions of every kind, on this node: what the console's
//! Sessions page lists, and the handle an administrator terminates.
//!
//! The accept loops register each connection ([`Sessions::open`]) and run
//! it under [`Live::run`]; front ends fill in what they learn later (user,
//! resource, agent) and count bytes into [`Live::bytes`]. Terminating
//! cancels the session's token: the connection's future is dropped, which
//! closes the client socket and the tunnel stream, and the close is audited
//! with the administrator who asked. The registry is generic over the kind
//! (a `&'static str` like `postgres`), so a new front end only registers.
//!
//! Sessions live in memory: a console terminates sessions of the NOVAS
//! node it is served by (each session shows its node).

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    sync::{atomic::Ordering, Arc, Mutex, MutexGuard, OnceLock},
    time::{Instant, SystemTime},
};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{
    audit::{AuditEvent, Auditor, EventKind},
    route::SessionBytes,
};

/// Every live session of this node.
pub struct Sessions {
    node: String,
    auditor: Auditor,
    map: Mutex<HashMap<String, Arc<Live>>>,
}

/// One live session.
pub struct Live {
    pub id: String,
    /// `tcp`, `postgres`, `mysql`, `ssh`, … (the resource kind).
    pub kind: &'static str,
    pub client: SocketAddr,
    pub started: SystemTime,
    started_at: Instant,
    user: OnceLock<String>,
    resource: OnceLock<String>,
    agent: OnceLock<String>,
    /// Counted by the session's tunnel stream (`route::Metered`).
    pub bytes: Arc<SessionBytes>,
    cancel: CancellationToken,
    terminated_by: OnceLock<String>,
}

/// JSON view of a live session (`GET /api/sessions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LiveView {
    pub id: String,
    pub kind: String,
    pub user: Option<String>,
    pub resource: Option<String>,
    pub agent: Option<String>,
    pub client_addr: String,
    pub node: String,
    pub started: String,
    pub duration_ms: u64,
    /// Bytes towards the target.
    pub bytes_up: u64,
    /// Bytes from the target.
    pub bytes_down: u64,
    /// `login` until the session reached its target through an agent,
    /// then `active`; `terminating` once an administrator ended it.
    pub state: String,
}

/// Why a session could not be terminated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TerminateError {
    /// No live session with this id on this node (ended, or elsewhere).
    #[error("no live session {0:?} on this node")]
    NotFound(String),
}

/// Removes the session from the registry when its task ends.
pub struct Registration {
    sessions: Arc<Sessions>,
    pub live: Arc<Live>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.live.id);
    }
}

impl Sessions {
    pub fn new(node: String, auditor: Auditor) -> Self {
        Self {
            node,
            auditor,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Live>>> {
        // Every update is one insert or remove: a poisoned map is whole.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new connection; it stays listed while the returned
    /// registration lives.
    pub fn open(
        self: &Arc<Self>,
        id: &str,
        kind: &'static str,
        resource: Option<&str>,
        client: SocketAddr,
    ) -> Registration {
        let live = Arc::new(Live {
            id: id.to_string(),
            kind,
            client,
            started: SystemTime::now(),
            started_at: Instant::now(),
            user: OnceLock::new(),
            resource: OnceLock::new(),
            agent: OnceLock::new(),
            bytes: Arc::default(),
            cancel: CancellationToken::new(),
            terminated_by: OnceLock::new(),
        });
        if let Some(r) = resource {
            live.set_resource(r);
        }
        self.lock().insert(live.id.clone(), live.clone());
        Registration {
            sessions: self.clone(),
            live,
        }
    }

    /// Live sessions, oldest first.
    pub fn list(&self) -> Vec<LiveView> {
        let mut v: Vec<LiveView> = self.lock().values().map(|l| l.view(&self.node)).collect();
        v.sort_by(|a, b| a.started.cmp(&b.started).then(a.id.cmp(&b.id)));
        v
    }

    pub fn get(&self, id: &str) -> Option<LiveView> {
        self.lock().get(id).map(|l| l.view(&self.node))
    }

    /// Ends a live session on behalf of administrator `by`. The close is
    /// audited by the session's task when it stops ([`Live::run`]).
    pub fn terminate(&self, id: &str, by: &str) -> Result<LiveView, TerminateError> {
        let live = self
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| TerminateError::NotFound(id.to_string()))?;
        let _ = live.terminated_by.set(by.to_string());
        live.cancel.cancel();
        tracing::info!(session.id = %id, admin = %by, "session terminated by an administrator");
        Ok(live.view(&self.node))
    }

    /// Audits the close of a session its front end could not finish itself
    /// (its future was dropped): only sessions that reached their target
    /// have an open event to close.
    fn audit_terminated(&self, live: &Live, outcome: String) {
        if live.agent().is_none() {
            return;
        }
        let mut ev = AuditEvent::new(EventKind::SessionClose {
            outcome,
            bytes_up: live.bytes.sent.load(Ordering::Relaxed),
            bytes_down: live.bytes.received.load(Ordering::Relaxed),
            duration_ms: live.started_at.elapsed().as_millis() as u64,
            exit_status: None,
        })
        .session(&live.id);
        if let Some(u) = live.user() {
            ev = ev.user(u);
        }
        if let Some(r) = live.resource() {
            ev = ev.resource(r, live.kind);
        }
        if let Err(e) = self.auditor.record(ev) {
            tracing::error!(error = %e, "audit event not recorded");
        }
    }
}

impl Live {
    pub fn set_user(&self, user: &str) {
        let _ = self.user.set(user.to_string());
    }

    pub fn set_resource(&self, resource: &str) {
        let _ = self.resource.set(resource.to_string());
    }

    /// Marks the session as connected to its target through `agent`.
    pub fn set_agent(&self, agent: &str) {
        let _ = self.agent.set(agent.to_string());
    }

    pub fn user(&self) -> Option<&str> {
        self.user.get().map(String::as_str)
    }

    pub fn resource(&self) -> Option<&str> {
        self.resource.get().map(String::as_str)
    }

    pub fn agent(&self) -> Option<&str> {
        self.agent.get().map(String::as_str)
    }

    /// Fires when an administrator terminates the session.
    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// The administrator who terminated the session, if one did.
    pub fn terminated_by(&self) -> Option<&str> {
        self.terminated_by.get().map(String::as_str)
    }

    /// The close outcome of a terminated session.
    pub fn terminated_outcome(&self) -> Option<String> {
        self.terminated_by()
            .map(|by| format!("terminated by administrator {by}"))
    }

    /// Runs a session's future until it ends or is terminated; on
    /// termination the future is dropped (closing its sockets) and the
    /// close is audited here.
    pub async fn run(self: &Arc<Self>, sessions: &Sessions, fut: impl Future<Output = ()>) {
        tokio::select! {
            _ = fut => {}
            _ = self.cancel.cancelled() => {
                let outcome = self
                    .terminated_outcome()
                    .unwrap_or_else(|| "terminated".to_string());
                tracing::info!(%outcome, "session closed");
                sessions.audit_terminated(self, outcome);
            }
        }
    }

    fn view(&self, node: &str) -> LiveView {
        let state = if self.cancel.is_cancelled() {
            "terminating"
        } else if self.agent.get().is_some() {
            "active"
        } else {
            "login"
        };
        LiveView {
            id: self.id.clone(),
            kind: self.kind.to_string(),
            user: self.user.get().cloned(),
            resource: self.resource.get().cloned(),
            agent: self.agent.get().cloned(),
            client_addr: self.client.to_string(),
            node: node.to_string(),
            started: humantime::format_rfc3339_millis(self.started).to_string(),
            duration_ms: self.started_at.elapsed().as_millis() as u64,
            bytes_up: self.bytes.sent.load(Ordering::Relaxed),
            bytes_down: self.bytes.received.load(Ordering::Relaxed),
            state: state.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{audit::AuditQuery, store::test_util::sqlite_store};

    fn addr() -> SocketAddr {
        "10.0.0.1:5000".parse().expect("addr")
    }

    #[tokio::test]
    async fn register_list_terminate_and_audit() {
        let (store, dir) = sqlite_store().await;
        let auditor = Auditor::start(
            store.clone(),
            crate::audit::AuditorConfig::new("n1", dir.path()),
        )
        .await;
        let sessions = Arc::new(Sessions::new("n1".into(), auditor.clone()));
        let reg = sessions.open("s-1", "postgres", Some("db"), addr());
        let other = sessions.open("s-2", "tcp", None, addr());
        assert_eq!(sessions.list().len(), 2);
        assert_eq!(sessions.get("s-1").map(|v| v.state), Some("login".into()));
        reg.live.set_user("alice");
        reg.live.set_agent("agent-1");
        reg.live.bytes.sent.fetch_add(7, Ordering::Relaxed);
        let v = sessions.get("s-1").expect("listed");
        assert_eq!(
            (v.user.as_deref(), v.agent.as_deref(), v.state.as_str()),
            (Some("alice"), Some("agent-1"), "active")
        );
        assert_eq!((v.bytes_up, v.node.as_str()), (7, "n1"));

        assert_eq!(
            sessions.terminate("nope", "root"),
            Err(TerminateError::NotFound("nope".into()))
        );
        let live = reg.live.clone();
        let s2 = sessions.clone();
        let task = tokio::spawn(async move {
            // A session that would never end by itself.
            live.run(&s2, std::future::pending()).await;
            drop(reg);
        });
        let v = sessions.terminate("s-1", "root").expect("terminate");
        assert_eq!(v.state, "terminating");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the session ends when terminated")
            .expect("task");
        assert!(sessions.get("s-1").is_none(), "unlisted once ended");
        drop(other);
        assert!(sessions.list().is_empty());

        auditor.shutdown(Duration::from_secs(5)).await;
        let events = store
            .query_events(&AuditQuery {
                session_id: Some("s-1".into()),
                ..Default::default()
            })
            .await
            .expect("query");
        assert_eq!(events.len(), 1, "{events:?}");
        match &events[0].event {
            EventKind::SessionClose {
                outcome, bytes_up, ..
            } => {
                assert_eq!(outcome, "terminated by administrator root");
                assert_eq!(*bytes_up, 7);
            }
            other => panic!("expected a close, got {other:?}"),
        }
        assert_eq!(events[0].user.as_deref(), Some("alice"));
        assert_eq!(events[0].resource_kind.as_deref(), Some("postgres"));
    }
}
