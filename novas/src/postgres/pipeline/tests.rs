//! Table-driven tests: each case is a client script. It is played once
//! straight against a small in-memory server that follows PostgreSQL's
//! rules (checked against a real PostgreSQL 15 when written), and once
//! through the scanners and the pipeline with a policy that denies every
//! statement starting with `deny`. The client must receive the same bytes
//! both ways (the in-memory server fails a `deny` statement with the very
//! error NOVAS injects), whatever the interleaving and read sizes, and the
//! audit must get the listed outcome for every tag.

use std::collections::HashMap;

use bytes::{Buf, BufMut, BytesMut};

use super::*;
use crate::postgres::{
    backend::{encode as be, BackendItem, BackendScanner, CommandTag},
    error::Peer,
    error_response::Severity,
    frontend::{encode as fe, FrontendItem, FrontendMessage, FrontendScanner},
    wire,
};

fn denial() -> ErrorResponse {
    ErrorResponse::denied("permission denied by NOVAS policy")
}

fn is_denied(sql: &str) -> bool {
    sql.split(';').any(|s| s.trim().starts_with("deny"))
}

/// Statements of a simple Query as the glue's splitter would see them.
fn statements(sql: &str) -> Vec<&str> {
    sql.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// A client message in a script.
#[derive(Clone, Copy, Debug)]
enum Cmd {
    Q(&'static str),
    P(&'static str, &'static str),
    B(&'static str, &'static str),
    E(&'static str, u32),
    DS(&'static str),
    DP(&'static str),
    CS(&'static str),
    S,
    H,
    Data(&'static str),
    Done,
    Fail,
    F,
}

fn encode_cmd(cmd: Cmd, dst: &mut BytesMut) {
    match cmd {
        Cmd::Q(sql) => fe::query(dst, sql),
        Cmd::P(name, sql) => fe::parse(dst, name, sql, &[]),
        Cmd::B(portal, stmt) => fe::bind(dst, portal, stmt, &[]),
        Cmd::E(portal, max) => fe::execute(dst, portal, max),
        Cmd::DS(name) => fe::describe(dst, TargetKind::Statement, name),
        Cmd::DP(name) => fe::describe(dst, TargetKind::Portal, name),
        Cmd::CS(name) => fe::close(dst, TargetKind::Statement, name),
        Cmd::S => fe::sync(dst),
        Cmd::H => fe::flush(dst),
        Cmd::Data(d) => fe::copy_data(dst, d.as_bytes()),
        Cmd::Done => fe::copy_done(dst),
        Cmd::Fail => fe::copy_fail(dst, "client gave up"),
        Cmd::F => {
            let at = wire::begin(dst, b'F');
            dst.put_u32(1598); // random()
            dst.put_i16(0);
            dst.put_i16(0);
            dst.put_i16(0);
            wire::finish(dst, at);
        }
    }
}

/// The in-memory server. Statement language: `select N`, `insert N`,
/// `fail`, `begin`, `commit`, `rollback`, `copy in` (rows are lines;
/// a row `bad` fails), `copy out N`, `deferred` (fails at the next Sync),
/// `badsyntax` (fails at Parse), `deny …` (fails like a denial).
#[derive(Default)]
struct FakeServer {
    input: BytesMut,
    out: BytesMut,
    status: TransactionStatus,
    skipping: bool,
    copy: Option<CopyIn>,
    statements: HashMap<String, String>,
    /// Portal → (statement text, rows already sent).
    portals: HashMap<String, (String, u64)>,
    fail_at_sync: bool,
}

struct CopyIn {
    extended: bool,
    rows: u64,
    failed: bool,
}

enum Run {
    Ok,
    Failed,
    CopyIn,
}

impl FakeServer {
    fn error(&mut self, code: &str, msg: &str) {
        ErrorResponse::new(Severity::Error, code, msg).encode(&mut self.out);
        if self.status == TransactionStatus::InBlock {
            self.status = TransactionStatus::Failed;
        }
    }

    fn ready(&mut self) {
        self.status.encode(&mut self.out);
    }

    /// Runs one statement; `max_rows` and `sent` for a portal.
    fn run(&mut self, stmt: &str, max_rows: u32, sent: &mut u64, describe_rows: bool) -> Run {
        if self.status == TransactionStatus::Failed && stmt != "rollback" {
            self.error("25P02", "current transaction is aborted");
            return Run::Failed;
        }
        let words: Vec<&str> = stmt.split_whitespace().collect();
        match words.as_slice() {
            ["select", n] => {
                let total: u64 = n.parse().unwrap_or(0);
                if describe_rows {
                    be::row_description(&mut self.out, &["n"]);
                }
                let left = total - *sent;
                let batch = if max_rows > 0 {
                    left.min(u64::from(max_rows))
                } else {
                    left
                };
                for i in 0..batch {
                    let v = (*sent + i + 1).to_string();
                    be::data_row(&mut self.out, &[Some(v.as_bytes())]);
                }
                *sent += batch;
                if max_rows > 0 && *sent < total {
                    be::empty(&mut self.out, b's');
                } else {
                    be::command_complete(&mut self.out, &format!("SELECT {batch}"));
                }
            }
            ["insert", n] => be::command_complete(&mut self.out, &format!("INSERT 0 {n}")),
            ["deferred"] => {
                self.fail_at_sync = true;
                be::command_complete(&mut self.out, "INSERT 0 1");
            }
            ["begin"] => {
                self.status = TransactionStatus::InBlock;
                be::command_complete(&mut self.out, "BEGIN");
            }
            ["commit"] | ["rollback"] => {
                self.status = TransactionStatus::Idle;
                be::command_complete(&mut self.out, &words[0].to_uppercase());
            }
            ["copy", "in"] => {
                be::copy_response(&mut self.out, b'G', 1);
                return Run::CopyIn;
            }
            ["copy", "out", n] => {
                be::copy_response(&mut self.out, b'H', 1);
                let n: u64 = n.parse().unwrap_or(0);
                for i in 0..n {
                    be::copy_data(&mut self.out, format!("{i}\n").as_bytes());
                }
                be::empty(&mut self.out, b'c');
                be::command_complete(&mut self.out, &format!("COPY {n}"));
            }
            ["deny", ..] => {
                // Exactly what NOVAS injects: no change of transaction state.
                denial().encode(&mut self.out);
                return Run::Failed;
            }
            _ => {
                self.error("42000", &format!("fail: {stmt}"));
                return Run::Failed;
            }
        }
        Run::Ok
    }

    fn step(&mut self) {
        while let Some((msg_type, raw)) =
            wire::take_message(&mut self.input, Peer::Client, usize::MAX).expect("framing")
        {
            self.handle(msg_type, raw);
        }
    }

    fn handle(&mut self, msg_type: u8, raw: bytes::Bytes) {
        if let Some(copy) = &mut self.copy {
            match msg_type {
                b'd' => {
                    if &raw[wire::HEADER_LEN..] == b"bad" {
                        copy.failed = true;
                    } else {
                        copy.rows += 1;
                    }
                    if copy.failed {
                        let extended = copy.extended;
                        self.copy = None;
                        self.error("22P02", "invalid input syntax");
                        self.after_error(extended);
                    }
                }
                b'c' | b'f' => {
                    let Some(copy) = self.copy.take() else { return };
                    if msg_type == b'f' {
                        self.error("57014", "COPY from stdin failed");
                        self.after_error(copy.extended);
                    } else {
                        be::command_complete(&mut self.out, &format!("COPY {}", copy.rows));
                        if !copy.extended {
                            self.ready();
                        }
                    }
                }
                b'S' | b'H' => {}
                _ => panic!("script sent {} during COPY", msg_type as char),
            }
            return;
        }
        if self.skipping && msg_type != b'S' {
            return;
        }
        match msg_type {
            b'd' | b'c' | b'f' => {}
            b'F' => {
                be::function_call_response(&mut self.out, Some(b"42"));
                self.ready();
            }
            _ => {
                let msg = FrontendMessage::parse(raw).expect("script message");
                self.handle_message(msg);
            }
        }
    }

    fn after_error(&mut self, extended: bool) {
        if extended {
            self.skipping = true;
        } else {
            self.ready();
        }
    }

    fn handle_message(&mut self, msg: FrontendMessage) {
        match msg.kind().clone() {
            FrontendKind::Query(q) => {
                let sql = q.sql.to_string_lossy().into_owned();
                let stmts = statements(&sql);
                if stmts.is_empty() {
                    be::empty(&mut self.out, b'I');
                } else if is_denied(&sql) {
                    denial().encode(&mut self.out);
                } else {
                    for s in stmts {
                        match self.run(s, 0, &mut 0, true) {
                            Run::Ok => {}
                            Run::Failed => break,
                            Run::CopyIn => {
                                self.copy = Some(CopyIn {
                                    extended: false,
                                    rows: 0,
                                    failed: false,
                                });
                                return;
                            }
                        }
                    }
                }
                self.ready();
            }
            FrontendKind::Parse(p) => {
                let sql = p.sql.to_string_lossy().trim().to_owned();
                if sql.starts_with("deny") {
                    denial().encode(&mut self.out);
                    self.skipping = true;
                } else if sql == "badsyntax" {
                    self.error("42601", "syntax error");
                    self.skipping = true;
                } else {
                    self.statements.insert(p.name.to_string_lossy().into(), sql);
                    be::empty(&mut self.out, b'1');
                }
            }
            FrontendKind::Bind(b) => match self.statements.get(&*b.statement.to_string_lossy()) {
                Some(sql) => {
                    let sql = sql.clone();
                    self.portals
                        .insert(b.portal.to_string_lossy().into(), (sql, 0));
                    be::empty(&mut self.out, b'2');
                }
                None => {
                    self.error("26000", "prepared statement does not exist");
                    self.skipping = true;
                }
            },
            FrontendKind::Describe(t) => {
                let name = t.name.to_string_lossy().into_owned();
                let sql = match t.kind {
                    TargetKind::Statement => self.statements.get(&name),
                    TargetKind::Portal => self.portals.get(&name).map(|(s, _)| s),
                };
                match sql.cloned() {
                    Some(sql) => {
                        if t.kind == TargetKind::Statement {
                            be::parameter_description(&mut self.out, &[]);
                        }
                        if sql.starts_with("select") {
                            be::row_description(&mut self.out, &["n"]);
                        } else {
                            be::empty(&mut self.out, b'n');
                        }
                    }
                    None => {
                        self.error("26000", "does not exist");
                        self.skipping = true;
                    }
                }
            }
            FrontendKind::Execute(e) => {
                let portal = e.portal.to_string_lossy().into_owned();
                let Some((sql, mut sent)) = self.portals.get(&portal).cloned() else {
                    self.error("34000", "portal does not exist");
                    self.skipping = true;
                    return;
                };
                if sql.is_empty() {
                    be::empty(&mut self.out, b'I');
                    return;
                }
                match self.run(&sql, e.max_rows, &mut sent, false) {
                    Run::Ok => {
                        self.portals.insert(portal, (sql, sent));
                    }
                    Run::Failed => self.skipping = true,
                    Run::CopyIn => {
                        self.copy = Some(CopyIn {
                            extended: true,
                            rows: 0,
                            failed: false,
                        })
                    }
                }
            }
            FrontendKind::Close(_) => be::empty(&mut self.out, b'3'),
            FrontendKind::Sync => {
                self.skipping = false;
                if std::mem::take(&mut self.fail_at_sync) {
                    self.error("23505", "duplicate key at commit");
                }
                self.ready();
            }
            FrontendKind::Flush | FrontendKind::Terminate => {}
        }
    }
}

/// What the audit learned about one tag, as a short string.
fn short(o: &Outcome) -> String {
    match o {
        Outcome::Complete { command, rows } => match rows {
            Some(r) => format!("rows {r}"),
            None => command.clone(),
        },
        Outcome::Suspended { rows } => format!("suspended {rows}"),
        Outcome::Empty => "empty".into(),
        Outcome::Accepted => "ok".into(),
        Outcome::Failed { sqlstate, .. } => format!("failed {sqlstate}"),
        Outcome::NotExecuted => "not executed".into(),
        Outcome::Denied => "denied".into(),
    }
}

/// NOVAS in the middle: the two scanners, the pipeline, a policy, tags.
struct Proxy {
    fe: FrontendScanner,
    be: BackendScanner,
    pipeline: Pipeline,
    server: FakeServer,
    from_client: BytesMut,
    from_server: BytesMut,
    to_client: Vec<u8>,
    labels: Vec<String>,
    audit: HashMap<u64, String>,
}

impl Proxy {
    fn new() -> Self {
        Self {
            fe: FrontendScanner::new(1 << 16),
            be: BackendScanner::new(64),
            pipeline: Pipeline::new(TransactionStatus::Idle),
            server: FakeServer::default(),
            from_client: BytesMut::new(),
            from_server: BytesMut::new(),
            to_client: Vec::new(),
            labels: Vec::new(),
            audit: HashMap::new(),
        }
    }

    fn tag(&mut self, label: String) -> u64 {
        self.labels.push(label);
        self.labels.len() as u64 - 1
    }

    fn collect(&mut self) {
        if self.be.at_boundary() {
            if let Some(b) = self.pipeline.take_injections() {
                self.to_client.extend_from_slice(&b);
            }
        }
        for c in self.pipeline.take_completions() {
            let old = self.audit.insert(c.tag, short(&c.outcome));
            assert!(
                old.is_none(),
                "tag {} reported twice",
                self.labels[c.tag as usize]
            );
        }
    }

    /// The client → server loop over whatever the client sent so far.
    fn client_loop(&mut self) {
        while let Some(item) = self.fe.next(&mut self.from_client).expect("client bytes") {
            let t = item.msg_type();
            if self.pipeline.should_swallow(t) {
                if let FrontendItem::Message(m) = &item {
                    if let FrontendKind::Query(_)
                    | FrontendKind::Parse(_)
                    | FrontendKind::Execute(_) = m.kind()
                    {
                        let tag = self.tag(format!("{}", t as char));
                        self.audit.insert(tag, "swallowed".into());
                    }
                }
                continue;
            }
            match item {
                FrontendItem::Message(m) => self.client_message(m),
                FrontendItem::Raw {
                    msg_type,
                    bytes,
                    first,
                    ..
                } => {
                    if first {
                        let tags = if msg_type == b'F' {
                            vec![self.tag("F".into())]
                        } else {
                            vec![]
                        };
                        self.pipeline.forwarded_raw(msg_type, &tags).expect("raw");
                    }
                    self.server.input.extend_from_slice(&bytes);
                }
            }
            self.collect();
        }
    }

    fn client_message(&mut self, m: FrontendMessage) {
        match m.kind().clone() {
            FrontendKind::Query(q) => {
                let sql = q.sql.to_string_lossy().into_owned();
                let tags: Vec<u64> = statements(&sql)
                    .into_iter()
                    .map(|s| self.tag(format!("Q:{s}")))
                    .collect();
                if is_denied(&sql) {
                    self.pipeline.denied_query(denial(), &tags).expect("deny");
                    return;
                }
                self.pipeline.forwarded(&m, &tags).expect("forward");
            }
            FrontendKind::Parse(p) => {
                let sql = p.sql.to_string_lossy().into_owned();
                let tag = self.tag(format!("P:{sql}"));
                if sql.starts_with("deny") {
                    self.pipeline
                        .denied_extended(denial(), &[tag])
                        .expect("deny");
                    return;
                }
                self.pipeline.forwarded(&m, &[tag]).expect("forward");
            }
            FrontendKind::Execute(e) => {
                let tag = self.tag(format!("E:{}", e.portal.to_string_lossy()));
                self.pipeline.forwarded(&m, &[tag]).expect("forward");
            }
            _ => self.pipeline.forwarded(&m, &[]).expect("forward"),
        }
        self.server.input.extend_from_slice(m.raw());
    }

    /// The server runs, and its output reaches NOVAS in `chunk`-byte reads.
    fn server_loop(&mut self, chunk: usize) {
        self.server.step();
        let out = self.server.out.split();
        for piece in out.chunks(chunk) {
            self.from_server.extend_from_slice(piece);
            while let Some(item) = self.be.next(&mut self.from_server).expect("server bytes") {
                match item {
                    BackendItem::Forward(b) => self.to_client.extend_from_slice(&b),
                    BackendItem::Event(ev) => self.pipeline.on_backend(&ev).expect("pipeline"),
                }
                self.collect();
            }
        }
    }

    fn audit_lines(&self) -> Vec<String> {
        let mut tags: Vec<&u64> = self.audit.keys().collect();
        tags.sort();
        tags.into_iter()
            .map(|t| format!("{} => {}", self.labels[*t as usize], self.audit[t]))
            .collect()
    }
}

/// Message types of a server→client byte stream, for failure messages.
fn types(mut b: &[u8]) -> String {
    let mut out = String::new();
    while let Some((t, len)) = wire::peek_header(b) {
        out.push(t as char);
        b.advance(len as usize + 1);
    }
    out
}

fn run_case(name: &str, script: &[Cmd], want: &[&str]) {
    let mut wire_in = BytesMut::new();
    for c in script {
        encode_cmd(*c, &mut wire_in);
    }
    let mut direct = FakeServer {
        input: wire_in.clone(),
        ..FakeServer::default()
    };
    direct.step();
    let expected = direct.out.to_vec();

    // Pipelined: the client sends everything before the server answers.
    for chunk in [1, 3, 7, 64, 1 << 20] {
        let mut p = Proxy::new();
        p.from_client.extend_from_slice(&wire_in);
        p.client_loop();
        p.server_loop(chunk);
        assert_eq!(
            types(&p.to_client),
            types(&expected),
            "{name}: pipelined, reads of {chunk}"
        );
        assert_eq!(p.to_client, expected, "{name}: pipelined, reads of {chunk}");
        assert_eq!(p.audit_lines(), want, "{name}: pipelined");
        assert!(p.pipeline.is_idle(), "{name}: pipelined: still owed");
    }
    // Lock-step: each message is answered before the next is sent.
    for chunk in [2, 1 << 20] {
        let mut p = Proxy::new();
        for c in script {
            encode_cmd(*c, &mut p.from_client);
            p.client_loop();
            p.server_loop(chunk);
        }
        assert_eq!(
            types(&p.to_client),
            types(&expected),
            "{name}: lock-step, reads of {chunk}"
        );
        assert_eq!(p.to_client, expected, "{name}: lock-step");
        assert_eq!(p.audit_lines(), want, "{name}: lock-step");
    }
}

use Cmd::*;

#[test]
fn simple_query() {
    let cases: &[(&str, &[Cmd], &[&str])] = &[
        ("one select", &[Q("select 2")], &["Q:select 2 => rows 2"]),
        (
            "several statements, error in the middle",
            &[Q("select 1; fail; select 2"), Q("select 3")],
            &[
                "Q:select 1 => rows 1",
                "Q:fail => failed 42000",
                "Q:select 2 => not executed",
                "Q:select 3 => rows 3",
            ],
        ),
        ("empty query", &[Q(""), Q(" ; ")], &[]),
        (
            "insert and DDL tags",
            &[Q("insert 3; begin; commit")],
            &[
                "Q:insert 3 => rows 3",
                "Q:begin => BEGIN",
                "Q:commit => COMMIT",
            ],
        ),
        (
            "denied alone",
            &[Q("deny drop table t")],
            &["Q:deny drop table t => denied"],
        ),
        (
            "denied between forwarded ones",
            &[Q("select 1"), Q("deny x; select 9"), Q("select 3")],
            &[
                "Q:select 1 => rows 1",
                "Q:deny x => denied",
                "Q:select 9 => denied",
                "Q:select 3 => rows 3",
            ],
        ),
        (
            "denial keeps the transaction status",
            &[
                Q("begin"),
                Q("deny a"),
                Q("fail"),
                Q("deny b"),
                Q("rollback"),
            ],
            &[
                "Q:begin => BEGIN",
                "Q:deny a => denied",
                "Q:fail => failed 42000",
                "Q:deny b => denied",
                "Q:rollback => ROLLBACK",
            ],
        ),
        (
            "copy out",
            &[Q("copy out 3; select 1")],
            &["Q:copy out 3 => rows 3", "Q:select 1 => rows 1"],
        ),
        (
            "copy in",
            &[Q("copy in"), Data("1"), Data("2"), Done, Q("select 1")],
            &["Q:copy in => rows 2", "Q:select 1 => rows 1"],
        ),
        (
            "copy in: the server ignores a Sync sent during the copy",
            &[Q("copy in"), S, Data("1"), Done, S],
            &["Q:copy in => rows 1"],
        ),
        (
            "copy in: client CopyFail",
            &[Q("copy in"), Data("1"), Fail, Q("deny x")],
            &["Q:copy in => failed 57014", "Q:deny x => denied"],
        ),
        (
            "copy in: bad row, client keeps sending",
            &[Q("copy in"), Data("bad"), Data("2"), Done, Q("select 1")],
            &["Q:copy in => failed 22P02", "Q:select 1 => rows 1"],
        ),
        (
            "stray CopyDone",
            &[Done, Q("select 1")],
            &["Q:select 1 => rows 1"],
        ),
        (
            "function call",
            &[F, Q("deny x"), F],
            &["F => ok", "Q:deny x => denied", "F => ok"],
        ),
    ];
    for (name, script, want) in cases {
        run_case(name, script, want);
    }
}

#[test]
fn extended_protocol() {
    let cases: &[(&str, &[Cmd], &[&str])] = &[
        (
            "parse bind describe execute sync",
            &[P("", "select 3"), B("", ""), DP(""), E("", 0), S],
            &["P:select 3 => ok", "E: => rows 3"],
        ),
        (
            "named statement, describe statement and a missing one",
            &[
                P("s1", "select 2"),
                DS("s1"),
                DS("nope"),
                B("", "s1"),
                E("", 0),
                S,
                CS("s1"),
                S,
            ],
            &["P:select 2 => ok", "E: => not executed"],
        ),
        (
            "row limit: suspended then complete",
            &[
                P("", "select 5"),
                B("p", ""),
                E("p", 2),
                E("p", 2),
                E("p", 2),
                S,
            ],
            &[
                "P:select 5 => ok",
                "E:p => suspended 2",
                "E:p => suspended 2",
                "E:p => rows 1",
            ],
        ),
        (
            "server error skips to Sync, including a Query",
            &[
                P("", "fail"),
                B("", ""),
                E("", 0),
                Q("select 7"),
                P("", "select 1"),
                S,
                Q("select 2"),
            ],
            &[
                "P:fail => ok",
                "E: => failed 42000",
                "Q:select 7 => not executed",
                "P:select 1 => not executed",
                "Q:select 2 => rows 2",
            ],
        ),
        (
            "syntax error at Parse",
            &[P("", "badsyntax"), B("", ""), E("", 0), S, Q("select 1")],
            &[
                "P:badsyntax => failed 42601",
                "E: => not executed",
                "Q:select 1 => rows 1",
            ],
        ),
        (
            "denied Parse in the middle of a batch",
            &[
                P("", "select 1"),
                B("", ""),
                E("", 0),
                P("", "deny x"),
                B("", ""),
                DP(""),
                E("", 0),
                H,
                S,
                P("", "select 2"),
                B("", ""),
                E("", 0),
                S,
            ],
            &[
                "P:select 1 => ok",
                "E: => rows 1",
                "P:deny x => denied",
                "E => swallowed",
                "P:select 2 => ok",
                "E: => rows 2",
            ],
        ),
        (
            "denied Parse first, then a Query while swallowing",
            &[P("", "deny x"), Q("select 1"), S, Q("select 2")],
            &[
                "P:deny x => denied",
                "Q => swallowed",
                "Q:select 2 => rows 2",
            ],
        ),
        (
            "denied Parse after a server error in the same batch",
            &[
                P("", "fail"),
                B("", ""),
                E("", 0),
                P("", "deny x"),
                E("", 0),
                S,
            ],
            &[
                "P:fail => ok",
                "E: => failed 42000",
                "P:deny x => not executed",
                "E => swallowed",
            ],
        ),
        (
            "denied Query while the server skips to Sync",
            &[P("", "fail"), B("", ""), E("", 0), Q("deny x"), S],
            &[
                "P:fail => ok",
                "E: => failed 42000",
                "Q:deny x => not executed",
            ],
        ),
        (
            "Flush without Sync, then Sync",
            &[P("", "select 1"), B("", ""), E("", 0), H, S],
            &["P:select 1 => ok", "E: => rows 1"],
        ),
        (
            "empty statement",
            &[P("", ""), B("", ""), DP(""), E("", 0), S],
            &["P: => ok", "E: => empty"],
        ),
        (
            "commit fails at Sync",
            &[P("", "deferred"), B("", ""), E("", 0), S, Q("select 1")],
            &["P:deferred => ok", "E: => rows 1", "Q:select 1 => rows 1"],
        ),
        (
            "copy in as libpq does it (Sync before the data)",
            &[
                P("", "copy in"),
                B("", ""),
                DP(""),
                E("", 0),
                S,
                Data("1"),
                Data("2"),
                Done,
                S,
                Q("select 1"),
            ],
            &["P:copy in => ok", "E: => rows 2", "Q:select 1 => rows 1"],
        ),
        (
            "extended copy in failing on a row",
            &[
                P("", "copy in"),
                B("", ""),
                E("", 0),
                S,
                Data("bad"),
                Data("2"),
                Done,
                S,
                Q("select 1"),
            ],
            &[
                "P:copy in => ok",
                "E: => failed 22P02",
                "Q:select 1 => rows 1",
            ],
        ),
        (
            "extended copy in, CopyFail",
            &[
                P("", "copy in"),
                B("", ""),
                E("", 0),
                S,
                Fail,
                S,
                P("", "deny y"),
                S,
            ],
            &[
                "P:copy in => ok",
                "E: => failed 57014",
                "P:deny y => denied",
            ],
        ),
        (
            "extended copy out",
            &[P("", "copy out 2"), B("", ""), E("", 0), S],
            &["P:copy out 2 => ok", "E: => rows 2"],
        ),
        (
            "Query right after extended messages without Sync",
            &[P("", "select 1"), B("", ""), E("", 0), Q("select 2")],
            &["P:select 1 => ok", "E: => rows 1", "Q:select 2 => rows 2"],
        ),
    ];
    for (name, script, want) in cases {
        run_case(name, script, want);
    }
}

fn msg(f: impl FnOnce(&mut BytesMut)) -> FrontendMessage {
    let mut b = BytesMut::new();
    f(&mut b);
    FrontendMessage::parse(b.freeze()).expect("message")
}

#[test]
fn glue_mistakes_and_desync_are_errors() {
    let mut p = Pipeline::new(TransactionStatus::Idle);
    assert_eq!(
        p.on_backend(&BackendEvent::ReadyForQuery(TransactionStatus::Idle)),
        Err(PipelineError::Unexpected {
            got: "ReadyForQuery",
            expecting: "nothing"
        })
    );
    let sync = msg(fe::sync);
    assert_eq!(
        p.forwarded(&sync, &[1, 2]),
        Err(PipelineError::TooManyTags {
            msg_type: b'S',
            count: 2
        })
    );
    assert!(p.forwarded(&msg(fe::flush), &[1]).is_err());
    p.forwarded(&msg(|b| fe::parse(b, "", "select 1", &[])), &[1])
        .expect("parse");
    assert_eq!(
        p.on_backend(&BackendEvent::BindComplete),
        Err(PipelineError::Unexpected {
            got: "BindComplete",
            expecting: "ParseComplete"
        })
    );
    p.denied_extended(denial(), &[2]).expect("deny");
    assert!(p.should_swallow(b'B') && p.should_swallow(b'Q') && p.should_swallow(b'd'));
    assert!(!p.should_swallow(b'S') && !p.should_swallow(b'X'));
    assert_eq!(
        p.forwarded(&msg(|b| fe::execute(b, "", 0)), &[]),
        Err(PipelineError::MustSwallow(b'E'))
    );
    assert_eq!(
        p.denied_query(denial(), &[]),
        Err(PipelineError::MustSwallow(b'Q'))
    );
    assert_eq!(
        p.forwarded_raw(b'd', &[]),
        Err(PipelineError::MustSwallow(b'd'))
    );
    p.forwarded(&sync, &[3]).expect("sync");
    assert!(!p.should_swallow(b'Q'));
    // The connection drops: everything owed is reported, nothing injected.
    p.closed();
    assert_eq!(p.take_injections(), None);
    let got: Vec<(u64, Outcome)> = p
        .take_completions()
        .into_iter()
        .map(|c| (c.tag, c.outcome))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, Outcome::NotExecuted),
            (2, Outcome::NotExecuted),
            (3, Outcome::NotExecuted)
        ]
    );
    assert!(p.is_idle());
}

#[test]
fn async_messages_and_immediate_injection() {
    let mut p = Pipeline::new(TransactionStatus::InBlock);
    // ParameterStatus and a FATAL with nothing owed are not errors.
    p.on_backend(&BackendEvent::ParameterStatus {
        name: "TimeZone".into(),
        value: "UTC".into(),
    })
    .expect("async");
    p.on_backend(&BackendEvent::ErrorResponse(ErrorResponse::new(
        Severity::Fatal,
        "57P01",
        "terminating connection due to administrator command",
    )))
    .expect("fatal");
    // Nothing owed: a denial is ready at once, with the current status.
    p.denied_query(denial(), &[9]).expect("deny");
    let mut want = BytesMut::new();
    denial().encode(&mut want);
    TransactionStatus::InBlock.encode(&mut want);
    assert_eq!(p.take_injections().as_deref(), Some(&want[..]));
    assert_eq!(
        p.take_completions(),
        vec![Completion {
            tag: 9,
            outcome: Outcome::Denied
        }]
    );
    let q = msg(|b| fe::query(b, "select 1"));
    p.forwarded(&q, &[10]).expect("query");
    p.on_backend(&BackendEvent::CommandComplete(CommandTag(
        "SELECT 1".into(),
    )))
    .expect("complete");
    let done = p.take_completions();
    assert_eq!(done[0].rows(), Some(1));
    assert_eq!(done[0].error(), None);
    assert!(!done[0].suspended());
    assert!(!p.is_idle());
}

/// Random well-formed client behaviour: units of simple queries, extended
/// batches and COPY, each played pipelined and lock-step against the
/// direct run. The audit is only checked for having every tag once.
#[test]
fn random_scripts_match_direct_server() {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    const SQL: &[&str] = &[
        "select 0",
        "select 1",
        "select 3",
        "insert 2",
        "fail",
        "deny x",
        "begin",
        "commit",
        "rollback",
        "copy out 2",
        "deferred",
        "",
    ];
    const EXT_SQL: &[&str] = &[
        "select 4",
        "insert 1",
        "fail",
        "deny y",
        "badsyntax",
        "copy out 1",
        "",
    ];
    const MULTI: &[&str] = &[
        "select 1; select 2",
        "select 1; fail; select 2",
        "begin; deny z",
        "insert 1;;",
    ];
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for round in 0..300 {
        let mut script: Vec<Cmd> = Vec::new();
        for _ in 0..rng.random_range(1..6) {
            match rng.random_range(0..6) {
                0 => script.push(Q(SQL[rng.random_range(0..SQL.len())])),
                1 => script.push(Q(MULTI[rng.random_range(0..MULTI.len())])),
                2 | 3 => {
                    for _ in 0..rng.random_range(1..3) {
                        let sql = EXT_SQL[rng.random_range(0..EXT_SQL.len())];
                        script.push(P("", sql));
                        if rng.random_bool(0.3) {
                            script.push(DS(""));
                        }
                        script.push(B("", ""));
                        if rng.random_bool(0.3) {
                            script.push(DP(""));
                        }
                        let max = if rng.random_bool(0.3) { 2 } else { 0 };
                        script.push(E("", max));
                        if rng.random_bool(0.2) {
                            script.push(H);
                        }
                    }
                    script.push(S);
                }
                4 => {
                    let extended = rng.random_bool(0.5);
                    if extended {
                        script.extend([P("", "copy in"), B("", ""), E("", 0), S]);
                    } else {
                        script.push(Q("copy in"));
                    }
                    for _ in 0..rng.random_range(0..3) {
                        script.push(Data(if rng.random_bool(0.2) { "bad" } else { "row" }));
                    }
                    script.push(if rng.random_bool(0.8) { Done } else { Fail });
                    if extended {
                        script.push(S);
                    }
                }
                _ => script.push(F),
            }
        }
        let mut wire_in = BytesMut::new();
        for c in &script {
            encode_cmd(*c, &mut wire_in);
        }
        let mut direct = FakeServer {
            input: wire_in.clone(),
            ..FakeServer::default()
        };
        direct.step();
        let chunk = rng.random_range(1..40);
        let mut piped = Proxy::new();
        piped.from_client.extend_from_slice(&wire_in);
        piped.client_loop();
        piped.server_loop(chunk);
        let mut locked = Proxy::new();
        for c in &script {
            encode_cmd(*c, &mut locked.from_client);
            locked.client_loop();
            locked.server_loop(chunk);
        }
        for (mode, p) in [("pipelined", &piped), ("lock-step", &locked)] {
            assert_eq!(
                types(&p.to_client),
                types(&direct.out),
                "round {round} {mode}: {script:?}"
            );
            assert_eq!(p.to_client, direct.out.to_vec(), "round {round} {mode}");
            assert_eq!(
                p.audit.len(),
                p.labels.len(),
                "round {round} {mode}: {script:?}"
            );
            assert!(p.pipeline.is_idle(), "round {round} {mode}: {script:?}");
        }
        assert_eq!(
            piped.audit_lines(),
            locked.audit_lines(),
            "round {round}: {script:?}"
        );
    }
}

/// An Execute refused after its Parse and Bind went through (a prepared
/// statement run again while the audit store is down): the client gets
/// ParseComplete, BindComplete, then our error, then the server's
/// ReadyForQuery for the Sync; the Describe in between is swallowed.
#[test]
fn denied_execute_after_forwarded_parse_and_bind() {
    let mut p = Pipeline::new(TransactionStatus::Idle);
    p.forwarded(&msg(|b| fe::parse(b, "s1", "select 1", &[])), &[])
        .expect("parse");
    p.forwarded(&msg(|b| fe::bind(b, "", "s1", &[])), &[])
        .expect("bind");
    assert!(!p.should_swallow(b'E'));
    p.denied_extended(denial(), &[7]).expect("deny execute");
    assert!(p.should_swallow(b'D'), "the rest of the batch is swallowed");
    p.forwarded(&msg(fe::sync), &[]).expect("sync");

    p.on_backend(&BackendEvent::ParseComplete)
        .expect("parse complete");
    assert_eq!(p.take_injections(), None, "not before the BindComplete");
    p.on_backend(&BackendEvent::BindComplete)
        .expect("bind complete");
    let mut want = BytesMut::new();
    denial().encode(&mut want);
    assert_eq!(p.take_injections().as_deref(), Some(&want[..]));
    p.on_backend(&BackendEvent::ReadyForQuery(TransactionStatus::Idle))
        .expect("ready");
    assert_eq!(p.take_injections(), None);
    assert_eq!(
        p.take_completions(),
        vec![Completion {
            tag: 7,
            outcome: Outcome::Denied
        }]
    );
    assert!(p.is_idle());
    // The session goes on.
    p.forwarded(&msg(|b| fe::query(b, "select 2")), &[8])
        .expect("next query");
}
