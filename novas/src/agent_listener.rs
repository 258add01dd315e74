//! The agent port: TLS 1.3 + the tunnel mux, then the control stream.
//!
//! Unauthenticated connections are cheap to drop: a bounded number may be in
//! their handshake at once (the rest are closed on accept), and TLS, the
//! preface and the Hello together must finish within the handshake deadline.

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant, SystemTime},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;
use tunnel_proto::{
    control::{self, dead_after, validate_name, Control, Preface, RejectCode, PREFACE_LEN},
    io::{read_frame, spawn_frame_reader, write_frame, FrameIoError},
    secret::token_eq,
    transport::{tls_mux, Tunnel, TunnelStream},
    Secret, PROTO_VERSION,
};

use crate::{
    audit::{AuditEvent, Auditor, EventKind},
    metrics::{AuthFailure, METRICS},
    registry::{Agent, AgentStats, Registry},
};

/// Connections allowed in their handshake at once.
const MAX_PENDING_HANDSHAKES: usize = 512;

pub struct ListenerCtx {
    pub token: Secret,
    pub registry: Arc<Registry>,
    pub acceptor: TlsAcceptor,
    pub handshake_timeout: Duration,
    pub heartbeat: Duration,
    /// Agent connects and disconnects go to the audit trail (the console's
    /// tunnel history).
    pub auditor: Auditor,
}

impl ListenerCtx {
    fn audit(&self, event: EventKind) {
        if let Err(e) = self.auditor.record(AuditEvent::new(event)) {
            tracing::warn!(error = %e, "agent event not audited");
        }
    }
}

/// Accepts agents until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<ListenerCtx>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed on the agent port");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            METRICS.auth_failure(AuthFailure::Overload);
            tracing::warn!(client.addr = %peer, "too many pending agent handshakes, dropping");
            drop(tcp);
            continue;
        };
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        let span = tracing::info_span!("agent_conn", client.addr = %peer, agent.name = tracing::field::Empty);
        tasks.spawn(
            async move {
                handle(tcp, peer, ctx, permit, shutdown).await;
            }
            .instrument(span),
        );
    }
}

struct Registered {
    tunnel: Tunnel,
    rd: ReadHalf<TunnelStream>,
    wr: WriteHalf<TunnelStream>,
    agent: Arc<Agent>,
}

async fn handle(
    tcp: TcpStream,
    peer: std::net::SocketAddr,
    ctx: Arc<ListenerCtx>,
    permit: tokio::sync::OwnedSemaphorePermit,
    shutdown: CancellationToken,
) {
    let hs = tokio::time::timeout(ctx.handshake_timeout, handshake(tcp, peer, &ctx)).await;
    drop(permit);
    let reg = match hs {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            METRICS.auth_failure(e.reason());
            tracing::warn!(reason = %e, "agent handshake failed");
            return;
        }
        Err(_) => {
            METRICS.auth_failure(AuthFailure::Timeout);
            tracing::warn!(
                timeout_ms = ctx.handshake_timeout.as_millis() as u64,
                "agent handshake timed out, dropping"
            );
            return;
        }
    };
    let Registered {
        tunnel,
        rd,
        mut wr,
        agent,
    } = reg;
    tracing::Span::current().record("agent.name", agent.name.as_str());
    ctx.audit(EventKind::AgentConnect {
        agent: agent.name.clone(),
        remote_addr: agent.remote_addr.to_string(),
        tags: agent.tags.to_string(),
        agent_version: agent.agent_version.clone(),
    });
    let why = control_loop(&tunnel, rd, &mut wr, &agent, &ctx, &shutdown).await;
    let reason = if ctx.registry.unregister(&agent.name, agent.conn_id) {
        tracing::info!(reason = %why, "agent disconnected");
        why.clone()
    } else {
        tracing::info!(reason = %why, "replaced agent connection closed");
        format!("replaced by a newer connection ({why})")
    };
    let connected_ms = SystemTime::now()
        .duration_since(agent.connected_since)
        .map_or(0, |d| d.as_millis() as u64);
    ctx.audit(EventKind::AgentDisconnect {
        agent: agent.name.clone(),
        reason,
        connected_ms,
    });
    if why.starts_with(GOODBYE) {
        // A stopping agent lets its sessions finish before it closes the
        // tunnel: keep it open (no new sessions are routed to it any more).
        tokio::select! {
            _ = tunnel.opener.closed() => {}
            _ = tokio::time::sleep(MAX_AGENT_DRAIN) => {}
            _ = shutdown.cancelled() => {}
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
}

/// Prefix of the disconnect reason when the agent announced its shutdown.
const GOODBYE: &str = "agent said goodbye";
/// Longest time a stopping agent's tunnel is kept for its sessions to end.
const MAX_AGENT_DRAIN: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error(transparent)]
    Transport(#[from] tunnel_proto::transport::TransportError),
    #[error("agent opened no control stream")]
    NoControl,
    #[error("not a NOVA agent (bad preface)")]
    NotNova,
    #[error("control stream: {0}")]
    Frame(#[from] FrameIoError),
    #[error("rejected: {1}")]
    Rejected(AuthFailure, String),
}

impl HandshakeError {
    /// The `novas_agent_auth_failures_total` reason.
    fn reason(&self) -> AuthFailure {
        match self {
            Self::Transport(_) => AuthFailure::Tls,
            Self::NoControl => AuthFailure::Protocol,
            Self::NotNova => AuthFailure::NotNova,
            Self::Frame(FrameIoError::Frame(_)) => AuthFailure::BadRequest,
            Self::Frame(_) => AuthFailure::Protocol,
            Self::Rejected(r, _) => *r,
        }
    }
}

async fn handshake(
    tcp: TcpStream,
    peer: std::net::SocketAddr,
    ctx: &ListenerCtx,
) -> Result<Registered, HandshakeError> {
    let mut tunnel = tls_mux::accept(tcp, &ctx.acceptor, peer).await?;
    let control = tunnel
        .incoming
        .recv()
        .await
        .ok_or(HandshakeError::NoControl)?;
    let (mut rd, mut wr) = tokio::io::split(control);

    let mut preface = [0u8; PREFACE_LEN];
    rd.read_exact(&mut preface)
        .await
        .map_err(|e| HandshakeError::Frame(FrameIoError::Io(e)))?;
    match control::check_preface(&preface) {
        Preface::Ok => {}
        Preface::NotNova => return Err(HandshakeError::NotNova),
        Preface::Version(v) => {
            let msg =
                format!("agent speaks protocol version {v}, this server speaks {PROTO_VERSION}");
            reject(&mut wr, RejectCode::UnsupportedVersion, &msg).await;
            return Err(HandshakeError::Rejected(AuthFailure::Version, msg));
        }
    }
    let hello = match read_frame::<Control, _>(&mut rd).await {
        Ok(h) => h,
        Err(e @ FrameIoError::Frame(_)) => {
            reject(&mut wr, RejectCode::BadRequest, "malformed Hello").await;
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    let Control::Hello {
        proto_version,
        token,
        name,
        tags,
        agent_version,
        capabilities,
    } = hello
    else {
        reject(&mut wr, RejectCode::BadRequest, "expected Hello").await;
        return Err(HandshakeError::Rejected(
            AuthFailure::BadRequest,
            "first message was not Hello".into(),
        ));
    };
    // Token first: nothing else about the agent is considered before it is
    // authenticated.
    if !token_eq(&token, &ctx.token) {
        reject(&mut wr, RejectCode::BadToken, "invalid enrollment token").await;
        return Err(HandshakeError::Rejected(
            AuthFailure::BadToken,
            format!("invalid enrollment token from agent {name:?}"),
        ));
    }
    if proto_version != PROTO_VERSION {
        let msg = format!(
            "agent speaks protocol version {proto_version}, this server speaks {PROTO_VERSION}"
        );
        reject(&mut wr, RejectCode::UnsupportedVersion, &msg).await;
        return Err(HandshakeError::Rejected(AuthFailure::Version, msg));
    }
    let invalid = validate_name(&name)
        .err()
        .or_else(|| tags.validate().err())
        .or_else(|| {
            (agent_version.len() > 64 || capabilities.len() > 32)
                .then(|| "oversized version or capabilities".to_string())
        });
    if let Some(msg) = invalid {
        reject(&mut wr, RejectCode::BadRequest, &msg).await;
        return Err(HandshakeError::Rejected(AuthFailure::BadRequest, msg));
    }
    write_frame(
        &mut wr,
        &Control::Welcome {
            server_node: ctx.registry.node().to_string(),
            server_version: env!("CARGO_PKG_VERSION").to_string(),
            heartbeat_ms: ctx.heartbeat.as_millis() as u64,
        },
    )
    .await?;
    let agent = Arc::new(Agent {
        conn_id: ctx.registry.next_conn_id(),
        name,
        tags,
        remote_addr: peer,
        agent_version,
        capabilities,
        connected_since: SystemTime::now(),
        opener: tunnel.opener.clone(),
        close: tunnel.close_handle(),
        stats: AgentStats::default(),
    });
    let replaced = ctx.registry.register(agent.clone()).is_some();
    tracing::info!(agent.name = %agent.name, tags = %agent.tags, agent.version = %agent.agent_version, replaced, "agent registered");
    Ok(Registered {
        tunnel,
        rd,
        wr,
        agent,
    })
}

async fn reject(wr: &mut WriteHalf<TunnelStream>, code: RejectCode, message: &str) {
    let msg = Control::Reject {
        code,
        message: message.to_string(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), write_frame(wr, &msg)).await;
}

/// Heartbeats and control messages until the agent goes away.
async fn control_loop(
    tunnel: &Tunnel,
    rd: ReadHalf<TunnelStream>,
    wr: &mut WriteHalf<TunnelStream>,
    agent: &Agent,
    ctx: &ListenerCtx,
    shutdown: &CancellationToken,
) -> String {
    let (mut frames, reader) = spawn_frame_reader::<Control, _>(rd);
    let mut ticker = tokio::time::interval(ctx.heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut seq = 0u64;
    let mut ping_sent: Option<(u64, Instant)> = None;
    let why = loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = write_frame(wr, &Control::Goodbye { reason: "server shutting down".into() }).await;
                break "server shutdown".to_string();
            }
            _ = tunnel.opener.closed() => break "connection closed".to_string(),
            frame = frames.recv() => match frame {
                Some(Ok(msg)) => {
                    last_heard = Instant::now();
                    agent.stats.last_heartbeat_ms.store(ctx.registry.now_ms(), Ordering::Relaxed);
                    match msg {
                        Control::Ping { seq } => {
                            if let Err(e) = write_frame(wr, &Control::Pong { seq }).await {
                                break format!("control write failed: {e}");
                            }
                        }
                        Control::Pong { seq } => {
                            if let Some((s, at)) = ping_sent {
                                if s == seq {
                                    agent.stats.rtt_us.store(at.elapsed().as_micros() as u64, Ordering::Relaxed);
                                    ping_sent = None;
                                }
                            }
                        }
                        Control::Goodbye { reason } => break format!("{GOODBYE}: {reason}"),
                        other => {
                            tracing::warn!(message = ?other, "unexpected control message, closing");
                            break "protocol violation".to_string();
                        }
                    }
                }
                Some(Err(FrameIoError::Closed)) | None => break "agent closed the control stream".to_string(),
                Some(Err(e)) => break format!("control stream error: {e}"),
            },
            _ = ticker.tick() => {
                if last_heard.elapsed() > dead_after(ctx.heartbeat) {
                    break format!("no heartbeat for {:?}", last_heard.elapsed());
                }
                seq += 1;
                ping_sent = Some((seq, Instant::now()));
                if let Err(e) = write_frame(wr, &Control::Ping { seq }).await {
                    break format!("control write failed: {e}");
                }
            }
        }
    };
    reader.abort();
    why
}
