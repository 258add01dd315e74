//! Byte-level pieces every codec here shares: the 5-byte message header,
//! NUL-terminated strings, a body reader that reports who sent a bad field,
//! and a writer that back-patches the length.

use std::{borrow::Cow, fmt, ops::Range, str::Utf8Error};

use bytes::{BufMut, Bytes, BytesMut};

use super::error::{Peer, ProtocolError};

/// Type byte plus the 4-byte length of every message after startup.
pub const HEADER_LEN: usize = 5;

/// Type byte and length field of the message at the front of `src`, if its
/// header has arrived. The length counts itself but not the type byte.
pub(crate) fn peek_header(src: &[u8]) -> Option<(u8, u32)> {
    let h = src.get(..HEADER_LEN)?;
    Some((h[0], u32::from_be_bytes([h[1], h[2], h[3], h[4]])))
}

/// Checks a header's length field and returns the whole message size
/// (type byte included).
pub(crate) fn message_size(peer: Peer, msg_type: u8, len: u32) -> Result<usize, ProtocolError> {
    if len < 4 {
        return Err(ProtocolError::BadLength {
            peer,
            msg_type,
            len,
        });
    }
    // u32 always fits in usize on the 32- and 64-bit targets we build for.
    Ok(len as usize + 1)
}

/// Takes one whole message of at most `max` bytes (type byte included) off
/// the front of `src`: `Ok(None)` if more bytes are needed, in which case
/// nothing is consumed and room for the rest is reserved.
pub(crate) fn take_message(
    src: &mut BytesMut,
    peer: Peer,
    max: usize,
) -> Result<Option<(u8, Bytes)>, ProtocolError> {
    let Some((msg_type, len)) = peek_header(src) else {
        return Ok(None);
    };
    let size = message_size(peer, msg_type, len)?;
    if size > max {
        return Err(ProtocolError::TooLarge {
            peer,
            msg_type,
            len: size,
            max,
        });
    }
    if src.len() < size {
        src.reserve(size - src.len());
        return Ok(None);
    }
    Ok(Some((msg_type, src.split_to(size).freeze())))
}

/// Starts a message of type `msg_type` in `dst`; pass the result to
/// [`finish`] once the body is written.
pub(crate) fn begin(dst: &mut BytesMut, msg_type: u8) -> usize {
    dst.put_u8(msg_type);
    let at = dst.len();
    dst.put_u32(0);
    at
}

/// Writes the length of the message started at `at`.
pub(crate) fn finish(dst: &mut BytesMut, at: usize) {
    // Our own messages are far below 4 GiB; saturate rather than wrap.
    let len = u32::try_from(dst.len() - at).unwrap_or(u32::MAX);
    dst[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends `s` and a NUL. The wire format cannot carry a NUL inside a
/// string, so any are dropped rather than letting them cut the string short
/// and shift every following field.
pub(crate) fn put_cstr(dst: &mut BytesMut, s: &[u8]) {
    if s.contains(&0) {
        dst.extend(s.iter().copied().filter(|&b| b != 0));
    } else {
        dst.put_slice(s);
    }
    dst.put_u8(0);
}

/// Field-by-field reader over a message body; every failure names the peer
/// and message it was reading.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    peer: Peer,
    msg_type: u8,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], peer: Peer, msg_type: u8) -> Self {
        Self {
            buf,
            pos: 0,
            peer,
            msg_type,
        }
    }

    pub(crate) fn malformed(&self, reason: &'static str) -> ProtocolError {
        ProtocolError::Malformed {
            peer: self.peer,
            msg_type: self.msg_type,
            reason,
        }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        let out = self
            .buf
            .get(self.pos..self.pos.saturating_add(n))
            .ok_or_else(|| self.malformed("message ends inside a field"))?;
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.bytes(1)?[0])
    }

    pub(crate) fn i16(&mut self) -> Result<i16, ProtocolError> {
        let b = self.bytes(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, ProtocolError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, ProtocolError> {
        self.u32().map(|v| v as i32)
    }

    /// Position range of the next NUL-terminated string, NUL excluded;
    /// the reader moves past the NUL.
    pub(crate) fn cstr_range(&mut self) -> Result<Range<usize>, ProtocolError> {
        let rest = &self.buf[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.malformed("string without NUL terminator"))?;
        let r = self.pos..self.pos + n;
        self.pos += n + 1;
        Ok(r)
    }

    pub(crate) fn cstr(&mut self) -> Result<&'a [u8], ProtocolError> {
        let r = self.cstr_range()?;
        Ok(&self.buf[r])
    }

    /// A NUL-terminated string that must be UTF-8.
    pub(crate) fn string(&mut self) -> Result<String, ProtocolError> {
        let s = self.cstr()?;
        std::str::from_utf8(s)
            .map(str::to_owned)
            .map_err(|_| self.malformed("string is not valid UTF-8"))
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    /// Fails if bytes are left: a message longer than its fields means the
    /// two sides disagree about the format.
    pub(crate) fn end(&self) -> Result<(), ProtocolError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(self.malformed("trailing bytes after the last field"))
        }
    }
}

/// A protocol string (SQL text, statement or portal name), without its NUL,
/// sharing memory with the message it came from.
///
/// The bytes are in the session's `client_encoding`, which is UTF-8 for
/// psql in a UTF-8 locale but need not be, so the UTF-8 view is fallible.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct PgString(Bytes);

impl PgString {
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        Self(bytes.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn to_str(&self) -> Result<&str, Utf8Error> {
        std::str::from_utf8(&self.0)
    }

    /// Text for logs and audit records: invalid UTF-8 becomes U+FFFD.
    pub fn to_string_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl fmt::Debug for PgString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string_lossy(), f)
    }
}

impl PartialEq<str> for PgString {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for PgString {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl From<&str> for PgString {
    fn from(s: &str) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_message_incomplete_invalid_and_whole() {
        let mut buf = BytesMut::from(&b"S\0\0\0\x04Q\0\0"[..]);
        let (t, m) = take_message(&mut buf, Peer::Client, 100)
            .expect("valid")
            .expect("whole");
        assert_eq!((t, &m[..]), (b'S', &b"S\0\0\0\x04"[..]));
        assert_eq!(take_message(&mut buf, Peer::Client, 100), Ok(None));
        assert_eq!(&buf[..], b"Q\0\0");

        let mut bad = BytesMut::from(&b"Q\0\0\0\x03"[..]);
        assert!(matches!(
            take_message(&mut bad, Peer::Client, 100),
            Err(ProtocolError::BadLength { len: 3, .. })
        ));
        let mut big = BytesMut::from(&b"Q\0\0\x10\0"[..]);
        assert!(matches!(
            take_message(&mut big, Peer::Client, 100),
            Err(ProtocolError::TooLarge { len: 4097, .. })
        ));
    }

    #[test]
    fn put_cstr_drops_interior_nul() {
        let mut b = BytesMut::new();
        put_cstr(&mut b, b"a\0b");
        assert_eq!(&b[..], b"ab\0");
    }
}
