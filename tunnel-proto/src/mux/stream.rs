//! A stream inside a mux connection: its shared state (filled by the
//! driver) and the handle a session reads and writes.

use std::{
    collections::VecDeque,
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{
    conn::{closed_error, lock, Conn, MuxError, WINDOW},
    frame::{Header, Kind, MAX_DATA},
};

/// Window credit is returned to the peer once this much has been read.
const ACK_EVERY: u32 = WINDOW / 4;

#[derive(Default)]
struct State {
    recv: VecDeque<Bytes>,
    /// The peer sent Fin: reads end once `recv` is empty.
    recv_fin: bool,
    /// This side sent Fin.
    send_fin: bool,
    reset: bool,
    conn_closed: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    /// Bytes read but not yet returned to the peer as window.
    consumed: u32,
    /// What the peer may still send before the next window update.
    peer_credit: u32,
    /// What this side may still send.
    send_credit: u32,
}

pub struct StreamShared {
    pub(crate) id: u32,
    state: Mutex<State>,
}

impl StreamShared {
    pub(crate) fn new(id: u32) -> Self {
        Self {
            id,
            state: Mutex::new(State {
                peer_credit: WINDOW,
                send_credit: WINDOW,
                ..State::default()
            }),
        }
    }

    /// A data frame of `len` bytes is announced: it must fit the window.
    pub(crate) fn expect_data(&self, len: u32) -> Result<(), MuxError> {
        let mut st = lock(&self.state);
        if st.recv_fin {
            return Err(MuxError::Protocol(format!(
                "data on stream {} after its Fin",
                self.id
            )));
        }
        st.peer_credit = st
            .peer_credit
            .checked_sub(len)
            .ok_or_else(|| MuxError::Protocol(format!("stream {} overran its window", self.id)))?;
        Ok(())
    }

    pub(crate) fn push(&self, piece: Bytes) {
        let waker = {
            let mut st = lock(&self.state);
            st.recv.push_back(piece);
            st.read_waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub(crate) fn add_credit(&self, n: u32) -> Result<(), MuxError> {
        let waker = {
            let mut st = lock(&self.state);
            st.send_credit = st
                .send_credit
                .checked_add(n)
                .filter(|c| *c <= 2 * WINDOW)
                .ok_or_else(|| {
                    MuxError::Protocol(format!("stream {}: window grown past its size", self.id))
                })?;
            st.write_waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// The peer half-closed. True when both halves are now closed.
    pub(crate) fn on_fin(&self) -> bool {
        let (waker, done) = {
            let mut st = lock(&self.state);
            st.recv_fin = true;
            (st.read_waker.take(), st.send_fin)
        };
        if let Some(w) = waker {
            w.wake();
        }
        done
    }

    pub(crate) fn on_reset(&self) {
        self.end(|st| st.reset = true);
    }

    pub(crate) fn on_conn_closed(&self) {
        self.end(|st| st.conn_closed = true);
    }

    fn end(&self, mark: impl FnOnce(&mut State)) {
        let (r, w) = {
            let mut st = lock(&self.state);
            mark(&mut st);
            (st.read_waker.take(), st.write_waker.take())
        };
        for waker in [r, w].into_iter().flatten() {
            waker.wake();
        }
    }
}

/// One stream, as a byte stream. Dropping it before both sides have closed
/// resets it.
pub struct MuxStream {
    conn: Arc<Conn>,
    shared: Arc<StreamShared>,
    /// The peer knows this stream: it opened it, or this side's Open went
    /// out (with this stream's first frame, or with a later stream's).
    announced: bool,
}

impl MuxStream {
    pub(crate) fn new(conn: Arc<Conn>, shared: Arc<StreamShared>, announced: bool) -> Self {
        Self {
            conn,
            shared,
            announced,
        }
    }

    /// Sends a frame of this stream, announcing it first if need be.
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        header: &[u8; super::frame::HEADER_LEN],
        body: &[u8],
        bounded: bool,
    ) -> Poll<io::Result<()>> {
        if self.announced {
            return self.conn.poll_send(cx, header, body, bounded);
        }
        let r = self
            .conn
            .poll_send_first(cx, self.shared.id, header, body, bounded);
        if matches!(r, Poll::Ready(Ok(()))) {
            self.announced = true;
        }
        r
    }

    pub fn id(&self) -> u32 {
        self.shared.id
    }
}

impl AsyncRead for MuxStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let ack = {
            let mut st = lock(&self.shared.state);
            if st.recv.is_empty() {
                return if st.recv_fin {
                    Poll::Ready(Ok(()))
                } else if st.reset {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "stream reset by peer",
                    )))
                } else if st.conn_closed {
                    Poll::Ready(Err(closed_error()))
                } else {
                    st.read_waker = Some(cx.waker().clone());
                    Poll::Pending
                };
            }
            let mut n = 0;
            while buf.remaining() > 0 {
                let Some(front) = st.recv.front_mut() else {
                    break;
                };
                let k = front.len().min(buf.remaining());
                buf.put_slice(&front[..k]);
                front.advance(k);
                if front.is_empty() {
                    st.recv.pop_front();
                }
                n += k;
            }
            // n ≤ the window, which fits in u32.
            st.consumed += n as u32;
            if st.consumed >= ACK_EVERY && !st.recv_fin && !st.reset {
                let ack = std::mem::take(&mut st.consumed);
                st.peer_credit += ack;
                ack
            } else {
                0
            }
        };
        if ack > 0 {
            // A lost update only matters if the connection is gone anyway.
            let _ = self
                .conn
                .send_control(Header::new(Kind::Window, self.shared.id, ack));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for MuxStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = {
            let mut st = lock(&self.shared.state);
            if st.send_fin {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "stream already closed for writing",
                )));
            }
            if st.reset {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "stream reset by peer",
                )));
            }
            if st.conn_closed {
                return Poll::Ready(Err(closed_error()));
            }
            if st.send_credit == 0 {
                st.write_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            buf.len()
                .min(st.send_credit as usize)
                .min(MAX_DATA as usize)
        };
        let header = Header::new(Kind::Data, self.shared.id, n as u32).encode();
        let this = self.get_mut();
        std::task::ready!(this.poll_send(cx, &header, &buf[..n], true))?;
        // Only this handle spends credit; the driver only adds to it.
        lock(&this.shared.state).send_credit -= n as u32;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Frames are handed to the connection as they are written; the
        // driver finishes any that a full socket held back.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let both_closed = {
            let mut st = lock(&this.shared.state);
            if st.send_fin || st.reset || st.conn_closed {
                return Poll::Ready(Ok(()));
            }
            st.send_fin = true;
            st.recv_fin
        };
        // Unbounded: never waits, so the noop waker is never needed.
        let fin = Header::new(Kind::Fin, this.shared.id, 0).encode();
        let mut noop = Context::from_waker(Waker::noop());
        let sent = match this.poll_send(&mut noop, &fin, &[], false) {
            Poll::Ready(r) => r,
            Poll::Pending => Ok(()),
        };
        if both_closed {
            this.conn.remove(this.shared.id);
        }
        Poll::Ready(sent)
    }
}

impl Drop for MuxStream {
    fn drop(&mut self) {
        let reset = {
            let st = lock(&self.shared.state);
            !(st.reset || st.conn_closed || (st.send_fin && st.recv_fin))
        };
        self.conn.remove(self.shared.id);
        // A stream the peer never heard of owes it nothing (and must not be
        // announced by a later stream's first frame).
        let unknown_to_peer = !self.announced && self.conn.forget_unannounced(self.shared.id);
        if reset && !unknown_to_peer {
            let _ = self
                .conn
                .send_control(Header::new(Kind::Rst, self.shared.id, 0));
        }
    }
}
