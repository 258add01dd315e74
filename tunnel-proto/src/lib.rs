//! The NOVA tunnel protocol, shared by NOVAS (server) and NOVAC (agent).
//!
//! Map of the crate:
//! - [`frame`]: length-prefixed JSON frames with a hard size limit; pure, no I/O.
//! - [`control`]: the versioned preface and the control-stream messages
//!   (`Hello`, `Welcome`, `Reject`, `Ping`, `Pong`, `Goodbye`).
//! - [`stream`]: the header NOVAS writes on every per-session stream and the
//!   agent's ok/error answer.
//! - [`tags`], [`secret`]: agent tags (`Key=Value;Key=Value`) and a redacting
//!   secret type for tokens; [`secret::token_eq`] compares in constant time.
//! - [`tls`]: rustls configurations (TLS 1.3 only): server from PEM files or a
//!   generated-and-persisted certificate, client by CA file or pinned SHA-256.
//! - [`io`]: async helpers that read and write frames on any tokio stream.
//! - [`mux`]: the stream multiplexer (frames, windows, one driver task per
//!   connection; streams write to TLS themselves).
//! - [`splice`]: copies a session socket and its tunnel stream both ways.
//! - [`transport`]: the multiplexed [`transport::Tunnel`] and its TLS
//!   implementation.
//!
//! Nothing here knows about databases, users or policies.
#![forbid(unsafe_code)]

pub mod control;
pub mod frame;
pub mod io;
pub mod mux;
pub mod secret;
pub mod splice;
pub mod stream;
pub mod tags;
pub mod tls;
pub mod transport;

#[cfg(test)]
mod test_io;

pub use control::{Control, PROTO_VERSION};
pub use frame::{FrameError, MAX_FRAME_LEN};
pub use secret::Secret;
pub use stream::{KubeStream, StreamErrorCode, StreamKind, StreamOpen, StreamReply};
pub use tags::Tags;
