//! Multiplexed tunnels, independent of how they are carried.
//!
//! A [`Tunnel`] is one authenticated connection between an agent and a
//! server, able to open and accept byte streams. A transport (today
//! TLS + the NOVA mux in [`tls_mux`]) builds it and runs its one driver
//! task; the rest of NOVA only sees [`Tunnel`], [`Opener`] and
//! [`TunnelStream`].

pub mod tls_mux;

use std::{net::SocketAddr, sync::Arc};

use futures::future::BoxFuture;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;

use crate::mux;

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

/// Opens streams on a tunnel; cheap to clone and share.
#[derive(Clone)]
pub struct Opener {
    conn: Arc<mux::Conn>,
}

impl Opener {
    /// Opens a new outbound stream. Local: the peer learns of it from the
    /// first frame, so this costs no round trip.
    pub async fn open(&self) -> Result<TunnelStream, TransportError> {
        match self.conn.open() {
            Ok(s) => Ok(Box::new(s)),
            Err(mux::OpenError::Closed) => Err(TransportError::Closed),
            Err(e) => Err(TransportError::Mux(e.to_string())),
        }
    }

    /// True once the underlying connection has ended.
    pub fn is_closed(&self) -> bool {
        self.conn.closed.is_cancelled()
    }

    /// Resolves when the underlying connection has ended.
    pub async fn closed(&self) {
        self.conn.closed.cancelled().await
    }
}

/// The streams a peer opens, in order.
pub struct Incoming(pub(crate) mpsc::Receiver<mux::MuxStream>);

impl Incoming {
    /// The next stream; `None` once the tunnel has ended.
    pub async fn recv(&mut self) -> Option<TunnelStream> {
        let s = self.0.recv().await?;
        Some(Box::new(s))
    }
}

/// One established tunnel. Dropping it closes the connection.
pub struct Tunnel {
    pub opener: Opener,
    /// Streams the peer opened, in order.
    pub incoming: Incoming,
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
