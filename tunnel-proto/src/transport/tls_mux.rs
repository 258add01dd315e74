//! The default transport: TCP, TLS 1.3, and NOVA's own mux ([`crate::mux`]).
//!
//! ALPN `nova/2` names this mux. An agent of the yamux era offers `nova/1`
//! and is refused in the TLS handshake (no common protocol), which both
//! sides log as such, rather than a confusing failure after it.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use rustls::{pki_types::ServerName, ClientConfig};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;

use super::{Connector, Opener, TransportError, Tunnel};
use crate::mux::{self, Role};

/// Read buffer under TLS: rustls asks the socket for about one record
/// (16 KiB) per read; this turns a bulk transfer's reads into one syscall
/// per 256 KiB. Its pages are only touched as data arrives, so an idle
/// tunnel pays for one.
const READ_BUF: usize = 256 * 1024;

/// Bytes rustls may hold unsent: one whole data frame. Its default
/// (64 KiB) makes tokio-rustls write a 256 KiB frame in four `writev`s; at
/// one per frame, a bulk upload took 10% less tunnel CPU per GB and ran
/// 13% faster (nova-bench, 2 vCPUs). A bound, not an allocation: only a
/// tunnel whose socket is full holds that much.
const TLS_SEND_BUF: usize = mux::frame::MAX_DATA as usize + mux::frame::HEADER_LEN;

/// Applies [`TLS_SEND_BUF`] to an established TLS connection.
fn limit_unsent<D>(tls: &mut rustls::ConnectionCommon<D>) {
    tls.set_buffer_limit(Some(TLS_SEND_BUF));
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

/// Dials NOVAS over TCP + TLS 1.3 + the NOVA mux.
pub struct TlsMuxConnector {
    pub tls: Arc<ClientConfig>,
    /// Bound on TCP connect plus TLS handshake.
    pub timeout: Duration,
}

impl Connector for TlsMuxConnector {
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, Result<Tunnel, TransportError>> {
        Box::pin(async move {
            tokio::time::timeout(self.timeout, self.connect_inner(addr))
                .await
                .map_err(|_| TransportError::Timeout(addr.to_string()))?
        })
    }
}

impl TlsMuxConnector {
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
        let mut tls = TlsConnector::from(self.tls.clone())
            .connect(server_name, read_buffered(tcp))
            .await
            .map_err(|source| TransportError::Tls {
                addr: addr.to_string(),
                source,
            })?;
        limit_unsent(tls.get_mut().1);
        if tls.get_ref().1.alpn_protocol() != Some(crate::tls::ALPN) {
            return Err(TransportError::Tls {
                addr: addr.to_string(),
                source: io::Error::other(
                    "server does not speak tunnel protocol nova/2 (upgrade NOVAS)",
                ),
            });
        }
        Ok(spawn_driver(tls, Role::Client, peer))
    }
}

/// Server side: completes TLS on an accepted socket and starts the mux
/// driver. The caller bounds it with its handshake deadline.
pub async fn accept(
    tcp: TcpStream,
    acceptor: &TlsAcceptor,
    peer: SocketAddr,
) -> Result<Tunnel, TransportError> {
    tune_socket(&tcp);
    let mut tls = acceptor
        .accept(read_buffered(tcp))
        .await
        .map_err(|source| TransportError::Tls {
            addr: peer.to_string(),
            source,
        })?;
    limit_unsent(tls.get_mut().1);
    Ok(spawn_driver(tls, Role::Server, peer))
}

fn read_buffered(tcp: TcpStream) -> tokio::io::BufReader<TcpStream> {
    tokio::io::BufReader::with_capacity(READ_BUF, tcp)
}

/// Starts the mux driver on an established byte stream.
pub fn spawn_driver<T>(io: T, role: Role, peer: SocketAddr) -> Tunnel
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let shutdown = CancellationToken::new();
    let (conn, incoming) = mux::spawn(Box::new(rd), Box::new(wr), role, shutdown.clone());
    Tunnel {
        opener: Opener { conn },
        incoming: super::Incoming(incoming),
        peer,
        shutdown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair() -> (Tunnel, Tunnel) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        (
            spawn_driver(a, Role::Client, addr),
            spawn_driver(b, Role::Server, addr),
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
    async fn a_whole_data_frame_leaves_tls_in_one_socket_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (id, _) =
            crate::tls::ServerIdentity::load_or_generate(dir.path(), &["localhost".to_string()])
                .expect("server identity");
        let pin = crate::tls::parse_fingerprint(&id.fingerprint()).expect("fingerprint");
        let server_cfg = crate::tls::server_config(id).expect("server config");
        let client_cfg =
            crate::tls::client_config(&crate::tls::ServerTrust::Pinned(vec![pin])).expect("client");
        let (a, b) = tokio::io::duplex(4 << 20);
        let server = tokio::spawn(async move {
            let mut tls = TlsAcceptor::from(server_cfg)
                .accept(b)
                .await
                .expect("accept");
            limit_unsent(tls.get_mut().1);
            let mut got = Vec::new();
            tls.read_to_end(&mut got).await.expect("read");
            got
        });
        let (io, writes) = crate::test_io::Counting::new(a);
        let name = ServerName::try_from("localhost").expect("name");
        let mut tls = TlsConnector::from(client_cfg)
            .connect(name, io)
            .await
            .expect("connect");
        limit_unsent(tls.get_mut().1);
        // A full data frame, as the mux hands it over: header, then body.
        let header = [1u8; mux::frame::HEADER_LEN];
        let body = vec![7u8; mux::frame::MAX_DATA as usize];
        let bufs = [io::IoSlice::new(&header), io::IoSlice::new(&body)];
        let before = writes.load(Relaxed);
        let n = tls.write_vectored(&bufs).await.expect("write");
        let after = writes.load(Relaxed);
        assert_eq!(n, header.len() + body.len(), "rustls took the whole frame");
        assert_eq!(after - before, 1, "one socket write for the frame");
        tls.shutdown().await.expect("shutdown");
        let got = server.await.expect("server");
        assert_eq!(got.len(), header.len() + body.len());
        assert!(got[header.len()..].iter().all(|b| *b == 7));
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
