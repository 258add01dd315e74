//! Client → server relay: splits what psql sends into the messages NOVAS
//! must inspect (held whole, up to a size cap, with typed views) and
//! everything else (passed through in pieces, never held whole).
//!
//! Inspected: Query, Parse, Bind, Execute, Describe, Close, Sync, Flush,
//! Terminate. Passed through: CopyData, CopyDone, CopyFail, FunctionCall
//! and any other type.

use bytes::{BufMut, Bytes, BytesMut};

use super::{
    error::{Peer, ProtocolError},
    wire::{self, PgString, Reader},
};

/// A sensible cap for inspected messages: far above any hand-written SQL,
/// still a bound on what one client can make NOVAS hold.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 64 << 20;

/// Whether Describe or Close names a prepared statement or a portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// `'S'`
    Statement,
    /// `'P'`
    Portal,
}

/// The object a Describe or Close applies to; `""` is the unnamed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: TargetKind,
    pub name: PgString,
}

/// Simple query: one string that may hold several `;`-separated statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub sql: PgString,
}

/// Prepares `sql` as statement `name` (`""`: the unnamed statement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parse {
    pub name: PgString,
    pub sql: PgString,
    /// Parameter type OIDs the client specified (0: let the server infer).
    pub param_types: Vec<u32>,
}

/// Binds parameters to `statement`, creating `portal`. The parameter
/// values are not parsed: they stay in the raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub portal: PgString,
    pub statement: PgString,
}

/// Runs `portal`, returning at most `max_rows` rows (0: all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execute {
    pub portal: PgString,
    pub max_rows: u32,
}

/// A parsed client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendKind {
    Query(Query),
    Parse(Parse),
    Bind(Bind),
    Execute(Execute),
    Describe(Target),
    Close(Target),
    Sync,
    Flush,
    Terminate,
}

/// An inspected client message: its typed view and its exact bytes for
/// forwarding unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendMessage {
    kind: FrontendKind,
    raw: Bytes,
}

impl FrontendMessage {
    pub fn kind(&self) -> &FrontendKind {
        &self.kind
    }

    /// The whole message, header included, as received.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    pub fn into_raw(self) -> Bytes {
        self.raw
    }

    pub fn msg_type(&self) -> u8 {
        self.raw[0]
    }

    /// Parses one whole message (header included).
    pub fn parse(raw: Bytes) -> Result<Self, ProtocolError> {
        let msg_type = raw.first().copied().unwrap_or(0);
        let body_at = wire::HEADER_LEN;
        let body = raw.get(body_at..).unwrap_or(&[]);
        let mut r = Reader::new(body, Peer::Client, msg_type);
        let s = |range: std::ops::Range<usize>| {
            PgString::new(raw.slice(body_at + range.start..body_at + range.end))
        };
        let kind = match msg_type {
            b'Q' => FrontendKind::Query(Query {
                sql: s(r.cstr_range()?),
            }),
            b'P' => {
                let name = s(r.cstr_range()?);
                let sql = s(r.cstr_range()?);
                let n = r.i16()?;
                let n = usize::try_from(n).map_err(|_| r.malformed("negative parameter count"))?;
                let mut param_types = Vec::with_capacity(n.min(r.remaining() / 4));
                for _ in 0..n {
                    param_types.push(r.u32()?);
                }
                FrontendKind::Parse(Parse {
                    name,
                    sql,
                    param_types,
                })
            }
            b'B' => {
                let portal = s(r.cstr_range()?);
                let statement = s(r.cstr_range()?);
                // Formats and values are the server's to check.
                r.rest();
                FrontendKind::Bind(Bind { portal, statement })
            }
            b'E' => FrontendKind::Execute(Execute {
                portal: s(r.cstr_range()?),
                max_rows: r.u32()?,
            }),
            b'D' | b'C' => {
                let kind = match r.u8()? {
                    b'S' => TargetKind::Statement,
                    b'P' => TargetKind::Portal,
                    _ => return Err(r.malformed("target must be 'S' or 'P'")),
                };
                let t = Target {
                    kind,
                    name: s(r.cstr_range()?),
                };
                if msg_type == b'D' {
                    FrontendKind::Describe(t)
                } else {
                    FrontendKind::Close(t)
                }
            }
            b'S' => FrontendKind::Sync,
            b'H' => FrontendKind::Flush,
            b'X' => FrontendKind::Terminate,
            _ => {
                return Err(ProtocolError::Unexpected {
                    peer: Peer::Client,
                    msg_type,
                    context: "where an inspected message was expected",
                })
            }
        };
        r.end()?;
        Ok(Self { kind, raw })
    }
}

/// True for the message types [`FrontendScanner`] holds whole and parses.
pub fn is_inspected(msg_type: u8) -> bool {
    matches!(
        msg_type,
        b'Q' | b'P' | b'B' | b'E' | b'D' | b'C' | b'S' | b'H' | b'X'
    )
}

/// One step of the client → server stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendItem {
    /// An inspected message, whole.
    Message(FrontendMessage),
    /// A piece of a passed-through message. Pieces of one message come in
    /// order: the first carries the header, the last has `last` set; all
    /// share `msg_type`.
    Raw {
        msg_type: u8,
        bytes: Bytes,
        first: bool,
        last: bool,
    },
}

impl FrontendItem {
    pub fn msg_type(&self) -> u8 {
        match self {
            Self::Message(m) => m.msg_type(),
            Self::Raw { msg_type, .. } => *msg_type,
        }
    }

    /// The bytes to forward.
    pub fn bytes(&self) -> &Bytes {
        match self {
            Self::Message(m) => m.raw(),
            Self::Raw { bytes, .. } => bytes,
        }
    }
}

/// Walks the client's byte stream after login.
#[derive(Debug)]
pub struct FrontendScanner {
    max_message_len: usize,
    /// Type and bytes still to come of a passed-through message.
    passing: Option<(u8, usize)>,
}

impl FrontendScanner {
    /// `max_message_len` caps inspected messages (header included); see
    /// [`DEFAULT_MAX_MESSAGE_LEN`]. Passed-through messages have no cap.
    pub fn new(max_message_len: usize) -> Self {
        Self {
            max_message_len,
            passing: None,
        }
    }

    /// The next item from the front of `buf`, consuming its bytes.
    /// `Ok(None)`: more bytes are needed (room for a whole inspected
    /// message is reserved in `buf`). Errors are fatal for the connection.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<FrontendItem>, ProtocolError> {
        if let Some((msg_type, left)) = self.passing {
            if buf.is_empty() {
                return Ok(None);
            }
            let n = left.min(buf.len());
            let left = left - n;
            self.passing = (left > 0).then_some((msg_type, left));
            return Ok(Some(FrontendItem::Raw {
                msg_type,
                bytes: buf.split_to(n).freeze(),
                first: false,
                last: left == 0,
            }));
        }
        let Some((msg_type, len)) = wire::peek_header(buf) else {
            return Ok(None);
        };
        let size = wire::message_size(Peer::Client, msg_type, len)?;
        if is_inspected(msg_type) {
            return match wire::take_message(buf, Peer::Client, self.max_message_len)? {
                Some((_, raw)) => {
                    FrontendMessage::parse(raw).map(|m| Some(FrontendItem::Message(m)))
                }
                None => Ok(None),
            };
        }
        let n = size.min(buf.len());
        let left = size - n;
        self.passing = (left > 0).then_some((msg_type, left));
        Ok(Some(FrontendItem::Raw {
            msg_type,
            bytes: buf.split_to(n).freeze(),
            first: true,
            last: left == 0,
        }))
    }

    /// True between messages (no passed-through message half forwarded).
    pub fn at_boundary(&self) -> bool {
        self.passing.is_none()
    }
}

impl Default for FrontendScanner {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE_LEN)
    }
}

/// Encoders for client messages: NOVAS uses them towards the upstream,
/// tests use them to play a client.
pub mod encode {
    use super::*;

    pub fn query(dst: &mut BytesMut, sql: &str) {
        let at = wire::begin(dst, b'Q');
        wire::put_cstr(dst, sql.as_bytes());
        wire::finish(dst, at);
    }

    pub fn parse(dst: &mut BytesMut, name: &str, sql: &str, param_types: &[u32]) {
        let at = wire::begin(dst, b'P');
        wire::put_cstr(dst, name.as_bytes());
        wire::put_cstr(dst, sql.as_bytes());
        dst.put_i16(param_types.len() as i16);
        for t in param_types {
            dst.put_u32(*t);
        }
        wire::finish(dst, at);
    }

    /// Bind with text parameters (`None`: NULL) and text results.
    pub fn bind(dst: &mut BytesMut, portal: &str, statement: &str, params: &[Option<&[u8]>]) {
        let at = wire::begin(dst, b'B');
        wire::put_cstr(dst, portal.as_bytes());
        wire::put_cstr(dst, statement.as_bytes());
        dst.put_i16(0);
        dst.put_i16(params.len() as i16);
        for p in params {
            match p {
                Some(v) => {
                    dst.put_i32(v.len() as i32);
                    dst.put_slice(v);
                }
                None => dst.put_i32(-1),
            }
        }
        dst.put_i16(0);
        wire::finish(dst, at);
    }

    pub fn execute(dst: &mut BytesMut, portal: &str, max_rows: u32) {
        let at = wire::begin(dst, b'E');
        wire::put_cstr(dst, portal.as_bytes());
        dst.put_u32(max_rows);
        wire::finish(dst, at);
    }

    pub fn describe(dst: &mut BytesMut, kind: TargetKind, name: &str) {
        target(dst, b'D', kind, name);
    }

    pub fn close(dst: &mut BytesMut, kind: TargetKind, name: &str) {
        target(dst, b'C', kind, name);
    }

    fn target(dst: &mut BytesMut, msg_type: u8, kind: TargetKind, name: &str) {
        let at = wire::begin(dst, msg_type);
        dst.put_u8(match kind {
            TargetKind::Statement => b'S',
            TargetKind::Portal => b'P',
        });
        wire::put_cstr(dst, name.as_bytes());
        wire::finish(dst, at);
    }

    pub fn sync(dst: &mut BytesMut) {
        empty(dst, b'S');
    }

    pub fn flush(dst: &mut BytesMut) {
        empty(dst, b'H');
    }

    pub fn terminate(dst: &mut BytesMut) {
        empty(dst, b'X');
    }

    pub fn copy_data(dst: &mut BytesMut, data: &[u8]) {
        let at = wire::begin(dst, b'd');
        dst.put_slice(data);
        wire::finish(dst, at);
    }

    pub fn copy_done(dst: &mut BytesMut) {
        empty(dst, b'c');
    }

    pub fn copy_fail(dst: &mut BytesMut, reason: &str) {
        let at = wire::begin(dst, b'f');
        wire::put_cstr(dst, reason.as_bytes());
        wire::finish(dst, at);
    }

    fn empty(dst: &mut BytesMut, msg_type: u8) {
        let at = wire::begin(dst, msg_type);
        wire::finish(dst, at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_items(scanner: &mut FrontendScanner, buf: &mut BytesMut) -> Vec<FrontendItem> {
        let mut out = Vec::new();
        while let Some(item) = scanner.next(buf).expect("valid") {
            out.push(item);
        }
        out
    }

    #[test]
    fn typed_views() {
        let mut b = BytesMut::new();
        encode::query(&mut b, "SELECT 1; SELECT 2");
        encode::parse(&mut b, "s1", "SELECT $1", &[23]);
        encode::bind(&mut b, "p1", "s1", &[Some(b"42"), None]);
        encode::describe(&mut b, TargetKind::Portal, "p1");
        encode::execute(&mut b, "p1", 10);
        encode::close(&mut b, TargetKind::Statement, "s1");
        encode::flush(&mut b);
        encode::sync(&mut b);
        encode::terminate(&mut b);
        let wire = b.clone().freeze();
        let items = all_items(&mut FrontendScanner::default(), &mut b);
        assert!(b.is_empty());
        let kinds: Vec<FrontendKind> = items
            .iter()
            .map(|i| match i {
                FrontendItem::Message(m) => m.kind().clone(),
                FrontendItem::Raw { .. } => panic!("raw {i:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                FrontendKind::Query(Query {
                    sql: "SELECT 1; SELECT 2".into()
                }),
                FrontendKind::Parse(Parse {
                    name: "s1".into(),
                    sql: "SELECT $1".into(),
                    param_types: vec![23],
                }),
                FrontendKind::Bind(Bind {
                    portal: "p1".into(),
                    statement: "s1".into(),
                }),
                FrontendKind::Describe(Target {
                    kind: TargetKind::Portal,
                    name: "p1".into()
                }),
                FrontendKind::Execute(Execute {
                    portal: "p1".into(),
                    max_rows: 10
                }),
                FrontendKind::Close(Target {
                    kind: TargetKind::Statement,
                    name: "s1".into()
                }),
                FrontendKind::Flush,
                FrontendKind::Sync,
                FrontendKind::Terminate,
            ]
        );
        // Forwarding every item's bytes reproduces the stream exactly.
        let forwarded: Vec<u8> = items.iter().flat_map(|i| i.bytes().to_vec()).collect();
        assert_eq!(forwarded, wire);
    }

    #[test]
    fn passthrough_streams_in_pieces_at_any_split() {
        let mut b = BytesMut::new();
        encode::query(&mut b, "COPY t FROM STDIN");
        encode::copy_data(&mut b, &[7u8; 1000]);
        encode::copy_done(&mut b);
        encode::sync(&mut b);
        let wire = b.freeze();
        for chunk in [1, 2, 3, 7, 100, 5000] {
            let mut scanner = FrontendScanner::new(64);
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            let mut types = Vec::new();
            for piece in wire.chunks(chunk) {
                buf.extend_from_slice(piece);
                for item in all_items(&mut scanner, &mut buf) {
                    out.extend_from_slice(item.bytes());
                    match &item {
                        FrontendItem::Message(m) => types.push(m.msg_type()),
                        FrontendItem::Raw {
                            msg_type,
                            first: true,
                            ..
                        } => types.push(*msg_type),
                        FrontendItem::Raw { .. } => {}
                    }
                    // A passed-through piece never holds more than what
                    // arrived (plus a header held back from the last read).
                    if let FrontendItem::Raw { bytes, .. } = &item {
                        assert!(bytes.len() <= chunk + 4);
                    }
                }
            }
            assert_eq!(out, wire, "chunk {chunk}");
            assert_eq!(types, b"QdcS", "chunk {chunk}");
            assert!(scanner.at_boundary());
        }
    }

    #[test]
    fn cap_and_malformed_are_errors() {
        let mut b = BytesMut::new();
        encode::query(&mut b, &"x".repeat(100));
        assert!(matches!(
            FrontendScanner::new(50).next(&mut b),
            Err(ProtocolError::TooLarge {
                peer: Peer::Client,
                msg_type: b'Q',
                len: 106,
                max: 50
            })
        ));
        // A huge CopyData is fine: it is never held.
        let mut b = BytesMut::from(&b"d\x40\0\0\0abc"[..]);
        let item = FrontendScanner::new(50).next(&mut b).expect("ok");
        assert!(matches!(
            item,
            Some(FrontendItem::Raw {
                first: true,
                last: false,
                ..
            })
        ));

        let bad: &[&[u8]] = &[
            b"Q\0\0\0\x06ab",             // no NUL
            b"Q\0\0\0\x07a\0b",           // trailing bytes
            b"D\0\0\0\x07Xa\0",           // bad target
            b"E\0\0\0\x07p\0\0\0",        // short max_rows
            b"P\0\0\0\x0aa\0b\0\xff\xff", // negative count
            b"S\0\0\0\x05x",              // Sync with a body
            b"H\0\0\0\x03",               // length below 4
        ];
        for raw in bad {
            let mut buf = BytesMut::from(*raw);
            assert!(
                FrontendScanner::default().next(&mut buf).is_err(),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn incomplete_waits_without_consuming() {
        let mut b = BytesMut::new();
        encode::parse(&mut b, "", "SELECT 1", &[]);
        let full = b.clone();
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert_eq!(FrontendScanner::default().next(&mut part), Ok(None));
            assert_eq!(part.len(), cut);
        }
    }
}
