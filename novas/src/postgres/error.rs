//! Errors for bytes a peer sent that do not follow protocol v3, naming the
//! peer and the message so a log line says who broke what.

use std::fmt;

/// Which end of a relayed connection sent the offending bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// psql or another client talking to NOVAS.
    Client,
    /// The real PostgreSQL server behind the tunnel.
    Server,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Peer::Client => "client",
            Peer::Server => "server",
        })
    }
}

/// A message's name as the protocol documentation spells it, from its type
/// byte and the direction it travels (the same byte means different
/// messages each way: `'D'` is Describe from a client, DataRow from a server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageName {
    pub peer: Peer,
    pub msg_type: u8,
}

impl MessageName {
    pub fn new(peer: Peer, msg_type: u8) -> Self {
        Self { peer, msg_type }
    }

    /// The documented name, or `None` for a type byte the protocol does not
    /// define in this direction.
    pub fn known(self) -> Option<&'static str> {
        Some(match (self.peer, self.msg_type) {
            (Peer::Client, b'Q') => "Query",
            (Peer::Client, b'P') => "Parse",
            (Peer::Client, b'B') => "Bind",
            (Peer::Client, b'E') => "Execute",
            (Peer::Client, b'D') => "Describe",
            (Peer::Client, b'C') => "Close",
            (Peer::Client, b'S') => "Sync",
            (Peer::Client, b'H') => "Flush",
            (Peer::Client, b'X') => "Terminate",
            (Peer::Client, b'F') => "FunctionCall",
            (Peer::Client, b'p') => "PasswordMessage",
            (Peer::Client, b'd') | (Peer::Server, b'd') => "CopyData",
            (Peer::Client, b'c') | (Peer::Server, b'c') => "CopyDone",
            (Peer::Client, b'f') => "CopyFail",
            (Peer::Server, b'R') => "Authentication",
            (Peer::Server, b'K') => "BackendKeyData",
            (Peer::Server, b'S') => "ParameterStatus",
            (Peer::Server, b'Z') => "ReadyForQuery",
            (Peer::Server, b'E') => "ErrorResponse",
            (Peer::Server, b'N') => "NoticeResponse",
            (Peer::Server, b'A') => "NotificationResponse",
            (Peer::Server, b'v') => "NegotiateProtocolVersion",
            (Peer::Server, b'C') => "CommandComplete",
            (Peer::Server, b'I') => "EmptyQueryResponse",
            (Peer::Server, b'T') => "RowDescription",
            (Peer::Server, b't') => "ParameterDescription",
            (Peer::Server, b'D') => "DataRow",
            (Peer::Server, b'1') => "ParseComplete",
            (Peer::Server, b'2') => "BindComplete",
            (Peer::Server, b'3') => "CloseComplete",
            (Peer::Server, b'n') => "NoData",
            (Peer::Server, b's') => "PortalSuspended",
            (Peer::Server, b'G') => "CopyInResponse",
            (Peer::Server, b'H') => "CopyOutResponse",
            (Peer::Server, b'W') => "CopyBothResponse",
            (Peer::Server, b'V') => "FunctionCallResponse",
            _ => return None,
        })
    }
}

impl fmt::Display for MessageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.known() {
            Some(name) => f.write_str(name),
            None if self.msg_type.is_ascii_graphic() => {
                write!(f, "message type '{}'", self.msg_type as char)
            }
            None => write!(f, "message type 0x{:02x}", self.msg_type),
        }
    }
}

/// Bytes from a peer that break the framing or the format of a message.
///
/// Every variant is fatal for the connection: after it, message boundaries
/// can no longer be trusted. The glue should answer a client with
/// `ErrorResponse::protocol_violation` and close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The length field is below 4, the size of the length field itself.
    #[error("{peer} sent {} with invalid length {len}", MessageName::new(*peer, *msg_type))]
    BadLength { peer: Peer, msg_type: u8, len: u32 },
    /// A message that must be held whole in memory is larger than the
    /// configured limit.
    #[error("{peer} sent {} of {len} bytes, above the {max}-byte limit", MessageName::new(*peer, *msg_type))]
    TooLarge {
        peer: Peer,
        msg_type: u8,
        len: usize,
        max: usize,
    },
    /// The body does not follow the message's documented layout.
    #[error("{peer} sent a malformed {}: {reason}", MessageName::new(*peer, *msg_type))]
    Malformed {
        peer: Peer,
        msg_type: u8,
        reason: &'static str,
    },
    /// A message of a type that is not valid at this point of the
    /// conversation.
    #[error("{peer} sent {} {context}", MessageName::new(*peer, *msg_type))]
    Unexpected {
        peer: Peer,
        msg_type: u8,
        context: &'static str,
    },
}

impl ProtocolError {
    /// The peer whose bytes were rejected.
    pub fn peer(&self) -> Peer {
        match self {
            Self::BadLength { peer, .. }
            | Self::TooLarge { peer, .. }
            | Self::Malformed { peer, .. }
            | Self::Unexpected { peer, .. } => *peer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_peer_and_type() {
        let e = ProtocolError::Malformed {
            peer: Peer::Client,
            msg_type: b'P',
            reason: "missing NUL terminator",
        };
        assert_eq!(
            e.to_string(),
            "client sent a malformed Parse: missing NUL terminator"
        );
        let e = ProtocolError::TooLarge {
            peer: Peer::Server,
            msg_type: b'C',
            len: 10,
            max: 5,
        };
        assert_eq!(
            e.to_string(),
            "server sent CommandComplete of 10 bytes, above the 5-byte limit"
        );
        assert_eq!(
            MessageName::new(Peer::Server, 0x01).to_string(),
            "message type 0x01"
        );
        assert_eq!(
            MessageName::new(Peer::Client, b'z').to_string(),
            "message type 'z'"
        );
    }
}
