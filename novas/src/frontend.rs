//! The accept loop every front end shares: one listener per resource, one
//! task and one tracing span per user connection.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use crate::{metrics::SessionGuard, resources::Resource};

/// One accepted user connection, before any protocol has been spoken.
pub struct Incoming {
    pub conn: TcpStream,
    pub client: SocketAddr,
    pub session_id: String,
    pub resource: Arc<Resource>,
}

/// A protocol front end (tcp, postgres, mysql, …).
pub trait FrontEnd: Send + Sync + 'static {
    fn handle(self: Arc<Self>, incoming: Incoming) -> impl Future<Output = ()> + Send;
}

pub async fn serve<F: FrontEnd>(
    listener: TcpListener,
    resource: Arc<Resource>,
    front: Arc<F>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let (conn, client) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, resource = %resource.name, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        // Keepalive too: a vanished client must not hold a DB session forever.
        tunnel_proto::transport::tls_mux::tune_socket(&conn);
        let session_id = uuid::Uuid::new_v4().to_string();
        let span = tracing::info_span!(
            "session",
            session.id = %session_id,
            resource = %resource.name,
            kind = resource.kind.as_str(),
            client.addr = %client,
            user = tracing::field::Empty,
            agent.name = tracing::field::Empty,
        );
        let incoming = Incoming {
            conn,
            client,
            session_id,
            resource: resource.clone(),
        };
        // Counted here, before any protocol, so every front end on this
        // loop is covered and a session ends when its task does.
        let guard = SessionGuard::new(resource.kind);
        let session = front.clone().handle(incoming);
        tasks.spawn(
            async move {
                session.await;
                drop(guard);
            }
            .instrument(span),
        );
    }
}
