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
//!
//! # How the glue drives a session
//!
//! ```text
//! client ──TLS?──► ServerHandshake ──Authenticated──► UpstreamLogin ──Done──►
//!        accept()/reject() to the client ◄──────────────────────┘
//! CommandPhase::new(hs.capabilities()) then loop on turn():
//!   Client: client_bytes → Command → policy → allow() / refuse(ErrPacket)
//!   Server: server_bytes → Forward(n)… Done{summary} → audit
//! ```
//!
//! Packets NOVAS parses whole are capped ([`packet::DEFAULT_MAX_PACKET`]
//! for commands, [`response::MAX_PARSED_REPLY`] for server replies,
//! [`handshake::MAX_HANDSHAKE_PACKET`] before login); rows, parameter
//! data and LOCAL INFILE data pass through in pieces.

pub mod auth;
pub mod caps;
pub mod client_auth;
pub mod command;
pub mod handshake;
pub mod packet;
pub mod relay;
pub mod reply;
pub mod response;
pub mod server_auth;
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
