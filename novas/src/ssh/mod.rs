//! SAC: the SSH front end. Users run plain OpenSSH against one listener
//! (`NOVAS_SSH_PORT`) and pick the resource in the login name
//! (`ssh -p 2222 alice%web-1@novas`); NOVAS authenticates them (password or
//! a registered public key), applies the policy, and runs its own SSH
//! client to the target through the agent's tunnel with the resource's
//! stored key or password. Every channel is relayed message by message, so
//! shells, exec, sftp/scp and `-L` forwards all pass; shells and commands
//! are recorded (asciicast v2) and audited.
//!
//! - [`login`]: `user%resource%login` parsing.
//! - [`menu`]: the resource menu for a shell login that named none.
//! - [`session`]: the russh server handler (auth, access decision, channels).
//! - [`conn`]: what one client connection shares with its channels
//!   (access, the lazily opened upstream, audit).
//! - [`relay`]: one task per channel, client ⇄ target.
//! - [`upstream`]: the SSH client to the target through the tunnel.
//! - [`hostkey`]: NOVAS's host key; target host keys pinned on first use.
//! - [`recording`]: the asciicast v2 writer and reader.
//! - [`deadline`]: a stream that fails once the login deadline passes.
//! - [`error`]: [`SshError`], the messages users read.

pub mod conn;
pub mod deadline;
pub mod error;
pub mod hostkey;
pub mod login;
pub mod menu;
pub mod recording;
pub mod relay;
pub mod session;
pub mod upstream;

#[cfg(test)]
mod tests;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use russh::{keys::PrivateKey, server::Config as ServerConfig, MethodKind, MethodSet};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

pub use error::SshError;

use crate::{
    dac::Dac,
    resources::Resource,
    sessions::{Live, Sessions},
    store::Store,
};

/// The SSH front end's shared state.
pub struct SshFront {
    pub dac: Arc<Dac>,
    pub store: Store,
    /// The ssh resources, chosen by name in the login.
    pub resources: Vec<Arc<Resource>>,
    pub config: Arc<ServerConfig>,
    /// Where recordings go (`<data dir>/recordings`).
    pub recordings: PathBuf,
    /// Bound on handshake plus login of one client connection.
    pub login_timeout: Duration,
}

impl SshFront {
    pub fn resource(&self, name: &str) -> Option<&Arc<Resource>> {
        self.resources.iter().find(|r| r.name == name)
    }
}

/// The recordings directory under a data dir.
pub fn recordings_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("recordings")
}

/// The russh server settings: password and public key logins, keepalives
/// that find vanished clients, no idle timeout for open shells (the login
/// deadline is enforced separately, see [`deadline`]).
pub fn server_config(key: PrivateKey) -> ServerConfig {
    ServerConfig {
        server_id: russh::SshId::Standard("SSH-2.0-NOVAS".into()),
        methods: MethodSet::from(&[MethodKind::PublicKey, MethodKind::Password][..]),
        auth_rejection_time: Duration::from_millis(500),
        // OpenSSH opens with a `none` probe: answer it at once.
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![key],
        max_auth_attempts: 6,
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    }
}

/// Accepts SSH clients until shutdown; one task and span per connection.
pub async fn serve(
    listener: TcpListener,
    front: Arc<SshFront>,
    sessions: Arc<Sessions>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    while let Some((conn, client)) = crate::frontend::accept(&listener, &shutdown, "ssh").await {
        let session_id = crate::audit::new_id();
        let span = tracing::info_span!(
            "session",
            session.id = %session_id,
            kind = "ssh",
            client.addr = %client,
            user = tracing::field::Empty,
            resource = tracing::field::Empty,
            agent.name = tracing::field::Empty,
        );
        let front = front.clone();
        let stop = shutdown.clone();
        // Counted like the other front ends' sessions (frontend.rs): from
        // accept to the end of the connection's task.
        let guard = crate::metrics::SessionGuard::new(tunnel_proto::StreamKind::Ssh);
        let reg = sessions.open(&session_id, "ssh", None, client);
        tasks.spawn(
            async move {
                handle(front, conn, client, session_id, reg.live.clone(), stop).await;
                drop(reg);
                drop(guard);
            }
            .instrument(span),
        );
    }
}

/// Runs one client connection: the login under a deadline, then the
/// session until the client leaves (or NOVAS shuts down, or an
/// administrator terminates it: `live`).
async fn handle<S>(
    front: Arc<SshFront>,
    conn: S,
    client: SocketAddr,
    session_id: String,
    live: Arc<Live>,
    shutdown: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let kill = CancellationToken::new();
    let authed = CancellationToken::new();
    let state = Arc::new(conn::ConnState::new(
        front.clone(),
        session_id,
        client,
        tracing::Span::current(),
        live.clone(),
    ));
    let handler = session::Conn::new(state.clone(), authed.clone());
    let stream = deadline::Deadline::new(conn, kill.clone());
    let watchdog = {
        let (kill, authed, limit) = (kill.clone(), authed.clone(), front.login_timeout);
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(limit) => {
                    tracing::info!(timeout = ?limit, "ssh client did not log in in time; dropped");
                    kill.cancel();
                }
                _ = authed.cancelled() => {}
            }
        })
    };
    let running = tokio::select! {
        r = russh::server::run_stream(front.config.clone(), stream, handler) => Some(r),
        _ = kill.cancelled() => None,
        _ = live.cancelled() => None,
    };
    let outcome = match running {
        None => None,
        Some(Err(e)) => {
            tracing::info!(error = %e, "ssh handshake failed");
            None
        }
        Some(Ok(session)) => {
            let handle = session.handle();
            tokio::pin!(session);
            Some(tokio::select! {
                r = &mut session => match r {
                    Ok(()) => "closed by client".to_string(),
                    Err(e) => format!("client error: {e}"),
                },
                _ = shutdown.cancelled() => {
                    let _ = handle
                        .disconnect(russh::Disconnect::ByApplication, "NOVAS is shutting down".into(), String::new())
                        .await;
                    "NOVAS shut down".to_string()
                }
                _ = live.cancelled() => {
                    let outcome = live.terminated_outcome().unwrap_or_else(|| "terminated".into());
                    let _ = handle
                        .disconnect(russh::Disconnect::ByApplication, outcome.clone(), String::new())
                        .await;
                    outcome
                }
            })
        }
    };
    watchdog.abort();
    state.end_login();
    if let Some(outcome) = outcome {
        state.finish(outcome).await;
    }
}
