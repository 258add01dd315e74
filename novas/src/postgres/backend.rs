//! Server → client relay: walks message boundaries in the bytes the server
//! sends, hands back bytes to forward (whole reads where possible) and
//! parses only the small messages the [`Pipeline`](super::Pipeline) and the
//! audit need. DataRow, CopyData and every other type stream through in
//! pieces, so a 1 GB row never has to fit in memory.

use bytes::{BufMut, Bytes, BytesMut};

use super::{
    error::{Peer, ProtocolError},
    error_response::ErrorResponse,
    wire::{self, Reader},
};

/// Cap for the messages parsed whole (CommandComplete, ReadyForQuery, …,
/// ErrorResponse). An ErrorResponse above it still streams through; its
/// fields are then read from its first bytes only.
pub const DEFAULT_MAX_PARSED_LEN: usize = 1 << 20;

/// The server's transaction state, from ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransactionStatus {
    /// `'I'`: not in a transaction block.
    #[default]
    Idle,
    /// `'T'`: in a transaction block.
    InBlock,
    /// `'E'`: in a failed transaction block (until ROLLBACK).
    Failed,
}

impl TransactionStatus {
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'I' => Some(Self::Idle),
            b'T' => Some(Self::InBlock),
            b'E' => Some(Self::Failed),
            _ => None,
        }
    }

    pub fn as_byte(self) -> u8 {
        match self {
            Self::Idle => b'I',
            Self::InBlock => b'T',
            Self::Failed => b'E',
        }
    }

    /// Appends a ReadyForQuery with this status.
    pub fn encode(self, dst: &mut BytesMut) {
        let at = wire::begin(dst, b'Z');
        dst.put_u8(self.as_byte());
        wire::finish(dst, at);
    }
}

/// The tag of a CommandComplete (`"SELECT 5"`, `"INSERT 0 3"`, `"CREATE TABLE"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTag(pub String);

impl CommandTag {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Rows affected or returned, for the commands whose tag carries a
    /// count (the last word): INSERT, DELETE, UPDATE, MERGE, SELECT (also
    /// CREATE TABLE AS), MOVE, FETCH, COPY.
    pub fn rows(&self) -> Option<u64> {
        let command = self.0.split(' ').next()?;
        match command {
            "INSERT" | "DELETE" | "UPDATE" | "MERGE" | "SELECT" | "MOVE" | "FETCH" | "COPY" => {
                self.0.rsplit(' ').next()?.parse().ok()
            }
            _ => None,
        }
    }
}

/// A server message the relay parsed. Reported after all its bytes have
/// been handed out for forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendEvent {
    CommandComplete(CommandTag),
    EmptyQueryResponse,
    ErrorResponse(ErrorResponse),
    ReadyForQuery(TransactionStatus),
    ParseComplete,
    BindComplete,
    CloseComplete,
    NoData,
    PortalSuspended,
    /// Only its end is reported; the column list is not parsed.
    RowDescription,
    /// Only its end is reported; the types are not parsed.
    ParameterDescription,
    CopyInResponse,
    CopyOutResponse,
    CopyBothResponse,
    /// The server's CopyDone at the end of COPY TO STDOUT.
    CopyDone,
    /// Sent at any time (after SET, at login); the glue may track
    /// `client_encoding` or `server_version` from it.
    ParameterStatus {
        name: String,
        value: String,
    },
}

impl BackendEvent {
    /// The message's documented name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::CommandComplete(_) => "CommandComplete",
            Self::EmptyQueryResponse => "EmptyQueryResponse",
            Self::ErrorResponse(_) => "ErrorResponse",
            Self::ReadyForQuery(_) => "ReadyForQuery",
            Self::ParseComplete => "ParseComplete",
            Self::BindComplete => "BindComplete",
            Self::CloseComplete => "CloseComplete",
            Self::NoData => "NoData",
            Self::PortalSuspended => "PortalSuspended",
            Self::RowDescription => "RowDescription",
            Self::ParameterDescription => "ParameterDescription",
            Self::CopyInResponse => "CopyInResponse",
            Self::CopyOutResponse => "CopyOutResponse",
            Self::CopyBothResponse => "CopyBothResponse",
            Self::CopyDone => "CopyDone",
            Self::ParameterStatus { .. } => "ParameterStatus",
        }
    }
}

/// One step of the server → client stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendItem {
    /// Bytes to write to the client unchanged. May end inside a message.
    Forward(Bytes),
    /// A parsed message whose bytes were all in earlier `Forward`s.
    Event(BackendEvent),
}

/// How the scanner treats a message type.
enum Class {
    /// Held whole (up to the cap), parsed, reported.
    Parsed,
    /// Streamed; reported when its last byte has been handed out.
    Marked(BackendEvent),
    /// Streamed, not reported.
    Plain,
}

fn classify(msg_type: u8) -> Class {
    match msg_type {
        b'C' | b'E' | b'I' | b'Z' | b'1' | b'2' | b'3' | b'n' | b's' | b'c' | b'S' => Class::Parsed,
        b'T' => Class::Marked(BackendEvent::RowDescription),
        b't' => Class::Marked(BackendEvent::ParameterDescription),
        b'G' => Class::Marked(BackendEvent::CopyInResponse),
        b'H' => Class::Marked(BackendEvent::CopyOutResponse),
        b'W' => Class::Marked(BackendEvent::CopyBothResponse),
        _ => Class::Plain,
    }
}

#[derive(Debug)]
struct Streaming {
    left: usize,
    /// What to report at the end, if anything.
    event: Option<BackendEvent>,
    /// First bytes of an ErrorResponse too large to hold whole.
    capture: Option<BytesMut>,
}

/// Walks the server's byte stream after login.
///
/// Call [`next`](Self::next) until it returns `Ok(None)`, forwarding every
/// `Forward` and handing every `Event` to the pipeline, then read more.
#[derive(Debug)]
pub struct BackendScanner {
    max_parsed_len: usize,
    streaming: Option<Streaming>,
    pending: Option<BackendEvent>,
}

impl BackendScanner {
    /// `max_parsed_len` bounds what one message can make NOVAS hold (see
    /// [`DEFAULT_MAX_PARSED_LEN`]).
    pub fn new(max_parsed_len: usize) -> Self {
        Self {
            max_parsed_len,
            streaming: None,
            pending: None,
        }
    }

    /// The next item, consuming forwarded bytes from `buf`. `Ok(None)`:
    /// everything available has been handed out; read more. Errors are
    /// fatal for the connection.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<BackendItem>, ProtocolError> {
        if let Some(ev) = self.pending.take() {
            return Ok(Some(BackendItem::Event(ev)));
        }
        // Bytes at buf[..pos] are scanned and go out in one Forward; the
        // forward is cut right after any message that produces an event, so
        // the glue can write an injection at exactly that point.
        let mut pos = 0;
        loop {
            if let Some(st) = &mut self.streaming {
                let n = st.left.min(buf.len() - pos);
                if n == 0 {
                    break;
                }
                if let Some(cap) = &mut st.capture {
                    let room = self.max_parsed_len.saturating_sub(cap.len());
                    cap.extend_from_slice(&buf[pos..pos + n.min(room)]);
                }
                pos += n;
                st.left -= n;
                if st.left > 0 {
                    break;
                }
                let done = self.streaming.take();
                if let Some(ev) = done.and_then(Streaming::into_event) {
                    self.pending = Some(ev);
                    break;
                }
                continue;
            }
            let Some((msg_type, len)) = wire::peek_header(&buf[pos..]) else {
                break;
            };
            let size = wire::message_size(Peer::Server, msg_type, len)?;
            match classify(msg_type) {
                Class::Parsed if size <= self.max_parsed_len => {
                    if buf.len() - pos < size {
                        if pos == 0 {
                            buf.reserve(size - buf.len());
                        }
                        break;
                    }
                    let body = &buf[pos + wire::HEADER_LEN..pos + size];
                    self.pending = Some(parse_event(msg_type, body)?);
                    pos += size;
                    break;
                }
                Class::Parsed if msg_type == b'E' => {
                    self.streaming = Some(Streaming {
                        left: size,
                        event: None,
                        capture: Some(BytesMut::new()),
                    });
                }
                Class::Parsed => {
                    return Err(ProtocolError::TooLarge {
                        peer: Peer::Server,
                        msg_type,
                        len: size,
                        max: self.max_parsed_len,
                    })
                }
                Class::Marked(ev) => {
                    self.streaming = Some(Streaming {
                        left: size,
                        event: Some(ev),
                        capture: None,
                    })
                }
                Class::Plain => {
                    self.streaming = Some(Streaming {
                        left: size,
                        event: None,
                        capture: None,
                    })
                }
            }
        }
        if pos == 0 {
            return Ok(None);
        }
        Ok(Some(BackendItem::Forward(buf.split_to(pos).freeze())))
    }

    /// True when everything handed out so far ends on a message boundary:
    /// the only moments our own messages may be written to the client.
    pub fn at_boundary(&self) -> bool {
        self.streaming.is_none()
    }
}

impl Default for BackendScanner {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PARSED_LEN)
    }
}

impl Streaming {
    fn into_event(self) -> Option<BackendEvent> {
        match self.capture {
            Some(cap) => Some(BackendEvent::ErrorResponse(ErrorResponse::parse_prefix(
                cap.get(wire::HEADER_LEN..).unwrap_or(&[]),
            ))),
            None => self.event,
        }
    }
}

fn parse_event(msg_type: u8, body: &[u8]) -> Result<BackendEvent, ProtocolError> {
    let mut r = Reader::new(body, Peer::Server, msg_type);
    let ev = match msg_type {
        b'C' => BackendEvent::CommandComplete(CommandTag(
            String::from_utf8_lossy(r.cstr()?).into_owned(),
        )),
        b'E' => {
            BackendEvent::ErrorResponse(ErrorResponse::parse(r.rest(), Peer::Server, msg_type)?)
        }
        b'Z' => BackendEvent::ReadyForQuery(
            TransactionStatus::from_byte(r.u8()?)
                .ok_or_else(|| r.malformed("unknown transaction status"))?,
        ),
        b'S' => BackendEvent::ParameterStatus {
            name: String::from_utf8_lossy(r.cstr()?).into_owned(),
            value: String::from_utf8_lossy(r.cstr()?).into_owned(),
        },
        b'I' => BackendEvent::EmptyQueryResponse,
        b'1' => BackendEvent::ParseComplete,
        b'2' => BackendEvent::BindComplete,
        b'3' => BackendEvent::CloseComplete,
        b'n' => BackendEvent::NoData,
        b's' => BackendEvent::PortalSuspended,
        b'c' => BackendEvent::CopyDone,
        _ => {
            return Err(ProtocolError::Unexpected {
                peer: Peer::Server,
                msg_type,
                context: "as a parsed message",
            })
        }
    };
    r.end()?;
    Ok(ev)
}

/// Encoders for server messages, for NOVAS's own replies and for tests
/// that play a server.
pub mod encode {
    use super::*;

    pub fn command_complete(dst: &mut BytesMut, tag: &str) {
        let at = wire::begin(dst, b'C');
        wire::put_cstr(dst, tag.as_bytes());
        wire::finish(dst, at);
    }

    /// A message with no body: `'I'`, `'1'`, `'2'`, `'3'`, `'n'`, `'s'`, `'c'`.
    pub fn empty(dst: &mut BytesMut, msg_type: u8) {
        let at = wire::begin(dst, msg_type);
        wire::finish(dst, at);
    }

    /// RowDescription of text columns named `names`.
    pub fn row_description(dst: &mut BytesMut, names: &[&str]) {
        let at = wire::begin(dst, b'T');
        dst.put_i16(names.len() as i16);
        for n in names {
            wire::put_cstr(dst, n.as_bytes());
            dst.put_u32(0); // table oid
            dst.put_i16(0); // column number
            dst.put_u32(25); // text
            dst.put_i16(-1);
            dst.put_i32(-1);
            dst.put_i16(0);
        }
        wire::finish(dst, at);
    }

    pub fn parameter_description(dst: &mut BytesMut, oids: &[u32]) {
        let at = wire::begin(dst, b't');
        dst.put_i16(oids.len() as i16);
        for o in oids {
            dst.put_u32(*o);
        }
        wire::finish(dst, at);
    }

    /// DataRow of text values (`None`: NULL).
    pub fn data_row(dst: &mut BytesMut, values: &[Option<&[u8]>]) {
        let at = wire::begin(dst, b'D');
        dst.put_i16(values.len() as i16);
        for v in values {
            match v {
                Some(v) => {
                    dst.put_i32(v.len() as i32);
                    dst.put_slice(v);
                }
                None => dst.put_i32(-1),
            }
        }
        wire::finish(dst, at);
    }

    /// CopyInResponse (`'G'`), CopyOutResponse (`'H'`) or CopyBothResponse
    /// (`'W'`), text format.
    pub fn copy_response(dst: &mut BytesMut, msg_type: u8, columns: u16) {
        let at = wire::begin(dst, msg_type);
        dst.put_u8(0);
        dst.put_u16(columns);
        for _ in 0..columns {
            dst.put_i16(0);
        }
        wire::finish(dst, at);
    }

    pub fn copy_data(dst: &mut BytesMut, data: &[u8]) {
        let at = wire::begin(dst, b'd');
        dst.put_slice(data);
        wire::finish(dst, at);
    }

    pub fn function_call_response(dst: &mut BytesMut, value: Option<&[u8]>) {
        let at = wire::begin(dst, b'V');
        match value {
            Some(v) => {
                dst.put_i32(v.len() as i32);
                dst.put_slice(v);
            }
            None => dst.put_i32(-1),
        }
        wire::finish(dst, at);
    }

    pub fn parameter_status(dst: &mut BytesMut, name: &str, value: &str) {
        let at = wire::begin(dst, b'S');
        wire::put_cstr(dst, name.as_bytes());
        wire::put_cstr(dst, value.as_bytes());
        wire::finish(dst, at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::error_response::Severity;

    /// Feeds `wire` in `chunk`-sized reads; returns the forwarded bytes,
    /// the events, and the largest single Forward.
    fn scan(wire: &[u8], chunk: usize, max: usize) -> (Vec<u8>, Vec<BackendEvent>, usize) {
        let mut s = BackendScanner::new(max);
        let mut buf = BytesMut::new();
        let (mut out, mut events, mut largest) = (Vec::new(), Vec::new(), 0);
        for piece in wire.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(item) = s.next(&mut buf).expect("valid") {
                match item {
                    BackendItem::Forward(b) => {
                        largest = largest.max(b.len());
                        out.extend_from_slice(&b);
                    }
                    BackendItem::Event(e) => {
                        assert!(s.at_boundary());
                        events.push(e);
                    }
                }
            }
        }
        assert!(s.at_boundary());
        (out, events, largest)
    }

    fn sample() -> BytesMut {
        let mut b = BytesMut::new();
        encode::row_description(&mut b, &["a", "b"]);
        for i in 0..50u32 {
            let v = i.to_string();
            encode::data_row(&mut b, &[Some(v.as_bytes()), None]);
        }
        encode::command_complete(&mut b, "SELECT 50");
        ErrorResponse::new(Severity::Notice, "00000", "note").encode_notice(&mut b);
        encode::parameter_status(&mut b, "TimeZone", "UTC");
        TransactionStatus::InBlock.encode(&mut b);
        b
    }

    #[test]
    fn forwards_everything_and_reports_events_at_any_split() {
        let wire = sample();
        let want = vec![
            BackendEvent::RowDescription,
            BackendEvent::CommandComplete(CommandTag("SELECT 50".into())),
            BackendEvent::ParameterStatus {
                name: "TimeZone".into(),
                value: "UTC".into(),
            },
            BackendEvent::ReadyForQuery(TransactionStatus::InBlock),
        ];
        for chunk in [1, 2, 5, 13, 64, 4096] {
            let (out, events, _) = scan(&wire, chunk, 1024);
            assert_eq!(out, wire, "chunk {chunk}");
            assert_eq!(events, want, "chunk {chunk}");
        }
    }

    #[test]
    fn data_rows_go_out_in_one_forward() {
        // 50 DataRows after the RowDescription: one Forward, not 50.
        let wire = sample();
        let mut s = BackendScanner::default();
        let mut buf = wire.clone();
        let mut items = Vec::new();
        while let Some(i) = s.next(&mut buf).expect("valid") {
            items.push(i);
        }
        let forwards = items
            .iter()
            .filter(|i| matches!(i, BackendItem::Forward(_)))
            .count();
        assert_eq!(forwards, 4, "{items:?}");
    }

    #[test]
    fn huge_data_row_streams_with_bounded_pieces() {
        let mut wire = BytesMut::new();
        encode::data_row(&mut wire, &[Some(&vec![b'x'; 1 << 20])]);
        encode::command_complete(&mut wire, "SELECT 1");
        let (out, events, largest) = scan(&wire, 8192, 256);
        assert_eq!(out, wire);
        assert!(largest <= 8192 + 4, "largest forward {largest}");
        assert_eq!(
            events,
            vec![BackendEvent::CommandComplete(CommandTag("SELECT 1".into()))]
        );
    }

    #[test]
    fn oversized_error_streams_and_keeps_its_first_fields() {
        let e = ErrorResponse::new(Severity::Error, "P0001", "boom").detail("d".repeat(5000));
        let mut wire = BytesMut::new();
        e.encode(&mut wire);
        let (out, events, _) = scan(&wire, 100, 200);
        assert_eq!(out, wire);
        let [BackendEvent::ErrorResponse(got)] = &events[..] else {
            panic!("{events:?}")
        };
        assert_eq!((got.code(), got.message()), ("P0001", "boom"));
        assert!(got.detail_text().is_some_and(|d| d.len() < 200));
    }

    #[test]
    fn errors() {
        let mut big = BytesMut::new();
        encode::command_complete(&mut big, &"x".repeat(300));
        assert!(matches!(
            BackendScanner::new(100).next(&mut big),
            Err(ProtocolError::TooLarge {
                peer: Peer::Server,
                msg_type: b'C',
                ..
            })
        ));
        for bad in [
            &b"Z\0\0\0\x05Q"[..],
            b"1\0\0\0\x05x",
            b"C\0\0\0\x05x",
            b"D\0\0\0\x02",
        ] {
            let mut buf = BytesMut::from(bad);
            assert!(BackendScanner::default().next(&mut buf).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rows_from_command_tags() {
        for (tag, rows) in [
            ("SELECT 5", Some(5)),
            ("INSERT 0 3", Some(3)),
            ("UPDATE 2", Some(2)),
            ("DELETE 0", Some(0)),
            ("MERGE 7", Some(7)),
            ("COPY 10", Some(10)),
            ("FETCH 4", Some(4)),
            ("MOVE 1", Some(1)),
            ("CREATE TABLE", None),
            ("BEGIN", None),
            ("SELECT", None),
        ] {
            assert_eq!(CommandTag(tag.into()).rows(), rows, "{tag}");
        }
    }
}
