//! Splicing a session's socket and its tunnel stream both ways, in place of
//! `tokio::io::copy_bidirectional_with_sizes`.
//!
//! Why our own: tokio's copy allocates and zeroes its full buffers when a
//! session starts (2 × 64 KiB per side per connection, a measurable part
//! of a short connection's cost), and keeps them for the session's life.
//! Here the socket's direction reads into uninitialised memory, starts
//! small and grows only while reads keep filling the buffer (bulk
//! transfers get large reads, so fewer syscalls and wake-ups per byte),
//! and gives a large buffer back once it goes quiet. The tunnel's
//! direction copies nothing: it takes the pieces the tunnel read
//! ([`AsyncStream::poll_read_chunks`]) and writes them to the socket with
//! one `writev` for several (on the agent in a bulk upload, the copy it
//! saves was 5% of the process's CPU).

use std::{
    collections::VecDeque,
    future::poll_fn,
    io::{self, IoSlice},
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::transport::AsyncStream;

/// First read size of a direction: enough for any request/response message.
const SMALL: usize = 16 * 1024;
/// Largest read size: a bulk direction grows to this.
pub const LARGE: usize = 256 * 1024;
/// Reads and writes in one poll before yielding to other tasks.
const BUDGET: usize = 64;
/// Chunks handed to one vectored write.
const MAX_IOV: usize = 16;

/// Copies `sock` → `tunnel` and `tunnel` → `sock` until both directions
/// have reached end of stream (each end is shut down for writing once its
/// peer's data is done). Returns the bytes copied sock → tunnel and
/// tunnel → sock. The first error ends both directions.
pub async fn splice<S, T>(sock: &mut S, tunnel: &mut T) -> io::Result<(u64, u64)>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
    T: AsyncStream + ?Sized,
{
    let mut up = Half::default();
    let mut down = ChunkHalf::default();
    poll_fn(|cx| {
        let r1 = up.poll(cx, Pin::new(&mut *sock), Pin::new(&mut *tunnel))?;
        let r2 = down.poll(cx, &mut *tunnel, Pin::new(&mut *sock))?;
        if r1.is_ready() && r2.is_ready() {
            Poll::Ready(Ok((up.total, down.total)))
        } else {
            Poll::Pending
        }
    })
    .await
}

/// The socket's direction: read into a buffer, write it to the tunnel.
struct Half {
    /// Bytes read and not yet written.
    buf: BytesMut,
    /// How much the next read asks for.
    size: usize,
    /// Size of the last read that returned data.
    last_read: usize,
    read_done: bool,
    /// Written since the last flush.
    unflushed: bool,
    done: bool,
    total: u64,
}

impl Default for Half {
    fn default() -> Self {
        Self {
            buf: BytesMut::new(),
            size: SMALL,
            last_read: 0,
            read_done: false,
            unflushed: false,
            done: false,
            total: 0,
        }
    }
}

impl Half {
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut r: Pin<&mut R>,
        mut w: Pin<&mut W>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        for _ in 0..BUDGET {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            if !self.buf.is_empty() {
                let n = ready!(w.as_mut().poll_write(cx, &self.buf))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.buf.advance(n);
                self.total += n as u64;
                self.unflushed = true;
                continue;
            }
            if self.read_done {
                ready!(w.as_mut().poll_shutdown(cx))?;
                self.done = true;
                continue;
            }
            // Empty: reuse the allocation from its start.
            self.buf.clear();
            self.buf.reserve(self.size);
            let room = self.buf.capacity();
            match tokio_util::io::poll_read_buf(r.as_mut(), cx, &mut self.buf) {
                Poll::Ready(Ok(0)) => self.read_done = true,
                Poll::Ready(Ok(n)) => {
                    self.last_read = n;
                    if n >= room && self.size < LARGE {
                        self.size = (self.size * 2).min(LARGE);
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // Nothing to copy for now: pass on what was written
                    // (for writers that buffer), and let a direction that
                    // went back to small messages give back a buffer grown
                    // for a burst (a bulk flow waits for data too, but
                    // after large reads: it keeps its buffer).
                    if self.unflushed {
                        ready!(w.as_mut().poll_flush(cx))?;
                        self.unflushed = false;
                    }
                    if self.buf.capacity() > SMALL && self.last_read < SMALL {
                        self.buf = BytesMut::new();
                        self.size = SMALL;
                    }
                    return Poll::Pending;
                }
            }
        }
        // Used up this poll's share: come back after other tasks ran.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The tunnel's direction: take the tunnel's pieces, write them on.
#[derive(Default)]
struct ChunkHalf {
    /// Pieces taken from the tunnel and not yet written, at most [`LARGE`]
    /// bytes in all (the tunnel's window bounds the rest).
    queue: VecDeque<Bytes>,
    queued: usize,
    read_done: bool,
    unflushed: bool,
    done: bool,
    total: u64,
}

impl ChunkHalf {
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        mut w: Pin<&mut W>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncStream + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        for _ in 0..BUDGET {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            // Take what the tunnel has first (moving pieces is cheap), so
            // that one write carries as much as it can.
            let mut waiting = false;
            if !self.read_done && self.queued < LARGE {
                match r.poll_read_chunks(cx, &mut self.queue, LARGE - self.queued) {
                    Poll::Ready(Ok(0)) => self.read_done = true,
                    Poll::Ready(Ok(n)) => {
                        self.queued += n;
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => waiting = true,
                }
            }
            if self.queued > 0 {
                let n = ready!(self.poll_write_queue(cx, w.as_mut()))?;
                self.total += n as u64;
                self.unflushed = true;
                continue;
            }
            if self.read_done {
                ready!(w.as_mut().poll_shutdown(cx))?;
                self.done = true;
                continue;
            }
            if waiting {
                if self.unflushed {
                    ready!(w.as_mut().poll_flush(cx))?;
                    self.unflushed = false;
                }
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// One (vectored) write of the queue's front; drops what it wrote.
    fn poll_write_queue<W>(
        &mut self,
        cx: &mut Context<'_>,
        w: Pin<&mut W>,
    ) -> Poll<io::Result<usize>>
    where
        W: AsyncWrite + ?Sized,
    {
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let mut k = 0;
        for (slot, piece) in slices.iter_mut().zip(&self.queue) {
            *slot = IoSlice::new(piece);
            k += 1;
        }
        let n = ready!(w.poll_write_vectored(cx, &slices[..k]))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        self.queued -= n;
        let mut left = n;
        while left > 0 {
            let Some(front) = self.queue.front_mut() else {
                break;
            };
            if front.len() > left {
                front.advance(left);
                break;
            }
            left -= front.len();
            self.queue.pop_front();
        }
        Poll::Ready(Ok(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // A pipe as the tunnel side: takes the trait's copying default.
    impl AsyncStream for tokio::io::DuplexStream {}

    #[tokio::test]
    async fn copies_both_ways_and_shuts_down() {
        let (mut user, mut a) = tokio::io::duplex(64 * 1024);
        let (mut b, mut target) = tokio::io::duplex(64 * 1024);
        let relay = tokio::spawn(async move { splice(&mut a, &mut b).await });

        let up: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..1_000_000u32).map(|i| (i % 241) as u8).collect();
        let (up2, down2) = (up.clone(), down.clone());
        let user_side = tokio::spawn(async move {
            user.write_all(&up2).await.expect("user write");
            user.shutdown().await.expect("user shutdown");
            let mut got = Vec::new();
            user.read_to_end(&mut got).await.expect("user read");
            got
        });
        let target_side = tokio::spawn(async move {
            let mut got = Vec::new();
            target.read_to_end(&mut got).await.expect("target read");
            target.write_all(&down2).await.expect("target write");
            target.shutdown().await.expect("target shutdown");
            got
        });
        let at_target = target_side.await.expect("join");
        let at_user = user_side.await.expect("join");
        let (n_up, n_down) = relay.await.expect("join").expect("splice");
        assert!(at_target == up, "upload intact");
        assert!(at_user == down, "download intact");
        assert_eq!((n_up, n_down), (up.len() as u64, down.len() as u64));
    }

    #[tokio::test]
    async fn small_messages_pass_at_once_and_an_error_ends_it() {
        let (mut user, mut a) = tokio::io::duplex(1024);
        let (mut b, mut target) = tokio::io::duplex(1024);
        let relay = tokio::spawn(async move { splice(&mut a, &mut b).await });
        for i in 0..100u8 {
            user.write_all(&[i; 64]).await.expect("write");
            let mut got = [0u8; 64];
            target.read_exact(&mut got).await.expect("read at target");
            assert_eq!(got, [i; 64]);
            target.write_all(&got).await.expect("echo");
            user.read_exact(&mut got).await.expect("read at user");
            assert_eq!(got, [i; 64]);
        }
        // The target side vanishing while the user still writes is an
        // error for the relay (a write into a closed pipe), not a hang.
        drop(target);
        let _ = user.write_all(&[1u8; 4096]).await;
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), relay)
            .await
            .expect("relay ends")
            .expect("join");
        assert!(r.is_err(), "a write to a closed peer is an error: {r:?}");
    }

    #[tokio::test]
    async fn a_bulk_direction_grows_and_gives_its_buffer_back() {
        let (mut src, mut r) = tokio::io::duplex(LARGE * 2);
        let (mut w, mut sink) = tokio::io::duplex(LARGE * 2);
        let mut half = Half::default();
        src.write_all(&vec![7u8; LARGE * 2]).await.expect("fill");
        let mut got = vec![0u8; LARGE * 2];
        let mut n = 0;
        while n < got.len() {
            let _ = poll_fn(|cx| {
                let _ = half.poll(cx, Pin::new(&mut r), Pin::new(&mut w));
                Poll::Ready(())
            })
            .await;
            n += sink.read(&mut got[n..]).await.expect("drain");
        }
        assert!(half.size > SMALL, "grew while reads filled the buffer");
        // Waiting after large reads keeps the buffer (a bulk flow).
        let _ = poll_fn(|cx| {
            let _ = half.poll(cx, Pin::new(&mut r), Pin::new(&mut w));
            Poll::Ready(())
        })
        .await;
        assert!(half.size > SMALL);
        // One small message, then quiet: the buffer is given back.
        src.write_all(b"ping").await.expect("small");
        let _ = poll_fn(|cx| {
            let _ = half.poll(cx, Pin::new(&mut r), Pin::new(&mut w));
            Poll::Ready(())
        })
        .await;
        assert_eq!(half.size, SMALL);
        assert!(half.buf.capacity() <= SMALL);
    }

    /// A tunnel side that has its data ready as pieces.
    struct Pieces(VecDeque<Bytes>);

    impl AsyncRead for Pieces {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            unreachable!("the splice takes chunks from a tunnel")
        }
    }

    impl AsyncWrite for Pieces {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncStream for Pieces {
        fn poll_read_chunks(
            &mut self,
            _cx: &mut Context<'_>,
            out: &mut VecDeque<Bytes>,
            _max: usize,
        ) -> Poll<io::Result<usize>> {
            let n = self.0.iter().map(|p| p.len()).sum();
            out.extend(self.0.drain(..));
            Poll::Ready(Ok(n))
        }
    }

    #[tokio::test]
    async fn the_tunnels_pieces_reach_the_socket_in_one_vectored_write() {
        let pieces: VecDeque<Bytes> = (0..8u8).map(|i| Bytes::from(vec![i; 4096])).collect();
        let want: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
        let (sock, mut user) = tokio::io::duplex(1 << 20);
        let (mut sock, writes) = crate::test_io::Counting::new(sock);
        user.shutdown().await.expect("user done sending");
        let mut tunnel = Pieces(pieces);
        let (up, down) = splice(&mut sock, &mut tunnel).await.expect("splice");
        assert_eq!((up, down), (0, want.len() as u64));
        let mut got = Vec::new();
        user.read_to_end(&mut got).await.expect("user read");
        assert!(got == want, "the pieces, in order");
        assert_eq!(writes.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
