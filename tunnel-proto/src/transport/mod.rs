//! Multiplexed tunnels, independent of how they are carried.
//!
//! A [`Tunnel`] is one authenticated connection between an agent and a
//! server, able to open and accept byte streams. A transport (today
//! TLS+yamux in [`tls_yamux`]) builds it and runs its one driver task; the
//! rest of NOVA only sees [`Tunnel`], [`Opener`] and [`TunnelStream`].

pub mod tls_yamux;

use std::net::SocketAddr;

use futures::future::BoxFuture;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::{mpsc, oneshot},
};
use tokio_util::sync::CancellationToken;

/// A byte stream inside a tunnel.
pub trait AsyncStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> AsyncStream for T {}

/// A boxed stream inside a tunnel.
pub type TunnelStream = Box<dyn AsyncStream>;

/// Why a tunnel could not be set up or a stream not opened.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot resolve {addr}: {source}")]
    Resolve {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("connecting to {0} timed out")]
    Timeout(String),
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        addr: String,
        source: std::io::Error,
    },
    #[error("multiplexer error: {0}")]
    Mux(String),
    /// The tunnel's connection has ended.
    #[error("tunnel closed")]
    Closed,
}

type OpenReply = oneshot::Sender<Result<TunnelStream, TransportError>>;

/// Opens streams on a tunnel; cheap to clone and share.
#[derive(Clone)]
pub struct Opener {
    tx: mpsc::Sender<OpenReply>,
    closed: CancellationToken,
}

impl Opener {
    /// Opens a new outbound stream.
    pub async fn open(&self) -> Result<TunnelStream, TransportError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        tokio::select! {
            sent = self.tx.send(reply_tx) => sent.map_err(|_| TransportError::Closed)?,
            _ = self.closed.cancelled() => return Err(TransportError::Closed),
        }
        tokio::select! {
            r = reply_rx => r.map_err(|_| TransportError::Closed)?,
            _ = self.closed.cancelled() => Err(TransportError::Closed),
        }
    }

    /// True once the underlying connection has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Resolves when the underlying connection has ended.
    pub async fn closed(&self) {
        self.closed.cancelled().await
    }
}

/// One established tunnel. Dropping it closes the connection.
pub struct Tunnel {
    pub opener: Opener,
    /// Streams the peer opened, in order.
    pub incoming: mpsc::Receiver<TunnelStream>,
    pub peer: SocketAddr,
    shutdown: CancellationToken,
}

impl Tunnel {
    /// A handle that closes this tunnel; lets another task (the registry,
    /// when a newer registration replaces this one) end the connection.
    pub fn close_handle(&self) -> CloseHandle {
        CloseHandle(self.shutdown.clone())
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Closes a tunnel on request (a clean multiplexer close, bounded in time).
#[derive(Clone)]
pub struct CloseHandle(CancellationToken);

impl CloseHandle {
    pub fn close(&self) {
        self.0.cancel();
    }
}

/// A transport: how an agent dials a server.
pub trait Connector: Send + Sync {
    /// Dials `addr` (`host:port`) and returns an established tunnel.
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, Result<Tunnel, TransportError>>;
}
