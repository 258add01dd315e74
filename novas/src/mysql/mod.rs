//! The MySQL/MariaDB client/server protocol, free of I/O: NOVAS is the
//! server to `mysql` clients and a client to the real database, and the
//! glue (sockets, TLS, policy, audit) drives these machines.
//!
//! - [`packet`]: framing (3-byte length, sequence id, 16 MiB fragments).
//! - [`wire`]: integers and strings inside packets.
//! - [`caps`]: capability and status flags; the upstream capability set.
//! - [`handshake`]: greeting, SSLRequest, HandshakeResponse41, auth switch.
//! - [`reply`]: OK, ERR, EOF packets and NOVAS's own ERRs.
//! - [`auth`]: `mysql_native_password` and `caching_sha2_password` math.
//! - [`server_auth`]: the client-facing login ([`ServerHandshake`]).
//! - [`client_auth`]: the upstream login ([`UpstreamLogin`]).
//! - [`command`]: client commands ([`Command`]).
//! - [`response`]: following one answer packet by packet ([`Response`]).
//! - [`relay`]: the command phase over raw bytes ([`CommandPhase`]).
//! - [`stmts`]: prepared statement ids → SQL.
//! - [`login`]: the client login as NOVAS runs it (both plugins).
//! - [`gate`]: per-command policy decisions and audit outcomes.
//! - [`proxy`]: the command phase with I/O, policy and audit.
//! - [`session`]: the front end: one client session top to bottom.
//! - [`sha2_cache`]: the `caching_sha2_password` fast-path cache.
//! - [`rewind`]: a connection with bytes put back (TLS right after SSLRequest).
//!
//! # How the glue drives a session
//!
//! ```text
//! // 1. Client-facing login (packets via decode_packet(buf, MAX_HANDSHAKE_PACKET)).
//! let (mut hs, greeting) = ServerHandshake::new(ServerConfig { .. });
//! write(client, greeting);
//! 'login: loop {
//!     let mut step = hs.on_packet(&read_packet(client)?);
//!     loop { step = match step {
//!         ServerStep::Read => continue 'login,
//!         ServerStep::StartTls => { client = tls_accept(client)?; continue 'login }
//!         ServerStep::LookUp { user } => hs.credentials(verifiers_of(&user)),
//!         ServerStep::Send(b) => { write(client, b); continue 'login }
//!         ServerStep::CheckPassword { user, password } => {
//!             let ok = check_argon2(&user, &password);   // + cache auth::sha2_verifier
//!             hs.password_checked(ok)
//!         }
//!         ServerStep::Failed { packet, error } => { write(client, packet); return audit(error) }
//!         ServerStep::Authenticated => break 'login,
//!     }}
//! }
//! // 2. Upstream login with the stored credentials.
//! let r = hs.response().unwrap();
//! let mut login = UpstreamLogin::new(UpstreamConfig {
//!     user, password, database: r.database.clone(), tls,
//!     client_capabilities: hs.capabilities(), charset: r.charset,
//!     max_packet: r.max_packet, attrs: r.attrs.clone() });
//! let up = loop { match login.on_packet(&read_packet(upstream)?) {
//!     Ok(LoginStep::Read) => {}
//!     Ok(LoginStep::Send(b)) => write(upstream, b),
//!     Ok(LoginStep::StartTls(ssl)) => { write(upstream, ssl); upstream = tls_connect(upstream)?;
//!                                       write(upstream, login.tls_established()?) }
//!     Ok(LoginStep::Done(up)) => break up,
//!     Err(e) => { write(client, hs.reject(&ErrPacket::upstream_failed(&e.to_string()))); return }
//! }};
//! write(client, hs.accept(up.ok.status));
//! // 3. Command phase (see relay for every action).
//! let mut phase = CommandPhase::new(hs.capabilities(), packet::DEFAULT_MAX_PACKET);
//! loop { match phase.turn() {
//!     Turn::Client => match phase.client_bytes(&cbuf)? {
//!         ClientAction::NeedMore => read_more(client, &mut cbuf)?,
//!         ClientAction::Command { command, len, statement } => {
//!             match command.refusal().or_else(|| policy(&command, statement.as_deref())) {
//!                 Some(err) => phase.refuse(err)?,            // audit "denied"
//!                 None => { phase.allow()?; write(upstream, &cbuf[..len]) }
//!             }
//!             cbuf.advance(len);
//!         }
//!         ClientAction::Forward(n) => { write(upstream, &cbuf[..n]); cbuf.advance(n) }
//!         ClientAction::Discard(n) => cbuf.advance(n),
//!         ClientAction::Reply(err) => write(client, err),
//!     },
//!     Turn::Server => match phase.server_bytes(&sbuf)? {
//!         ServerAction::NeedMore => read_more(upstream, &mut sbuf)?,
//!         ServerAction::Forward(n) => { write(client, &sbuf[..n]); sbuf.advance(n) }
//!         ServerAction::Done { forward, summary } => {
//!             write(client, &sbuf[..forward]); sbuf.advance(forward); audit(summary)
//!         }
//!     },
//!     Turn::Decide => unreachable!("allow/refuse right after Command"),
//!     Turn::Closed => break,
//! }}
//! ```
//!
//! `tests/tests/mariadb_smoke.rs` has this glue in blocking form, run
//! against MariaDB and the real `mysql` client.
//!
//! Packets NOVAS parses whole are capped ([`packet::DEFAULT_MAX_PACKET`]
//! for commands, [`response::MAX_PARSED_REPLY`] for server replies,
//! [`handshake::MAX_HANDSHAKE_PACKET`] before login); rows, parameter
//! data and LOCAL INFILE data pass through in pieces.

pub mod auth;
pub mod caps;
pub mod client_auth;
pub mod command;
pub mod gate;
pub mod handshake;
pub mod login;
pub mod packet;
pub mod proxy;
pub mod relay;
pub mod reply;
pub mod response;
pub mod rewind;
pub mod server_auth;
pub mod session;
pub mod sha2_cache;
pub mod stmts;
pub mod wire;

pub use auth::AuthPlugin;
pub use caps::Capabilities;
pub use client_auth::{LoginError, LoginStep, Upstream, UpstreamConfig, UpstreamLogin};
pub use command::Command;
pub use packet::{decode_packet, Packet, PacketError};
pub use relay::{ClientAction, CommandPhase, RelayError, ServerAction, Turn};
pub use reply::{ErrPacket, OkPacket};
pub use response::{Expect, Response, Summary};
pub use server_auth::{AuthError, ServerConfig, ServerHandshake, ServerStep, Verifiers};

#[cfg(test)]
mod random_input;
