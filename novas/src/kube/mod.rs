//! KAC, the Kubernetes API front end: one HTTPS listener
//! (`NOVAS_KUBE_PORT`, NOVAS's certificate, HTTP/1.1) for every kubernetes
//! resource, each under `/clusters/<name>/`.
//!
//! - [`attrs`]: request attributes (verb, group, resource, namespace, name).
//! - [`auth`]: NOVAS-issued bearer tokens (stored hashed, with expiry).
//! - [`policy`]: the policies' `kubernetes:` rules and impersonation.
//! - [`proxy`]: one request through the tunnel, with its audit event.
//! - [`exec`]: exec sessions recorded as asciicast, like SSH sessions.
//! - [`status`]: Kubernetes `Status` responses kubectl prints.

pub mod attrs;
pub mod auth;
pub mod exec;
pub mod policy;
pub mod proxy;
pub mod status;

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;
use tunnel_proto::StreamKind;

use crate::{
    dac::Dac, frontend, metrics::SessionGuard, resources::Resource, sessions::Sessions,
    store::Store,
};

/// Response bodies: a streamed body from the agent, or a `Status`.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Bound on a client's TLS handshake.
const TLS_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on receiving a request head (slow clients hold no task forever).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head accepted ([`proxy`] answers 431 beyond it).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// hyper's read buffer: a hard ceiling above [`MAX_HEAD_BYTES`] (hyper's
/// own check is soft, by up to one read).
const MAX_BUF_BYTES: usize = 2 * MAX_HEAD_BYTES;

/// The KAC front end's shared state.
pub struct KubeFront {
    pub dac: Arc<Dac>,
    pub store: Store,
    /// Kubernetes resources by name (the `/clusters/<name>` segment).
    pub clusters: HashMap<String, Arc<Resource>>,
    pub tls: tokio_rustls::TlsAcceptor,
    /// Where exec recordings go (the SSH recordings directory).
    pub recordings: std::path::PathBuf,
}

impl KubeFront {
    pub fn new(
        dac: Arc<Dac>,
        store: Store,
        resources: Vec<Resource>,
        tls: tokio_rustls::TlsAcceptor,
        recordings: std::path::PathBuf,
    ) -> Self {
        Self {
            dac,
            store,
            recordings,
            clusters: resources
                .into_iter()
                .map(|r| (r.name.clone(), Arc::new(r)))
                .collect(),
            tls,
        }
    }

    async fn connection(
        self: Arc<Self>,
        tcp: tokio::net::TcpStream,
        conn: Arc<proxy::Conn>,
        shutdown: CancellationToken,
    ) {
        let tls = match tokio::time::timeout(TLS_TIMEOUT, self.tls.accept(tcp)).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                return tracing::info!(error = %e, "kubernetes client TLS handshake failed")
            }
            Err(_) => return tracing::info!("kubernetes client TLS handshake timed out"),
        };
        let front = self.clone();
        let c = conn.clone();
        let service = hyper::service::service_fn(move |req| {
            let (front, c) = (front.clone(), c.clone());
            // A span per request: one connection carries many, possibly of
            // several users (each request has its own token).
            let span = tracing::info_span!(
                "request",
                user = tracing::field::Empty,
                agent.name = tracing::field::Empty,
            );
            async move { Ok::<_, std::convert::Infallible>(front.handle(c, req).await) }
                .instrument(span)
        });
        let served = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(MAX_BUF_BYTES)
            .serve_connection(TokioIo::new(tls), service)
            .with_upgrades();
        tokio::pin!(served);
        let result = tokio::select! {
            r = served.as_mut() => r,
            _ = shutdown.cancelled() => {
                served.as_mut().graceful_shutdown();
                served.await
            }
        };
        match result {
            Ok(()) => tracing::debug!("kubernetes client connection closed"),
            Err(e) => {
                tracing::info!(error = %e, "kubernetes client connection ended with an error")
            }
        }
    }
}

/// Accepts kubectl connections until shutdown.
pub async fn serve(
    listener: TcpListener,
    front: Arc<KubeFront>,
    sessions: Arc<Sessions>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    while let Some((tcp, client)) = frontend::accept(&listener, &shutdown, "kubernetes").await {
        let session_id = crate::audit::new_id();
        let span = tracing::info_span!(
            "session",
            session.id = %session_id,
            kind = StreamKind::Kubernetes.as_str(),
            client.addr = %client,
        );
        let reg = sessions.open(&session_id, StreamKind::Kubernetes.as_str(), None, client);
        let live = reg.live.clone();
        let conn = Arc::new(proxy::Conn {
            client,
            session_id,
            reg,
            sessions: sessions.clone(),
        });
        let guard = SessionGuard::new(StreamKind::Kubernetes);
        let session = front.clone().connection(tcp, conn, shutdown.clone());
        let sessions = sessions.clone();
        tasks.spawn(
            async move {
                // Terminable from the console like every other session.
                live.run(&sessions, session).await;
                drop(guard);
            }
            .instrument(span),
        );
    }
}
