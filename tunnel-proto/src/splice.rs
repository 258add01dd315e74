//! Splicing two byte streams both ways (a session's socket and its tunnel
//! stream), in place of `tokio::io::copy_bidirectional_with_sizes`.
//!
//! Why our own: tokio's copy allocates and zeroes its full buffers when a
//! session starts (2 × 64 KiB per side per connection, a measurable part
//! of a short connection's cost), and keeps them for the session's life.
//! Here each direction reads into uninitialised memory, starts small and
//! grows only while reads keep filling the buffer (bulk transfers get
//! large reads, so fewer syscalls and wake-ups per byte), and gives a large
//! buffer back once its direction goes quiet.

use std::{
    future::poll_fn,
    io,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

/// First read size of a direction: enough for any request/response message.
const SMALL: usize = 16 * 1024;
/// Largest read size: a bulk direction grows to this.
pub const LARGE: usize = 256 * 1024;
/// Reads and writes in one poll before yielding to other tasks.
const BUDGET: usize = 64;

/// Copies `a` → `b` and `b` → `a` until both directions have reached end
/// of stream (each end is shut down for writing once its peer's data is
/// done). Returns the bytes copied a → b and b → a. The first error ends
/// both directions.
pub async fn splice<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut ab = Half::default();
    let mut ba = Half::default();
    poll_fn(|cx| {
        let r1 = ab.poll(cx, Pin::new(&mut *a), Pin::new(&mut *b))?;
        let r2 = ba.poll(cx, Pin::new(&mut *b), Pin::new(&mut *a))?;
        if r1.is_ready() && r2.is_ready() {
            Poll::Ready(Ok((ab.total, ba.total)))
        } else {
            Poll::Pending
        }
    })
    .await
}

/// One direction's state.
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
}
