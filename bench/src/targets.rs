//! The private targets, in-process: a sink (user→target bulk), a source
//! (target→user bulk) and an echo server (latency, connection rate).
//!
//! Sink protocol: read until EOF, then answer the byte count as a big-endian
//! u64, so the sender learns what actually arrived. Source: write until the
//! peer goes away. Echo: write back every byte.

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// Read/write chunk of the bulk endpoints.
pub const BULK_CHUNK: usize = 128 * 1024;

pub struct Targets {
    pub sink: SocketAddr,
    pub source: SocketAddr,
    pub echo: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Targets {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Sink,
    Source,
    Echo,
}

pub async fn start() -> anyhow::Result<Targets> {
    let mut addrs = Vec::new();
    let mut tasks = Vec::new();
    for kind in [Kind::Sink, Kind::Source, Kind::Echo] {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        addrs.push(l.local_addr()?);
        tasks.push(tokio::spawn(accept_loop(l, kind)));
    }
    Ok(Targets {
        sink: addrs[0],
        source: addrs[1],
        echo: addrs[2],
        tasks,
    })
}

async fn accept_loop(l: TcpListener, kind: Kind) {
    loop {
        let Ok((s, _)) = l.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let _ = match kind {
                Kind::Sink => sink(s).await,
                Kind::Source => source(s).await,
                Kind::Echo => echo(s).await,
            };
        });
    }
}

async fn sink(mut s: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; BULK_CHUNK];
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    s.write_all(&total.to_be_bytes()).await?;
    s.shutdown().await
}

async fn source(mut s: TcpStream) -> std::io::Result<()> {
    let buf = vec![0x5au8; BULK_CHUNK];
    loop {
        s.write_all(&buf).await?;
    }
}

async fn echo(mut s: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return s.shutdown().await;
        }
        s.write_all(&buf[..n]).await?;
    }
}
