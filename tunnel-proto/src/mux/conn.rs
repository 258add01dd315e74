//! One multiplexed connection: the state shared by its driver task, its
//! streams and its openers, and the driver itself.
//!
//! Writes do not go through the driver: a stream that writes takes the
//! writer lock and hands its frame straight to TLS, so a message costs no
//! task hand-off on the way out. Only when the socket is full does the frame
//! wait in `pending`, and the driver finishes the write when the socket
//! drains. Reading is the driver's job: it parses frames and wakes the
//! stream they belong to.

use std::{
    collections::{HashMap, VecDeque},
    future::poll_fn,
    io::{self, IoSlice},
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, Weak},
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::{Buf, Bytes, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite},
    sync::{mpsc, Notify},
};
use tokio_util::sync::CancellationToken;

use super::{
    behind,
    frame::{Header, HeaderError, Kind, HEADER_LEN},
    stream::{MuxStream, StreamShared},
};

/// Bytes a peer may send on a stream before the reader has consumed any;
/// also the most a stream buffers. Window updates go out each quarter.
pub const WINDOW: u32 = 512 * 1024;
/// Concurrent streams per connection (both directions together).
pub const MAX_STREAMS: usize = 4096;
/// Inbound streams waiting to be accepted before new ones are refused.
const INBOUND_BACKLOG: usize = 1024;
/// A writing stream waits when this much is queued behind a full socket.
const HIGH_WATER: usize = 1024 * 1024;
/// … and is woken again when the queue is back under this.
const LOW_WATER: usize = 256 * 1024;
/// Read sizes: small while the connection is quiet, large once reads fill
/// the buffer. Every idle agent holds one small buffer, partly resident:
/// 2 KiB instead of 8 took NOVAS from 31.1–31.8 to 29.0–29.5 KiB per idle
/// agent (nova-bench, 1,000 agents), with round trips and bulk unchanged.
const READ_SMALL: usize = 2 * 1024;
const READ_LARGE: usize = 128 * 1024;
/// Bodies at least this large are handed to the stream without a copy (a
/// slice of the read buffer); smaller ones are copied so that a slow stream
/// does not pin whole read buffers with a few bytes each.
const ZERO_COPY_MIN: usize = 16 * 1024;
/// Bound on a clean close before the socket is just dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Which end of the connection this is; decides stream id parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opens odd stream ids (the agent).
    Client,
    /// Opens even stream ids (the server).
    Server,
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    #[error("peer sent a bad frame: {0}")]
    Header(#[from] HeaderError),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("connection ended in the middle of a frame")]
    Truncated,
}

pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind
    // (queues, counters); carrying on is better than poisoning every stream.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn closed_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "tunnel closed")
}

struct Writer {
    io: BoxWrite,
    /// Encoded frames waiting for the socket, in order.
    pending: BytesMut,
    /// `pending` holds frames written behind (see [`behind`]), not yet
    /// tried on the socket; the park hook of a thread that queued some
    /// writes them.
    behind: bool,
    /// Bytes were accepted by TLS but may not be on the socket yet.
    flush_needed: bool,
    /// Streams waiting for `pending` to drain below the low-water mark.
    waiters: Vec<Waker>,
    failed: bool,
}

struct Streams {
    map: HashMap<u32, Arc<StreamShared>>,
    next_id: u32,
    /// Highest id the peer opened; ids only grow.
    last_peer_id: u32,
    /// Streams opened here whose Open frame has not gone out yet, in id
    /// order: an Open travels with its stream's first frame.
    unannounced: VecDeque<u32>,
    closed: bool,
}

/// The shared half of a connection.
pub struct Conn {
    /// This connection, for the write-behind lists of threads.
    me: Weak<Conn>,
    role: Role,
    writer: Mutex<Writer>,
    /// Tells the driver that `pending` needs writing.
    writer_wake: Notify,
    streams: Mutex<Streams>,
    /// Cancelled once the connection has ended.
    pub(crate) closed: CancellationToken,
}

impl Conn {
    fn new(io: BoxWrite, role: Role) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            role,
            writer: Mutex::new(Writer {
                io,
                pending: BytesMut::new(),
                behind: false,
                flush_needed: false,
                waiters: Vec::new(),
                failed: false,
            }),
            writer_wake: Notify::new(),
            streams: Mutex::new(Streams {
                map: HashMap::new(),
                next_id: if role == Role::Client { 1 } else { 2 },
                last_peer_id: 0,
                unannounced: VecDeque::new(),
                closed: false,
            }),
            closed: CancellationToken::new(),
        })
    }

    /// Opens a stream: a local operation. Its Open frame goes out with its
    /// first frame (one write instead of two per new stream), so a stream
    /// that the opener never writes to stays unknown to the peer.
    pub fn open(self: &Arc<Self>) -> Result<MuxStream, OpenError> {
        let mut st = lock(&self.streams);
        if st.closed {
            return Err(OpenError::Closed);
        }
        if st.map.len() >= MAX_STREAMS {
            return Err(OpenError::TooMany);
        }
        let id = st.next_id;
        st.next_id = id.checked_add(2).ok_or(OpenError::IdsExhausted)?;
        st.unannounced.push_back(id);
        let shared = Arc::new(StreamShared::new(id));
        st.map.insert(id, shared.clone());
        drop(st);
        Ok(MuxStream::new(self.clone(), shared, false))
    }

    /// Sends the first frame of stream `id` opened here, preceded by the
    /// Open frames of every stream up to it that has not been announced:
    /// Opens must leave in id order (the peer refuses an id lower than one
    /// it has seen), so they are taken and written under the streams lock,
    /// the one place that nests it with the writer's.
    pub(crate) fn poll_send_first(
        &self,
        cx: &mut Context<'_>,
        id: u32,
        header: &[u8; HEADER_LEN],
        body: &[u8],
        bounded: bool,
    ) -> Poll<io::Result<()>> {
        let mut st = lock(&self.streams);
        let mut opens = Vec::new();
        while let Some(&first) = st.unannounced.front() {
            if first > id {
                break;
            }
            st.unannounced.pop_front();
            opens.push(first);
        }
        if opens.is_empty() {
            // A later stream's first frame announced this one already.
            drop(st);
            return self.poll_send(cx, header, body, bounded);
        }
        let mut head = Vec::with_capacity((opens.len() + 1) * HEADER_LEN);
        for &sid in &opens {
            head.extend_from_slice(&Header::new(Kind::Open, sid, 0).encode());
        }
        head.extend_from_slice(header);
        let r = self.poll_send_raw(cx, &head, body, bounded);
        if r.is_pending() {
            // Nothing was written (the queue is full): try again later.
            for &sid in opens.iter().rev() {
                st.unannounced.push_front(sid);
            }
        }
        r
    }

    /// A stream opened here is dropped: true if the peer never heard of it
    /// (so no reset is owed).
    pub(crate) fn forget_unannounced(&self, id: u32) -> bool {
        let mut st = lock(&self.streams);
        match st.unannounced.iter().position(|&s| s == id) {
            Some(i) => {
                st.unannounced.remove(i);
                true
            }
            None => false,
        }
    }

    pub(crate) fn remove(&self, id: u32) -> Option<Arc<StreamShared>> {
        lock(&self.streams).map.remove(&id)
    }

    fn get(&self, id: u32) -> Option<Arc<StreamShared>> {
        lock(&self.streams).map.get(&id).cloned()
    }

    /// Sends a frame from a context without a waker to spare (control
    /// frames, drop): it is written now or queued for the driver.
    pub(crate) fn send_control(&self, h: Header) -> io::Result<()> {
        let mut cx = Context::from_waker(Waker::noop());
        match self.poll_send(&mut cx, &h.encode(), &[], false) {
            Poll::Ready(r) => r,
            Poll::Pending => Ok(()), // unbounded sends do not wait
        }
    }

    /// Writes one frame, or queues it behind earlier ones. Pending only for
    /// a `bounded` (data) frame while the queue is over the high-water mark.
    pub(crate) fn poll_send(
        &self,
        cx: &mut Context<'_>,
        header: &[u8; HEADER_LEN],
        body: &[u8],
        bounded: bool,
    ) -> Poll<io::Result<()>> {
        self.poll_send_raw(cx, header, body, bounded)
    }

    /// [`Self::poll_send`] with any run of whole frame headers in front of
    /// the body.
    fn poll_send_raw(
        &self,
        cx: &mut Context<'_>,
        header: &[u8],
        body: &[u8],
        bounded: bool,
    ) -> Poll<io::Result<()>> {
        // Held across one non-blocking write (and its encryption), never
        // across an await.
        let mut w = lock(&self.writer);
        if w.failed {
            return Poll::Ready(Err(closed_error()));
        }
        let hl = header.len();
        let total = hl + body.len();
        if w.behind {
            w.pending.extend_from_slice(header);
            w.pending.extend_from_slice(body);
            if w.pending.len() >= behind::MAX_BYTES || total > behind::MAX_FRAME {
                return self.write_out(w, cx);
            }
            drop(w);
            // This thread's park writes it too if the one that started the
            // queue has not yet.
            behind::register(&self.me);
            return Poll::Ready(Ok(()));
        }
        if !w.pending.is_empty() || w.flush_needed {
            // The driver is draining: queue behind it to keep frame order.
            if bounded && w.pending.len() >= HIGH_WATER {
                w.waiters.push(cx.waker().clone());
                return Poll::Pending;
            }
            w.pending.extend_from_slice(header);
            w.pending.extend_from_slice(body);
            drop(w);
            self.writer_wake.notify_one();
            return Poll::Ready(Ok(()));
        }
        if total <= behind::MAX_FRAME && behind::enabled() {
            w.pending.extend_from_slice(header);
            w.pending.extend_from_slice(body);
            w.behind = true;
            drop(w);
            behind::register(&self.me);
            return Poll::Ready(Ok(()));
        }
        let mut done = 0;
        while done < total {
            let (h, b) = if done < hl {
                (&header[done..], body)
            } else {
                (&header[..0], &body[done - hl..])
            };
            let bufs = [IoSlice::new(h), IoSlice::new(b)];
            match Pin::new(&mut w.io).poll_write_vectored(cx, &bufs) {
                Poll::Ready(Ok(0)) => {
                    w.failed = true;
                    // Let the driver end the connection now.
                    self.writer_wake.notify_one();
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => done += n,
                Poll::Ready(Err(e)) => {
                    w.failed = true;
                    // Let the driver end the connection now.
                    self.writer_wake.notify_one();
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => break,
            }
        }
        if done < total {
            if done < hl {
                w.pending.extend_from_slice(&header[done..]);
                w.pending.extend_from_slice(body);
            } else {
                w.pending.extend_from_slice(&body[done - hl..]);
            }
        } else {
            match Pin::new(&mut w.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(Ok(())),
                Poll::Ready(Err(e)) => {
                    w.failed = true;
                    // Let the driver end the connection now.
                    self.writer_wake.notify_one();
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {}
            }
        }
        // The socket is full: the driver finishes this write when it drains.
        w.flush_needed = true;
        drop(w);
        self.writer_wake.notify_one();
        Poll::Ready(Ok(()))
    }

    /// Writes out the queue (the driver, when the socket was full).
    fn poll_drain(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        drain(&mut lock(&self.writer), cx)
    }

    /// Writes the queue now, from a stream's write that made it too long.
    /// Always ready: what the socket does not take is the driver's to
    /// finish, as for any write that finds the socket full.
    fn write_out(
        &self,
        mut w: MutexGuard<'_, Writer>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        match drain(&mut w, cx) {
            Poll::Ready(r) => {
                let failed = r.is_err();
                drop(w);
                if failed {
                    // Let the driver end the connection now.
                    self.writer_wake.notify_one();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                w.flush_needed = true;
                drop(w);
                self.writer_wake.notify_one();
                Poll::Ready(Ok(()))
            }
        }
    }

    /// Writes the frames written behind (a thread's park hook).
    pub(crate) fn write_behind(&self) {
        let mut w = lock(&self.writer);
        if !w.behind {
            return; // written already, by a longer queue or the driver
        }
        // No task to wake here: if the socket is full (or the write
        // fails), the driver takes over with its own waker.
        let mut cx = Context::from_waker(Waker::noop());
        if drain(&mut w, &mut cx).is_ready() && !w.failed {
            return;
        }
        w.flush_needed = !w.failed;
        drop(w);
        self.writer_wake.notify_one();
    }

    /// The thread that queued frames behind is going away: the driver
    /// writes them.
    pub(crate) fn hand_behind_to_driver(&self) {
        let mut w = lock(&self.writer);
        if w.behind {
            w.behind = false;
            w.flush_needed = true;
            drop(w);
            self.writer_wake.notify_one();
        }
    }
}

/// Writes out `w`'s queue: frames behind a full socket, or written behind.
fn drain(w: &mut Writer, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    if w.failed {
        return Poll::Ready(Err(closed_error()));
    }
    // Whatever was written behind goes out with the rest.
    w.behind = false;
    while !w.pending.is_empty() {
        match Pin::new(&mut w.io).poll_write(cx, &w.pending) {
            Poll::Ready(Ok(0)) => {
                w.failed = true;
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            Poll::Ready(Ok(n)) => w.pending.advance(n),
            Poll::Ready(Err(e)) => {
                w.failed = true;
                return Poll::Ready(Err(e));
            }
            Poll::Pending => {
                if w.pending.len() < LOW_WATER {
                    wake_all(&mut w.waiters);
                }
                return Poll::Pending;
            }
        }
    }
    // Give back a queue that grew for a burst: idle agents stay small.
    if w.pending.capacity() > 64 * 1024 {
        w.pending = BytesMut::new();
    }
    wake_all(&mut w.waiters);
    match Pin::new(&mut w.io).poll_flush(cx) {
        Poll::Ready(Ok(())) => {
            w.flush_needed = false;
            Poll::Ready(Ok(()))
        }
        Poll::Ready(Err(e)) => {
            w.failed = true;
            Poll::Ready(Err(e))
        }
        Poll::Pending => Poll::Pending,
    }
}

impl Conn {
    fn poll_close_io(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_drain(cx))?;
        Pin::new(&mut lock(&self.writer).io).poll_shutdown(cx)
    }

    /// Handles one frame header; a data body that follows is described by
    /// the returned [`Body`].
    fn on_frame(
        self: &Arc<Self>,
        h: Header,
        in_tx: &mpsc::Sender<MuxStream>,
    ) -> Result<Option<Body>, MuxError> {
        match h.kind {
            Kind::Data => {
                let stream = self.get(h.stream);
                if let Some(s) = &stream {
                    s.expect_data(h.len)?;
                }
                // Data for a stream this side already dropped is read and
                // discarded (it was in flight when the reset went out).
                Ok((h.len > 0).then_some(Body {
                    stream,
                    left: h.len as usize,
                }))
            }
            Kind::Window => {
                if let Some(s) = self.get(h.stream) {
                    s.add_credit(h.len)?;
                }
                Ok(None)
            }
            Kind::Open => {
                self.accept(h.stream, in_tx)?;
                Ok(None)
            }
            Kind::Fin => {
                if let Some(s) = self.get(h.stream) {
                    if s.on_fin() {
                        self.remove(h.stream);
                    }
                }
                Ok(None)
            }
            Kind::Rst => {
                if let Some(s) = self.remove(h.stream) {
                    s.on_reset();
                }
                Ok(None)
            }
            Kind::GoAway => Err(MuxError::Protocol("unreachable: go-away".into())),
        }
    }

    fn accept(self: &Arc<Self>, id: u32, in_tx: &mpsc::Sender<MuxStream>) -> Result<(), MuxError> {
        let peer_parity = if self.role == Role::Client { 0 } else { 1 };
        let shared = {
            let mut st = lock(&self.streams);
            if id % 2 != peer_parity || id <= st.last_peer_id {
                return Err(MuxError::Protocol(format!(
                    "peer opened stream {id} (wrong parity or reused id)"
                )));
            }
            st.last_peer_id = id;
            if st.map.len() >= MAX_STREAMS {
                None
            } else {
                let s = Arc::new(StreamShared::new(id));
                st.map.insert(id, s.clone());
                Some(s)
            }
        };
        let Some(shared) = shared else {
            tracing::debug!(stream = id, "stream limit reached, refusing");
            let _ = self.send_control(Header::new(Kind::Rst, id, 0));
            return Ok(());
        };
        // A full backlog or nobody accepting: the stream is dropped, which
        // resets it for the peer.
        if let Err(e) = in_tx.try_send(MuxStream::new(self.clone(), shared, true)) {
            tracing::debug!(error = %e, "inbound stream refused");
        }
        Ok(())
    }

    /// Ends every stream and every waiting writer: the connection is gone.
    fn close_all(&self) {
        let streams = {
            let mut st = lock(&self.streams);
            st.closed = true;
            std::mem::take(&mut st.map)
        };
        for s in streams.values() {
            s.on_conn_closed();
        }
        let mut w = lock(&self.writer);
        w.failed = true;
        wake_all(&mut w.waiters);
        drop(w);
        self.closed.cancel();
    }
}

fn wake_all(waiters: &mut Vec<Waker>) {
    for w in waiters.drain(..) {
        w.wake();
    }
}

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("tunnel closed")]
    Closed,
    #[error("too many streams on this tunnel (limit {MAX_STREAMS})")]
    TooMany,
    #[error("stream ids exhausted on this tunnel")]
    IdsExhausted,
}

/// The rest of a data frame still to be read.
struct Body {
    stream: Option<Arc<StreamShared>>,
    left: usize,
}

/// Starts the driver of a connection over `rd`/`wr` (the two halves of one
/// TLS stream). Returns the shared state and the inbound streams.
pub fn spawn(
    rd: BoxRead,
    wr: BoxWrite,
    role: Role,
    shutdown: CancellationToken,
) -> (Arc<Conn>, mpsc::Receiver<MuxStream>) {
    let conn = Conn::new(wr, role);
    let (in_tx, in_rx) = mpsc::channel(INBOUND_BACKLOG);
    tokio::spawn(drive(conn.clone(), rd, in_tx, shutdown));
    (conn, in_rx)
}

async fn drive(
    conn: Arc<Conn>,
    mut rd: BoxRead,
    in_tx: mpsc::Sender<MuxStream>,
    shutdown: CancellationToken,
) {
    let ended = tokio::select! {
        r = read_loop(&conn, &mut rd, &in_tx) => r,
        r = write_loop(&conn) => r.map_err(MuxError::Io),
        _ = shutdown.cancelled() => {
            let _ = conn.send_control(Header::new(Kind::GoAway, 0, 0));
            let close = poll_fn(|cx| conn.poll_close_io(cx));
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
            Ok(())
        }
    };
    match ended {
        Ok(()) => tracing::debug!("tunnel connection closed"),
        Err(e @ MuxError::Io(_)) => tracing::debug!(error = %e, "tunnel connection ended"),
        // A peer that breaks the protocol is worth an operator's attention.
        Err(e) => tracing::warn!(error = %e, "tunnel connection ended"),
    }
    conn.close_all();
}

async fn write_loop(conn: &Conn) -> io::Result<()> {
    loop {
        conn.writer_wake.notified().await;
        poll_fn(|cx| conn.poll_drain(cx)).await?;
    }
}

/// Reads frames until the peer closes (`Ok`) or misbehaves.
async fn read_loop(
    conn: &Arc<Conn>,
    rd: &mut BoxRead,
    in_tx: &mpsc::Sender<MuxStream>,
) -> Result<(), MuxError> {
    let mut buf = BytesMut::new();
    let mut body: Option<Body> = None;
    let mut chunk = READ_SMALL;
    loop {
        if buf.capacity() - buf.len() < chunk / 4 {
            if buf.is_empty() {
                buf = BytesMut::with_capacity(chunk);
            } else {
                buf.reserve(chunk);
            }
        }
        let room = buf.capacity() - buf.len();
        let n = rd.read_buf(&mut buf).await?;
        if n == 0 {
            return if buf.is_empty() && body.is_none() {
                Ok(())
            } else {
                Err(MuxError::Truncated)
            };
        }
        chunk = if n * 2 >= room {
            READ_LARGE
        } else {
            READ_SMALL
        };
        loop {
            if let Some(b) = &mut body {
                let k = b.left.min(buf.len());
                if k == 0 {
                    break;
                }
                let piece = if k >= ZERO_COPY_MIN {
                    buf.split_to(k).freeze()
                } else {
                    let p = Bytes::copy_from_slice(&buf[..k]);
                    buf.advance(k);
                    p
                };
                b.left -= k;
                if let Some(s) = &b.stream {
                    s.push(piece);
                }
                if b.left == 0 {
                    body = None;
                }
                continue;
            }
            let Some(raw) = buf.get(..HEADER_LEN) else {
                break;
            };
            let mut hb = [0u8; HEADER_LEN];
            hb.copy_from_slice(raw);
            let h = Header::decode(&hb)?;
            buf.advance(HEADER_LEN);
            if h.kind == Kind::GoAway {
                return Ok(());
            }
            body = conn.on_frame(h, in_tx)?;
        }
        // A thread busy with tunnel reads still writes its queue out.
        behind::tick();
    }
}
