//! Packet framing: a 3-byte little-endian payload length and a 1-byte
//! sequence id, then the payload.
//!
//! A payload of 16 MiB - 1 (`0xFFFFFF`) bytes or more is split: every full
//! fragment has length `0xFFFFFF` and the next fragment (next sequence id)
//! continues it; the last one is shorter, possibly empty. A *logical
//! packet* is the concatenation.
//!
//! Two ways to read:
//! - [`decode_packet`] for packets NOVAS must parse whole (handshake,
//!   commands, OK/ERR): bounded by a cap, and an oversized packet is a
//!   typed error as soon as its headers show it, before it is buffered.
//! - [`scan`] looks at the front of a buffer without consuming, for the
//!   relay ([`super::relay`]) which passes large packets through in pieces.
//!
//! Both tell *incomplete* (`Ok(None)`, nothing consumed) apart from
//! *invalid* (`Err`).

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Size of a fragment header.
pub const HEADER_LEN: usize = 4;
/// Largest fragment payload; a fragment this long is continued.
pub const MAX_FRAGMENT: usize = 0xFF_FFFF;
/// Default cap for packets NOVAS parses whole: MariaDB's default
/// `max_allowed_packet` (16 MiB), so a statement the server would accept is
/// not refused here.
pub const DEFAULT_MAX_PACKET: usize = 16 * 1024 * 1024;

/// Why framing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// A logical packet NOVAS must parse whole is larger than its cap.
    #[error("packet of at least {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    /// A continuation fragment does not carry the next sequence id.
    #[error("packet sequence out of order: expected {expected}, got {got}")]
    Sequence { expected: u8, got: u8 },
}

/// One fragment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload length of this fragment.
    pub len: usize,
    pub seq: u8,
}

impl Header {
    /// The header at the front of `src`, if four bytes are there.
    pub fn parse(src: &[u8]) -> Option<Self> {
        let h = src.get(..HEADER_LEN)?;
        Some(Self {
            len: usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16,
            seq: h[3],
        })
    }

    /// Whether another fragment of the same logical packet follows.
    pub fn continued(&self) -> bool {
        self.len == MAX_FRAGMENT
    }

    pub fn put(&self, dst: &mut impl BufMut) {
        dst.put_uint_le(self.len as u64, 3);
        dst.put_u8(self.seq);
    }
}

/// A complete logical packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Sequence id of the first fragment.
    pub seq: u8,
    /// Sequence id of the last fragment; a reply carries `last_seq + 1`.
    pub last_seq: u8,
    pub payload: Bytes,
}

/// Where a complete logical packet lies at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Bytes on the wire, headers included.
    pub wire_len: usize,
    /// Payload bytes, all fragments together.
    pub payload_len: usize,
    pub first_seq: u8,
    pub last_seq: u8,
}

/// Finds the complete logical packet at the front of `src` without
/// consuming it. `Ok(None)`: not all of it is there yet. Fails as soon as
/// the headers seen add up to more than `max` payload bytes.
pub fn scan(src: &[u8], max: usize) -> Result<Option<Span>, PacketError> {
    let mut at = 0;
    let mut payload_len = 0usize;
    let mut first_seq = None;
    let mut expected = 0u8;
    loop {
        let Some(h) = Header::parse(&src[at..]) else {
            return Ok(None);
        };
        match first_seq {
            None => first_seq = Some(h.seq),
            Some(_) if h.seq != expected => {
                return Err(PacketError::Sequence {
                    expected,
                    got: h.seq,
                })
            }
            Some(_) => {}
        }
        expected = h.seq.wrapping_add(1);
        payload_len += h.len;
        if payload_len > max {
            return Err(PacketError::TooLarge {
                len: payload_len,
                max,
            });
        }
        if src.len() < at + HEADER_LEN + h.len {
            return Ok(None);
        }
        at += HEADER_LEN + h.len;
        if !h.continued() {
            return Ok(Some(Span {
                wire_len: at,
                payload_len,
                first_seq: first_seq.unwrap_or(h.seq),
                last_seq: h.seq,
            }));
        }
    }
}

/// The payload of the packet `span` found at the front of `src`, joined
/// across fragments (a copy only when there are several).
pub fn payload_of(src: &[u8], span: &Span) -> Bytes {
    if span.wire_len == span.payload_len + HEADER_LEN {
        return Bytes::copy_from_slice(&src[HEADER_LEN..span.wire_len]);
    }
    let mut out = BytesMut::with_capacity(span.payload_len);
    let mut at = 0;
    while at < span.wire_len {
        let Some(h) = Header::parse(&src[at..]) else {
            break;
        };
        out.put_slice(&src[at + HEADER_LEN..at + HEADER_LEN + h.len]);
        at += HEADER_LEN + h.len;
    }
    out.freeze()
}

/// Takes one complete logical packet of at most `max` payload bytes from
/// the front of `src`. `Ok(None)` means more bytes are needed and nothing
/// was consumed.
pub fn decode_packet(src: &mut BytesMut, max: usize) -> Result<Option<Packet>, PacketError> {
    let Some(span) = scan(src, max)? else {
        return Ok(None);
    };
    let payload = if span.wire_len == span.payload_len + HEADER_LEN {
        src.advance(HEADER_LEN);
        src.split_to(span.payload_len).freeze()
    } else {
        let p = payload_of(src, &span);
        src.advance(span.wire_len);
        p
    };
    Ok(Some(Packet {
        seq: span.first_seq,
        last_seq: span.last_seq,
        payload,
    }))
}

/// Appends `payload` as one logical packet starting at sequence id `seq`,
/// split into fragments where needed. Returns the sequence id for the
/// packet after it.
pub fn put_packet(dst: &mut BytesMut, seq: u8, payload: &[u8]) -> u8 {
    let mut seq = seq;
    let mut rest = payload;
    dst.reserve(payload.len() + HEADER_LEN * (payload.len() / MAX_FRAGMENT + 1));
    loop {
        let n = rest.len().min(MAX_FRAGMENT);
        Header { len: n, seq }.put(dst);
        dst.put_slice(&rest[..n]);
        rest = &rest[n..];
        seq = seq.wrapping_add(1);
        // A fragment of exactly MAX_FRAGMENT bytes says "more follows", so
        // an exact multiple ends with an empty fragment.
        if n < MAX_FRAGMENT {
            return seq;
        }
    }
}

/// `payload` framed as one logical packet with sequence id `seq`.
pub fn packet_bytes(seq: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    put_packet(&mut b, seq, payload);
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_prefix_is_incomplete() {
        let wire = packet_bytes(3, b"\x03select 1");
        for cut in 0..wire.len() {
            let mut part = BytesMut::from(&wire[..cut]);
            assert_eq!(decode_packet(&mut part, 100), Ok(None));
            assert_eq!(part.len(), cut, "nothing consumed");
        }
        let mut buf = BytesMut::from(&wire[..]);
        buf.put_slice(b"\x01\x00\x00\x00\x0e");
        let p = decode_packet(&mut buf, 100).expect("ok").expect("complete");
        assert_eq!((p.seq, p.last_seq), (3, 3));
        assert_eq!(&p.payload[..], b"\x03select 1");
        let p = decode_packet(&mut buf, 100).expect("ok").expect("second");
        assert_eq!(&p.payload[..], b"\x0e");
        assert!(buf.is_empty());
    }

    #[test]
    fn empty_packet() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 7][..]);
        let p = decode_packet(&mut buf, 0).expect("ok").expect("complete");
        assert!(p.payload.is_empty());
        assert_eq!(p.seq, 7);
    }

    #[test]
    fn oversized_is_refused_from_the_header_alone() {
        let mut buf = BytesMut::from(&[0x10u8, 0x00, 0x00, 0x00][..]);
        assert_eq!(
            decode_packet(&mut buf, 15),
            Err(PacketError::TooLarge { len: 16, max: 15 })
        );
    }

    #[test]
    fn continuation_fragments_join_and_exact_multiple_ends_with_empty() {
        let payload: Vec<u8> = (0..MAX_FRAGMENT * 2).map(|i| (i % 251) as u8).collect();
        let mut wire = BytesMut::new();
        let next = put_packet(&mut wire, 0, &payload);
        assert_eq!(next, 3, "two full fragments and an empty one");
        assert_eq!(wire.len(), payload.len() + 3 * HEADER_LEN);
        assert_eq!(&wire[wire.len() - 4..], &[0, 0, 0, 2]);
        // Missing the last (empty) fragment: incomplete.
        let mut short = BytesMut::from(&wire[..wire.len() - 4]);
        assert_eq!(decode_packet(&mut short, usize::MAX), Ok(None));
        let p = decode_packet(&mut wire, usize::MAX)
            .expect("ok")
            .expect("complete");
        assert_eq!((p.seq, p.last_seq), (0, 2));
        assert_eq!(p.payload.len(), payload.len());
        assert!(p.payload == payload);
        assert!(wire.is_empty());
    }

    #[test]
    fn cap_counts_all_fragments_and_sequence_is_checked() {
        let mut wire = BytesMut::new();
        Header {
            len: MAX_FRAGMENT,
            seq: 0,
        }
        .put(&mut wire);
        wire.resize(HEADER_LEN + MAX_FRAGMENT, 0);
        Header { len: 5, seq: 1 }.put(&mut wire);
        assert_eq!(
            scan(&wire, MAX_FRAGMENT + 4),
            Err(PacketError::TooLarge {
                len: MAX_FRAGMENT + 5,
                max: MAX_FRAGMENT + 4
            })
        );
        let mut bad = BytesMut::from(&wire[..HEADER_LEN + MAX_FRAGMENT]);
        Header { len: 1, seq: 5 }.put(&mut bad);
        bad.put_u8(9);
        assert_eq!(
            scan(&bad, usize::MAX),
            Err(PacketError::Sequence {
                expected: 1,
                got: 5
            })
        );
    }

    #[test]
    fn sequence_wraps() {
        let mut buf = BytesMut::new();
        assert_eq!(put_packet(&mut buf, 255, b"x"), 0);
    }
}
