//! The TCP front end: each user connection becomes one stream through a
//! healthy matching agent, spliced both ways, audited as one session (open
//! and close; there is no NOVAS user on a plain TCP port).

use std::{sync::Arc, time::Instant};

use crate::{
    audit::{AuditEvent, Auditor, EventKind},
    dac::close_event,
    frontend::{FrontEnd, Incoming},
    registry::Registry,
    route::{log_route_error, route, Metered},
};

pub struct Tcp {
    pub registry: Arc<Registry>,
    pub auditor: Auditor,
}

impl Tcp {
    fn emit(&self, incoming_id: &str, resource: &str, event: EventKind) {
        let ev = AuditEvent::new(event)
            .session(incoming_id)
            .resource(resource, "tcp");
        if let Err(e) = self.auditor.record(ev) {
            tracing::error!(error = %e, "audit event not recorded");
        }
    }
}

impl FrontEnd for Tcp {
    async fn handle(self: Arc<Self>, incoming: Incoming) {
        let Incoming {
            mut conn,
            client,
            session_id,
            resource: res,
            live,
        } = incoming;
        let (agent, stream) = match route(&session_id, &res, &self.registry).await {
            Ok(x) => x,
            Err(e) => return log_route_error(&e),
        };
        tracing::Span::current().record("agent.name", agent.name.as_str());
        live.set_agent(&agent.name);
        tracing::info!(%client, target = %res.target, "session open");
        self.emit(
            &session_id,
            &res.name,
            EventKind::SessionOpen {
                agent: Some(agent.name.clone()),
                client_addr: client.to_string(),
                account: None,
            },
        );
        let started = Instant::now();
        let mut tunnel = Metered::with_bytes(stream, agent.clone(), live.bytes.clone());
        let result = tunnel_proto::splice::splice(&mut conn, &mut tunnel).await;
        let (up, down) = (tunnel.sent(), tunnel.received());
        drop(tunnel);
        let outcome = match result {
            Ok(_) => "closed".to_string(),
            Err(e) => format!("error: {e}"),
        };
        tracing::info!(bytes.up = up, bytes.down = down, %outcome, "session closed");
        self.emit(
            &session_id,
            &res.name,
            close_event(outcome, started, up, down),
        );
    }
}
