//! PostgreSQL front end, protocol layer (v3): codecs and state machines
//! without I/O, driven by the tokio glue.
//!
//! - [`startup`]: the client's first message (SSLRequest, GSSENCRequest,
//!   CancelRequest, StartupMessage, direct TLS).
//! - [`auth`]: login-phase messages both ways (Authentication*,
//!   ParameterStatus, BackendKeyData, ReadyForQuery; PasswordMessage and
//!   the SASL replies).
//! - [`scram`], [`md5`]: SCRAM-SHA-256 server and client, MD5 client.
//! - [`error_response`]: building and reading ErrorResponse/NoticeResponse.
//! - [`frontend`]: client → server scanner with typed views of Query,
//!   Parse, Bind, Execute, Describe, Close.
//! - [`backend`]: server → client scanner that streams results and reports
//!   the messages that end a request.
//! - [`pipeline`]: what the server still owes; places denials and reports
//!   each statement's outcome.
//! - [`error`], [`wire`]: protocol errors naming the peer; framing helpers.
//!
//! # Driving the relay
//!
//! ```no_run
//! # use bytes::BytesMut;
//! # use novas::postgres::*;
//! # fn policy(_: &str) -> bool { true }
//! # let (mut from_client, mut from_server) = (BytesMut::new(), BytesMut::new());
//! # let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
//! # let mut next_tag = 0u64;
//! let (mut fe, mut be) = (FrontendScanner::default(), BackendScanner::default());
//! let mut pipeline = Pipeline::new(TransactionStatus::Idle);
//! // Client → server, after each read into `from_client`:
//! while let Some(item) = fe.next(&mut from_client)? {
//!     if pipeline.should_swallow(item.msg_type()) { continue; } // audit: not executed
//!     match &item {
//!         FrontendItem::Message(m) => match m.kind() {
//!             FrontendKind::Parse(p) if !policy(&p.sql.to_string_lossy()) => {
//!                 pipeline.denied_parse(ErrorResponse::denied("denied by policy"), &[next_tag])?
//!             }
//!             _ => { pipeline.forwarded(m, &[next_tag])?; to_server.extend_from_slice(m.raw()) }
//!         },
//!         FrontendItem::Raw { msg_type, bytes, first, .. } => {
//!             if *first { pipeline.forwarded_raw(*msg_type, &[])? }
//!             to_server.extend_from_slice(bytes)
//!         }
//!     }
//!     next_tag += 1;
//! }
//! // Server → client, after each read into `from_server`:
//! while let Some(item) = be.next(&mut from_server)? {
//!     match item {
//!         BackendItem::Forward(b) => to_client.extend_from_slice(&b),
//!         BackendItem::Event(ev) => pipeline.on_backend(&ev)?,
//!     }
//!     if be.at_boundary() {
//!         if let Some(b) = pipeline.take_injections() { to_client.extend_from_slice(&b) }
//!     }
//!     for done in pipeline.take_completions() { /* audit(done.tag, done.outcome) */ }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Both loops share the one `Pipeline` and the client writer; run them in
//! one task (`select!` over the two reads) so a denial recorded by the
//! first loop is written by whichever loop next sees a message boundary
//! (after recording a denial, also check `take_injections` if
//! `be.at_boundary()`).

pub mod auth;
pub mod backend;
pub mod cancel;
pub mod error;
pub mod error_response;
pub mod frontend;
pub mod md5;
pub mod pipeline;
pub mod relay;
#[doc(hidden)]
pub mod robustness;
pub mod scram;
pub mod session;
pub mod startup;
pub mod upstream;
pub mod wire;

pub use auth::{
    AuthReply, Authentication, LoginMessage, PasswordMessage, SaslInitialResponse, SaslResponse,
};
pub use backend::{
    BackendEvent, BackendItem, BackendScanner, CommandTag, TransactionStatus,
    DEFAULT_MAX_PARSED_LEN,
};
pub use error::{MessageName, Peer, ProtocolError};
pub use error_response::{sqlstate, ErrorResponse, Severity};
pub use frontend::{
    Bind, Execute, FrontendItem, FrontendKind, FrontendMessage, FrontendScanner, Parse, Query,
    Target, TargetKind, DEFAULT_MAX_MESSAGE_LEN,
};
pub use md5::md5_password;
pub use pipeline::{Completion, Outcome, Pipeline, PipelineError};
pub use scram::{
    scram_verifier, ScramClient, ScramError, ScramServer, ScramVerifier, SCRAM_SHA_256,
};
pub use startup::{CancelKey, ProtocolVersion, StartupError, StartupMessage, StartupRequest};
pub use wire::PgString;
