//! The command phase as one byte-level state machine: what to do with
//! the bytes each side sent, without I/O and without copying rows.
//!
//! The glue keeps one read buffer per side and loops on [`CommandPhase::turn`]:
//!
//! ```text
//! Client ─ client_bytes(&cbuf) ─► NeedMore         read more from the client
//!                                 Command{..}      decide: allow() or refuse(err)
//!                                 Forward(n)       write cbuf[..n] upstream, advance n
//!                                 Discard(n)       advance n (rest of a refused command)
//!                                 Reply(bytes)     write to the client (the refusal)
//! Decide ─ allow() | refuse(err)
//! Server ─ server_bytes(&sbuf) ─► NeedMore         read more from the upstream
//!                                 Forward(n)       write sbuf[..n] to the client, advance n
//!                                 Done{forward,..} same, then audit the summary
//! Closed ─ the client sent COM_QUIT: close both sides
//! ```
//!
//! Every `n` is a prefix of the buffer passed in, and the glue must
//! advance its buffer by exactly that much before the next call. Bytes
//! are forwarded as received: rows and large packets pass through in
//! whatever pieces the reads produced, so memory stays bounded by the
//! read buffer plus the largest packet NOVAS parses whole (a command, up
//! to the cap, or a small server reply).
//!
//! COM_STMT_EXECUTE and COM_STMT_SEND_LONG_DATA are decided on their
//! first bytes; their parameter data streams through afterwards (or is
//! discarded if refused, before the refusal is sent).

use std::sync::Arc;

use bytes::Bytes;

use super::{
    caps::Capabilities,
    command::{head_len, Command},
    packet::{payload_of, scan, Header, PacketError, HEADER_LEN},
    reply::ErrPacket,
    response::{Awaiting, Expect, Response, ResponseError, Summary, MAX_PARSED_REPLY},
    stmts::Statements,
    wire::DecodeError,
};

/// Whose move it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Feed client bytes to [`CommandPhase::client_bytes`].
    Client,
    /// Call [`CommandPhase::allow`] or [`CommandPhase::refuse`].
    Decide,
    /// Feed upstream bytes to [`CommandPhase::server_bytes`].
    Server,
    /// The session ended (COM_QUIT relayed).
    Closed,
}

/// What to do with client bytes.
#[derive(Debug)]
pub enum ClientAction {
    /// Nothing usable yet: read more from the client.
    NeedMore,
    /// A new command; its first `len` bytes are at the front of the
    /// buffer. Decide with [`CommandPhase::allow`] (then forward them) or
    /// [`CommandPhase::refuse`] (then drop them).
    Command {
        command: Command,
        len: usize,
        /// SQL of the prepared statement the command refers to.
        statement: Option<Arc<str>>,
    },
    /// Forward this many bytes upstream.
    Forward(usize),
    /// Drop this many bytes (the rest of a refused command).
    Discard(usize),
    /// Write these bytes to the client (NOVAS's ERR for a refusal).
    Reply(Bytes),
}

/// What to do with upstream bytes.
#[derive(Debug)]
pub enum ServerAction {
    NeedMore,
    /// Forward this many bytes to the client.
    Forward(usize),
    /// Forward `forward` bytes; the answer is complete.
    Done {
        forward: usize,
        summary: Summary,
    },
}

/// Why the session cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// Framing broke, or a command exceeds the cap (answer
    /// [`ErrPacket::packet_too_large`] and close).
    #[error(transparent)]
    Packet(#[from] PacketError),
    /// A client command that cannot be decoded.
    #[error("malformed command: {0}")]
    Command(#[from] DecodeError),
    /// The server's answer could not be followed.
    #[error(transparent)]
    Response(#[from] ResponseError),
    /// A new command did not start with sequence id 0.
    #[error("command starts with sequence id {0}, not 0")]
    CommandSequence(u8),
    /// `allow()` for a command whose answer NOVAS cannot follow; refuse it
    /// with [`Command::refusal`].
    #[error("{0} cannot be relayed")]
    NotRelayable(&'static str),
    /// The glue called something the current turn does not allow.
    #[error("command phase driven out of turn: {0}")]
    OutOfTurn(&'static str),
}

/// The rest of a packet that passes through: payload bytes left in the
/// current fragment, and whether more fragments follow.
#[derive(Debug, Clone, Copy)]
struct Pass {
    left: usize,
    continued: bool,
    last_seq: u8,
}

impl Pass {
    fn new(h: Header, already: usize) -> Self {
        Self {
            left: h.len - already,
            continued: h.continued(),
            last_seq: h.seq,
        }
    }

    /// Passes what `src` holds of the packet: (bytes taken, finished).
    fn advance(&mut self, src: &[u8]) -> Result<(usize, bool), PacketError> {
        let mut at = 0;
        loop {
            let n = self.left.min(src.len() - at);
            at += n;
            self.left -= n;
            if self.left > 0 {
                return Ok((at, false));
            }
            if !self.continued {
                return Ok((at, true));
            }
            let Some(h) = Header::parse(&src[at..]) else {
                return Ok((at, false));
            };
            let expected = self.last_seq.wrapping_add(1);
            if h.seq != expected {
                return Err(PacketError::Sequence {
                    expected,
                    got: h.seq,
                });
            }
            at += HEADER_LEN;
            *self = Self::new(h, 0);
        }
    }
}

/// What follows the rest of a command's bytes.
#[derive(Debug)]
enum After {
    Respond(Box<Response>),
    Idle,
    Closed,
    Refusal(ErrPacket),
}

#[derive(Debug)]
enum Phase {
    Idle,
    Decide {
        command: Command,
        rest: Option<Pass>,
        last_seq: u8,
    },
    CommandRest {
        pass: Pass,
        forward: bool,
        after: After,
    },
    Reply(Bytes),
    Respond(Box<Response>),
    Closed,
}

/// The command phase of one session.
#[derive(Debug)]
pub struct CommandPhase {
    caps: Capabilities,
    max_command: usize,
    phase: Phase,
    server_pass: Option<Pass>,
    client_pass: Option<Pass>,
    statements: Statements,
    /// The command being answered.
    current: Option<Command>,
}

impl CommandPhase {
    /// `caps`: the capabilities negotiated with the client (the format
    /// ones are the same upstream); `max_command`: cap for commands read
    /// whole ([`super::packet::DEFAULT_MAX_PACKET`]).
    pub fn new(caps: Capabilities, max_command: usize) -> Self {
        Self {
            caps,
            max_command,
            phase: Phase::Idle,
            server_pass: None,
            client_pass: None,
            statements: Statements::default(),
            current: None,
        }
    }

    pub fn turn(&self) -> Turn {
        match &self.phase {
            Phase::Idle | Phase::CommandRest { .. } | Phase::Reply(_) => Turn::Client,
            Phase::Decide { .. } => Turn::Decide,
            Phase::Respond(r) if r.awaiting() == Awaiting::Client => Turn::Client,
            Phase::Respond(_) => Turn::Server,
            Phase::Closed => Turn::Closed,
        }
    }

    /// The session's prepared statements.
    pub fn statements(&self) -> &Statements {
        &self.statements
    }

    /// Looks at the client's bytes (the front of its read buffer).
    pub fn client_bytes(&mut self, src: &[u8]) -> Result<ClientAction, RelayError> {
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Idle => self.new_command(src),
            Phase::Reply(bytes) => Ok(ClientAction::Reply(bytes)),
            Phase::CommandRest {
                mut pass,
                forward,
                after,
            } => {
                let (n, finished) = match pass.advance(src) {
                    Ok(r) => r,
                    Err(e) => {
                        self.phase = Phase::Closed;
                        return Err(e.into());
                    }
                };
                if finished {
                    self.phase = match after {
                        After::Respond(r) => Phase::Respond(r),
                        After::Idle => Phase::Idle,
                        After::Closed => Phase::Closed,
                        After::Refusal(err) => {
                            Phase::Reply(err.to_packet(pass.last_seq.wrapping_add(1)))
                        }
                    };
                    if n == 0 {
                        return self.client_bytes(src);
                    }
                } else {
                    self.phase = Phase::CommandRest {
                        pass,
                        forward,
                        after,
                    };
                    if n == 0 {
                        return Ok(ClientAction::NeedMore);
                    }
                }
                Ok(if forward {
                    ClientAction::Forward(n)
                } else {
                    ClientAction::Discard(n)
                })
            }
            Phase::Respond(mut r) if r.awaiting() == Awaiting::Client => {
                let result = self.infile_data(&mut r, src);
                self.phase = Phase::Respond(r);
                result
            }
            other => {
                let why = match other {
                    Phase::Decide { .. } => "allow or refuse the command first",
                    Phase::Closed => "the session is closed",
                    _ => "it is the server's turn",
                };
                self.phase = other;
                Err(RelayError::OutOfTurn(why))
            }
        }
    }

    fn new_command(&mut self, src: &[u8]) -> Result<ClientAction, RelayError> {
        let Some(h) = Header::parse(src) else {
            return Ok(ClientAction::NeedMore);
        };
        if h.seq != 0 {
            return Err(RelayError::CommandSequence(h.seq));
        }
        if h.len == 0 {
            return Err(DecodeError::Truncated("command").into());
        }
        let Some(&code) = src.get(HEADER_LEN) else {
            return Ok(ClientAction::NeedMore);
        };
        let (command, len, rest, last_seq) = match head_len(code) {
            Some(head) if head < h.len => {
                let Some(bytes) = src.get(HEADER_LEN..HEADER_LEN + head) else {
                    return Ok(ClientAction::NeedMore);
                };
                let command = Command::decode(bytes)?;
                (command, HEADER_LEN + head, Some(Pass::new(h, head)), h.seq)
            }
            _ => {
                let Some(span) = scan(src, self.max_command)? else {
                    return Ok(ClientAction::NeedMore);
                };
                let command = Command::decode(&payload_of(src, &span))?;
                (command, span.wire_len, None, span.last_seq)
            }
        };
        let statement = command.stmt_id().and_then(|id| self.statements.get(id));
        self.phase = Phase::Decide {
            command: command.clone(),
            rest,
            last_seq,
        };
        Ok(ClientAction::Command {
            command,
            len,
            statement,
        })
    }

    fn infile_data(&mut self, r: &mut Response, src: &[u8]) -> Result<ClientAction, RelayError> {
        let mut at = 0;
        loop {
            if let Some(p) = &mut self.client_pass {
                let (n, finished) = p.advance(&src[at..])?;
                at += n;
                if !finished {
                    break;
                }
                self.client_pass = None;
            }
            if r.awaiting() != Awaiting::Client {
                break;
            }
            let Some(h) = Header::parse(&src[at..]) else {
                break;
            };
            r.on_client_packet(h.len)?;
            at += HEADER_LEN;
            self.client_pass = Some(Pass::new(h, 0));
        }
        Ok(if at == 0 {
            ClientAction::NeedMore
        } else {
            ClientAction::Forward(at)
        })
    }

    /// Relay the command just returned. Returns the shape of the answer
    /// ([`Expect::Nothing`]: none comes, audit it now).
    pub fn allow(&mut self) -> Result<Expect, RelayError> {
        let expect = match &self.phase {
            Phase::Decide { command, .. } => command
                .expects()
                .ok_or(RelayError::NotRelayable(command.name()))?,
            _ => return Err(RelayError::OutOfTurn("no command to allow")),
        };
        let Phase::Decide { command, rest, .. } = std::mem::replace(&mut self.phase, Phase::Idle)
        else {
            return Err(RelayError::OutOfTurn("no command to allow"));
        };
        if let Command::StmtClose { stmt_id } = command {
            self.statements.remove(stmt_id);
        }
        let after = match expect {
            Expect::Nothing if command == Command::Quit => After::Closed,
            Expect::Nothing => After::Idle,
            e => After::Respond(Box::new(Response::new(e, self.caps))),
        };
        self.current = Some(command);
        self.server_pass = None;
        self.client_pass = None;
        self.phase = match rest {
            Some(pass) => Phase::CommandRest {
                pass,
                forward: true,
                after,
            },
            None => match after {
                After::Respond(r) => Phase::Respond(r),
                After::Closed => Phase::Closed,
                _ => Phase::Idle,
            },
        };
        Ok(expect)
    }

    /// Refuse the command just returned with `err` (a policy refusal,
    /// [`Command::refusal`]...). The client gets `err` through
    /// [`ClientAction::Reply`] once the command's bytes are consumed; a
    /// command that gets no answer (COM_STMT_CLOSE...) is dropped silently.
    /// The session stays usable.
    pub fn refuse(&mut self, err: ErrPacket) -> Result<(), RelayError> {
        let Phase::Decide {
            command,
            rest,
            last_seq,
        } = std::mem::replace(&mut self.phase, Phase::Idle)
        else {
            return Err(RelayError::OutOfTurn("no command to refuse"));
        };
        let silent = command.expects() == Some(Expect::Nothing);
        self.phase = match (rest, silent) {
            (Some(pass), true) => Phase::CommandRest {
                pass,
                forward: false,
                after: After::Idle,
            },
            (Some(pass), false) => Phase::CommandRest {
                pass,
                forward: false,
                after: After::Refusal(err),
            },
            (None, true) => Phase::Idle,
            (None, false) => Phase::Reply(err.to_packet(last_seq.wrapping_add(1))),
        };
        Ok(())
    }

    /// Looks at the upstream's bytes (the front of its read buffer).
    pub fn server_bytes(&mut self, src: &[u8]) -> Result<ServerAction, RelayError> {
        let Phase::Respond(resp) = &mut self.phase else {
            return self.unsolicited(src);
        };
        if resp.awaiting() != Awaiting::Server {
            return Err(RelayError::OutOfTurn("it is the client's turn"));
        }
        let mut at = 0;
        loop {
            if let Some(p) = &mut self.server_pass {
                let (n, finished) = p.advance(&src[at..])?;
                at += n;
                if !finished {
                    break;
                }
                self.server_pass = None;
            }
            if resp.awaiting() != Awaiting::Server {
                break;
            }
            let Some(h) = Header::parse(&src[at..]) else {
                break;
            };
            let body = &src[at + HEADER_LEN..];
            if h.len > 0 && body.is_empty() {
                break;
            }
            let first = body.first().copied().unwrap_or(0);
            if h.len == 0 || resp.wants_whole(first, h.len) {
                let Some(span) = scan(&src[at..], MAX_PARSED_REPLY)? else {
                    break;
                };
                resp.on_server_packet(&payload_of(&src[at..], &span), h.len)?;
                at += span.wire_len;
            } else {
                let head = &body[..body.len().min(h.len)];
                resp.on_server_packet(head, h.len)?;
                at += HEADER_LEN + head.len();
                self.server_pass = Some(Pass::new(h, head.len()));
            }
        }
        if resp.awaiting() != Awaiting::Nothing {
            return Ok(if at == 0 {
                ServerAction::NeedMore
            } else {
                ServerAction::Forward(at)
            });
        }
        let Phase::Respond(resp) = std::mem::replace(&mut self.phase, Phase::Idle) else {
            return Err(RelayError::OutOfTurn("answer vanished"));
        };
        let summary = resp.into_summary();
        match (self.current.take(), &summary) {
            (Some(Command::StmtPrepare { sql }), s) => {
                if let Some(p) = &s.prepared {
                    self.statements.insert(p.stmt_id, sql.into());
                }
            }
            (Some(Command::ResetConnection), s) if s.error.is_none() => self.statements.clear(),
            _ => {}
        }
        Ok(ServerAction::Done {
            forward: at,
            summary,
        })
    }

    /// Upstream bytes when no answer is due: whole packets pass through
    /// (a server that closes an idle session may say why in an ERR
    /// first, e.g. MySQL's "disconnected because of inactivity").
    fn unsolicited(&mut self, src: &[u8]) -> Result<ServerAction, RelayError> {
        let mut at = 0;
        while let Some(span) = scan(&src[at..], MAX_PARSED_REPLY)? {
            at += span.wire_len;
        }
        Ok(if at == 0 {
            ServerAction::NeedMore
        } else {
            ServerAction::Forward(at)
        })
    }
}

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;
