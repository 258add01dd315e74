//! ErrorResponse and NoticeResponse: building our own (denials, login
//! failures) and reading the server's (for the audit).

use bytes::{Bytes, BytesMut};

use super::{
    error::{Peer, ProtocolError},
    wire::{self, Reader},
};

/// SQLSTATE codes NOVAS itself sends (see PostgreSQL's errcodes.txt).
pub mod sqlstate {
    /// `insufficient_privilege`: a statement refused by policy.
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    /// `invalid_password`: password or SCRAM proof did not match.
    pub const INVALID_PASSWORD: &str = "28P01";
    /// `invalid_authorization_specification`: no such user, or not allowed.
    pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";
    /// `protocol_violation`: the peer broke the wire protocol.
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    /// `feature_not_supported`: e.g. protocol 2, channel binding.
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    /// `connection_failure`: the upstream could not be reached.
    pub const CONNECTION_FAILURE: &str = "08006";
    /// `sqlclient_unable_to_establish_sqlconnection`: upstream login failed.
    pub const UNABLE_TO_CONNECT: &str = "08001";
    /// `too_many_connections`.
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    /// `admin_shutdown`: NOVAS is shutting down.
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    /// `internal_error`.
    pub const INTERNAL_ERROR: &str = "XX000";
}

/// Severity of an ErrorResponse or NoticeResponse, as PostgreSQL names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The command failed; the session goes on.
    Error,
    /// The session ends after this message.
    Fatal,
    Panic,
    Warning,
    Notice,
    Debug,
    Info,
    Log,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "ERROR",
            Self::Fatal => "FATAL",
            Self::Panic => "PANIC",
            Self::Warning => "WARNING",
            Self::Notice => "NOTICE",
            Self::Debug => "DEBUG",
            Self::Info => "INFO",
            Self::Log => "LOG",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ERROR" => Self::Error,
            "FATAL" => Self::Fatal,
            "PANIC" => Self::Panic,
            "WARNING" => Self::Warning,
            "NOTICE" => Self::Notice,
            "DEBUG" => Self::Debug,
            "INFO" => Self::Info,
            "LOG" => Self::Log,
            _ => return None,
        })
    }
}

/// Field codes of an ErrorResponse (protocol-error-fields.html).
pub mod field {
    pub const SEVERITY: u8 = b'S';
    /// Severity, never localized (PostgreSQL 9.6+).
    pub const SEVERITY_RAW: u8 = b'V';
    pub const CODE: u8 = b'C';
    pub const MESSAGE: u8 = b'M';
    pub const DETAIL: u8 = b'D';
    pub const HINT: u8 = b'H';
    pub const POSITION: u8 = b'P';
}

/// The fields of an ErrorResponse or NoticeResponse, in wire order.
///
/// Build one with [`ErrorResponse::new`] and the chained setters, or read
/// one with [`ErrorResponse::parse`]. Values from a server are decoded from
/// its `client_encoding` as UTF-8, lossily.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    fields: Vec<(u8, String)>,
}

impl ErrorResponse {
    /// Severity (both the localized and the raw field), SQLSTATE and
    /// primary message, the three fields PostgreSQL always sends.
    pub fn new(severity: Severity, code: &str, message: impl Into<String>) -> Self {
        Self {
            fields: vec![
                (field::SEVERITY, severity.as_str().to_owned()),
                (field::SEVERITY_RAW, severity.as_str().to_owned()),
                (field::CODE, code.to_owned()),
                (field::MESSAGE, message.into()),
            ],
        }
    }

    /// `ERROR 42501`: what a statement refused by policy gets.
    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(Severity::Error, sqlstate::INSUFFICIENT_PRIVILEGE, message)
    }

    /// `FATAL 08P01`: what a client that broke the protocol gets before we
    /// close.
    pub fn protocol_violation(message: impl Into<String>) -> Self {
        Self::new(Severity::Fatal, sqlstate::PROTOCOL_VIOLATION, message)
    }

    /// `FATAL 28P01 password authentication failed for user "…"`, the text
    /// PostgreSQL uses, which tells nothing about whether the user exists.
    pub fn auth_failed(user: &str) -> Self {
        Self::new(
            Severity::Fatal,
            sqlstate::INVALID_PASSWORD,
            format!("password authentication failed for user \"{user}\""),
        )
    }

    pub fn detail(self, detail: impl Into<String>) -> Self {
        self.with(field::DETAIL, detail)
    }

    pub fn hint(self, hint: impl Into<String>) -> Self {
        self.with(field::HINT, hint)
    }

    /// Sets any field (replacing an earlier value of the same code).
    /// Code 0 is the list terminator and is ignored.
    pub fn with(mut self, code: u8, value: impl Into<String>) -> Self {
        if code == 0 {
            return self;
        }
        let value = value.into();
        match self.fields.iter_mut().find(|(c, _)| *c == code) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((code, value)),
        }
        self
    }

    pub fn field(&self, code: u8) -> Option<&str> {
        self.fields
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_str())
    }

    pub fn fields(&self) -> &[(u8, String)] {
        &self.fields
    }

    /// The non-localized severity if sent, else the localized one.
    pub fn severity(&self) -> Option<&str> {
        self.field(field::SEVERITY_RAW)
            .or_else(|| self.field(field::SEVERITY))
    }

    /// True for FATAL and PANIC, after which the server closes the session.
    pub fn is_fatal(&self) -> bool {
        matches!(self.severity(), Some("FATAL" | "PANIC"))
    }

    /// SQLSTATE; empty if the sender omitted it.
    pub fn code(&self) -> &str {
        self.field(field::CODE).unwrap_or("")
    }

    pub fn message(&self) -> &str {
        self.field(field::MESSAGE).unwrap_or("")
    }

    pub fn detail_text(&self) -> Option<&str> {
        self.field(field::DETAIL)
    }

    pub fn hint_text(&self) -> Option<&str> {
        self.field(field::HINT)
    }

    /// Appends this as an ErrorResponse (`'E'`).
    pub fn encode(&self, dst: &mut BytesMut) {
        self.encode_as(dst, b'E');
    }

    /// Appends this as a NoticeResponse (`'N'`).
    pub fn encode_notice(&self, dst: &mut BytesMut) {
        self.encode_as(dst, b'N');
    }

    /// This as one ErrorResponse message.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        b.freeze()
    }

    fn encode_as(&self, dst: &mut BytesMut, msg_type: u8) {
        let at = wire::begin(dst, msg_type);
        for (code, value) in &self.fields {
            dst.extend_from_slice(&[*code]);
            wire::put_cstr(dst, value.as_bytes());
        }
        dst.extend_from_slice(&[0]);
        wire::finish(dst, at);
    }

    /// Reads the body of an ErrorResponse or NoticeResponse (`msg_type` is
    /// only used to name the message in errors).
    pub fn parse(body: &[u8], peer: Peer, msg_type: u8) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(body, peer, msg_type);
        let mut fields = Vec::new();
        loop {
            let code = r.u8()?;
            if code == 0 {
                break;
            }
            let value = String::from_utf8_lossy(r.cstr()?).into_owned();
            fields.push((code, value));
        }
        r.end()?;
        Ok(Self { fields })
    }

    /// Reads what it can of a body cut short (we keep only a bounded prefix
    /// of a huge ErrorResponse); a final field cut mid-value is kept as is.
    pub(crate) fn parse_prefix(body: &[u8]) -> Self {
        let mut fields = Vec::new();
        let mut rest = body;
        while let Some((&code, tail)) = rest.split_first() {
            if code == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            fields.push((code, String::from_utf8_lossy(&tail[..end]).into_owned()));
            rest = tail.get(end + 1..).unwrap_or(&[]);
        }
        Self { fields }
    }
}

impl std::fmt::Display for ErrorResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.severity().unwrap_or("ERROR"),
            self.code(),
            self.message()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_encode_parse() {
        let e = ErrorResponse::denied("permission denied by NOVAS policy")
            .detail("rule r1")
            .hint("ask an admin");
        let bytes = e.to_bytes();
        assert_eq!(bytes[0], b'E');
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        assert_eq!(len + 1, bytes.len());
        let back = ErrorResponse::parse(&bytes[5..], Peer::Server, b'E').expect("parse");
        assert_eq!(back, e);
        assert_eq!(back.code(), "42501");
        assert_eq!(back.severity(), Some("ERROR"));
        assert_eq!(back.detail_text(), Some("rule r1"));
        assert_eq!(back.hint_text(), Some("ask an admin"));
        assert!(!back.is_fatal());
        assert!(ErrorResponse::auth_failed("bob").is_fatal());
        assert_eq!(
            e.to_string(),
            "ERROR 42501: permission denied by NOVAS policy"
        );
    }

    #[test]
    fn parse_rejects_unterminated_and_reads_prefix() {
        let body = b"SERROR\0C42601\0Msyntax err";
        assert!(ErrorResponse::parse(body, Peer::Server, b'E').is_err());
        let p = ErrorResponse::parse_prefix(body);
        assert_eq!(p.code(), "42601");
        assert_eq!(p.message(), "syntax err");
    }
}
