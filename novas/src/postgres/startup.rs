//! The client's first message, which has no type byte: SSLRequest,
//! GSSENCRequest, CancelRequest or StartupMessage (and, since PostgreSQL
//! 17, a TLS ClientHello sent directly). Decoded by NOVAS as a server,
//! encoded by NOVAS as a client of the upstream.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error_response::{sqlstate, ErrorResponse, Severity};

/// Largest startup packet body (after the length word) PostgreSQL accepts
/// (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_LEN: usize = 10_000;
/// Request code of SSLRequest (1234.5679).
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// Request code of GSSENCRequest (1234.5680).
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// Request code of CancelRequest (1234.5678).
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;
/// Shortest and longest cancel secret the protocol allows (4 bytes in 3.0,
/// up to 256 in 3.2).
pub const CANCEL_SECRET_LEN: std::ops::RangeInclusive<usize> = 4..=256;
/// First byte of a TLS handshake record: a client doing "direct SSL"
/// (`sslnegotiation=direct`) starts with a ClientHello instead of an
/// SSLRequest. No valid length word starts with it (it would exceed
/// [`MAX_STARTUP_LEN`]), so the two cannot be confused.
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// Protocol version of a StartupMessage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProtocolVersion {
    pub major: u16,
    pub minor: u16,
}

impl ProtocolVersion {
    pub const V3_0: Self = Self { major: 3, minor: 0 };

    pub fn code(self) -> u32 {
        (u32::from(self.major) << 16) | u32::from(self.minor)
    }

    pub fn from_code(code: u32) -> Self {
        Self {
            major: (code >> 16) as u16,
            minor: (code & 0xffff) as u16,
        }
    }
}

impl std::fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Process id and secret that identify a session in a CancelRequest (sent
/// to the client in BackendKeyData).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CancelKey {
    pub pid: i32,
    /// 4 bytes under protocol 3.0; 4 to 256 under 3.2.
    pub secret: Bytes,
}

impl CancelKey {
    /// A protocol 3.0 key: a 32-bit secret.
    pub fn v3_0(pid: i32, secret: u32) -> Self {
        Self {
            pid,
            secret: Bytes::copy_from_slice(&secret.to_be_bytes()),
        }
    }
}

impl std::fmt::Debug for CancelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret lets anyone cancel the session's queries: keep it out of logs.
        f.debug_struct("CancelKey")
            .field("pid", &self.pid)
            .field("secret", &"***")
            .finish()
    }
}

/// StartupMessage: protocol version and the `name=value` parameters
/// (`user`, `database`, `application_name`, `options`, GUCs, `_pq_.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    pub version: ProtocolVersion,
    /// In the order sent. Decoding guarantees a non-empty `user`.
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    /// Protocol 3.0 with `user` set.
    pub fn new(user: impl Into<String>) -> Self {
        Self {
            version: ProtocolVersion::V3_0,
            params: vec![("user".to_owned(), user.into())],
        }
    }

    /// Adds or replaces a parameter.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let (name, value) = (name.into(), value.into());
        match self.params.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.params.push((name, value)),
        }
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn user(&self) -> &str {
        self.get("user").unwrap_or("")
    }

    /// `database`, defaulting to the user name as PostgreSQL does.
    pub fn database(&self) -> &str {
        match self.get("database") {
            Some(db) if !db.is_empty() => db,
            _ => self.user(),
        }
    }

    /// Protocol extension options (`_pq_.*`), which a server that does not
    /// know them must list in NegotiateProtocolVersion.
    pub fn protocol_options(&self) -> impl Iterator<Item = &str> {
        self.params
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| n.starts_with("_pq_."))
    }

    /// What a server speaking protocol 3.`supported_minor` must answer
    /// before authentication, as PostgreSQL does: a NegotiateProtocolVersion
    /// if the client asked for a newer minor version or for any `_pq_.`
    /// option. Returns the newest minor version and the rejected options.
    pub fn negotiation(&self, supported_minor: u16) -> Option<(u16, Vec<String>)> {
        let options: Vec<String> = self.protocol_options().map(str::to_owned).collect();
        if self.version.minor > supported_minor || !options.is_empty() {
            Some((supported_minor.min(self.version.minor), options))
        } else {
            None
        }
    }

    /// Appends this StartupMessage.
    pub fn encode(&self, dst: &mut BytesMut) {
        let at = dst.len();
        dst.put_u32(0);
        dst.put_u32(self.version.code());
        for (name, value) in &self.params {
            super::wire::put_cstr(dst, name.as_bytes());
            super::wire::put_cstr(dst, value.as_bytes());
        }
        dst.put_u8(0);
        let len = u32::try_from(dst.len() - at).unwrap_or(u32::MAX);
        dst[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
}

/// The first message of a connection, and of a connection again after the
/// SSLRequest/GSSENCRequest exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupRequest {
    /// The client asks for TLS; answer `S` (then TLS) or `N`.
    SslRequest,
    /// The client asks for GSSAPI encryption; NOVAS answers `N`.
    GssEncRequest,
    /// The client opened a TLS handshake without an SSLRequest
    /// (PostgreSQL 17 direct SSL; ALPN must be `postgresql`). Nothing is
    /// consumed: the bytes belong to the TLS layer.
    DirectTls,
    /// Cancel the query running in the session this key identifies; the
    /// server answers nothing and closes.
    Cancel(CancelKey),
    Startup(StartupMessage),
}

impl StartupRequest {
    /// Takes the client's first message from the front of `src`.
    ///
    /// `Ok(None)`: incomplete, nothing consumed (room is reserved for the
    /// rest). `Err`: the client is not speaking protocol 3; see
    /// [`StartupError::client_error`] for what to tell it.
    pub fn decode(src: &mut BytesMut) -> Result<Option<Self>, StartupError> {
        if src.first() == Some(&TLS_HANDSHAKE_BYTE) {
            return Ok(Some(Self::DirectTls));
        }
        if src.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
        let body_len = (len as usize).wrapping_sub(4);
        if len < 8 || body_len > MAX_STARTUP_LEN {
            return Err(StartupError::InvalidLength(len));
        }
        if src.len() < len as usize {
            src.reserve(len as usize - src.len());
            return Ok(None);
        }
        let msg = parse(&src[4..len as usize])?;
        src.advance(len as usize);
        Ok(Some(msg))
    }

    /// Appends this message (all but [`StartupRequest::DirectTls`], which
    /// has no bytes of its own).
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            Self::SslRequest => {
                dst.put_u32(8);
                dst.put_u32(SSL_REQUEST_CODE);
            }
            Self::GssEncRequest => {
                dst.put_u32(8);
                dst.put_u32(GSSENC_REQUEST_CODE);
            }
            Self::DirectTls => {}
            Self::Cancel(key) => {
                dst.put_u32(12 + key.secret.len() as u32);
                dst.put_u32(CANCEL_REQUEST_CODE);
                dst.put_i32(key.pid);
                dst.put_slice(&key.secret);
            }
            Self::Startup(m) => m.encode(dst),
        }
    }
}

fn parse(body: &[u8]) -> Result<StartupRequest, StartupError> {
    let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let rest = &body[4..];
    match code {
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE if !rest.is_empty() => Err(
            StartupError::InvalidLayout("SSLRequest/GSSENCRequest carries no data"),
        ),
        SSL_REQUEST_CODE => Ok(StartupRequest::SslRequest),
        GSSENC_REQUEST_CODE => Ok(StartupRequest::GssEncRequest),
        CANCEL_REQUEST_CODE => {
            if rest.len() < 4 || !CANCEL_SECRET_LEN.contains(&(rest.len() - 4)) {
                return Err(StartupError::InvalidLayout(
                    "CancelRequest secret must be 4 to 256 bytes",
                ));
            }
            Ok(StartupRequest::Cancel(CancelKey {
                pid: i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]),
                secret: Bytes::copy_from_slice(&rest[4..]),
            }))
        }
        _ => {
            let version = ProtocolVersion::from_code(code);
            if version.major != 3 {
                return Err(StartupError::UnsupportedProtocol(version));
            }
            let params = parse_params(rest)?;
            let m = StartupMessage { version, params };
            if m.user().is_empty() {
                return Err(StartupError::MissingUser);
            }
            Ok(StartupRequest::Startup(m))
        }
    }
}

/// `name\0value\0…\0`, as PostgreSQL's ProcessStartupPacket reads it: the
/// list ends at an empty name, and that terminator must be the last byte.
fn parse_params(mut rest: &[u8]) -> Result<Vec<(String, String)>, StartupError> {
    let mut params = Vec::new();
    loop {
        let name = take_cstr(&mut rest)?;
        if name.is_empty() {
            break;
        }
        let value = take_cstr(&mut rest)?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| StartupError::NotUtf8)?;
        let value = String::from_utf8(value.to_vec()).map_err(|_| StartupError::NotUtf8)?;
        params.push((name, value));
    }
    if !rest.is_empty() {
        return Err(StartupError::InvalidLayout(
            "expected terminator as last byte",
        ));
    }
    Ok(params)
}

fn take_cstr<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], StartupError> {
    let n = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or(StartupError::InvalidLayout(
            "expected terminator as last byte",
        ))?;
    let s = &rest[..n];
    *rest = &rest[n + 1..];
    Ok(s)
}

/// Why a client's first message was refused. All are the client's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartupError {
    /// The length word is below 8 or the body above [`MAX_STARTUP_LEN`]
    /// (also what a client speaking another protocol usually looks like).
    #[error("client sent a startup packet with invalid length {0}")]
    InvalidLength(u32),
    /// Protocol major version other than 3 (2.0 from ancient clients).
    #[error("client requested unsupported frontend protocol {0}: server supports 3.0")]
    UnsupportedProtocol(ProtocolVersion),
    /// The body does not follow the layout of its request code.
    #[error("client sent an invalid startup packet layout: {0}")]
    InvalidLayout(&'static str),
    /// A parameter name or value is not UTF-8.
    #[error("client sent a startup parameter that is not valid UTF-8")]
    NotUtf8,
    /// No `user` parameter, or an empty one.
    #[error("client sent no user name in the startup packet")]
    MissingUser,
}

impl StartupError {
    /// The FATAL ErrorResponse PostgreSQL would send for this, or `None`
    /// where it closes without a word (a bad length: the peer is probably
    /// not a PostgreSQL client at all).
    pub fn client_error(&self) -> Option<ErrorResponse> {
        let (code, msg) = match self {
            Self::InvalidLength(_) => return None,
            Self::UnsupportedProtocol(v) => (
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!("unsupported frontend protocol {v}: server supports 3.0 to 3.0"),
            ),
            Self::InvalidLayout(why) => (
                sqlstate::PROTOCOL_VIOLATION,
                format!("invalid startup packet layout: {why}"),
            ),
            Self::NotUtf8 => (
                sqlstate::PROTOCOL_VIOLATION,
                "invalid startup packet: parameters must be UTF-8".to_owned(),
            ),
            Self::MissingUser => (
                sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                "no PostgreSQL user name specified in startup packet".to_owned(),
            ),
        };
        Some(ErrorResponse::new(Severity::Fatal, code, msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: u32, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u32(8 + body.len() as u32);
        b.put_u32(code);
        b.put_slice(body);
        b
    }

    #[test]
    fn round_trip_every_request() {
        let key = CancelKey::v3_0(42, 0xdead_beef);
        let cases = [
            StartupRequest::SslRequest,
            StartupRequest::GssEncRequest,
            StartupRequest::Cancel(key.clone()),
            StartupRequest::Cancel(CancelKey {
                pid: 7,
                secret: Bytes::from(vec![9u8; 32]),
            }),
            StartupRequest::Startup(
                StartupMessage::new("alice")
                    .param("database", "shop")
                    .param("application_name", "psql"),
            ),
        ];
        for req in cases {
            let mut buf = BytesMut::new();
            req.encode(&mut buf);
            let full = buf.clone();
            for cut in 0..full.len() {
                let mut part = BytesMut::from(&full[..cut]);
                assert_eq!(
                    StartupRequest::decode(&mut part),
                    Ok(None),
                    "{req:?} cut {cut}"
                );
                assert_eq!(part.len(), cut);
            }
            buf.put_slice(b"next");
            assert_eq!(StartupRequest::decode(&mut buf), Ok(Some(req)));
            assert_eq!(&buf[..], b"next");
        }
        assert_eq!(format!("{key:?}"), "CancelKey { pid: 42, secret: \"***\" }");
    }

    #[test]
    fn startup_accessors_and_negotiation() {
        let m = StartupMessage::new("bob");
        assert_eq!(m.database(), "bob");
        assert_eq!(m.negotiation(0), None);
        let m = StartupMessage {
            version: ProtocolVersion { major: 3, minor: 2 },
            ..m.param("_pq_.foo", "1").param("database", "db")
        };
        assert_eq!(m.database(), "db");
        assert_eq!(m.negotiation(0), Some((0, vec!["_pq_.foo".to_owned()])));
    }

    #[test]
    fn rejects_like_postgres() {
        let cases: Vec<(BytesMut, StartupError)> = vec![
            (
                BytesMut::from(&[0, 0, 0, 4, 0, 0, 0, 0][..]),
                StartupError::InvalidLength(4),
            ),
            (
                BytesMut::from(&[0, 0, 0x27, 0x15][..]),
                StartupError::InvalidLength(10_005),
            ),
            (
                packet(0x0002_0000, b"user\0a\0\0"),
                StartupError::UnsupportedProtocol(ProtocolVersion { major: 2, minor: 0 }),
            ),
            (
                packet(0x0004_0000, b"\0"),
                StartupError::UnsupportedProtocol(ProtocolVersion { major: 4, minor: 0 }),
            ),
            (packet(0x0003_0000, b"\0"), StartupError::MissingUser),
            (
                packet(0x0003_0000, b"user\0\0\0"),
                StartupError::MissingUser,
            ),
            (
                packet(0x0003_0000, b"user\0a\0"),
                StartupError::InvalidLayout("expected terminator as last byte"),
            ),
            (
                packet(0x0003_0000, b"user\0a\0\0x"),
                StartupError::InvalidLayout("expected terminator as last byte"),
            ),
            (
                packet(0x0003_0000, b"user\0\xff\0\0"),
                StartupError::NotUtf8,
            ),
            (
                packet(SSL_REQUEST_CODE, b"x"),
                StartupError::InvalidLayout("SSLRequest/GSSENCRequest carries no data"),
            ),
            (
                packet(CANCEL_REQUEST_CODE, &[0, 0, 0, 1, 2, 3]),
                StartupError::InvalidLayout("CancelRequest secret must be 4 to 256 bytes"),
            ),
        ];
        for (mut buf, want) in cases {
            assert_eq!(StartupRequest::decode(&mut buf), Err(want.clone()));
            if want != StartupError::InvalidLength(4) && want != StartupError::InvalidLength(10_005)
            {
                assert!(want.client_error().is_some());
            }
        }
        let e = StartupError::UnsupportedProtocol(ProtocolVersion { major: 2, minor: 0 });
        assert_eq!(
            e.client_error().map(|e| e.message().to_owned()).as_deref(),
            Some("unsupported frontend protocol 2.0: server supports 3.0 to 3.0")
        );
    }

    #[test]
    fn direct_tls_is_detected_without_consuming() {
        let mut buf = BytesMut::from(&[0x16, 3, 1, 0, 0xc8][..]);
        assert_eq!(
            StartupRequest::decode(&mut buf),
            Ok(Some(StartupRequest::DirectTls))
        );
        assert_eq!(buf.len(), 5);
    }
}
