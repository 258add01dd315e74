//! Length-prefixed JSON frames: `u32` big-endian body length, then the body.
//!
//! Decoding tells *incomplete* (wait for more bytes) apart from *invalid*
//! (drop the peer). The length is checked before the body is awaited, so an
//! oversized frame is refused after four bytes, not after buffering it.

use bytes::{Buf, BufMut, BytesMut};
use serde::{de::DeserializeOwned, Serialize};

/// Largest frame body either side accepts. Control messages are small; this
/// bounds what an unauthenticated peer can make us buffer.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer announced a body larger than [`MAX_FRAME_LEN`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
    TooLarge(usize),
    /// The body is not a valid message of the expected type.
    #[error("malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Appends `msg` as one frame to `dst`.
pub fn encode<T: Serialize>(msg: &T, dst: &mut BytesMut) -> Result<(), FrameError> {
    let body = serde_json::to_vec(msg)?;
    if body.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(body.len()));
    }
    dst.reserve(HEADER_LEN + body.len());
    // Length fits in u32: it is at most MAX_FRAME_LEN.
    dst.put_u32(body.len() as u32);
    dst.put_slice(&body);
    Ok(())
}

/// Length of the next frame's body if the header is complete, checked
/// against the limit.
pub fn peek_len(src: &[u8]) -> Result<Option<usize>, FrameError> {
    if src.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(len));
    }
    Ok(Some(len))
}

/// Takes one complete frame from the front of `src`.
///
/// `Ok(None)` means more bytes are needed and nothing was consumed.
pub fn decode<T: DeserializeOwned>(src: &mut BytesMut) -> Result<Option<T>, FrameError> {
    let Some(len) = peek_len(src)? else {
        return Ok(None);
    };
    if src.len() < HEADER_LEN + len {
        return Ok(None);
    }
    src.advance(HEADER_LEN);
    let body = src.split_to(len);
    Ok(Some(serde_json::from_slice(&body)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::Control;

    #[test]
    fn round_trip_and_incomplete() {
        let mut buf = BytesMut::new();
        encode(&Control::Ping { seq: 7 }, &mut buf).expect("encode");
        let full = buf.clone();
        // Every strict prefix is incomplete and consumes nothing.
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert!(decode::<Control>(&mut part).expect("prefix").is_none());
            assert_eq!(part.len(), cut);
        }
        let msg: Control = decode(&mut buf).expect("decode").expect("complete");
        assert!(matches!(msg, Control::Ping { seq: 7 }));
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_length_is_refused_from_the_header_alone() {
        let mut buf = BytesMut::new();
        buf.put_u32((MAX_FRAME_LEN + 1) as u32);
        let err = decode::<Control>(&mut buf).expect_err("too large");
        assert!(matches!(err, FrameError::TooLarge(n) if n == MAX_FRAME_LEN + 1));
    }

    #[test]
    fn garbage_body_is_malformed() {
        let mut buf = BytesMut::new();
        buf.put_u32(5);
        buf.put_slice(b"\xff\x00{{x");
        assert!(matches!(
            decode::<Control>(&mut buf),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn two_frames_in_one_buffer() {
        let mut buf = BytesMut::new();
        encode(&Control::Ping { seq: 1 }, &mut buf).expect("encode");
        encode(&Control::Pong { seq: 2 }, &mut buf).expect("encode");
        assert!(matches!(
            decode::<Control>(&mut buf).expect("1"),
            Some(Control::Ping { seq: 1 })
        ));
        assert!(matches!(
            decode::<Control>(&mut buf).expect("2"),
            Some(Control::Pong { seq: 2 })
        ));
        assert!(decode::<Control>(&mut buf).expect("3").is_none());
    }

    #[test]
    fn encode_refuses_oversized_message() {
        let big = Control::Reject {
            code: crate::control::RejectCode::BadRequest,
            message: "x".repeat(MAX_FRAME_LEN),
        };
        assert!(matches!(
            encode(&big, &mut BytesMut::new()),
            Err(FrameError::TooLarge(_))
        ));
    }
}

#[cfg(test)]
mod random_input {
    use super::*;
    use crate::{control::Control, stream::StreamOpen};

    /// Cheap in-tree stand-in for the fuzz target (fuzz/): random and
    /// mutated inputs never panic the decoder, and it never consumes a
    /// partial frame.
    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut valid = BytesMut::new();
        encode(&Control::Ping { seq: 9 }, &mut valid).expect("encode");
        for i in 0..20_000 {
            let mut buf = if i % 2 == 0 {
                let len = (next() % 64) as usize;
                BytesMut::from(&(0..len).map(|_| next() as u8).collect::<Vec<_>>()[..])
            } else {
                let mut b = valid.clone();
                let pos = (next() as usize) % b.len();
                b[pos] = next() as u8;
                b
            };
            let before = buf.len();
            let mut copy = buf.clone();
            if let Ok(None) = decode::<Control>(&mut copy) {
                assert_eq!(copy.len(), before, "incomplete input must not be consumed");
            }
            let _ = decode::<StreamOpen>(&mut buf);
        }
    }
}
