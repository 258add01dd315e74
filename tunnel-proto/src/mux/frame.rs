//! Mux frame headers: pure encode/decode, no I/O.
//!
//! Every frame starts with a 10-byte header, all integers big-endian:
//!
//! ```text
//! kind u8 | flags u8 (0) | stream id u32 | length u32
//! ```
//!
//! Only `Data` carries a body (`length` bytes); for `Window` the length is
//! the credit granted, for `GoAway` a reason code, for the others zero.

use thiserror::Error;

pub const HEADER_LEN: usize = 10;
/// Largest `Data` body. A frame is the unit a session hands the mux in one
/// write; bigger frames mean fewer headers and fewer wake-ups per byte.
pub const MAX_DATA: u32 = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Stream bytes.
    Data = 0,
    /// The sender may send `length` more bytes on the stream.
    Window = 1,
    /// A new stream, opened by the sender. No reply: data may follow at once.
    Open = 2,
    /// The sender will write no more on the stream (half-close).
    Fin = 3,
    /// The stream is abandoned in both directions.
    Rst = 4,
    /// The sender closes the whole connection (stream id 0).
    GoAway = 5,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub stream: u32,
    pub len: u32,
}

/// A header that no conforming peer sends.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HeaderError {
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("reserved flags set ({0:#x})")]
    Flags(u8),
    #[error("{0:?} frame on stream 0")]
    StreamZero(Kind),
    #[error("go-away frame on stream {0}")]
    GoAwayStream(u32),
    #[error("data frame of {0} bytes exceeds the {MAX_DATA}-byte limit")]
    TooLarge(u32),
    #[error("{0:?} frame with non-zero length {1}")]
    Length(Kind, u32),
    #[error("window update of zero")]
    ZeroWindow,
}

impl Header {
    pub const fn new(kind: Kind, stream: u32, len: u32) -> Self {
        Self { kind, stream, len }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = self.kind as u8;
        b[2..6].copy_from_slice(&self.stream.to_be_bytes());
        b[6..10].copy_from_slice(&self.len.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Self, HeaderError> {
        let kind = match b[0] {
            0 => Kind::Data,
            1 => Kind::Window,
            2 => Kind::Open,
            3 => Kind::Fin,
            4 => Kind::Rst,
            5 => Kind::GoAway,
            k => return Err(HeaderError::UnknownKind(k)),
        };
        if b[1] != 0 {
            return Err(HeaderError::Flags(b[1]));
        }
        let stream = u32::from_be_bytes([b[2], b[3], b[4], b[5]]);
        let len = u32::from_be_bytes([b[6], b[7], b[8], b[9]]);
        match kind {
            Kind::GoAway if stream != 0 => return Err(HeaderError::GoAwayStream(stream)),
            Kind::GoAway => {}
            _ if stream == 0 => return Err(HeaderError::StreamZero(kind)),
            Kind::Data if len > MAX_DATA => return Err(HeaderError::TooLarge(len)),
            Kind::Window if len == 0 => return Err(HeaderError::ZeroWindow),
            Kind::Open | Kind::Fin | Kind::Rst if len != 0 => {
                return Err(HeaderError::Length(kind, len))
            }
            _ => {}
        }
        Ok(Self { kind, stream, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for h in [
            Header::new(Kind::Data, 1, 0),
            Header::new(Kind::Data, 7, MAX_DATA),
            Header::new(Kind::Window, 2, 65536),
            Header::new(Kind::Open, u32::MAX, 0),
            Header::new(Kind::Fin, 3, 0),
            Header::new(Kind::Rst, 4, 0),
            Header::new(Kind::GoAway, 0, 1),
        ] {
            assert_eq!(Header::decode(&h.encode()), Ok(h));
        }
    }

    #[test]
    fn rejects_what_no_peer_sends() {
        let bad = |kind: u8, flags: u8, stream: u32, len: u32| {
            let mut b = Header::new(Kind::Data, stream, len).encode();
            b[0] = kind;
            b[1] = flags;
            Header::decode(&b)
        };
        assert_eq!(bad(9, 0, 1, 0), Err(HeaderError::UnknownKind(9)));
        assert_eq!(bad(0, 1, 1, 0), Err(HeaderError::Flags(1)));
        assert_eq!(bad(0, 0, 0, 5), Err(HeaderError::StreamZero(Kind::Data)));
        assert_eq!(
            bad(0, 0, 1, MAX_DATA + 1),
            Err(HeaderError::TooLarge(MAX_DATA + 1))
        );
        assert_eq!(bad(1, 0, 1, 0), Err(HeaderError::ZeroWindow));
        assert_eq!(bad(2, 0, 1, 3), Err(HeaderError::Length(Kind::Open, 3)));
        assert_eq!(bad(5, 0, 2, 0), Err(HeaderError::GoAwayStream(2)));
    }

    #[test]
    fn every_header_decodes_or_errs() {
        // Cheap exhaustive-ish sweep: no header panics, and what decodes
        // re-encodes to the same bytes.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut b = [0u8; HEADER_LEN];
            b[..8].copy_from_slice(&x.to_le_bytes());
            b[0] %= 8;
            b[1] = if x.is_multiple_of(5) { b[1] } else { 0 };
            b[8] = (x >> 3) as u8;
            b[9] = (x >> 11) as u8;
            if let Ok(h) = Header::decode(&b) {
                assert_eq!(h.encode(), b);
            }
        }
    }
}
