//! The TCP front end: each user connection becomes one stream through a
//! healthy matching agent, spliced both ways.

use std::sync::Arc;

use crate::{
    frontend::{FrontEnd, Incoming},
    registry::Registry,
    route::{log_route_error, route, Metered},
};

const SPLICE_BUF: usize = 64 * 1024;

pub struct Tcp {
    pub registry: Arc<Registry>,
}

impl FrontEnd for Tcp {
    async fn handle(self: Arc<Self>, incoming: Incoming) {
        let Incoming {
            mut conn,
            client,
            session_id,
            resource: res,
        } = incoming;
        let (agent, stream) = match route(&session_id, &res, &self.registry).await {
            Ok(x) => x,
            Err(e) => return log_route_error(&e),
        };
        tracing::Span::current().record("agent.name", agent.name.as_str());
        tracing::info!(%client, target = %res.target, "session open");
        let mut tunnel = Metered::new(stream, agent.clone());
        let result = tokio::io::copy_bidirectional_with_sizes(
            &mut conn,
            &mut tunnel,
            SPLICE_BUF,
            SPLICE_BUF,
        )
        .await;
        drop(tunnel);
        match result {
            Ok((up, down)) => tracing::info!(bytes.up = up, bytes.down = down, "session closed"),
            Err(e) => tracing::info!(error = %e, "session closed with an error"),
        }
    }
}
