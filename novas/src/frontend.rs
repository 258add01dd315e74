//! The accept loop every front end shares: one listener per resource, one
//! task and one tracing span per user connection.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use crate::{
    metrics::SessionGuard,
    resources::Resource,
    sessions::{Live, Sessions},
};

/// One accepted user connection, before any protocol has been spoken.
pub struct Incoming {
    pub conn: TcpStream,
    pub client: SocketAddr,
    pub session_id: String,
    pub resource: Arc<Resource>,
    /// This session in the live registry: front ends note the user and
    /// agent they learn and count bytes into it.
    pub live: Arc<Live>,
}

/// A protocol front end (tcp, postgres, mysql, …).
pub trait FrontEnd: Send + Sync + 'static {
    fn handle(self: Arc<Self>, incoming: Incoming) -> impl Future<Output = ()> + Send;
}

/// The next user connection, with its socket options set; `None` once
/// shutdown is requested. Shared by every listener of user connections.
pub async fn accept(
    listener: &TcpListener,
    shutdown: &CancellationToken,
    what: &str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((conn, client)) => {
                    // Keepalive too: a vanished client must not hold a
                    // database or SSH session forever.
                    tunnel_proto::transport::tls_mux::tune_socket(&conn);
                    return Some((conn, client));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, listener = what, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.cancelled() => return None,
        }
    }
}

pub async fn serve<F: FrontEnd>(
    listener: TcpListener,
    resource: Arc<Resource>,
    front: Arc<F>,
    sessions: Arc<Sessions>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    while let Some((conn, client)) = accept(&listener, &shutdown, &resource.name).await {
        let session_id = crate::audit::new_id();
        let span = tracing::info_span!(
            "session",
            session.id = %session_id,
            resource = %resource.name,
            kind = resource.kind.as_str(),
            client.addr = %client,
            user = tracing::field::Empty,
            agent.name = tracing::field::Empty,
        );
        let reg = sessions.open(
            &session_id,
            resource.kind.as_str(),
            Some(&resource.name),
            client,
        );
        let incoming = Incoming {
            conn,
            client,
            session_id,
            resource: resource.clone(),
            live: reg.live.clone(),
        };
        // Counted here, before any protocol, so every front end on this
        // loop is covered and a session ends when its task does.
        let guard = SessionGuard::new(resource.kind);
        let session = front.clone().handle(incoming);
        let sessions = sessions.clone();
        tasks.spawn(
            async move {
                // Terminable from the console at every stage.
                reg.live.run(&sessions, session).await;
                drop(reg);
                drop(guard);
            }
            .instrument(span),
        );
    }
}
