//! The command phase over byte streams: every split of the input gives
//! the same forwarded bytes and the same summary.

use bytes::BytesMut;

use super::*;
use crate::mysql::{
    caps::status,
    command::com,
    packet::{put_packet, MAX_FRAGMENT},
    reply::{EofPacket, OkPacket, EOF_HEADER},
};

fn caps(deprecate: bool) -> Capabilities {
    let c = Capabilities::PROTOCOL_41 | Capabilities::MULTI_RESULTS | Capabilities::SESSION_TRACK;
    if deprecate {
        c | Capabilities::DEPRECATE_EOF
    } else {
        c
    }
}

/// Frames payloads as consecutive packets from sequence id `seq`.
fn wire(seq: u8, payloads: &[&[u8]]) -> Vec<u8> {
    let mut b = BytesMut::new();
    let mut seq = seq;
    for p in payloads {
        seq = put_packet(&mut b, seq, p);
    }
    b.to_vec()
}

fn ok_payload(c: Capabilities, header: u8, affected: u64, st: u16) -> Vec<u8> {
    let mut b = BytesMut::new();
    OkPacket {
        header,
        affected_rows: affected,
        status: st,
        ..OkPacket::default()
    }
    .encode(c, &mut b);
    b.to_vec()
}

fn end_payload(c: Capabilities, st: u16) -> Vec<u8> {
    if c.contains(Capabilities::DEPRECATE_EOF) {
        ok_payload(c, EOF_HEADER, 0, st)
    } else {
        let mut b = BytesMut::new();
        EofPacket {
            warnings: 0,
            status: st,
        }
        .encode(&mut b);
        b.to_vec()
    }
}

const DEF: &[u8] = b"\x03def\x04shop\x05items\x05items\x02id\x02id\x0c\x3f\x00\x0b\x00\x00\x00\x03\x03\x42\x00\x00\x00";

/// A text result set: `rows` rows of one column.
fn result_set(c: Capabilities, rows: &[&[u8]], st: u16) -> Vec<Vec<u8>> {
    let mut v = vec![vec![1u8], DEF.to_vec()];
    if !c.contains(Capabilities::DEPRECATE_EOF) {
        v.push(end_payload(c, 0));
    }
    v.extend(rows.iter().map(|r| r.to_vec()));
    v.push(end_payload(c, st));
    v
}

/// Feeds `input` to the phase in `chunk`-sized reads, as the glue does;
/// returns what was forwarded and the summary.
fn relay_server(phase: &mut CommandPhase, input: &[u8], chunk: usize) -> (Vec<u8>, Summary) {
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut out = Vec::new();
    loop {
        match phase.server_bytes(&buf).expect("server bytes") {
            ServerAction::NeedMore => {
                assert!(fed < input.len(), "ran out of input before Done");
                let n = chunk.min(input.len() - fed);
                buf.extend_from_slice(&input[fed..fed + n]);
                fed += n;
            }
            ServerAction::Forward(n) => {
                assert!(n > 0);
                out.extend(buf.drain(..n));
            }
            ServerAction::Done { forward, summary } => {
                out.extend(buf.drain(..forward));
                assert!(
                    buf.is_empty() && fed == input.len(),
                    "bytes left after Done"
                );
                return (out, summary);
            }
        }
    }
}

/// Reads one command from `input`; returns it, the bytes of it to
/// forward, and what is left.
fn read_command(phase: &mut CommandPhase, input: &[u8]) -> (Command, Option<Arc<str>>, usize) {
    match phase.client_bytes(input).expect("client bytes") {
        ClientAction::Command {
            command,
            len,
            statement,
        } => (command, statement, len),
        other => panic!("expected a command, got {other:?}"),
    }
}

fn query(sql: &str) -> Vec<u8> {
    let mut p = vec![com::QUERY];
    p.extend_from_slice(sql.as_bytes());
    wire(0, &[&p])
}

#[test]
fn query_with_result_set_in_every_split() {
    for deprecate in [true, false] {
        let c = caps(deprecate);
        let rows: Vec<&[u8]> = vec![b"\x011", b"\x00", b"\xfb", b"\x03abc"];
        let payloads = result_set(c, &rows, status::AUTOCOMMIT);
        let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
        let answer = wire(1, &refs);
        for chunk in 1..=answer.len() {
            let mut phase = CommandPhase::new(c, 1 << 20);
            let q = query("select id from items");
            let (cmd, _, len) = read_command(&mut phase, &q);
            assert_eq!(cmd.sql(), Some("select id from items"));
            assert_eq!(len, q.len());
            assert_eq!(phase.turn(), Turn::Decide);
            assert_eq!(phase.allow().expect("allow"), Expect::Results);
            assert_eq!(phase.turn(), Turn::Server);
            let (out, s) = relay_server(&mut phase, &answer, chunk);
            assert_eq!(out, answer, "chunk {chunk}");
            assert_eq!((s.result_sets, s.rows, s.error), (1, 4, None));
            assert_eq!(phase.turn(), Turn::Client);
        }
    }
}

#[test]
fn multi_statement_results() {
    let c = caps(true);
    let more = status::AUTOCOMMIT | status::MORE_RESULTS_EXISTS;
    let mut payloads = result_set(c, &[b"\x011", b"\x012"], more);
    payloads.push(ok_payload(c, 0, 3, more));
    payloads.extend(result_set(c, &[b"\x013"], status::AUTOCOMMIT));
    let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
    let answer = wire(1, &refs);
    let mut phase = CommandPhase::new(c, 1 << 20);
    read_command(&mut phase, &query("select 1; update t set a=1; select 3"));
    phase.allow().expect("allow");
    let (out, s) = relay_server(&mut phase, &answer, 7);
    assert_eq!(out, answer);
    assert_eq!(
        (s.results, s.result_sets, s.rows, s.affected_rows),
        (3, 2, 3, 3)
    );
}

#[test]
fn refused_query_gets_err_and_session_goes_on() {
    let c = caps(true);
    let mut phase = CommandPhase::new(c, 1 << 20);
    let q = query("drop table items");
    read_command(&mut phase, &q);
    phase
        .refuse(ErrPacket::denied_by_policy("DROP command", "read-only"))
        .expect("refuse");
    assert_eq!(phase.turn(), Turn::Client);
    let ClientAction::Reply(reply) = phase.client_bytes(&[]).expect("reply") else {
        panic!("expected the refusal");
    };
    assert_eq!(reply[3], 1, "ERR answers packet 0 with sequence id 1");
    let err = ErrPacket::decode(&reply[4..]).expect("err");
    assert_eq!((err.code, err.sqlstate.as_str()), (1142, "42000"));
    assert!(err.message.contains("read-only"));
    // Next command.
    let (cmd, _, _) = read_command(&mut phase, &query("select 1"));
    assert_eq!(cmd.sql(), Some("select 1"));
}

#[test]
fn prepare_execute_close_track_statement_text() {
    let c = caps(false);
    let mut phase = CommandPhase::new(c, 1 << 20);
    let mut p = vec![com::STMT_PREPARE];
    p.extend_from_slice(b"select * from items where id = ?");
    read_command(&mut phase, &wire(0, &[&p]));
    assert_eq!(phase.allow().expect("allow"), Expect::Prepare);
    // PREPARE OK: id 9, 1 column, 1 param; param def, EOF, column def, EOF.
    let prep_ok: &[u8] = &[0, 9, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0];
    let eof = end_payload(c, status::AUTOCOMMIT);
    let answer = wire(1, &[prep_ok, DEF, &eof, DEF, &eof]);
    let (out, s) = relay_server(&mut phase, &answer, 5);
    assert_eq!(out, answer);
    assert_eq!(s.prepared.map(|p| p.stmt_id), Some(9));

    // COM_STMT_EXECUTE with a big parameter: decided on its head.
    let mut exec = vec![com::STMT_EXECUTE, 9, 0, 0, 0, 0, 1, 0, 0, 0];
    exec.extend(std::iter::repeat_n(7u8, 5000));
    let exec_wire = wire(0, &[&exec]);
    let (cmd, statement, len) = read_command(&mut phase, &exec_wire);
    assert_eq!(
        cmd,
        Command::StmtExecute {
            stmt_id: 9,
            flags: 0
        }
    );
    assert_eq!(
        statement.as_deref(),
        Some("select * from items where id = ?")
    );
    assert_eq!(len, 4 + 10);
    phase.allow().expect("allow");
    assert_eq!(phase.turn(), Turn::Client, "the parameters still come");
    let mut forwarded = len;
    while phase.turn() == Turn::Client {
        match phase.client_bytes(&exec_wire[forwarded..]).expect("rest") {
            ClientAction::Forward(n) => forwarded += n,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(forwarded, exec_wire.len());
    assert_eq!(phase.turn(), Turn::Server);
    let ok = ok_payload(c, 0, 0, status::AUTOCOMMIT);
    relay_server(&mut phase, &wire(1, &[&ok]), 100);

    // Close: no answer; the id is forgotten.
    read_command(&mut phase, &wire(0, &[&[com::STMT_CLOSE, 9, 0, 0, 0]]));
    assert_eq!(phase.allow().expect("allow"), Expect::Nothing);
    assert_eq!(phase.turn(), Turn::Client);
    assert!(phase.statements().is_empty());
}

#[test]
fn refused_execute_discards_its_data_then_replies() {
    let c = caps(true);
    let mut phase = CommandPhase::new(c, 1 << 20);
    let mut exec = vec![com::STMT_EXECUTE, 1, 0, 0, 0, 0, 1, 0, 0, 0];
    exec.extend(std::iter::repeat_n(1u8, MAX_FRAGMENT + 10));
    let exec_wire = wire(0, &[&exec]);
    let (_, _, len) = read_command(&mut phase, &exec_wire);
    phase
        .refuse(ErrPacket::denied_by_policy("EXECUTE", "p"))
        .expect("refuse");
    let mut at = len;
    let reply = loop {
        let end = (at + 65536).min(exec_wire.len());
        match phase.client_bytes(&exec_wire[at..end]).expect("rest") {
            ClientAction::Discard(n) => at += n,
            ClientAction::Reply(b) => break b,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(at, exec_wire.len());
    assert_eq!(reply[3], 2, "two fragments: the reply is sequence id 2");
    assert_eq!(phase.turn(), Turn::Client);
}

#[test]
fn local_infile_turns() {
    let c = caps(true);
    let mut phase = CommandPhase::new(c, 1 << 20);
    read_command(
        &mut phase,
        &query("load data local infile 'f.csv' into table t"),
    );
    phase.allow().expect("allow");
    let request = wire(1, &[b"\xfbf.csv"]);
    let ServerAction::Forward(n) = phase.server_bytes(&request).expect("request") else {
        panic!("expected a forward");
    };
    assert_eq!(n, request.len());
    assert_eq!(phase.turn(), Turn::Client);
    let big = vec![b'x'; MAX_FRAGMENT];
    let data = wire(2, &[b"1,2\n", &big, b""]);
    let mut at = 0;
    while phase.turn() == Turn::Client {
        let end = (at + 100_000).min(data.len());
        match phase.client_bytes(&data[at..end]).expect("data") {
            ClientAction::Forward(n) => at += n,
            ClientAction::NeedMore => panic!("stalled at {at}"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(at, data.len());
    // Sequence ids go on from the client's last packet.
    let ok = ok_payload(c, 0, 1, status::AUTOCOMMIT);
    let (_, s) = relay_server(&mut phase, &wire(6, &[&ok]), 3);
    assert_eq!(s.local_infile.as_deref(), Some("f.csv"));
    assert_eq!(s.affected_rows, 1);
}

#[test]
fn huge_row_streams_without_being_buffered() {
    let c = caps(true);
    let mut phase = CommandPhase::new(c, 1 << 20);
    read_command(&mut phase, &query("select big"));
    phase.allow().expect("allow");
    // One 20 MiB value: the row starts with 0xFE (8-byte length) and
    // spans two fragments.
    let value_len = 20 * 1024 * 1024;
    let mut row = vec![0xFE];
    row.extend_from_slice(&(value_len as u64).to_le_bytes());
    row.resize(row.len() + value_len, b'v');
    let end = end_payload(c, status::AUTOCOMMIT);
    let answer = wire(1, &[&[1], DEF, &row, &end]);
    // A 64 KiB read buffer: each call forwards what it was given.
    let (out, s) = relay_server(&mut phase, &answer, 64 * 1024);
    assert!(out == answer);
    assert_eq!((s.rows, s.result_sets), (1, 1));
}

#[test]
fn oversized_command_and_bad_sequence_are_errors() {
    let mut phase = CommandPhase::new(caps(true), 100);
    let q = query(&"x".repeat(200));
    assert!(matches!(
        phase.client_bytes(&q),
        Err(RelayError::Packet(PacketError::TooLarge { .. }))
    ));
    let mut phase = CommandPhase::new(caps(true), 100);
    let mut bad = query("select 1");
    bad[3] = 3;
    assert_eq!(
        phase.client_bytes(&bad).expect_err("sequence"),
        RelayError::CommandSequence(3)
    );
}

#[test]
fn change_user_cannot_be_allowed_and_quit_closes() {
    let mut phase = CommandPhase::new(caps(true), 1 << 20);
    let (cmd, _, _) = read_command(&mut phase, &wire(0, &[b"\x11bob\0"]));
    assert_eq!(
        phase.allow(),
        Err(RelayError::NotRelayable("COM_CHANGE_USER"))
    );
    let err = cmd.refusal().expect("refusal");
    phase.refuse(err).expect("refuse");
    assert!(matches!(
        phase.client_bytes(&[]),
        Ok(ClientAction::Reply(_))
    ));
    read_command(&mut phase, &wire(0, &[&[com::QUIT]]));
    assert_eq!(phase.allow().expect("allow"), Expect::Nothing);
    assert_eq!(phase.turn(), Turn::Closed);
}

#[test]
fn reset_connection_forgets_statements_and_unsolicited_err_passes() {
    let c = caps(true);
    let mut phase = CommandPhase::new(c, 1 << 20);
    read_command(&mut phase, &wire(0, &[b"\x16select 1"]));
    phase.allow().expect("allow");
    relay_server(
        &mut phase,
        &wire(1, &[&[0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]]),
        64,
    );
    assert_eq!(phase.statements().len(), 1);
    read_command(&mut phase, &wire(0, &[&[com::RESET_CONNECTION]]));
    phase.allow().expect("allow");
    relay_server(&mut phase, &wire(1, &[&ok_payload(c, 0, 0, 2)]), 64);
    assert!(phase.statements().is_empty());

    let mut b = BytesMut::new();
    ErrPacket::new(4031, "HY000", "disconnected").encode(&mut b);
    let err = wire(0, &[&b]);
    assert!(matches!(
        phase.server_bytes(&err[..5]),
        Ok(ServerAction::NeedMore)
    ));
    assert!(matches!(phase.server_bytes(&err), Ok(ServerAction::Forward(n)) if n == err.len()));
}

#[test]
fn out_of_turn_calls_are_errors() {
    let mut phase = CommandPhase::new(caps(true), 1 << 20);
    assert!(phase.allow().is_err());
    read_command(&mut phase, &query("select 1"));
    assert!(matches!(
        phase.client_bytes(&[]),
        Err(RelayError::OutOfTurn(_))
    ));
    phase.allow().expect("allow");
    assert!(matches!(
        phase.client_bytes(&[]),
        Err(RelayError::OutOfTurn(_))
    ));
}
