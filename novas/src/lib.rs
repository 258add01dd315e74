//! NOVAS, the access server.
//!
//! - [`config`]: NOVAS_* variables and flags, validated at start.
//! - [`agent_listener`]: the agent port (TLS + yamux, Hello, heartbeats).
//! - [`registry`]: connected agents, selection across HA replicas.
//! - [`resources`]: the YAML resources file.
//! - [`tcp`]: the TCP front end (a port per resource, spliced via an agent).
//! - [`mysql`]: the MySQL/MariaDB wire protocol, I/O-free (handshake, auth, relay).
//! - [`web`]: `/healthz`, `/readyz`, `/api/tunnels`.
//! - [`secrets`]: data-dir files for generated secrets.
//! - [`cli`]: the `tunnels`, `fingerprint` and `gen-token` subcommands.
#![forbid(unsafe_code)]

pub mod agent_listener;
pub mod cli;
pub mod config;
pub mod mysql;
pub mod registry;
pub mod resources;
pub mod secrets;
pub mod tcp;
pub mod web;

use std::{
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tunnel_proto::tls::{self, ServerIdentity};

pub use config::Config;

/// Bound on letting sessions finish after shutdown is requested.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Loads or generates the server certificate named by the configuration.
pub fn load_identity(cfg: &Config) -> anyhow::Result<ServerIdentity> {
    match &cfg.tls {
        config::TlsSource::Files { cert, key } => {
            ServerIdentity::from_pem_files(cert, key).context("NOVAS_TLS_CERT/NOVAS_TLS_KEY")
        }
        config::TlsSource::Generated { names } => {
            let dir = cfg.data_dir.join("tls");
            let (id, generated) = ServerIdentity::load_or_generate(&dir, names)
                .with_context(|| format!("NOVAS_DATA_DIR: certificate in {}", dir.display()))?;
            if generated {
                tracing::info!(dir = %dir.display(), "generated a self-signed certificate");
            }
            Ok(id)
        }
    }
}

async fn bind(ip: std::net::IpAddr, port: u16, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(SocketAddr::new(ip, port))
        .await
        .with_context(|| format!("{what}: cannot listen on {ip}:{port}"))
}

/// Runs the server until `shutdown` fires.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let identity = load_identity(&cfg)?;
    let fingerprint = identity.fingerprint();
    let resources = match &cfg.resources {
        Some(path) => resources::load(path).context("NOVAS_RESOURCES")?,
        None => Vec::new(),
    };
    let admin_token = match &cfg.admin_token {
        Some(t) => t.clone(),
        None => secrets::load_or_create(&cfg.data_dir, secrets::ADMIN_TOKEN_FILE)
            .context("NOVAS_DATA_DIR: admin token")?,
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(identity)?);
    let registry = Arc::new(registry::Registry::new(cfg.node_name.clone()));
    let tasks = TaskTracker::new();

    let agent_listener = bind(cfg.bind, cfg.agent_port, "NOVAS_AGENT_PORT").await?;
    let http_listener = bind(cfg.bind, cfg.http_port, "NOVAS_HTTP_PORT").await?;
    let mut resource_listeners = Vec::new();
    for r in resources {
        let l = bind(cfg.bind, r.listen_port, &format!("resource {:?}", r.name)).await?;
        resource_listeners.push((l, Arc::new(r)));
    }

    let ctx = Arc::new(agent_listener::ListenerCtx {
        token: cfg.agent_token.clone(),
        registry: registry.clone(),
        acceptor,
        handshake_timeout: cfg.handshake_timeout,
        heartbeat: cfg.heartbeat,
    });
    let agent_addr = agent_listener.local_addr()?;
    tasks.spawn(agent_listener::serve(
        agent_listener,
        ctx,
        tasks.clone(),
        shutdown.clone(),
    ));
    for (listener, res) in resource_listeners {
        tracing::info!(resource = %res.name, port = res.listen_port, target = %res.target, "resource listening");
        tasks.spawn(tcp::serve(
            listener,
            res,
            registry.clone(),
            tasks.clone(),
            shutdown.clone(),
        ));
    }
    let web_state = Arc::new(web::WebState {
        registry: registry.clone(),
        admin_token,
        ready: Default::default(),
    });
    let http_addr = http_listener.local_addr()?;
    let http = axum::serve(http_listener, web::router(web_state.clone()))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let http_task = tokio::spawn(async move { http.await });

    web_state.ready.store(true, Ordering::Relaxed);
    println!("fingerprint: {fingerprint}");
    println!("listening: agent={agent_addr} http={http_addr}");
    tracing::info!(node = %cfg.node_name, %agent_addr, %http_addr, %fingerprint, "novas ready");

    shutdown.cancelled().await;
    web_state.ready.store(false, Ordering::Relaxed);
    tracing::info!("shutting down: no new connections, draining sessions");
    tasks.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout, closing remaining sessions");
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), http_task).await;
    Ok(())
}
