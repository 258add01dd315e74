//! Routing a user session to an agent: pick a healthy matching agent (HA
//! replicas in round-robin order, failing over at once), open a stream with
//! the session header, and wait for the agent's answer. Shared by every
//! front end.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tunnel_proto::{
    io::{read_frame, write_frame},
    transport::TunnelStream,
    StreamOpen, StreamReply,
};

use crate::{
    metrics::METRICS,
    registry::{Agent, Registry},
    resources::Resource,
};

/// Bound on the agent's answer (it includes the agent's dial timeout).
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a user connection could not be routed. Says which side failed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("no connected agent matches resource {0:?}")]
    NoAgent(String),
    #[error("agent {agent} refused the stream: {message}")]
    Refused { agent: String, message: String },
    #[error("agent {agent} unavailable: {message}")]
    Agent { agent: String, message: String },
}

/// Picks agents in round-robin order and opens a stream on the first one
/// that answers; a refusal by the agent (allowlist, target down) is final.
pub async fn route(
    session_id: &str,
    res: &Resource,
    registry: &Registry,
) -> Result<(Arc<Agent>, TunnelStream), RouteError> {
    let header = StreamOpen {
        session_id: session_id.to_string(),
        target: res.target.clone(),
        kind: res.kind,
        kube: None,
    };
    route_header(res, registry, &header).await
}

/// [`route`] with a header the caller built (kubernetes streams carry the
/// identity to impersonate). Kubernetes streams only go to agents that
/// announce the capability: an older agent would refuse the header.
pub async fn route_header(
    res: &Resource,
    registry: &Registry,
    header: &StreamOpen,
) -> Result<(Arc<Agent>, TunnelStream), RouteError> {
    let mut candidates = registry.candidates(&res.selector);
    if res.kind == tunnel_proto::StreamKind::Kubernetes {
        candidates.retain(|a| {
            a.capabilities
                .iter()
                .any(|c| c == tunnel_proto::stream::KUBERNETES_CAPABILITY)
        });
    }
    if candidates.is_empty() {
        return Err(RouteError::NoAgent(res.name.clone()));
    }
    let mut last = None;
    for agent in candidates {
        match tokio::time::timeout(OPEN_TIMEOUT, open_on(&agent, header)).await {
            Ok(Ok(stream)) => return Ok((agent, stream)),
            Ok(Err(e @ RouteError::Refused { .. })) => return Err(e),
            Ok(Err(e)) => {
                tracing::warn!(agent.name = %agent.name, error = %e, "agent failed, trying the next one");
                last = Some(e);
            }
            Err(_) => {
                last = Some(RouteError::Agent {
                    agent: agent.name.clone(),
                    message: format!("no answer within {OPEN_TIMEOUT:?}"),
                });
            }
        }
    }
    Err(last.unwrap_or_else(|| RouteError::NoAgent(res.name.clone())))
}

pub async fn open_on(agent: &Agent, header: &StreamOpen) -> Result<TunnelStream, RouteError> {
    let failed = |message: String| RouteError::Agent {
        agent: agent.name.clone(),
        message,
    };
    let mut stream = agent
        .opener
        .open()
        .await
        .map_err(|e| failed(e.to_string()))?;
    write_frame(&mut stream, header)
        .await
        .map_err(|e| failed(e.to_string()))?;
    match read_frame::<StreamReply, _>(&mut stream).await {
        Ok(StreamReply::Ok) => Ok(stream),
        Ok(StreamReply::Error { code, message }) => Err(RouteError::Refused {
            agent: agent.name.clone(),
            message: format!("{message} ({code:?})"),
        }),
        Err(e) => Err(failed(e.to_string())),
    }
}

/// Logs why a session could not be routed (the user's client only sees a
/// refusal or a closed connection; the reason is here).
pub fn log_route_error(e: &RouteError) {
    match e {
        RouteError::Refused { .. } => tracing::warn!(error = %e, "agent refused stream"),
        _ => tracing::warn!(error = %e, "session refused"),
    }
}

/// Bytes of one session, shared with whoever reports them when the stream
/// itself has moved on (the SSH front end hands its stream to russh).
#[derive(Debug, Default)]
pub struct SessionBytes {
    /// Bytes sent towards the target.
    pub sent: AtomicU64,
    /// Bytes received from the target.
    pub received: AtomicU64,
}

/// A session's tunnel stream: counts it as active on its agent while it
/// lives, and counts bytes into the agent's live stats, the process-wide
/// metrics (which outlive the agent) and for this session alone. Every
/// front end's stream goes through this one type, so no kind is missing
/// from the metrics.
pub struct Metered {
    inner: TunnelStream,
    agent: Arc<Agent>,
    bytes: Arc<SessionBytes>,
}

impl Metered {
    pub fn new(inner: TunnelStream, agent: Arc<Agent>) -> Self {
        Self::with_bytes(inner, agent, Arc::default())
    }

    /// Counts this session's bytes into `bytes`, which the caller keeps.
    pub fn with_bytes(inner: TunnelStream, agent: Arc<Agent>, bytes: Arc<SessionBytes>) -> Self {
        let stats = &agent.stats;
        stats.active_streams.fetch_add(1, Ordering::Relaxed);
        stats.streams_total.fetch_add(1, Ordering::Relaxed);
        METRICS.streams_active.fetch_add(1, Ordering::Relaxed);
        METRICS.streams_total.fetch_add(1, Ordering::Relaxed);
        Self {
            inner,
            agent,
            bytes,
        }
    }

    /// Bytes sent towards the target so far.
    pub fn sent(&self) -> u64 {
        self.bytes.sent.load(Ordering::Relaxed)
    }

    /// Bytes received from the target so far.
    pub fn received(&self) -> u64 {
        self.bytes.received.load(Ordering::Relaxed)
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.agent
            .stats
            .active_streams
            .fetch_sub(1, Ordering::Relaxed);
        METRICS.streams_active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for Metered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.agent.stats.bytes_out.fetch_add(n, Ordering::Relaxed);
            METRICS.bytes_from_agents.fetch_add(n, Ordering::Relaxed);
            self.bytes.received.fetch_add(n, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            let n = n as u64;
            self.agent.stats.bytes_in.fetch_add(n, Ordering::Relaxed);
            METRICS.bytes_to_agents.fetch_add(n, Ordering::Relaxed);
            self.bytes.sent.fetch_add(n, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
