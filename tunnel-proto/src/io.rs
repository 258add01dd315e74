//! Reading and writing frames on async streams.
//!
//! Frames are read with exact-length reads, never past the frame's end: the
//! bytes after a stream header belong to the session and must stay in the
//! stream for the splice.

use bytes::BytesMut;
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::frame::{self, FrameError, HEADER_LEN};

/// Why reading or writing a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameIoError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer closed the stream before a complete frame.
    #[error("peer closed the stream")]
    Closed,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame. A clean end of stream before the first byte, or in the
/// middle of a frame, is [`FrameIoError::Closed`].
pub async fn read_frame<T, R>(r: &mut R) -> Result<T, FrameIoError>
where
    T: DeserializeOwned,
    R: AsyncRead + Unpin + ?Sized,
{
    let mut header = [0u8; HEADER_LEN];
    read_exact(r, &mut header).await?;
    let len = frame::peek_len(&header)?.unwrap_or(0);
    let mut body = vec![0u8; len];
    read_exact(r, &mut body).await?;
    serde_json::from_slice(&body).map_err(|e| FrameIoError::Frame(FrameError::Malformed(e)))
}

async fn read_exact<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    buf: &mut [u8],
) -> Result<(), FrameIoError> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(FrameIoError::Closed),
        Err(e) => Err(FrameIoError::Io(e)),
    }
}

/// Writes one frame and flushes it.
pub async fn write_frame<T, W>(w: &mut W, msg: &T) -> Result<(), FrameIoError>
where
    T: Serialize,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buf = BytesMut::new();
    frame::encode(msg, &mut buf)?;
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// Reads frames on a task of their own until the stream ends or fails (the
/// last item is then the error), so that a slow write on the other half
/// never delays noticing the peer. Aborting the handle stops the reader.
pub fn spawn_frame_reader<T, R>(
    mut rd: R,
) -> (
    tokio::sync::mpsc::Receiver<Result<T, FrameIoError>>,
    tokio::task::JoinHandle<()>,
)
where
    T: DeserializeOwned + Send + 'static,
    R: AsyncRead + Unpin + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let handle = tokio::spawn(async move {
        loop {
            let r = read_frame::<T, _>(&mut rd).await;
            let stop = r.is_err();
            if tx.send(r).await.is_err() || stop {
                break;
            }
        }
    });
    (rx, handle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::Control;

    #[tokio::test]
    async fn frame_then_raw_bytes_stay_in_stream() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame(&mut a, &Control::Ping { seq: 3 })
            .await
            .expect("write");
        a.write_all(b"raw").await.expect("raw");
        drop(a);
        let msg: Control = read_frame(&mut b).await.expect("read");
        assert!(matches!(msg, Control::Ping { seq: 3 }));
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).await.expect("rest");
        assert_eq!(rest, b"raw");
    }

    #[tokio::test]
    async fn truncated_frame_is_closed_and_oversized_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&[0, 0, 0, 10, b'{']).await.expect("write");
        drop(a);
        assert!(matches!(
            read_frame::<Control, _>(&mut b).await,
            Err(FrameIoError::Closed)
        ));

        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&u32::MAX.to_be_bytes()).await.expect("write");
        assert!(matches!(
            read_frame::<Control, _>(&mut b).await,
            Err(FrameIoError::Frame(FrameError::TooLarge(_)))
        ));
    }
}
