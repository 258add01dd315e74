//! The agent's health endpoint (NOVAC_HEALTH_PORT), for Kubernetes probes
//! and load balancers: `GET /healthz` answers 200 while the process runs,
//! `GET /readyz` 200 while at least one tunnel is registered with a NOVAS
//! and 503 otherwise.
//!
//! A few lines of HTTP/1.x on tokio rather than an HTTP stack: two fixed
//! answers do not justify one in the agent. Robust against slow or hostile
//! peers: the request head is bounded in size and time, connections are
//! bounded in number, and every answer closes the connection.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_util::sync::CancellationToken;

/// Largest request head read; probes send a few dozen bytes.
const MAX_HEAD: usize = 4096;
/// Bound on reading the request and writing the answer.
const DEADLINE: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed on accept.
const MAX_CONNS: usize = 32;

/// Shared readiness: how many tunnels are registered right now.
#[derive(Debug, Default)]
pub struct Health {
    tunnels_up: AtomicUsize,
}

impl Health {
    pub fn tunnels_up(&self) -> usize {
        self.tunnels_up.load(Ordering::Acquire)
    }

    /// Counts a tunnel as registered until the guard drops.
    pub fn tunnel_up(self: &Arc<Self>) -> TunnelUp {
        self.tunnels_up.fetch_add(1, Ordering::AcqRel);
        TunnelUp(self.clone())
    }
}

/// A registered tunnel, counted by [`Health`] while it lives.
pub struct TunnelUp(Arc<Health>);

impl Drop for TunnelUp {
    fn drop(&mut self) {
        self.0.tunnels_up.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves probes until `shutdown`.
pub async fn serve(listener: TcpListener, health: Arc<Health>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNS));
    loop {
        let conn = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.cancelled() => return,
        };
        let (conn, _) = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "health port: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let health = health.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(DEADLINE, answer(conn, &health)).await;
            drop(permit);
        });
    }
}

async fn answer(mut conn: TcpStream, health: &Health) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() >= MAX_HEAD {
            return reply(&mut conn, 431, "request head too large\n", true).await;
        }
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        // At most MAX_HEAD + one buffer is ever held.
        head.extend_from_slice(&buf[..n]);
    }
    let (status, body) = route(&head, health.tunnels_up());
    // HEAD gets the same status and headers, without the body.
    let with_body = !head.starts_with(b"HEAD ");
    reply(&mut conn, status, &body, with_body).await
}

/// The answer to a request head: status and body.
fn route(head: &[u8], tunnels_up: usize) -> (u16, String) {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return (400, "bad request\n".into());
    };
    if method != "GET" && method != "HEAD" {
        return (405, "only GET\n".into());
    }
    let path = target.split('?').next().unwrap_or_default();
    match path {
        "/healthz" => (200, "ok\n".into()),
        "/readyz" if tunnels_up > 0 => (200, format!("ready: {tunnels_up} tunnel(s) registered\n")),
        "/readyz" => (503, "no tunnel registered\n".into()),
        _ => (404, "not found\n".into()),
    }
}

async fn reply(
    conn: &mut TcpStream,
    status: u16,
    body: &str,
    with_body: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let mut msg = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    if with_body {
        msg.push_str(body);
    }
    conn.write_all(msg.as_bytes()).await?;
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let get = |p: &str| format!("GET {p} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes();
        assert_eq!(route(&get("/healthz"), 0).0, 200);
        assert_eq!(route(&get("/readyz"), 0).0, 503);
        assert_eq!(route(&get("/readyz?verbose=1"), 2).0, 200);
        assert_eq!(route(&get("/other"), 1).0, 404);
        assert_eq!(route(b"POST /healthz HTTP/1.1\r\n\r\n", 1).0, 405);
        assert_eq!(route(b"\r\n\r\n", 1).0, 400);
        assert_eq!(route(&[0xff, 0xfe, b'\n', b'\n'], 1).0, 400);
    }

    async fn fetch(addr: std::net::SocketAddr, req: &[u8]) -> String {
        let mut c = TcpStream::connect(addr).await.expect("connect");
        c.write_all(req).await.expect("write");
        let mut out = String::new();
        c.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn readiness_follows_tunnels_and_big_heads_are_refused() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let health = Arc::new(Health::default());
        let stop = CancellationToken::new();
        tokio::spawn(serve(l, health.clone(), stop.clone()));
        let ready = b"GET /readyz HTTP/1.1\r\n\r\n";
        assert!(fetch(addr, ready).await.starts_with("HTTP/1.1 503"));
        let up = health.tunnel_up();
        assert!(fetch(addr, ready).await.starts_with("HTTP/1.1 200"));
        drop(up);
        assert!(fetch(addr, ready).await.starts_with("HTTP/1.1 503"));
        // Exactly the bound, so the server has read all of it before it
        // answers (unread input would turn its close into a reset).
        let head = fetch(addr, b"HEAD /healthz HTTP/1.1\r\n\r\n").await;
        assert!(
            head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"),
            "{head:?}"
        );
        let huge = vec![b'a'; MAX_HEAD];
        assert!(fetch(addr, &huge).await.starts_with("HTTP/1.1 431"));
        stop.cancel();
    }
}
