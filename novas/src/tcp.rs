//! The TCP front end: each user connection becomes one stream through a
//! healthy matching agent, spliced both ways.

use std::sync::{atomic::Ordering, Arc};

use crate::{
    frontend::{FrontEnd, Incoming},
    registry::Registry,
    route::{route, Metered, RouteError},
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
            Err(e) => {
                // The user's client sees a closed connection; the reason is here.
                match e {
                    RouteError::Refused { .. } => {
                        tracing::warn!(error = %e, "agent refused stream")
                    }
                    _ => tracing::warn!(error = %e, "session refused"),
                }
                return;
            }
        };
        tracing::Span::current().record("agent.name", agent.name.as_str());
        tracing::info!(%client, target = %res.target, "session open");
        let stats = &agent.stats;
        stats.active_streams.fetch_add(1, Ordering::Relaxed);
        stats.streams_total.fetch_add(1, Ordering::Relaxed);
        let mut tunnel = Metered {
            inner: stream,
            stats,
        };
        let result = tokio::io::copy_bidirectional_with_sizes(
            &mut conn,
            &mut tunnel,
            SPLICE_BUF,
            SPLICE_BUF,
        )
        .await;
        stats.active_streams.fetch_sub(1, Ordering::Relaxed);
        match result {
            Ok((up, down)) => tracing::info!(bytes.up = up, bytes.down = down, "session closed"),
            Err(e) => tracing::info!(error = %e, "session closed with an error"),
        }
    }
}
