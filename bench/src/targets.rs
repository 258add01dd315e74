//! The private targets, in-process: a sink (user→target bulk), a source
//! (target→user bulk) and an echo server (latency, connection rate).
//!
//! Sink protocol: read until EOF, then answer the byte count as a big-endian
//! u64, so the sender learns what actually arrived. Source: write until the
//! peer goes away. Echo: write back every byte.
//!
//! The targets run on their own thread with a single-threaded runtime, like
//! a separate server process: client and target then never share a worker,
//! which would make direct round trips bimodal (same worker or not).

use std::{net::SocketAddr, thread::JoinHandle};

use anyhow::Context;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
};

/// Read/write chunk of the bulk endpoints.
pub const BULK_CHUNK: usize = 128 * 1024;

pub struct Targets {
    pub sink: SocketAddr,
    pub source: SocketAddr,
    pub echo: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Targets {
    fn drop(&mut self) {
        // Dropping the runtime at the end of the thread ends every task.
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Sink,
    Source,
    Echo,
}

/// Starts the three targets on 127.0.0.1 (ephemeral ports) on their own thread.
pub fn start() -> anyhow::Result<Targets> {
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..3 {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.set_nonblocking(true)?;
        addrs.push(l.local_addr()?);
        listeners.push(l);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("targets runtime")?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("targets".into())
        .spawn(move || {
            rt.block_on(async move {
                for (l, kind) in listeners
                    .into_iter()
                    .zip([Kind::Sink, Kind::Source, Kind::Echo])
                {
                    match TcpListener::from_std(l) {
                        Ok(l) => {
                            tokio::spawn(accept_loop(l, kind));
                        }
                        Err(e) => eprintln!("nova-bench: target listener: {e}"),
                    }
                }
                let _ = stop_rx.await;
            });
        })?;
    Ok(Targets {
        sink: addrs[0],
        source: addrs[1],
        echo: addrs[2],
        stop: Some(stop_tx),
        thread: Some(thread),
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
