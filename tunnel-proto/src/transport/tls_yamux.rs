//! The default transport: TCP, TLS 1.3, yamux.
//!
//! One spawned driver task owns the yamux connection: it opens the streams
//! that [`super::Opener`]s ask for, hands inbound streams to
//! [`super::Tunnel::incoming`], and keeps polling so that stream I/O makes
//! progress (a yamux connection nobody polls stalls every stream).

use std::{
    collections::VecDeque,
    future::poll_fn,
    io,
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use rustls::{pki_types::ServerName, ClientConfig};
use tokio::{net::TcpStream, sync::mpsc};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::{
    compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt},
    sync::CancellationToken,
};

use super::{Connector, OpenReply, Opener, TransportError, Tunnel, TunnelStream};

/// yamux frames carry up to this much data. The default (16 KiB) costs about
/// 30% throughput and 50% more CPU on TLS; 1 MiB is the receivers' limit.
const SPLIT_SEND_SIZE: usize = 256 * 1024;
/// Concurrent streams per tunnel.
const MAX_STREAMS: usize = 4096;
/// Inbound streams waiting to be accepted before new ones are refused.
const INBOUND_BACKLOG: usize = 1024;
/// Write buffer in front of TLS: yamux writes each frame's 12-byte header
/// and its body separately, and without it they become two TLS records
/// (and two syscalls) per frame. Sized so a whole frame (header plus a
/// full split-send body) fits and leaves as one write.
const WRITE_BUF: usize = SPLIT_SEND_SIZE + 32 * 1024;
/// Read buffer under TLS: rustls asks the socket for about one record
/// (16 KiB) per read; this turns a bulk transfer's reads into one syscall
/// per 256 KiB.
const READ_BUF: usize = 256 * 1024;
/// Bound on a clean close before the socket is just dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

fn yamux_config() -> yamux::Config {
    let mut cfg = yamux::Config::default();
    cfg.set_split_send_size(SPLIT_SEND_SIZE);
    cfg.set_max_num_streams(MAX_STREAMS);
    // Must be at least 256 KiB per stream (yamux's rule); it is a ceiling on
    // auto-tuned windows, not an allocation.
    cfg.set_max_connection_receive_window(Some(MAX_STREAMS * 256 * 1024));
    cfg
}

/// Sets the socket options every tunnel and data-path socket gets.
pub fn tune_socket(tcp: &TcpStream) {
    // Nagle plus delayed ACK adds 40 ms stalls to request/response traffic.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "set_nodelay failed");
    }
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10));
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&ka) {
        tracing::debug!(error = %e, "set_tcp_keepalive failed");
    }
}

/// Dials NOVAS over TCP + TLS 1.3 + yamux.
pub struct TlsYamuxConnector {
    pub tls: Arc<ClientConfig>,
    /// Bound on TCP connect plus TLS handshake.
    pub timeout: Duration,
}

impl Connector for TlsYamuxConnector {
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, Result<Tunnel, TransportError>> {
        Box::pin(async move {
            tokio::time::timeout(self.timeout, self.connect_inner(addr))
                .await
                .map_err(|_| TransportError::Timeout(addr.to_string()))?
        })
    }
}

impl TlsYamuxConnector {
    async fn connect_inner(&self, addr: &str) -> Result<Tunnel, TransportError> {
        let (host, _) = crate::stream::split_target(addr).map_err(|e| TransportError::Resolve {
            addr: addr.to_string(),
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
        let server_name =
            ServerName::try_from(host.to_string()).map_err(|e| TransportError::Resolve {
                addr: addr.to_string(),
                source: io::Error::new(io::ErrorKind::InvalidInput, e),
            })?;
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| TransportError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        tune_socket(&tcp);
        let peer = tcp.peer_addr().map_err(|source| TransportError::Connect {
            addr: addr.to_string(),
            source,
        })?;
        let tls = TlsConnector::from(self.tls.clone())
            .connect(server_name, read_buffered(tcp))
            .await
            .map_err(|source| TransportError::Tls {
                addr: addr.to_string(),
                source,
            })?;
        Ok(spawn_driver(
            buffered(tls.compat()),
            yamux::Mode::Client,
            peer,
        ))
    }
}

/// Server side: completes TLS on an accepted socket and starts the yamux
/// driver. The caller bounds it with its handshake deadline.
pub async fn accept(
    tcp: TcpStream,
    acceptor: &TlsAcceptor,
    peer: SocketAddr,
) -> Result<Tunnel, TransportError> {
    tune_socket(&tcp);
    let tls = acceptor
        .accept(read_buffered(tcp))
        .await
        .map_err(|source| TransportError::Tls {
            addr: peer.to_string(),
            source,
        })?;
    Ok(spawn_driver(
        buffered(tls.compat()),
        yamux::Mode::Server,
        peer,
    ))
}

fn read_buffered(tcp: TcpStream) -> tokio::io::BufReader<TcpStream> {
    tokio::io::BufReader::with_capacity(READ_BUF, tcp)
}

fn buffered<T: futures::AsyncRead + futures::AsyncWrite>(io: T) -> futures::io::BufWriter<T> {
    futures::io::BufWriter::with_capacity(WRITE_BUF, io)
}

/// Starts the driver task for an established byte stream.
pub fn spawn_driver<T>(io: T, mode: yamux::Mode, peer: SocketAddr) -> Tunnel
where
    T: futures::AsyncRead + futures::AsyncWrite + Unpin + Send + 'static,
{
    let conn = yamux::Connection::new(io, yamux_config(), mode);
    let (open_tx, open_rx) = mpsc::channel(64);
    let (in_tx, in_rx) = mpsc::channel(INBOUND_BACKLOG);
    let closed = CancellationToken::new();
    let shutdown = CancellationToken::new();
    tokio::spawn(drive(
        conn,
        open_rx,
        in_tx,
        closed.clone(),
        shutdown.clone(),
    ));
    Tunnel {
        opener: Opener {
            tx: open_tx,
            closed,
        },
        incoming: in_rx,
        peer,
        shutdown,
    }
}

enum Exit {
    Ended(Result<(), yamux::ConnectionError>),
    CloseRequested,
}

async fn drive<T>(
    mut conn: yamux::Connection<T>,
    mut open_rx: mpsc::Receiver<OpenReply>,
    in_tx: mpsc::Sender<TunnelStream>,
    closed: CancellationToken,
    shutdown: CancellationToken,
) where
    T: futures::AsyncRead + futures::AsyncWrite + Unpin + Send + 'static,
{
    let mut pending: VecDeque<OpenReply> = VecDeque::new();
    let mut openers_gone = false;
    let exit = tokio::select! {
        r = poll_fn(|cx| poll_conn(&mut conn, &mut open_rx, &mut openers_gone, &mut pending, &in_tx, cx)) => Exit::Ended(r),
        _ = shutdown.cancelled() => Exit::CloseRequested,
    };
    match exit {
        Exit::Ended(Ok(())) => tracing::debug!("tunnel closed by peer"),
        Exit::Ended(Err(e)) => tracing::debug!(error = %e, "tunnel connection ended"),
        Exit::CloseRequested => {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, poll_fn(|cx| conn.poll_close(cx))).await;
        }
    }
    closed.cancel();
    for reply in pending.drain(..) {
        let _ = reply.send(Err(TransportError::Closed));
    }
}

fn poll_conn<T>(
    conn: &mut yamux::Connection<T>,
    open_rx: &mut mpsc::Receiver<OpenReply>,
    openers_gone: &mut bool,
    pending: &mut VecDeque<OpenReply>,
    in_tx: &mpsc::Sender<TunnelStream>,
    cx: &mut Context<'_>,
) -> Poll<Result<(), yamux::ConnectionError>>
where
    T: futures::AsyncRead + futures::AsyncWrite + Unpin + Send + 'static,
{
    loop {
        while !*openers_gone {
            match open_rx.poll_recv(cx) {
                Poll::Ready(Some(reply)) => pending.push_back(reply),
                Poll::Ready(None) => *openers_gone = true,
                Poll::Pending => break,
            }
        }
        // Requesters that gave up (timed out) need no stream.
        pending.retain(|r| !r.is_closed());
        while !pending.is_empty() {
            match conn.poll_new_outbound(cx) {
                Poll::Ready(Ok(stream)) => {
                    if let Some(reply) = pending.pop_front() {
                        let _ = reply.send(Ok(Box::new(stream.compat())));
                    }
                }
                Poll::Ready(Err(e)) => {
                    for reply in pending.drain(..) {
                        let _ = reply.send(Err(TransportError::Mux(e.to_string())));
                    }
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => break,
            }
        }
        match conn.poll_next_inbound(cx) {
            Poll::Ready(Some(Ok(stream))) => {
                // A full backlog or nobody accepting: the stream is dropped,
                // which resets it for the peer.
                if let Err(e) = in_tx.try_send(Box::new(stream.compat())) {
                    tracing::debug!(error = %e, "inbound stream refused");
                }
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
            Poll::Ready(None) => return Poll::Ready(Ok(())),
            Poll::Pending => return Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair() -> (Tunnel, Tunnel) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        (
            spawn_driver(a.compat(), yamux::Mode::Client, addr),
            spawn_driver(b.compat(), yamux::Mode::Server, addr),
        )
    }

    #[tokio::test]
    async fn streams_both_ways_and_close() {
        let (client, mut server) = pair();
        let mut s = client.opener.open().await.expect("open");
        s.write_all(b"hello").await.expect("write");
        s.flush().await.expect("flush");
        let mut inbound = server.incoming.recv().await.expect("inbound");
        let mut buf = [0u8; 5];
        inbound.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"hello");

        // Server-initiated stream.
        let mut s2 = server.opener.open().await.expect("open back");
        s2.write_all(b"x").await.expect("write");
        s2.flush().await.expect("flush");
        let mut client = client;
        let mut in2 = client.incoming.recv().await.expect("inbound 2");
        let mut one = [0u8; 1];
        in2.read_exact(&mut one).await.expect("read");
        assert_eq!(&one, b"x");

        // Dropping one end closes the other's opener.
        let opener = client.opener.clone();
        drop(server);
        tokio::time::timeout(Duration::from_secs(5), opener.closed())
            .await
            .expect("closed promptly");
        assert!(matches!(opener.open().await, Err(TransportError::Closed)));
    }

    #[tokio::test]
    async fn large_transfer_is_intact() {
        let (client, mut server) = pair();
        let mut s = client.opener.open().await.expect("open");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let writer = tokio::spawn(async move {
            s.write_all(&data).await.expect("write");
            s.shutdown().await.expect("shutdown");
        });
        let mut inbound = server.incoming.recv().await.expect("inbound");
        let mut got = Vec::new();
        inbound.read_to_end(&mut got).await.expect("read");
        writer.await.expect("writer");
        assert_eq!(got.len(), expected.len());
        assert!(got == expected);
    }
}
