//! The command phase with I/O: the client's and the database's bytes run
//! through one [`CommandPhase`] in one task, every command past the
//! [`Gate`] before it is forwarded, every audited statement recorded once
//! its answer is complete. Rows are never held: each read from the
//! database is written to the client before the next one.

use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{
    caps::Capabilities,
    command::{com, Command},
    gate::{outcomes, Gate, Stmt, Verdict},
    packet::{decode_packet, packet_bytes, PacketError, DEFAULT_MAX_PACKET},
    relay::{ClientAction, CommandPhase, RelayError, ServerAction, Turn},
    reply::{ErrPacket, OkPacket, ERR_HEADER, OK_HEADER},
    response::{Expect, Summary, MAX_PARSED_REPLY},
};
use crate::{
    access::Policy,
    audit::{Auditor, Decision, EventKind},
    dac::End,
    dac::SessionAudit,
};

/// Reads are at most about this large; results stream in such pieces.
const READ_CHUNK: usize = 64 * 1024;

/// Sent upstream for read-only policies, right after login and after
/// every COM_RESET_CONNECTION (which resets it): the server then refuses
/// writes too, behind the statement classifier.
pub const READ_ONLY_SQL: &str = "SET SESSION TRANSACTION READ ONLY";

/// Which side the relay waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Client,
    Server,
}

/// A forwarded command whose answer is awaited.
struct Pending {
    stmts: Vec<Stmt>,
    started: Instant,
    reset: bool,
}

pub struct Proxy<'a> {
    gate: Gate<'a>,
    policy: &'a Policy,
    auditor: &'a Auditor,
    audit: &'a SessionAudit,
    caps: Capabilities,
    pending: Option<Pending>,
}

impl<'a> Proxy<'a> {
    /// `caps`: the capabilities in force with the client (the format ones
    /// are the same upstream); `status`: the upstream login's status flags.
    pub fn new(
        policy: &'a Policy,
        auditor: &'a Auditor,
        audit: &'a SessionAudit,
        caps: Capabilities,
        status: u16,
    ) -> Self {
        let mut gate = Gate::new(policy);
        gate.observe_status(status);
        Self {
            gate,
            policy,
            auditor,
            audit,
            caps,
            pending: None,
        }
    }

    /// Runs until either side closes or breaks the protocol. `from_client`
    /// and `from_server` hold bytes read during the logins.
    pub async fn run<C, S>(
        mut self,
        client: &mut C,
        server: &mut S,
        mut from_client: BytesMut,
        mut from_server: BytesMut,
    ) -> End
    where
        C: AsyncRead + AsyncWrite + Unpin,
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut phase = CommandPhase::new(self.caps, DEFAULT_MAX_PACKET);
        let end = loop {
            let want = match self
                .drive(
                    &mut phase,
                    client,
                    server,
                    &mut from_client,
                    &mut from_server,
                )
                .await
            {
                Ok(w) => w,
                Err(end) => break end,
            };
            if let Err(e) = client.flush().await {
                break End::ClientError(e.to_string());
            }
            if let Err(e) = server.flush().await {
                break End::ServerError(e.to_string());
            }
            reserve(&mut from_client);
            reserve(&mut from_server);
            // The side not due is still read a little, to notice a close.
            let read_client = want == Want::Client || from_client.len() < READ_CHUNK;
            let read_server = want == Want::Server || from_server.len() < READ_CHUNK;
            tokio::select! {
                r = client.read_buf(&mut from_client), if read_client => match r {
                    Ok(0) => break End::ClientClosed,
                    Ok(_) => {}
                    Err(e) => break End::ClientError(e.to_string()),
                },
                r = server.read_buf(&mut from_server), if read_server => match r {
                    Ok(0) => {
                        // A server closing an idle session may say why
                        // first; whole packets pass through.
                        if want == Want::Client {
                            if let Ok(ServerAction::Forward(n)) = phase.server_bytes(&from_server) {
                                let _ = client.write_all(&from_server[..n]).await;
                                let _ = client.flush().await;
                            }
                        }
                        break End::ServerClosed;
                    }
                    Ok(_) => {}
                    Err(e) => break End::ServerError(e.to_string()),
                },
            }
        };
        if let Some(p) = self.pending.take() {
            let why = "the connection ended before the answer was complete";
            for s in &p.stmts {
                self.emit(s, Decision::Allow, Some(&p), None, Some(why.into()));
            }
        }
        let _ = server.shutdown().await;
        let _ = client.shutdown().await;
        end
    }

    /// Runs the state machine over the buffered bytes until it needs more.
    async fn drive<C, S>(
        &mut self,
        phase: &mut CommandPhase,
        client: &mut C,
        server: &mut S,
        cbuf: &mut BytesMut,
        sbuf: &mut BytesMut,
    ) -> Result<Want, End>
    where
        C: AsyncWrite + Unpin,
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let to_client = |e: std::io::Error| End::ClientError(e.to_string());
        let to_server = |e: std::io::Error| End::ServerError(e.to_string());
        loop {
            match phase.turn() {
                Turn::Closed => return Err(End::ClientClosed),
                Turn::Decide => {
                    return Err(End::ClientError("command left undecided".into()));
                }
                Turn::Client => match phase.client_bytes(cbuf) {
                    Err(e) => {
                        let err = client_error_packet(&e);
                        let _ = client.write_all(&err.to_packet(1)).await;
                        let _ = client.flush().await;
                        return Err(End::ClientError(e.to_string()));
                    }
                    Ok(ClientAction::NeedMore) => return Ok(Want::Client),
                    Ok(ClientAction::Command {
                        command,
                        len,
                        statement,
                    }) => {
                        let auditor = self.auditor;
                        let verdict = self.gate.decide(&command, statement.as_deref(), || {
                            auditor.check().err().map(|e| e.to_string())
                        });
                        match verdict {
                            Verdict::Allow(stmts) => {
                                let expect =
                                    phase.allow().map_err(|e| End::ClientError(e.to_string()))?;
                                server.write_all(&cbuf[..len]).await.map_err(to_server)?;
                                cbuf.advance(len);
                                let pending = Pending {
                                    stmts,
                                    started: Instant::now(),
                                    reset: command == Command::ResetConnection,
                                };
                                if expect == Expect::Nothing {
                                    self.finish(pending, &Summary::default());
                                } else {
                                    self.pending = Some(pending);
                                }
                            }
                            Verdict::Refuse { err, reason, audit } => {
                                tracing::info!(command = command.name(), %reason, "command refused");
                                phase
                                    .refuse(err)
                                    .map_err(|e| End::ClientError(e.to_string()))?;
                                cbuf.advance(len);
                                for s in &audit {
                                    self.emit(s, Decision::Deny, None, None, Some(reason.clone()));
                                }
                            }
                        }
                    }
                    Ok(ClientAction::Forward(n)) => {
                        server.write_all(&cbuf[..n]).await.map_err(to_server)?;
                        cbuf.advance(n);
                    }
                    Ok(ClientAction::Discard(n)) => cbuf.advance(n),
                    Ok(ClientAction::Reply(b)) => client.write_all(&b).await.map_err(to_client)?,
                },
                Turn::Server => match phase.server_bytes(sbuf) {
                    Err(e) => return Err(End::ServerError(e.to_string())),
                    Ok(ServerAction::NeedMore) => return Ok(Want::Server),
                    Ok(ServerAction::Forward(n)) => {
                        client.write_all(&sbuf[..n]).await.map_err(to_client)?;
                        sbuf.advance(n);
                    }
                    Ok(ServerAction::Done { forward, summary }) => {
                        client
                            .write_all(&sbuf[..forward])
                            .await
                            .map_err(to_client)?;
                        sbuf.advance(forward);
                        self.gate.observe_status(summary.status);
                        let reset = match self.pending.take() {
                            Some(p) => {
                                let reset = p.reset;
                                self.finish(p, &summary);
                                reset
                            }
                            None => false,
                        };
                        // COM_RESET_CONNECTION also reset the read-only guard.
                        if reset && summary.error.is_none() && self.policy.read_only {
                            read_only_upstream(server, sbuf, self.caps)
                                .await
                                .map_err(|e| End::ServerError(e.to_string()))?;
                        }
                    }
                },
            }
        }
    }

    fn finish(&self, p: Pending, summary: &Summary) {
        for (s, (rows, error)) in p.stmts.iter().zip(outcomes(&p.stmts, summary)) {
            self.emit(s, Decision::Allow, Some(&p), rows, error);
        }
    }

    fn emit(
        &self,
        s: &Stmt,
        decision: Decision,
        pending: Option<&Pending>,
        rows: Option<u64>,
        error: Option<String>,
    ) {
        self.audit.emit(EventKind::Statement {
            text: s.text.to_string(),
            kind: s.kind.to_string(),
            decision,
            policy: self.policy.name.clone(),
            duration_us: pending.map(|p| p.started.elapsed().as_micros() as u64),
            rows,
            error,
        });
    }
}

/// The ERR a client gets before NOVAS closes a session whose bytes it
/// cannot follow.
fn client_error_packet(e: &RelayError) -> ErrPacket {
    match e {
        RelayError::Packet(PacketError::TooLarge { .. }) => ErrPacket::packet_too_large(),
        RelayError::Packet(PacketError::Sequence { .. }) | RelayError::CommandSequence(_) => {
            ErrPacket::new(1156, "08S01", "Got packets out of order")
        }
        other => ErrPacket::new(
            1835,
            "08S01",
            format!("Malformed communication packet: {other}"),
        ),
    }
}

/// Why [`read_only_upstream`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadOnlyError {
    #[error("the database refused `{READ_ONLY_SQL}`: {0}")]
    Refused(ErrPacket),
    #[error("unexpected answer to `{READ_ONLY_SQL}`")]
    Unexpected,
    #[error(transparent)]
    Packet(#[from] PacketError),
    #[error("connection to the database failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Makes the upstream session read-only ([`READ_ONLY_SQL`]) between
/// commands; returns the OK's status flags. `buf` holds bytes already
/// read from `server`.
pub async fn read_only_upstream<S>(
    server: &mut S,
    buf: &mut BytesMut,
    caps: Capabilities,
) -> Result<u16, ReadOnlyError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut payload = vec![com::QUERY];
    payload.extend_from_slice(READ_ONLY_SQL.as_bytes());
    server.write_all(&packet_bytes(0, &payload)).await?;
    server.flush().await?;
    loop {
        if let Some(p) = decode_packet(buf, MAX_PARSED_REPLY)? {
            return match p.payload.first() {
                Some(&OK_HEADER) => OkPacket::decode(&p.payload, caps)
                    .map(|ok| ok.status)
                    .map_err(|_| ReadOnlyError::Unexpected),
                Some(&ERR_HEADER) => Err(ErrPacket::decode(&p.payload)
                    .map(ReadOnlyError::Refused)
                    .unwrap_or(ReadOnlyError::Unexpected)),
                _ => Err(ReadOnlyError::Unexpected),
            };
        }
        reserve(buf);
        if server.read_buf(buf).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the database closed the connection",
            )
            .into());
        }
    }
}

fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use tokio::io::DuplexStream;

    use super::*;
    use crate::{
        access::Policies,
        audit::{AuditQuery, AuditorConfig, EventType},
        mysql::{
            caps::status,
            command::com,
            packet::{decode_packet, put_packet},
        },
        registry::Selector,
        resources::Resource,
        store::test_util::sqlite_store,
    };

    const POLICY: &str = r#"
policies:
  - name: ro
    users: [bob]
    resources: [my]
    read_only: true
"#;

    fn caps() -> Capabilities {
        Capabilities::PROTOCOL_41
            | Capabilities::SECURE_CONNECTION
            | Capabilities::PLUGIN_AUTH
            | Capabilities::TRANSACTIONS
            | Capabilities::MULTI_RESULTS
            | Capabilities::DEPRECATE_EOF
    }

    fn ok(seq: u8, affected: u64) -> Bytes {
        OkPacket {
            header: OK_HEADER,
            affected_rows: affected,
            status: status::AUTOCOMMIT,
            ..OkPacket::default()
        }
        .to_packet(caps(), seq)
    }

    async fn packet(io: &mut DuplexStream, buf: &mut BytesMut) -> Option<Bytes> {
        loop {
            if let Some(p) = decode_packet(buf, 1 << 20).expect("framing") {
                return Some(p.payload);
            }
            if io.read_buf(buf).await.expect("read") == 0 {
                return None;
            }
        }
    }

    /// A database that answers every command with OK (affected rows 1)
    /// and records what it got.
    async fn fake_server(mut io: DuplexStream) -> Vec<Vec<u8>> {
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        while let Some(p) = packet(&mut io, &mut buf).await {
            got.push(p.to_vec());
            if p.first() == Some(&com::QUIT) {
                break;
            }
            io.write_all(&ok(1, 1)).await.expect("answer");
        }
        got
    }

    fn command(code: u8, body: &[u8]) -> Bytes {
        let mut payload = vec![code];
        payload.extend_from_slice(body);
        let mut out = BytesMut::new();
        put_packet(&mut out, 0, &payload);
        out.freeze()
    }

    #[tokio::test]
    async fn read_only_session_in_memory() {
        let (store, dir) = sqlite_store().await;
        let cfg = AuditorConfig {
            linger: Duration::from_millis(5),
            ..AuditorConfig::new("n1", dir.path())
        };
        let auditor = crate::audit::Auditor::start(store.clone(), cfg).await;
        let policies = Policies::parse(POLICY, "p.yaml").expect("policies");
        let policy = policies.iter().next().expect("policy").clone();
        let res = Resource {
            name: "my".into(),
            kind: tunnel_proto::StreamKind::Mysql,
            target: "db:3306".into(),
            listen_port: 0,
            selector: Selector {
                name: None,
                tags: Default::default(),
            },
            database: None,
            accounts: vec![],
        };
        let mut audit =
            SessionAudit::new(&auditor, "s1", &res, "127.0.0.1:1".parse().expect("addr"));
        audit.user = Some("bob".into());

        let (mut client, mut proxy_client) = tokio::io::duplex(1 << 16);
        let (mut proxy_server, server) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(fake_server(server));
        let driver = async {
            let proxy = Proxy::new(&policy, &auditor, &audit, caps(), status::AUTOCOMMIT);
            proxy
                .run(
                    &mut proxy_client,
                    &mut proxy_server,
                    BytesMut::new(),
                    BytesMut::new(),
                )
                .await
        };
        let talk = async {
            let mut buf = BytesMut::new();
            let mut answers = Vec::new();
            for (code, body) in [
                (com::QUERY, &b"drop table t"[..]),
                (com::QUERY, b"insert into t values (1)"),
                (com::QUERY, b"select 1"),
                (com::CHANGE_USER, b"root\0"),
                (com::RESET_CONNECTION, b""),
                (com::INIT_DB, b"other"),
            ] {
                client.write_all(&command(code, body)).await.expect("send");
                let p = packet(&mut client, &mut buf).await.expect("answer");
                answers.push(p.to_vec());
            }
            client
                .write_all(&command(com::QUIT, b""))
                .await
                .expect("quit");
            answers
        };
        let (end, answers) = tokio::join!(driver, talk);
        assert!(matches!(end, End::ClientClosed), "{end:?}");
        let codes: Vec<Option<u16>> = answers
            .iter()
            .map(|a| ErrPacket::decode(a).ok().map(|e| e.code))
            .collect();
        assert_eq!(
            codes,
            [Some(1142), Some(1142), None, Some(1227), None, None]
        );
        let denial = ErrPacket::decode(&answers[0]).expect("err");
        assert!(denial.message.contains("\"ro\""), "{}", denial.message);

        // Nothing refused reached the database; the guard came back after
        // the reset.
        let got = server.await.expect("server");
        let texts: Vec<String> = got
            .iter()
            .map(|p| String::from_utf8_lossy(&p[1..]).to_string())
            .collect();
        assert_eq!(
            texts,
            ["select 1", "", READ_ONLY_SQL, "other", ""],
            "{got:?}"
        );

        auditor.shutdown(Duration::from_secs(5)).await;
        let events = store
            .query_events(&AuditQuery {
                kind: Some(EventType::Statement),
                ..Default::default()
            })
            .await
            .expect("query");
        let mut seen: Vec<(String, String)> = events
            .iter()
            .filter_map(|e| match &e.event {
                EventKind::Statement { text, decision, .. } => {
                    Some((text.clone(), decision.to_string()))
                }
                _ => None,
            })
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            [
                ("COM_CHANGE_USER".to_string(), "deny".to_string()),
                ("USE `other`".into(), "allow".into()),
                ("drop table t".into(), "deny".into()),
                ("insert into t values (1)".into(), "deny".into()),
                ("select 1".into(), "allow".into()),
            ]
        );
    }
}
