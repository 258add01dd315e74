//! Field encodings shared by every MySQL packet: fixed little-endian
//! integers, length-encoded integers and strings, NUL-terminated strings.
//!
//! [`Reader`] walks one packet payload that is already complete, so running
//! out of bytes here always means the packet is *invalid* (the framing layer
//! in [`super::packet`] is the one that tells incomplete input apart).

use bytes::BufMut;

/// Why a packet payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload ended inside the named field.
    #[error("truncated packet: {0} missing")]
    Truncated(&'static str),
    /// The named field holds a value the protocol does not allow.
    #[error("malformed packet: bad {0}")]
    Invalid(&'static str),
    /// Well-formed, but a protocol variant NOVAS does not speak.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

/// A cursor over one complete packet payload.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next byte without consuming it.
    pub fn peek(&self) -> Option<u8> {
        self.buf.first().copied()
    }

    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Everything left (`string<EOF>`).
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.bytes(1, what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.bytes(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u24(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.bytes(3, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], 0]))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let b = self.bytes(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A length-encoded integer. `0xFB` (SQL NULL in rows) and `0xFF` are
    /// not integers and are refused.
    pub fn lenenc(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        match self.u8(what)? {
            b @ 0..=0xFA => Ok(u64::from(b)),
            0xFC => Ok(u64::from(self.u16(what)?)),
            0xFD => Ok(u64::from(self.u24(what)?)),
            0xFE => self.u64(what),
            _ => Err(DecodeError::Invalid(what)),
        }
    }

    /// A length-encoded string.
    pub fn lenenc_bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.lenenc(what)?;
        let len = usize::try_from(len).map_err(|_| DecodeError::Invalid(what))?;
        self.bytes(len, what)
    }

    /// A NUL-terminated string (the NUL is consumed, not returned).
    pub fn nul_bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let Some(pos) = self.buf.iter().position(|&b| b == 0) else {
            return Err(DecodeError::Truncated(what));
        };
        let s = &self.buf[..pos];
        self.buf = &self.buf[pos + 1..];
        Ok(s)
    }

    /// A NUL-terminated string, or the rest of the payload when the NUL is
    /// missing (some servers omit the last terminator).
    pub fn nul_or_rest(&mut self) -> &'a [u8] {
        match self.buf.iter().position(|&b| b == 0) {
            Some(pos) => {
                let s = &self.buf[..pos];
                self.buf = &self.buf[pos + 1..];
                s
            }
            None => self.rest(),
        }
    }
}

/// Text fields: identifiers, SQL and messages. Lossy, because an audit
/// line must still be written for a statement in a non-UTF-8 charset.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Number of bytes [`put_lenenc`] writes for `v`.
pub fn lenenc_len(v: u64) -> usize {
    match v {
        0..=0xFA => 1,
        0xFB..=0xFFFF => 3,
        0x1_0000..=0xFF_FFFF => 4,
        _ => 9,
    }
}

pub fn put_lenenc(dst: &mut impl BufMut, v: u64) {
    match v {
        0..=0xFA => dst.put_u8(v as u8),
        0xFB..=0xFFFF => {
            dst.put_u8(0xFC);
            dst.put_u16_le(v as u16);
        }
        0x1_0000..=0xFF_FFFF => {
            dst.put_u8(0xFD);
            dst.put_uint_le(v, 3);
        }
        _ => {
            dst.put_u8(0xFE);
            dst.put_u64_le(v);
        }
    }
}

pub fn put_lenenc_bytes(dst: &mut impl BufMut, b: &[u8]) {
    put_lenenc(dst, b.len() as u64);
    dst.put_slice(b);
}

/// Writes `b` and a NUL. The caller makes sure `b` has no NUL inside.
pub fn put_nul_bytes(dst: &mut impl BufMut, b: &[u8]) {
    dst.put_slice(b);
    dst.put_u8(0);
}

/// `b` without anything from its first NUL on: a value that must travel as
/// a NUL-terminated string cannot carry one.
pub fn until_nul(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(p) => &b[..p],
        None => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_round_trip_at_every_boundary() {
        for v in [
            0u64,
            1,
            0xFA,
            0xFB,
            0xFC,
            0xFFFF,
            0x1_0000,
            0xFF_FFFF,
            0x100_0000,
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            put_lenenc(&mut buf, v);
            assert_eq!(buf.len(), lenenc_len(v), "{v:#x}");
            let mut r = Reader::new(&buf);
            assert_eq!(r.lenenc("v").expect("decode"), v);
            assert!(r.is_empty());
        }
    }

    #[test]
    fn lenenc_refuses_null_and_ff_and_truncation() {
        assert_eq!(
            Reader::new(&[0xFB]).lenenc("x"),
            Err(DecodeError::Invalid("x"))
        );
        assert_eq!(
            Reader::new(&[0xFF]).lenenc("x"),
            Err(DecodeError::Invalid("x"))
        );
        assert_eq!(
            Reader::new(&[0xFC, 1]).lenenc("x"),
            Err(DecodeError::Truncated("x"))
        );
        assert_eq!(
            Reader::new(&[0xFE, 1, 2, 3]).lenenc("x"),
            Err(DecodeError::Truncated("x"))
        );
    }

    #[test]
    fn strings() {
        let mut r = Reader::new(b"abc\0\x03xyzrest");
        assert_eq!(r.nul_bytes("a").expect("nul"), b"abc");
        assert_eq!(r.lenenc_bytes("b").expect("lenenc"), b"xyz");
        assert_eq!(r.nul_or_rest(), b"rest");
        assert!(r.is_empty());
        assert!(Reader::new(b"no-nul").nul_bytes("s").is_err());
        assert_eq!(until_nul(b"ab\0cd"), b"ab");
    }
}
