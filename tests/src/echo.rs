//! A thread-based TCP server that greets each connection with a banner line
//! and then echoes every byte back: the banner tells which server (which
//! agent's network) answered.

use std::{
    io::{self, BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

/// Accepts until `stop` is set, one thread per connection.
pub fn serve(listener: TcpListener, banner: String, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(conn) = conn else { continue };
        let banner = banner.clone();
        std::thread::spawn(move || {
            let _ = handle(conn, &banner);
        });
    }
}

fn handle(mut conn: TcpStream, banner: &str) -> io::Result<()> {
    conn.set_nodelay(true)?;
    conn.write_all(format!("{banner}\n").as_bytes())?;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            let _ = conn.shutdown(Shutdown::Write);
            return Ok(());
        }
        conn.write_all(&buf[..n])?;
    }
}

/// An in-process echo server, stopped on drop.
pub struct EchoServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    pub fn start(addr: SocketAddr, banner: &str) -> Self {
        let listener =
            TcpListener::bind(addr).unwrap_or_else(|e| panic!("echo server bind {addr}: {e}"));
        let addr = listener.local_addr().expect("local_addr");
        let stop = Arc::new(AtomicBool::new(false));
        let banner = banner.to_string();
        let s = stop.clone();
        let thread = std::thread::spawn(move || serve(listener, banner, s));
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A client connection to an echo server (usually through a tunnel).
pub struct EchoClient {
    reader: BufReader<TcpStream>,
    stream: TcpStream,
    pub banner: String,
}

impl EchoClient {
    /// Connects and reads the banner, everything bounded by `timeout`.
    pub fn connect(addr: &str, timeout: Duration) -> io::Result<Self> {
        let sa: SocketAddr = addr
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
        let stream = TcpStream::connect_timeout(&sa, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let banner = read_line(&mut reader)?;
        Ok(Self {
            reader,
            stream,
            banner,
        })
    }

    /// Sends one line and checks it comes back unchanged.
    pub fn echo(&mut self, line: &str) -> io::Result<()> {
        self.stream.write_all(format!("{line}\n").as_bytes())?;
        let got = read_line(&mut self.reader)?;
        if got != line {
            return Err(io::Error::other(format!(
                "echo mismatch: sent {line:?}, got {got:?}"
            )));
        }
        Ok(())
    }
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a full line",
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// One complete session: connect, banner, one echo round trip. Returns the
/// banner.
pub fn round_trip(addr: &str, timeout: Duration) -> io::Result<String> {
    let mut c = EchoClient::connect(addr, timeout)?;
    c.echo(&format!("ping-{}", crate::random_hex(8)))?;
    Ok(c.banner)
}
