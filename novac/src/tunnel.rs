//! One tunnel to one NOVAS: connect, register, heartbeat, serve session
//! streams, and reconnect with backoff until shutdown.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncWriteExt, ReadHalf, WriteHalf},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;
use tunnel_proto::{
    control::{self, dead_after, Control},
    io::{read_frame, spawn_frame_reader, write_frame, FrameIoError},
    transport::{Connector, Tunnel, TunnelStream},
    PROTO_VERSION,
};

use crate::{backoff::Backoff, config::Config, health::Health, session};

/// Bound on the server's answer to Hello.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// How a tunnel session ended.
enum Ended {
    /// Local shutdown: do not reconnect.
    Shutdown,
    /// Connection lost or refused: reconnect after a delay.
    Lost(String),
}

/// Keeps a tunnel to `server` until `shutdown` fires.
pub async fn run(
    server: String,
    cfg: Arc<Config>,
    connector: Arc<dyn Connector>,
    ctx: Arc<session::SessionCtx>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let span = tracing::info_span!("tunnel", server = %server, agent.name = %cfg.name);
    run_loop(server, cfg, connector, ctx, health, shutdown)
        .instrument(span)
        .await
}

async fn run_loop(
    server: String,
    cfg: Arc<Config>,
    connector: Arc<dyn Connector>,
    ctx: Arc<session::SessionCtx>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(cfg.max_backoff);
    loop {
        let started = Instant::now();
        // Shutdown is observed inside, so active sessions can drain.
        let ended =
            connect_and_serve(&server, &cfg, connector.as_ref(), &ctx, &health, &shutdown).await;
        match ended {
            Ended::Shutdown => break,
            Ended::Lost(why) => {
                if started.elapsed() >= crate::backoff::STABLE_AFTER {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                tracing::warn!(server = %server, reason = %why, retry_in_ms = delay.as_millis() as u64, "tunnel down");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => break,
                }
            }
        }
    }
}

async fn connect_and_serve(
    server: &str,
    cfg: &Config,
    connector: &dyn Connector,
    ctx: &Arc<session::SessionCtx>,
    health: &Arc<Health>,
    shutdown: &CancellationToken,
) -> Ended {
    let setup = async {
        let tunnel = connector.connect(server).await.map_err(|e| e.to_string())?;
        let control = tunnel
            .opener
            .open()
            .await
            .map_err(|e| format!("cannot open control stream: {e}"))?;
        let (mut rd, mut wr) = tokio::io::split(control);
        let heartbeat = tokio::time::timeout(
            REGISTER_TIMEOUT,
            register(cfg, &ctx.capabilities(), &mut rd, &mut wr),
        )
        .await
        .map_err(|_| "no answer to registration in time".to_string())??;
        Ok::<_, String>((tunnel, rd, wr, heartbeat))
    };
    let (mut tunnel, rd, wr, heartbeat) = tokio::select! {
        r = setup => match r {
            Ok(parts) => parts,
            Err(why) => return Ended::Lost(why),
        },
        _ = shutdown.cancelled() => return Ended::Shutdown,
    };
    // Ready (for /readyz) from Welcome until this tunnel's session ends.
    let _up = health.tunnel_up();
    serve(
        server,
        &mut tunnel,
        rd,
        wr,
        heartbeat,
        ctx,
        shutdown,
        cfg.shutdown_grace,
    )
    .await
}

/// Sends the preface and Hello; returns the heartbeat interval on Welcome.
async fn register(
    cfg: &Config,
    capabilities: &[String],
    rd: &mut ReadHalf<TunnelStream>,
    wr: &mut WriteHalf<TunnelStream>,
) -> Result<Duration, String> {
    wr.write_all(&control::preface())
        .await
        .map_err(|e| e.to_string())?;
    let hello = Control::Hello {
        proto_version: PROTO_VERSION,
        token: cfg.token.clone(),
        name: cfg.name.clone(),
        tags: cfg.tags.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        capabilities: capabilities.to_vec(),
    };
    write_frame(wr, &hello).await.map_err(|e| e.to_string())?;
    match read_frame::<Control, _>(rd).await {
        Ok(Control::Welcome {
            server_node,
            server_version,
            heartbeat_ms,
        }) => {
            tracing::info!(server.node = %server_node, server.version = %server_version, "registered");
            Ok(Duration::from_millis(heartbeat_ms.clamp(100, 300_000)))
        }
        Ok(Control::Reject { code, message }) => {
            tracing::error!(code = code.as_str(), %message, "rejected by server");
            Err(format!("rejected by server ({}): {message}", code.as_str()))
        }
        Ok(other) => Err(format!("unexpected answer to Hello: {other:?}")),
        Err(FrameIoError::Closed) => Err("server closed the connection during registration".into()),
        Err(e) => Err(format!("bad answer to Hello: {e}")),
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    server: &str,
    tunnel: &mut Tunnel,
    rd: ReadHalf<TunnelStream>,
    mut wr: WriteHalf<TunnelStream>,
    interval: Duration,
    ctx: &Arc<session::SessionCtx>,
    shutdown: &CancellationToken,
    grace: Duration,
) -> Ended {
    let (mut frames, reader) = spawn_frame_reader::<Control, _>(rd);
    let sessions = TaskTracker::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut seq = 0u64;
    let ended = loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = write_frame(&mut wr, &Control::Goodbye { reason: "agent shutting down".into() }).await;
                break Ended::Shutdown;
            }
            incoming = tunnel.incoming.recv() => match incoming {
                Some(stream) => {
                    let ctx = ctx.clone();
                    sessions.spawn(async move { session::serve(stream, &ctx).await });
                }
                None => break Ended::Lost("tunnel closed".into()),
            },
            frame = frames.recv() => match frame {
                Some(Ok(msg)) => {
                    last_heard = Instant::now();
                    match msg {
                        Control::Ping { seq } => {
                            if let Err(e) = write_frame(&mut wr, &Control::Pong { seq }).await {
                                break Ended::Lost(format!("control write failed: {e}"));
                            }
                        }
                        Control::Pong { .. } => {}
                        Control::Goodbye { reason } => break Ended::Lost(format!("server said goodbye: {reason}")),
                        other => tracing::warn!(?other, "unexpected control message"),
                    }
                }
                Some(Err(FrameIoError::Closed)) | None => break Ended::Lost("server closed the control stream".into()),
                Some(Err(e)) => break Ended::Lost(format!("control stream error: {e}")),
            },
            _ = ticker.tick() => {
                if last_heard.elapsed() > dead_after(interval) {
                    break Ended::Lost(format!("no heartbeat from {server} for {:?}", last_heard.elapsed()));
                }
                seq += 1;
                if let Err(e) = write_frame(&mut wr, &Control::Ping { seq }).await {
                    break Ended::Lost(format!("control write failed: {e}"));
                }
            }
        }
    };
    reader.abort();
    sessions.close();
    if matches!(ended, Ended::Shutdown) && !sessions.is_empty() {
        tracing::info!(
            active = sessions.len(),
            grace_ms = grace.as_millis() as u64,
            "letting sessions finish"
        );
        if tokio::time::timeout(grace, sessions.wait()).await.is_err() {
            tracing::warn!(
                active = sessions.len(),
                "grace period over, closing remaining sessions"
            );
        }
    }
    ended
}
