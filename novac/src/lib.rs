//! NOVAC, the agent that runs inside a private network.
//!
//! - [`config`]: NOVAC_* variables and flags, validated at start.
//! - [`tunnel`]: one tunnel per NOVAS (connect, register, heartbeat,
//!   reconnect with backoff).
//! - [`session`]: one session stream (allowlist, dial, splice).
//! - [`kube`]: KAC, kubernetes streams served against this agent's API
//!   server with impersonation.
//! - [`health`]: `/healthz` and `/readyz` on NOVAC_HEALTH_PORT.
//! - [`allowlist`], [`backoff`]: the rules and delays those use.
#![forbid(unsafe_code)]

pub mod allowlist;
pub mod backoff;
pub mod config;
pub mod health;
pub mod kube;
pub mod session;
pub mod tunnel;

use std::sync::Arc;

use anyhow::Context;

use tokio_util::sync::CancellationToken;
use tunnel_proto::{
    tls,
    transport::{tls_mux::TlsMuxConnector, Connector},
};

pub use config::Config;

/// Bound on TCP connect plus TLS handshake to a NOVAS.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs the agent until `shutdown` fires and the sessions have drained.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let tls = tls::client_config(&cfg.trust)?;
    let connector: Arc<dyn Connector> = Arc::new(TlsMuxConnector {
        tls,
        timeout: CONNECT_TIMEOUT,
    });
    if cfg.allow.is_allow_all() {
        tracing::warn!("NOVAC_ALLOW is unset: this agent will dial any target NOVAS asks for");
    }
    tracing::info!(agent.name = %cfg.name, tags = %cfg.tags, servers = ?cfg.servers, "starting");
    let kube = match &cfg.kube {
        Some(src) => {
            let t = kube::KubeTarget::load(src)
                .await
                .with_context(|| format!("KAC for cluster {:?}", src.cluster))?;
            tracing::info!(kube.cluster = %t.cluster, api = %t.url, "serving kubernetes streams");
            Some(Arc::new(t))
        }
        None => None,
    };
    let ctx = Arc::new(session::SessionCtx {
        allow: cfg.allow.clone(),
        dial_timeout: cfg.dial_timeout,
        kube,
    });
    let health = Arc::new(health::Health::default());
    if let Some(port) = cfg.health_port {
        let addr = std::net::SocketAddr::from(([0, 0, 0, 0], port));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("NOVAC_HEALTH_PORT: cannot listen on {addr}"))?;
        tracing::info!(%addr, "health endpoint listening (/healthz, /readyz)");
        tokio::spawn(health::serve(listener, health.clone(), shutdown.clone()));
    }
    let cfg = Arc::new(cfg);
    let tasks: Vec<_> = cfg
        .servers
        .iter()
        .map(|server| {
            tokio::spawn(tunnel::run(
                server.clone(),
                cfg.clone(),
                connector.clone(),
                ctx.clone(),
                health.clone(),
                shutdown.clone(),
            ))
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    tracing::info!("stopped");
    Ok(())
}
