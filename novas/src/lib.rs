//! NOVAS, the access server.
//!
//! - [`access`]: users' passwords, policies, SQL statement classification.
//! - [`config`]: NOVAS_* variables and flags, validated at start.
//! - [`agent_listener`]: the agent port (TLS + mux, Hello, heartbeats).
//! - [`registry`]: connected agents, selection across HA replicas.
//! - [`resources`]: the YAML resources file.
//! - [`frontend`]: the accept loop shared by the front ends.
//! - [`live_policies`]: the policies in force, shared through the store and followed live.
//! - [`route`]: picking an agent and opening a session stream through it.
//! - [`tcp`]: the TCP front end (a port per resource, spliced via an agent).
//! - [`postgres`]: PostgreSQL wire protocol v3 without I/O (startup, SCRAM, relay scanners, pipeline).
//! - [`mysql`]: the MySQL/MariaDB wire protocol (I/O-free) and the MySQL front end.
//! - [`metrics`]: Prometheus counters and the `/metrics` text.
//! - [`web`]: `/healthz`, `/readyz`, `/metrics`, `/api/tunnels`, `/api/audit`.
//! - [`console`]: the web console (login, pages, the JSON API behind them).
//! - [`sessions`]: live user sessions of every kind, terminable.
//! - [`ssh`]: SAC, the SSH front end (one listener, resource in the login name).
//! - [`kube`]: KAC, the Kubernetes API front end (one HTTPS listener, cluster in the path).
//! - [`secrets`]: data-dir files for generated secrets.
//! - [`store`]: the persistent store (SQLite, or a shared PostgreSQL/MySQL): users, audit.
//! - [`audit`]: typed audit events and the batching, fail-closed [`audit::Auditor`].
//! - [`cli`]: the `tunnels`, `audit`, `fingerprint` and `gen-token` subcommands.
#![forbid(unsafe_code)]

pub mod access;
pub mod agent_listener;
pub mod audit;
pub mod cli;
pub mod config;
pub mod console;
pub mod dac;
pub mod frontend;
pub mod kube;
pub mod live_policies;
pub mod metrics;
pub mod mysql;
pub mod postgres;
pub mod registry;
pub mod resources;
pub mod route;
pub mod secrets;
pub mod sessions;
pub mod ssh;
pub mod store;
pub mod tcp;
pub mod users;
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
/// Bound on writing queued audit events at shutdown; the rest is spooled.
const AUDIT_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

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
    let store = store::Store::open(cfg.store_url.expose())
        .await
        .context("NOVAS_STORE_URL")?;
    tracing::info!(store.url = %store.url(), store.backend = store.dialect().name(), "store open");
    let auditor = audit::Auditor::start(
        store.clone(),
        audit::AuditorConfig {
            fail_open: cfg.audit_fail_open,
            ..audit::AuditorConfig::new(cfg.node_name.clone(), cfg.data_dir.clone())
        },
    )
    .await;
    let policies = live_policies::load_at_start(
        cfg.policies.as_deref(),
        &store,
        &resources,
        &cfg.node_name,
        &auditor,
    )
    .await?;
    if policies.current().iter().next().is_none()
        && resources
            .iter()
            .any(|r| r.kind != tunnel_proto::StreamKind::Tcp)
    {
        tracing::warn!(
            "database or ssh resources declared but no policies (NOVAS_POLICIES or `novas policy import`): nobody can use them"
        );
    }
    let policies = Arc::new(policies);
    let tasks = TaskTracker::new();
    tasks.spawn(live_policies::follow(
        policies.clone(),
        store.clone(),
        resources.clone(),
        cfg.policy_refresh,
        shutdown.clone(),
    ));
    let sessions = Arc::new(sessions::Sessions::new(
        cfg.node_name.clone(),
        auditor.clone(),
    ));
    let db_tls = tokio_rustls::TlsAcceptor::from(tls::server_config_alpn(
        identity.clone(),
        &[b"postgresql"],
    )?);
    let mysql_tls =
        tokio_rustls::TlsAcceptor::from(tls::server_config_alpn(identity.clone(), &[])?);
    // kubectl over HTTP/1.1 only: exec and port-forward upgrades do not
    // exist in HTTP/2.
    let kube_tls =
        tokio_rustls::TlsAcceptor::from(tls::server_config_alpn(identity.clone(), &[b"http/1.1"])?);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(identity)?);
    let registry = Arc::new(registry::Registry::new(cfg.node_name.clone()));

    let agent_listener = bind(cfg.bind, cfg.agent_port, "NOVAS_AGENT_PORT").await?;
    let http_listener = bind(cfg.bind, cfg.http_port, "NOVAS_HTTP_PORT").await?;
    let (ssh_resources, resources): (Vec<_>, Vec<_>) = resources
        .into_iter()
        .partition(|r| r.kind == tunnel_proto::StreamKind::Ssh);
    // One SSH listener for every ssh resource, only if there are any.
    let ssh_listener = match ssh_resources.is_empty() {
        true => None,
        false => Some(bind(cfg.bind, cfg.ssh_port, "NOVAS_SSH_PORT").await?),
    };
    let (kube_resources, resources): (Vec<_>, Vec<_>) = resources
        .into_iter()
        .partition(|r| r.kind == tunnel_proto::StreamKind::Kubernetes);
    // One KAC listener for every kubernetes resource, only if there are any.
    let kube_listener = match kube_resources.is_empty() {
        true => None,
        false => Some(bind(cfg.bind, cfg.kube_port, "NOVAS_KUBE_PORT").await?),
    };
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
        auditor: auditor.clone(),
    });
    let agent_addr = agent_listener.local_addr()?;
    tasks.spawn(agent_listener::serve(
        agent_listener,
        ctx,
        tasks.clone(),
        shutdown.clone(),
    ));
    let dac = Arc::new(dac::Dac {
        registry: registry.clone(),
        users: users::Users::new(store.clone()),
        policies,
        auditor: auditor.clone(),
    });
    let tcp_front = Arc::new(tcp::Tcp {
        registry: registry.clone(),
        auditor: auditor.clone(),
    });
    let pg_front = Arc::new(postgres::session::PostgresFront {
        dac: dac.clone(),
        tls: db_tls,
        cancel: Default::default(),
    });
    let mysql_front = Arc::new(mysql::session::MysqlFront::new(dac.clone(), mysql_tls));
    let mut ssh_addr = None;
    if let Some(listener) = ssh_listener {
        let (key, generated) = ssh::hostkey::load_or_generate(&cfg.data_dir)
            .map_err(|m| anyhow::anyhow!("NOVAS_DATA_DIR: SSH host key: {m}"))?;
        let host_fp = ssh::hostkey::fingerprint(key.public_key());
        if generated {
            tracing::info!(fingerprint = %host_fp, "generated the SSH host key");
        }
        let front = Arc::new(ssh::SshFront {
            dac: dac.clone(),
            store: store.clone(),
            resources: ssh_resources.into_iter().map(Arc::new).collect(),
            config: Arc::new(ssh::server_config(key)),
            recordings: ssh::recordings_dir(&cfg.data_dir),
            login_timeout: cfg.ssh_login_timeout,
        });
        let addr = listener.local_addr()?;
        for r in &front.resources {
            tracing::info!(resource = %r.name, kind = "ssh", ssh.addr = %addr, target = %r.target, "ssh resource served");
        }
        ssh_addr = Some((addr, host_fp));
        tasks.spawn(ssh::serve(
            listener,
            front,
            sessions.clone(),
            tasks.clone(),
            shutdown.clone(),
        ));
    }
    let mut kube_addr = None;
    if let Some(listener) = kube_listener {
        let addr = listener.local_addr()?;
        for r in &kube_resources {
            tracing::info!(resource = %r.name, kind = "kubernetes", kube.addr = %addr, path = %format!("{}{}", kube::proxy::CLUSTER_PREFIX, r.name), "kubernetes resource served");
        }
        let front = Arc::new(kube::KubeFront::new(
            dac.clone(),
            store.clone(),
            kube_resources,
            kube_tls,
            ssh::recordings_dir(&cfg.data_dir),
        ));
        kube_addr = Some(addr);
        tasks.spawn(kube::serve(
            listener,
            front,
            sessions.clone(),
            tasks.clone(),
            shutdown.clone(),
        ));
    }
    for (listener, res) in resource_listeners {
        tracing::info!(resource = %res.name, kind = res.kind.as_str(), port = res.listen_port, target = %res.target, "resource listening");
        let (tasks2, stop, live) = (tasks.clone(), shutdown.clone(), sessions.clone());
        match res.kind {
            tunnel_proto::StreamKind::Postgres => tasks.spawn(frontend::serve(
                listener,
                res,
                pg_front.clone(),
                live,
                tasks2,
                stop,
            )),
            tunnel_proto::StreamKind::Mysql => tasks.spawn(frontend::serve(
                listener,
                res,
                mysql_front.clone(),
                live,
                tasks2,
                stop,
            )),
            tunnel_proto::StreamKind::Tcp => tasks.spawn(frontend::serve(
                listener,
                res,
                tcp_front.clone(),
                live,
                tasks2,
                stop,
            )),
            other => anyhow::bail!(
                "NOVAS_RESOURCES: resource {:?}: kind {} has no front end yet",
                res.name,
                other.as_str()
            ),
        };
    }
    let mut web_state = web::WebState::new(
        registry.clone(),
        admin_token,
        store.clone(),
        auditor.clone(),
        sessions.clone(),
        ssh::recordings_dir(&cfg.data_dir),
    );
    web_state.metrics_public = cfg.metrics_public;
    web_state.console = cfg.console.clone();
    let web_state = Arc::new(web_state);
    let http_addr = http_listener.local_addr()?;
    let http = axum::serve(
        http_listener,
        web::router(web_state.clone()).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let http_task = tokio::spawn(async move { http.await });

    web_state.ready.store(true, Ordering::Relaxed);
    println!("fingerprint: {fingerprint}");
    if let Some((addr, fp)) = &ssh_addr {
        println!("ssh: {addr} {fp}");
    }
    if let Some(addr) = &kube_addr {
        println!("kube: {addr}");
    }
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
    // After the sessions: their last events are in the queue by now.
    auditor.shutdown(AUDIT_FLUSH_TIMEOUT).await;
    store.close().await;
    Ok(())
}
