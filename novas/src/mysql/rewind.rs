//! A connection with bytes put back in front of it.
//!
//! A MySQL client sends its SSLRequest and then, without waiting for an
//! answer (the protocol has none), its TLS ClientHello; one read can hold
//! both. The bytes after the SSLRequest belong to the TLS handshake, so
//! they are handed to the TLS acceptor first. Unlike PostgreSQL's
//! SSLRequest, nothing read here is ever taken as a protocol message in
//! the clear.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `inner`, with `pending` read first.
#[derive(Debug)]
pub struct Rewind<T> {
    pending: BytesMut,
    inner: T,
}

impl<T> Rewind<T> {
    pub fn new(pending: BytesMut, inner: T) -> Self {
        Self { pending, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.pending.is_empty() {
            let n = self.pending.len().min(buf.remaining());
            buf.put_slice(&self.pending[..n]);
            self.pending.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn put_back_bytes_come_first_then_the_stream() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut r = Rewind::new(BytesMut::from(&b"hello "[..]), a);
        b.write_all(b"world").await.expect("write");
        drop(b);
        let mut out = String::new();
        r.read_to_string(&mut out).await.expect("read");
        assert_eq!(out, "hello world");
    }
}
