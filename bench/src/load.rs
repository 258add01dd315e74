//! The load generators: bulk throughput both ways, request/response latency
//! on one connection, and fresh connections per second.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{stats::Summary, targets::BULK_CHUNK};

async fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One bulk measurement: bytes that arrived and the wall time it took.
#[derive(Debug, Clone, Copy)]
pub struct Bulk {
    pub bytes: u64,
    pub secs: f64,
}

impl Bulk {
    pub fn gbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.secs / 1e9
    }
}

/// `streams` connections to the sink, each writing for `dur`; the byte
/// counts come from the sink, the time runs until the last count arrived.
pub async fn upload(sink: SocketAddr, streams: usize, dur: Duration) -> anyhow::Result<Bulk> {
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..streams {
        set.spawn(async move {
            let mut s = connect(sink).await?;
            let buf = vec![0xa5u8; BULK_CHUNK];
            let start = Instant::now();
            let mut sent = 0u64;
            while start.elapsed() < dur {
                s.write_all(&buf).await?;
                sent += buf.len() as u64;
            }
            s.shutdown().await?;
            let got = tokio::time::timeout(Duration::from_secs(30), s.read_u64())
                .await
                .context("sink answered no byte count within 30 s")?
                .context("read the sink's byte count")?;
            if got != sent {
                bail!("sink received {got} bytes, {sent} were sent");
            }
            anyhow::Ok(got)
        });
    }
    let mut bytes = 0;
    while let Some(r) = set.join_next().await {
        bytes += r??;
    }
    Ok(Bulk {
        bytes,
        secs: t0.elapsed().as_secs_f64(),
    })
}

/// `streams` connections to the source, each reading for `dur`.
pub async fn download(source: SocketAddr, streams: usize, dur: Duration) -> anyhow::Result<Bulk> {
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..streams {
        set.spawn(async move {
            let mut s = connect(source).await?;
            let mut buf = vec![0u8; BULK_CHUNK];
            let start = Instant::now();
            let mut got = 0u64;
            while start.elapsed() < dur {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    bail!("source closed the connection after {got} bytes");
                }
                got += n as u64;
            }
            anyhow::Ok(got)
        });
    }
    let mut bytes = 0;
    while let Some(r) = set.join_next().await {
        bytes += r??;
    }
    Ok(Bulk {
        bytes,
        secs: t0.elapsed().as_secs_f64(),
    })
}

/// Round trips of `size` bytes on one connection; returns the latencies of
/// the `n` measured ones (after `warmup` unmeasured ones), in microseconds.
pub async fn ping_pong(
    echo: SocketAddr,
    n: usize,
    warmup: usize,
    size: usize,
) -> anyhow::Result<Summary> {
    let mut s = connect(echo).await?;
    let msg = vec![0x42u8; size];
    let mut buf = vec![0u8; size];
    let mut samples = Vec::with_capacity(n);
    for i in 0..warmup + n {
        let t = Instant::now();
        s.write_all(&msg).await?;
        s.read_exact(&mut buf).await?;
        if i >= warmup {
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    Ok(Summary::of(samples))
}

/// Result of a connection-rate run.
#[derive(Debug, Clone)]
pub struct ConnRate {
    pub ok: usize,
    pub failed: usize,
    pub secs: f64,
    /// Connect + one round trip + close, per connection, microseconds.
    pub per_conn_us: Summary,
    pub first_error: Option<String>,
}

impl ConnRate {
    pub fn per_sec(&self) -> f64 {
        self.ok as f64 / self.secs
    }
}

/// `total` fresh connections (at most `cap` long), `workers` in flight: each
/// connects, does one `size`-byte echo round trip and closes.
pub async fn conn_rate(
    echo: SocketAddr,
    total: usize,
    workers: usize,
    cap: Duration,
    size: usize,
) -> anyhow::Result<ConnRate> {
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let next = next.clone();
        set.spawn(async move {
            let msg = vec![0x17u8; size];
            let mut buf = vec![0u8; size];
            let mut lat = Vec::new();
            let mut failed = 0usize;
            let mut first_error = None;
            while next.fetch_add(1, Ordering::Relaxed) < total && t0.elapsed() < cap {
                let t = Instant::now();
                let r = tokio::time::timeout(Duration::from_secs(10), async {
                    let mut s = connect(echo).await?;
                    s.write_all(&msg).await?;
                    s.read_exact(&mut buf).await?;
                    anyhow::Ok(())
                })
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("no echo within 10 s")));
                match r {
                    Ok(()) => lat.push(t.elapsed().as_secs_f64() * 1e6),
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (lat, failed, first_error)
        });
    }
    let mut all = Vec::with_capacity(total);
    let mut failed = 0;
    let mut first_error = None;
    while let Some(r) = set.join_next().await {
        let (lat, f, e) = r?;
        all.extend(lat);
        failed += f;
        if first_error.is_none() {
            first_error = e;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok(ConnRate {
        ok: all.len(),
        failed,
        secs,
        per_conn_us: Summary::of(all),
        first_error,
    })
}
