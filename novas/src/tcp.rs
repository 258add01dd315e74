//! The TCP front end: a listener per resource; each user connection becomes
//! one stream through a healthy matching agent, spliced both ways.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;
use tunnel_proto::{
    io::{read_frame, write_frame},
    transport::{tls_yamux::tune_socket, TunnelStream},
    StreamOpen, StreamReply,
};

use crate::{
    registry::{Agent, AgentStats, Registry},
    resources::Resource,
};

/// Bound on the agent's answer (it includes the agent's dial timeout).
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);
const SPLICE_BUF: usize = 64 * 1024;

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

pub async fn serve(
    listener: TcpListener,
    resource: Arc<Resource>,
    registry: Arc<Registry>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let (user, client) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, resource = %resource.name, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        tune_socket(&user);
        let session_id = uuid::Uuid::new_v4().to_string();
        let span = tracing::info_span!("session", session.id = %session_id, resource = %resource.name, client.addr = %client, agent.name = tracing::field::Empty);
        let (resource, registry) = (resource.clone(), registry.clone());
        tasks.spawn(
            async move { handle(user, client, session_id, &resource, &registry).await }
                .instrument(span),
        );
    }
}

async fn handle(
    mut user: TcpStream,
    client: SocketAddr,
    session_id: String,
    res: &Resource,
    registry: &Registry,
) {
    let (agent, stream) = match route(&session_id, res, registry).await {
        Ok(x) => x,
        Err(e) => {
            // The user's client sees a closed connection; the reason is here.
            match e {
                RouteError::Refused { .. } => tracing::warn!(error = %e, "agent refused stream"),
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
    let result =
        tokio::io::copy_bidirectional_with_sizes(&mut user, &mut tunnel, SPLICE_BUF, SPLICE_BUF)
            .await;
    stats.active_streams.fetch_sub(1, Ordering::Relaxed);
    match result {
        Ok((up, down)) => tracing::info!(bytes.up = up, bytes.down = down, "session closed"),
        Err(e) => tracing::info!(error = %e, "session closed with an error"),
    }
}

/// Picks agents in round-robin order and opens a stream on the first one
/// that answers; a refusal by the agent (allowlist, target down) is final.
async fn route(
    session_id: &str,
    res: &Resource,
    registry: &Registry,
) -> Result<(Arc<Agent>, TunnelStream), RouteError> {
    let candidates = registry.candidates(&res.selector);
    if candidates.is_empty() {
        return Err(RouteError::NoAgent(res.name.clone()));
    }
    let header = StreamOpen {
        session_id: session_id.to_string(),
        target: res.target.clone(),
        kind: res.kind,
    };
    let mut last = None;
    for agent in candidates {
        match tokio::time::timeout(OPEN_TIMEOUT, open_on(&agent, &header)).await {
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

async fn open_on(agent: &Agent, header: &StreamOpen) -> Result<TunnelStream, RouteError> {
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

/// Counts bytes through a tunnel stream into the agent's live stats.
struct Metered<'a> {
    inner: TunnelStream,
    stats: &'a AgentStats,
}

impl AsyncRead for Metered<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.stats.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Metered<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
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
