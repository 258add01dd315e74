//! Following the server's answer to one command, packet by packet,
//! without holding rows.
//!
//! [`Response`] is fed every server packet of the answer in order. For
//! rows and column definitions it only needs the first byte (they pass
//! through untouched); OK, ERR, EOF and the other small packets it reads
//! whole. [`Response::wants_whole`] says which, from a packet's first
//! byte and length. It reports when the answer is complete and sums it
//! up in a [`Summary`] for the audit.
//!
//! Shapes followed (`DEPRECATE_EOF` = `CLIENT_DEPRECATE_EOF` negotiated):
//!
//! ```text
//! result   = OK | ERR | LOCAL-INFILE | column-count column-def* [EOF] row* end
//! end      = EOF (no DEPRECATE_EOF) | OK with 0xFE header (DEPRECATE_EOF) | ERR
//!            status SERVER_MORE_RESULTS_EXISTS in an OK or end => another result
//! cursor   = ... column-def* (EOF|OK-FE) with SERVER_STATUS_CURSOR_EXISTS, no rows
//! infile   = 0xFB filename; client sends data packets and an empty one; then result
//! prepare  = ERR | PREPARE-OK param-def* [EOF] column-def* [EOF]
//! fetch    = row* end
//! ```
//!
//! A packet starting with `0xFE` ends the rows only if it is shorter than
//! `0xFFFFFF`: a text row whose first value is 16 MiB or longer also starts
//! with `0xFE` (its length prefix), and such a row fills a whole fragment.

use super::{
    caps::{status, Capabilities},
    packet::MAX_FRAGMENT,
    reply::{
        ErrPacket, OkPacket, Terminator, EOF_HEADER, ERR_HEADER, LOCAL_INFILE_HEADER, OK_HEADER,
    },
    wire::{text, DecodeError, Reader},
};

/// Cap for server packets read whole (OK, ERR, EOF, counts, PREPARE OK,
/// LOCAL INFILE requests): they are small; rows are never read whole.
pub const MAX_PARSED_REPLY: usize = 1024 * 1024;

/// The shape of answer a command gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No answer (COM_QUIT, COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA).
    Nothing,
    /// OK, ERR, LOCAL INFILE or result sets, possibly several
    /// (COM_QUERY, COM_STMT_EXECUTE, COM_PROCESS_INFO).
    Results,
    /// PREPARE OK and definitions, or ERR (COM_STMT_PREPARE).
    Prepare,
    /// Rows and an end packet (COM_STMT_FETCH).
    Rows,
    /// Column definitions and an end packet (COM_FIELD_LIST).
    FieldList,
    /// One OK, EOF or ERR.
    Simple,
    /// One string packet (COM_STATISTICS).
    Statistics,
}

/// Whose packets come next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaiting {
    Server,
    /// LOCAL INFILE: the client sends the file, then an empty packet.
    Client,
    /// The answer is complete.
    Nothing,
}

/// A successful COM_STMT_PREPARE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    pub stmt_id: u32,
    pub columns: u16,
    pub params: u16,
    pub warnings: u16,
}

/// What an answer amounted to, across all of its results.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Results completed (OK packets and result sets).
    pub results: u32,
    /// Of those, result sets.
    pub result_sets: u32,
    /// Rows in all result sets.
    pub rows: u64,
    /// Sum over the OK packets.
    pub affected_rows: u64,
    /// The last non-zero one.
    pub last_insert_id: u64,
    pub warnings: u32,
    /// Status flags of the last OK/EOF.
    pub status: u16,
    /// The ERR that ended the answer, if any (earlier results of a
    /// multi-statement still count above).
    pub error: Option<ErrPacket>,
    pub prepared: Option<Prepared>,
    /// The file a LOAD DATA LOCAL INFILE made the server ask for.
    pub local_infile: Option<String>,
}

/// Why the answer could not be followed (the session cannot continue).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("malformed server reply: {0}")]
    Malformed(#[from] DecodeError),
    /// A packet that cannot come at this point of the answer.
    #[error("unexpected packet starting with {first:#04x} while reading {at}")]
    Unexpected { at: &'static str, first: u8 },
    /// A packet arrived from the side whose turn it is not.
    #[error("packet from the {0} out of turn")]
    OutOfTurn(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    First,
    Columns { left: u64 },
    ColumnsEof,
    Rows,
    InfileData,
    PrepareOk,
    Params { left: u16, columns: u16 },
    ParamsEof { columns: u16 },
    PrepareColumns { left: u16 },
    PrepareColumnsEof,
    FieldList,
    Simple,
    Statistics,
    Done,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            Self::First => "the first packet of a result",
            Self::Columns { .. } => "column definitions",
            Self::ColumnsEof => "the EOF after column definitions",
            Self::Rows => "rows",
            Self::InfileData => "LOCAL INFILE data",
            Self::PrepareOk => "the PREPARE response",
            Self::Params { .. } | Self::ParamsEof { .. } => "parameter definitions",
            Self::PrepareColumns { .. } | Self::PrepareColumnsEof => "prepared column definitions",
            Self::FieldList => "a field list",
            Self::Simple => "an OK/ERR reply",
            Self::Statistics => "statistics",
            Self::Done => "nothing (the reply is complete)",
        }
    }
}

/// Whether a packet of this first byte and first-fragment length is an
/// EOF / OK-with-0xFE end marker rather than a row.
pub fn is_end_marker(first: u8, fragment_len: usize) -> bool {
    first == EOF_HEADER && fragment_len < MAX_FRAGMENT
}

/// The answer to one command.
#[derive(Debug, Clone)]
pub struct Response {
    caps: Capabilities,
    state: State,
    summary: Summary,
}

impl Response {
    /// Starts following the answer to a command of shape `expect`, under
    /// the capabilities negotiated (identical on both hops).
    pub fn new(expect: Expect, caps: Capabilities) -> Self {
        let state = match expect {
            Expect::Nothing => State::Done,
            Expect::Results => State::First,
            Expect::Prepare => State::PrepareOk,
            Expect::Rows => State::Rows,
            Expect::FieldList => State::FieldList,
            Expect::Simple => State::Simple,
            Expect::Statistics => State::Statistics,
        };
        Self {
            caps,
            state,
            summary: Summary::default(),
        }
    }

    pub fn awaiting(&self) -> Awaiting {
        match self.state {
            State::Done => Awaiting::Nothing,
            State::InfileData => Awaiting::Client,
            _ => Awaiting::Server,
        }
    }

    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    pub fn into_summary(self) -> Summary {
        self.summary
    }

    /// Whether the next server packet must be read whole (`true`) or its
    /// first byte suffices because it passes through (rows, definitions).
    pub fn wants_whole(&self, first: u8, fragment_len: usize) -> bool {
        match self.state {
            State::Columns { .. }
            | State::Params { .. }
            | State::PrepareColumns { .. }
            | State::FieldList
            | State::Rows => first == ERR_HEADER || is_end_marker(first, fragment_len),
            _ => true,
        }
    }

    /// Feeds the next server packet: its whole payload if
    /// [`Self::wants_whole`] said so, else at least its first byte;
    /// `fragment_len` is the length of its first fragment.
    pub fn on_server_packet(
        &mut self,
        payload: &[u8],
        fragment_len: usize,
    ) -> Result<(), ResponseError> {
        let Some(&first) = payload.first() else {
            return Err(self.unexpected(0));
        };
        let end_marker = is_end_marker(first, fragment_len);
        match self.state {
            State::Done | State::InfileData => return Err(ResponseError::OutOfTurn("server")),
            _ if first == ERR_HEADER && self.state != State::Statistics => {
                self.summary.error = Some(ErrPacket::decode(payload)?);
                self.state = State::Done;
            }
            State::First => match first {
                OK_HEADER => {
                    let ok = OkPacket::decode(payload, self.caps)?;
                    self.apply_ok(&ok);
                    self.summary.results += 1;
                    self.after_result(ok.status);
                }
                LOCAL_INFILE_HEADER => {
                    self.summary.local_infile = Some(text(&payload[1..]));
                    self.state = State::InfileData;
                }
                EOF_HEADER => return Err(self.unexpected(first)),
                _ => {
                    let count = Reader::new(payload).lenenc("column count")?;
                    if count == 0 {
                        return Err(DecodeError::Invalid("column count").into());
                    }
                    self.state = State::Columns { left: count };
                }
            },
            State::Columns { left } => {
                if end_marker {
                    return Err(self.unexpected(first));
                }
                self.state = match left - 1 {
                    0 if self.caps.contains(Capabilities::DEPRECATE_EOF) => State::Rows,
                    0 => State::ColumnsEof,
                    n => State::Columns { left: n },
                };
            }
            State::ColumnsEof => {
                let t = self.end_packet(first, payload)?;
                if t.status & status::CURSOR_EXISTS != 0 {
                    self.end_result_set(&t);
                } else {
                    self.state = State::Rows;
                }
            }
            State::Rows => {
                if end_marker {
                    let t = Terminator::decode(payload, self.caps)?;
                    self.end_result_set(&t);
                } else {
                    self.summary.rows += 1;
                }
            }
            State::PrepareOk => {
                if first != OK_HEADER {
                    return Err(self.unexpected(first));
                }
                let mut r = Reader::new(&payload[1..]);
                let stmt_id = r.u32("statement id")?;
                let columns = r.u16("column count")?;
                let params = r.u16("parameter count")?;
                let warnings = if r.remaining() >= 3 {
                    r.u8("filler")?;
                    r.u16("warning count")?
                } else {
                    0
                };
                self.summary.prepared = Some(Prepared {
                    stmt_id,
                    columns,
                    params,
                    warnings,
                });
                self.summary.warnings += u32::from(warnings);
                self.summary.results += 1;
                self.state = self.after_params(params, columns);
            }
            State::Params { left, columns } => {
                if end_marker {
                    return Err(self.unexpected(first));
                }
                self.state = match left - 1 {
                    0 if self.caps.contains(Capabilities::DEPRECATE_EOF) => {
                        self.after_params(0, columns)
                    }
                    0 => State::ParamsEof { columns },
                    n => State::Params { left: n, columns },
                };
            }
            State::ParamsEof { columns } => {
                self.end_packet(first, payload)?;
                self.state = self.after_params(0, columns);
            }
            State::PrepareColumns { left } => {
                if end_marker {
                    return Err(self.unexpected(first));
                }
                self.state = match left - 1 {
                    0 if self.caps.contains(Capabilities::DEPRECATE_EOF) => State::Done,
                    0 => State::PrepareColumnsEof,
                    n => State::PrepareColumns { left: n },
                };
            }
            State::PrepareColumnsEof => {
                self.end_packet(first, payload)?;
                self.state = State::Done;
            }
            State::FieldList => {
                if end_marker {
                    let t = Terminator::decode(payload, self.caps)?;
                    self.summary.status = t.status;
                    self.summary.warnings += u32::from(t.warnings);
                    self.state = State::Done;
                }
            }
            State::Simple => {
                match first {
                    OK_HEADER => {
                        let ok = OkPacket::decode(payload, self.caps)?;
                        self.apply_ok(&ok);
                    }
                    EOF_HEADER => {
                        let t = Terminator::decode(payload, self.caps)?;
                        self.summary.status = t.status;
                        self.summary.warnings += u32::from(t.warnings);
                    }
                    _ => return Err(self.unexpected(first)),
                }
                self.summary.results += 1;
                self.state = State::Done;
            }
            State::Statistics => {
                if first == ERR_HEADER {
                    self.summary.error = Some(ErrPacket::decode(payload)?);
                }
                self.state = State::Done;
            }
        }
        Ok(())
    }

    /// Feeds the next client packet during LOCAL INFILE, by the length of
    /// its first fragment (0: the empty packet that ends the file).
    pub fn on_client_packet(&mut self, fragment_len: usize) -> Result<(), ResponseError> {
        if self.state != State::InfileData {
            return Err(ResponseError::OutOfTurn("client"));
        }
        if fragment_len == 0 {
            // The server answers the upload like a result: OK or ERR.
            self.state = State::First;
        }
        Ok(())
    }

    fn unexpected(&self, first: u8) -> ResponseError {
        ResponseError::Unexpected {
            at: self.state.name(),
            first,
        }
    }

    fn end_packet(&self, first: u8, payload: &[u8]) -> Result<Terminator, ResponseError> {
        if first != EOF_HEADER {
            return Err(self.unexpected(first));
        }
        Ok(Terminator::decode(payload, self.caps)?)
    }

    fn apply_ok(&mut self, ok: &OkPacket) {
        self.summary.affected_rows = self.summary.affected_rows.saturating_add(ok.affected_rows);
        if ok.last_insert_id != 0 {
            self.summary.last_insert_id = ok.last_insert_id;
        }
        self.summary.warnings += u32::from(ok.warnings);
        self.summary.status = ok.status;
    }

    fn end_result_set(&mut self, t: &Terminator) {
        self.summary.results += 1;
        self.summary.result_sets += 1;
        self.summary.warnings += u32::from(t.warnings);
        self.summary.affected_rows = self.summary.affected_rows.saturating_add(t.affected_rows);
        self.summary.status = t.status;
        self.after_result(t.status);
    }

    fn after_result(&mut self, status: u16) {
        self.state = if status & status::MORE_RESULTS_EXISTS != 0 {
            State::First
        } else {
            State::Done
        };
    }

    fn after_params(&self, params: u16, columns: u16) -> State {
        if params > 0 {
            State::Params {
                left: params,
                columns,
            }
        } else if columns > 0 {
            State::PrepareColumns { left: columns }
        } else {
            State::Done
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::reply::EofPacket;
    use bytes::BytesMut;

    const DEPRECATE: Capabilities = Capabilities(
        Capabilities::PROTOCOL_41.0
            | Capabilities::DEPRECATE_EOF.0
            | Capabilities::SESSION_TRACK.0
            | Capabilities::MULTI_RESULTS.0,
    );
    const CLASSIC: Capabilities =
        Capabilities(Capabilities::PROTOCOL_41.0 | Capabilities::MULTI_RESULTS.0);

    /// Packets as (payload, first-fragment length); rows only show their
    /// first byte, like the relay feeds them.
    #[derive(Clone)]
    enum P {
        Whole(Vec<u8>),
        Head(u8, usize),
        /// A client packet of this length (LOCAL INFILE data).
        Client(usize),
    }

    fn ok(affected: u8, insert_id: u8, status: u16, header: u8) -> P {
        P::Whole(vec![
            header,
            affected,
            insert_id,
            status as u8,
            (status >> 8) as u8,
            0,
            0,
        ])
    }

    fn eof(status: u16) -> P {
        let mut b = BytesMut::new();
        EofPacket {
            warnings: 0,
            status,
        }
        .encode(&mut b);
        P::Whole(b.to_vec())
    }

    fn end(caps: Capabilities, status: u16) -> P {
        if caps.contains(Capabilities::DEPRECATE_EOF) {
            ok(0, 0, status, 0xFE)
        } else {
            eof(status)
        }
    }

    fn err() -> P {
        let mut b = BytesMut::new();
        ErrPacket::new(1146, "42S02", "Table 'x' doesn't exist").encode(&mut b);
        P::Whole(b.to_vec())
    }

    fn def() -> P {
        P::Head(0x03, 40)
    }

    fn row() -> P {
        P::Head(0x01, 10)
    }

    /// A result set of `cols` columns and `rows` rows ending with `status`.
    fn result_set(caps: Capabilities, cols: u8, rows: usize, status: u16) -> Vec<P> {
        let mut v = vec![P::Whole(vec![cols])];
        v.extend((0..cols).map(|_| def()));
        if !caps.contains(Capabilities::DEPRECATE_EOF) {
            v.push(eof(0));
        }
        v.extend((0..rows).map(|_| row()));
        v.push(end(caps, status));
        v
    }

    fn run(expect: Expect, caps: Capabilities, packets: &[P]) -> Summary {
        let mut r = Response::new(expect, caps);
        for (i, p) in packets.iter().enumerate() {
            assert_ne!(
                r.awaiting(),
                Awaiting::Nothing,
                "done early, before packet {i}"
            );
            match p {
                P::Whole(b) => {
                    assert_eq!(r.awaiting(), Awaiting::Server, "packet {i}");
                    assert!(
                        r.wants_whole(b[0], b.len()),
                        "packet {i} should be read whole"
                    );
                    r.on_server_packet(b, b.len()).expect("packet");
                }
                P::Head(first, len) => {
                    assert_eq!(r.awaiting(), Awaiting::Server, "packet {i}");
                    assert!(
                        !r.wants_whole(*first, *len),
                        "packet {i} should pass through"
                    );
                    r.on_server_packet(&[*first], *len).expect("packet");
                }
                P::Client(len) => {
                    assert_eq!(r.awaiting(), Awaiting::Client, "packet {i}");
                    r.on_client_packet(*len).expect("client packet");
                }
            }
        }
        assert_eq!(r.awaiting(), Awaiting::Nothing, "reply not complete");
        r.into_summary()
    }

    /// (name, expect, packets, results, result sets, rows, affected, error?)
    type Case = (&'static str, Expect, Vec<P>, u32, u32, u64, u64, bool);

    #[test]
    fn table_of_answers() {
        const AC: u16 = status::AUTOCOMMIT;
        const MORE: u16 = status::MORE_RESULTS_EXISTS | status::AUTOCOMMIT;
        for caps in [DEPRECATE, CLASSIC] {
            let mut multi = result_set(caps, 2, 3, MORE);
            multi.push(ok(4, 9, MORE, 0));
            multi.extend(result_set(caps, 1, 1, MORE));
            multi.push(err());
            let mut infile = vec![P::Whole(b"\xfb/tmp/data.csv".to_vec())];
            infile.extend([P::Client(4096), P::Client(100), P::Client(0)]);
            infile.push(ok(2, 0, AC, 0));
            let mut prep = vec![P::Whole(vec![0, 7, 0, 0, 0, 2, 0, 1, 0, 0, 0, 0])];
            prep.push(def());
            if !caps.contains(Capabilities::DEPRECATE_EOF) {
                prep.push(eof(AC));
            }
            prep.extend([def(), def()]);
            if !caps.contains(Capabilities::DEPRECATE_EOF) {
                prep.push(eof(AC));
            }
            let mut cursor = vec![P::Whole(vec![1]), def()];
            cursor.push(end(caps, AC | status::CURSOR_EXISTS));
            let mut fetch: Vec<P> = (0..5).map(|_| row()).collect();
            fetch.push(end(
                caps,
                AC | status::CURSOR_EXISTS | status::LAST_ROW_SENT,
            ));
            let cases: Vec<Case> = vec![
                (
                    "ok",
                    Expect::Results,
                    vec![ok(3, 5, AC, 0)],
                    1,
                    0,
                    0,
                    3,
                    false,
                ),
                ("err", Expect::Results, vec![err()], 0, 0, 0, 0, true),
                (
                    "select",
                    Expect::Results,
                    result_set(caps, 3, 10, AC),
                    1,
                    1,
                    10,
                    0,
                    false,
                ),
                (
                    "empty select",
                    Expect::Results,
                    result_set(caps, 1, 0, AC),
                    1,
                    1,
                    0,
                    0,
                    false,
                ),
                (
                    "multi, error last",
                    Expect::Results,
                    multi,
                    3,
                    2,
                    4,
                    4,
                    true,
                ),
                ("local infile", Expect::Results, infile, 1, 0, 0, 2, false),
                ("prepare", Expect::Prepare, prep, 1, 0, 0, 0, false),
                (
                    "prepare err",
                    Expect::Prepare,
                    vec![err()],
                    0,
                    0,
                    0,
                    0,
                    true,
                ),
                ("cursor", Expect::Results, cursor, 1, 1, 0, 0, false),
                ("fetch", Expect::Rows, fetch, 1, 1, 5, 0, false),
                (
                    "field list",
                    Expect::FieldList,
                    vec![def(), def(), end(caps, AC)],
                    0,
                    0,
                    0,
                    0,
                    false,
                ),
                (
                    "ping",
                    Expect::Simple,
                    vec![ok(0, 0, AC, 0)],
                    1,
                    0,
                    0,
                    0,
                    false,
                ),
                (
                    "set option",
                    Expect::Simple,
                    vec![eof(AC)],
                    1,
                    0,
                    0,
                    0,
                    false,
                ),
                ("init db err", Expect::Simple, vec![err()], 0, 0, 0, 0, true),
                (
                    "statistics",
                    Expect::Statistics,
                    vec![P::Whole(b"Uptime: 5".to_vec())],
                    0,
                    0,
                    0,
                    0,
                    false,
                ),
                ("close", Expect::Nothing, vec![], 0, 0, 0, 0, false),
            ];
            for (name, expect, packets, results, sets, rows, affected, error) in cases {
                let s = run(expect, caps, &packets);
                let what = format!("{name} ({caps:?})");
                assert_eq!(s.results, results, "results of {what}");
                assert_eq!(s.result_sets, sets, "result sets of {what}");
                assert_eq!(s.rows, rows, "rows of {what}");
                assert_eq!(s.affected_rows, affected, "affected rows of {what}");
                assert_eq!(s.error.is_some(), error, "error of {what}");
            }
        }
    }

    #[test]
    fn summary_details() {
        let mut p = result_set(DEPRECATE, 1, 2, status::MORE_RESULTS_EXISTS);
        p.push(ok(1, 42, status::AUTOCOMMIT, 0));
        let s = run(Expect::Results, DEPRECATE, &p);
        assert_eq!((s.last_insert_id, s.status), (42, status::AUTOCOMMIT));
        let s = run(
            Expect::Prepare,
            DEPRECATE,
            &[P::Whole(vec![0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0])],
        );
        assert_eq!(
            s.prepared,
            Some(Prepared {
                stmt_id: 7,
                columns: 0,
                params: 0,
                warnings: 3
            })
        );
        let s = run(
            Expect::Results,
            DEPRECATE,
            &[P::Whole(b"\xfbf.csv".to_vec()), P::Client(0), err()],
        );
        assert_eq!(s.local_infile.as_deref(), Some("f.csv"));
        assert_eq!(s.error.map(|e| e.code), Some(1146));
    }

    #[test]
    fn huge_row_starting_with_fe_is_a_row() {
        let mut r = Response::new(Expect::Rows, DEPRECATE);
        // A row whose first value is >= 16 MiB: lenenc prefix 0xFE, and
        // the packet fills a whole fragment.
        assert!(!r.wants_whole(0xFE, MAX_FRAGMENT));
        r.on_server_packet(&[0xFE], MAX_FRAGMENT).expect("row");
        assert_eq!(r.summary().rows, 1);
        assert!(r.wants_whole(0xFE, 7));
        r.on_server_packet(&[0xFE, 0, 0, 2, 0, 0, 0], 7)
            .expect("end");
        assert_eq!(r.awaiting(), Awaiting::Nothing);
        assert_eq!(r.summary().rows, 1);
    }

    #[test]
    fn out_of_turn_and_garbage_are_errors() {
        let mut r = Response::new(Expect::Results, DEPRECATE);
        assert!(r.on_client_packet(0).is_err());
        assert!(matches!(
            r.on_server_packet(&[0xFE, 0, 0, 0, 0], 5),
            Err(ResponseError::Unexpected { .. })
        ));
        let mut r = Response::new(Expect::Results, DEPRECATE);
        assert!(r.on_server_packet(&[], 0).is_err());
        let mut r = Response::new(Expect::Simple, DEPRECATE);
        assert!(r.on_server_packet(&[0x05], 1).is_err());
        let mut r = Response::new(Expect::Nothing, DEPRECATE);
        assert!(r.on_server_packet(&[0x00], 1).is_err());
        let mut r = Response::new(Expect::Results, DEPRECATE);
        r.on_server_packet(b"\xfbx", 2).expect("infile");
        assert!(r.on_server_packet(&[0x00], 1).is_err());
        // Column count 0 is not a result set.
        let mut r = Response::new(Expect::Results, CLASSIC);
        assert!(r.on_server_packet(&[0xFC, 0, 0], 3).is_err());
    }
}
