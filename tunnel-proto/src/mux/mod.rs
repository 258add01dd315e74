//! The stream multiplexer of a tunnel connection.
//!
//! Why not yamux: on this kind of machine most of a tunnel's cost is task
//! wake-ups, and yamux hands every frame from the stream's task to the
//! connection's task and back. Here a stream writes its frames to TLS
//! itself (under one short lock), opening a stream is a local operation
//! plus one frame (no round trip, no driver hand-off), and only reading
//! goes through the one driver task per connection.
//!
//! The protocol (see [`frame`] for the header):
//! - either side opens streams (the client odd ids, the server even ones,
//!   always increasing) with `Open`; data may follow at once, and the Open
//!   leaves with the stream's first frame (in id order), so the opener
//!   speaks first;
//! - `Data` is bounded by a per-stream window of [`WINDOW`] bytes, topped
//!   up by `Window` frames as the reader consumes; a peer that overruns it
//!   is a protocol error and ends the connection;
//! - `Fin` half-closes, `Rst` abandons a stream, `GoAway` ends the
//!   connection cleanly.
//!
//! Garbage, an unknown kind or an oversized frame ends the connection with
//! an error; nothing here panics on peer input.

pub mod frame;

mod behind;
mod conn;
mod stream;

pub use behind::flush_behind;
pub use conn::{spawn, BoxRead, BoxWrite, Conn, MuxError, OpenError, Role, MAX_STREAMS, WINDOW};
pub use stream::MuxStream;

#[cfg(test)]
mod tests;
