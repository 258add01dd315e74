//! Messages of the login phase, after the StartupMessage and up to the first
//! ReadyForQuery: what a server sends ([`LoginMessage`]) and the client's
//! `'p'` replies ([`PasswordMessage`], [`SaslInitialResponse`],
//! [`SaslResponse`]). Both directions encode and decode, since NOVAS is a
//! server to psql and a client to the upstream.

use bytes::{BufMut, Bytes, BytesMut};
use tunnel_proto::Secret;

use super::{
    backend::TransactionStatus,
    error::{Peer, ProtocolError},
    error_response::ErrorResponse,
    startup::{CancelKey, CANCEL_SECRET_LEN},
    wire::{self, Reader},
};

/// Largest server message accepted during login. Every legitimate one is
/// small; a generous bound still stops an upstream from making us buffer
/// without limit.
pub const MAX_LOGIN_MESSAGE_LEN: usize = 1 << 20;
/// Largest `'p'` message accepted from a client, as PostgreSQL
/// (`PG_MAX_AUTH_TOKEN_LENGTH` plus the header).
pub const MAX_AUTH_REPLY_LEN: usize = 65_535 + wire::HEADER_LEN;

/// An Authentication (`'R'`) request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    /// AuthenticationOk (0).
    Ok,
    /// AuthenticationCleartextPassword (3).
    CleartextPassword,
    /// AuthenticationMD5Password (5).
    Md5Password { salt: [u8; 4] },
    /// AuthenticationSASL (10) with the mechanisms the server offers.
    Sasl { mechanisms: Vec<String> },
    /// AuthenticationSASLContinue (11): server-first-message.
    SaslContinue(Bytes),
    /// AuthenticationSASLFinal (12): server-final-message.
    SaslFinal(Bytes),
    /// Kerberos (2), GSS (7, 8), SSPI (9) or an unknown code: NOVAS cannot
    /// answer these.
    Unsupported(u32),
}

/// A message a server sends between the StartupMessage and the first
/// ReadyForQuery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginMessage {
    Authentication(Authentication),
    ParameterStatus {
        name: String,
        value: String,
    },
    BackendKeyData(CancelKey),
    ReadyForQuery(TransactionStatus),
    ErrorResponse(ErrorResponse),
    NoticeResponse(ErrorResponse),
    /// The server speaks an older minor version or does not know some
    /// `_pq_.` options the client asked for.
    NegotiateProtocolVersion {
        newest_minor: u32,
        unrecognized: Vec<String>,
    },
}

impl From<Authentication> for LoginMessage {
    fn from(a: Authentication) -> Self {
        Self::Authentication(a)
    }
}

impl LoginMessage {
    /// Appends this message.
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            Self::Authentication(a) => {
                let at = wire::begin(dst, b'R');
                match a {
                    Authentication::Ok => dst.put_u32(0),
                    Authentication::CleartextPassword => dst.put_u32(3),
                    Authentication::Md5Password { salt } => {
                        dst.put_u32(5);
                        dst.put_slice(salt);
                    }
                    Authentication::Sasl { mechanisms } => {
                        dst.put_u32(10);
                        for m in mechanisms {
                            wire::put_cstr(dst, m.as_bytes());
                        }
                        dst.put_u8(0);
                    }
                    Authentication::SaslContinue(data) => {
                        dst.put_u32(11);
                        dst.put_slice(data);
                    }
                    Authentication::SaslFinal(data) => {
                        dst.put_u32(12);
                        dst.put_slice(data);
                    }
                    Authentication::Unsupported(code) => dst.put_u32(*code),
                }
                wire::finish(dst, at);
            }
            Self::ParameterStatus { name, value } => {
                let at = wire::begin(dst, b'S');
                wire::put_cstr(dst, name.as_bytes());
                wire::put_cstr(dst, value.as_bytes());
                wire::finish(dst, at);
            }
            Self::BackendKeyData(key) => {
                let at = wire::begin(dst, b'K');
                dst.put_i32(key.pid);
                dst.put_slice(&key.secret);
                wire::finish(dst, at);
            }
            Self::ReadyForQuery(status) => status.encode(dst),
            Self::ErrorResponse(e) => e.encode(dst),
            Self::NoticeResponse(e) => e.encode_notice(dst),
            Self::NegotiateProtocolVersion {
                newest_minor,
                unrecognized,
            } => {
                let at = wire::begin(dst, b'v');
                dst.put_u32(*newest_minor);
                dst.put_u32(unrecognized.len() as u32);
                for o in unrecognized {
                    wire::put_cstr(dst, o.as_bytes());
                }
                wire::finish(dst, at);
            }
        }
    }

    /// Takes one message from the front of `src`. `Ok(None)`: incomplete,
    /// nothing consumed. Any message type not valid during login is an
    /// error.
    pub fn decode(src: &mut BytesMut) -> Result<Option<Self>, ProtocolError> {
        let Some((msg_type, msg)) = wire::take_message(src, Peer::Server, MAX_LOGIN_MESSAGE_LEN)?
        else {
            return Ok(None);
        };
        let mut r = Reader::new(&msg[wire::HEADER_LEN..], Peer::Server, msg_type);
        let out = match msg_type {
            b'R' => Self::Authentication(decode_authentication(&mut r, &msg)?),
            b'S' => {
                let name = String::from_utf8_lossy(r.cstr()?).into_owned();
                let value = String::from_utf8_lossy(r.cstr()?).into_owned();
                Self::ParameterStatus { name, value }
            }
            b'K' => {
                let pid = r.i32()?;
                let secret = r.rest();
                if !CANCEL_SECRET_LEN.contains(&secret.len()) {
                    return Err(r.malformed("cancel secret must be 4 to 256 bytes"));
                }
                Self::BackendKeyData(CancelKey {
                    pid,
                    secret: Bytes::copy_from_slice(secret),
                })
            }
            b'Z' => Self::ReadyForQuery(
                TransactionStatus::from_byte(r.u8()?)
                    .ok_or_else(|| r.malformed("unknown transaction status"))?,
            ),
            b'E' => Self::ErrorResponse(ErrorResponse::parse(r.rest(), Peer::Server, msg_type)?),
            b'N' => Self::NoticeResponse(ErrorResponse::parse(r.rest(), Peer::Server, msg_type)?),
            b'v' => {
                let newest_minor = r.u32()?;
                let n = r.u32()?;
                let mut unrecognized = Vec::new();
                for _ in 0..n {
                    unrecognized.push(String::from_utf8_lossy(r.cstr()?).into_owned());
                }
                Self::NegotiateProtocolVersion {
                    newest_minor,
                    unrecognized,
                }
            }
            _ => {
                return Err(ProtocolError::Unexpected {
                    peer: Peer::Server,
                    msg_type,
                    context: "during login",
                })
            }
        };
        r.end()?;
        Ok(Some(out))
    }
}

fn decode_authentication(r: &mut Reader<'_>, msg: &Bytes) -> Result<Authentication, ProtocolError> {
    Ok(match r.u32()? {
        0 => Authentication::Ok,
        3 => Authentication::CleartextPassword,
        5 => {
            let s = r.bytes(4)?;
            Authentication::Md5Password {
                salt: [s[0], s[1], s[2], s[3]],
            }
        }
        10 => {
            let mut mechanisms = Vec::new();
            loop {
                let m = r.cstr()?;
                if m.is_empty() {
                    break;
                }
                mechanisms.push(String::from_utf8_lossy(m).into_owned());
            }
            Authentication::Sasl { mechanisms }
        }
        11 => {
            let start = wire::HEADER_LEN + r.position();
            r.rest();
            Authentication::SaslContinue(msg.slice(start..))
        }
        12 => {
            let start = wire::HEADER_LEN + r.position();
            r.rest();
            Authentication::SaslFinal(msg.slice(start..))
        }
        code => {
            r.rest();
            Authentication::Unsupported(code)
        }
    })
}

/// What a client sends while the server waits for an authentication reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthReply {
    /// The body of a `'p'` message; its meaning depends on what was asked:
    /// parse it with [`PasswordMessage::parse`] after a cleartext or MD5
    /// request, [`SaslInitialResponse::parse`] after AuthenticationSASL,
    /// [`SaslResponse::parse`] after AuthenticationSASLContinue.
    Password(Bytes),
    /// The client gave up (psql does this to prompt for a password and
    /// reconnect).
    Terminate,
}

impl AuthReply {
    /// Takes the client's reply from the front of `src`. `Ok(None)`:
    /// incomplete, nothing consumed.
    pub fn decode(src: &mut BytesMut) -> Result<Option<Self>, ProtocolError> {
        let Some((msg_type, msg)) = wire::take_message(src, Peer::Client, MAX_AUTH_REPLY_LEN)?
        else {
            return Ok(None);
        };
        match msg_type {
            b'p' => Ok(Some(Self::Password(msg.slice(wire::HEADER_LEN..)))),
            b'X' => Ok(Some(Self::Terminate)),
            _ => Err(ProtocolError::Unexpected {
                peer: Peer::Client,
                msg_type,
                context: "while authenticating",
            }),
        }
    }
}

/// PasswordMessage: a cleartext password, or `md5…` for MD5 auth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordMessage {
    pub password: Secret,
}

impl PasswordMessage {
    pub fn new(password: impl Into<String>) -> Self {
        Self {
            password: Secret::new(password.into()),
        }
    }

    pub fn parse(body: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(body, Peer::Client, b'p');
        let pw = r.cstr()?;
        r.end()?;
        let pw = std::str::from_utf8(pw).map_err(|_| r.malformed("password is not valid UTF-8"))?;
        Ok(Self::new(pw))
    }

    pub fn encode(&self, dst: &mut BytesMut) {
        let at = wire::begin(dst, b'p');
        wire::put_cstr(dst, self.password.expose().as_bytes());
        wire::finish(dst, at);
    }
}

/// SASLInitialResponse: the chosen mechanism and the client-first-message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslInitialResponse {
    pub mechanism: String,
    /// `None` is encoded as length -1 ("no initial response").
    pub data: Option<Bytes>,
}

impl SaslInitialResponse {
    pub fn parse(body: &Bytes) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(body, Peer::Client, b'p');
        let mechanism = r.string()?;
        let len = r.i32()?;
        let data = if len == -1 {
            None
        } else {
            let len = usize::try_from(len).map_err(|_| r.malformed("negative data length"))?;
            let start = r.position();
            r.bytes(len)?;
            Some(body.slice(start..start + len))
        };
        r.end()?;
        Ok(Self { mechanism, data })
    }

    pub fn encode(&self, dst: &mut BytesMut) {
        let at = wire::begin(dst, b'p');
        wire::put_cstr(dst, self.mechanism.as_bytes());
        match &self.data {
            Some(d) => {
                dst.put_i32(d.len() as i32);
                dst.put_slice(d);
            }
            None => dst.put_i32(-1),
        }
        wire::finish(dst, at);
    }
}

/// SASLResponse: the client-final-message (or any later SASL step).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslResponse {
    pub data: Bytes,
}

impl SaslResponse {
    pub fn parse(body: &Bytes) -> Result<Self, ProtocolError> {
        Ok(Self { data: body.clone() })
    }

    pub fn encode(&self, dst: &mut BytesMut) {
        let at = wire::begin(dst, b'p');
        dst.put_slice(&self.data);
        wire::finish(dst, at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::error_response::Severity;

    #[test]
    fn login_messages_round_trip() {
        let msgs = vec![
            LoginMessage::from(Authentication::Ok),
            Authentication::CleartextPassword.into(),
            Authentication::Md5Password { salt: [1, 2, 3, 4] }.into(),
            Authentication::Sasl {
                mechanisms: vec!["SCRAM-SHA-256".into(), "SCRAM-SHA-256-PLUS".into()],
            }
            .into(),
            Authentication::SaslContinue(Bytes::from_static(b"r=abc,s=c2FsdA==,i=4096")).into(),
            Authentication::SaslFinal(Bytes::from_static(b"v=xyz")).into(),
            Authentication::Unsupported(7).into(),
            LoginMessage::ParameterStatus {
                name: "server_version".into(),
                value: "17.2".into(),
            },
            LoginMessage::BackendKeyData(CancelKey::v3_0(1234, 5678)),
            LoginMessage::ReadyForQuery(TransactionStatus::Idle),
            LoginMessage::ErrorResponse(ErrorResponse::auth_failed("x")),
            LoginMessage::NoticeResponse(ErrorResponse::new(Severity::Notice, "00000", "hi")),
            LoginMessage::NegotiateProtocolVersion {
                newest_minor: 0,
                unrecognized: vec!["_pq_.x".into()],
            },
        ];
        let mut buf = BytesMut::new();
        for m in &msgs {
            m.encode(&mut buf);
        }
        let full = buf.clone();
        for m in &msgs {
            assert_eq!(
                LoginMessage::decode(&mut buf).as_ref(),
                Ok(&Some(m.clone()))
            );
        }
        assert!(buf.is_empty());
        // Every cut of the stream decodes a prefix of the messages, then waits.
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            let mut n = 0;
            while let Some(m) = LoginMessage::decode(&mut part).expect("valid prefix") {
                assert_eq!(m, msgs[n]);
                n += 1;
            }
        }
    }

    #[test]
    fn login_decode_rejects() {
        let mut b = BytesMut::from(&b"D\0\0\0\x04"[..]);
        assert!(matches!(
            LoginMessage::decode(&mut b),
            Err(ProtocolError::Unexpected { msg_type: b'D', .. })
        ));
        let mut b = BytesMut::from(&b"Z\0\0\0\x05X"[..]);
        assert!(LoginMessage::decode(&mut b).is_err());
        let mut b = BytesMut::from(&b"R\0\0\0\x0c\0\0\0\0xxxx"[..]);
        assert!(matches!(
            LoginMessage::decode(&mut b),
            Err(ProtocolError::Malformed { .. })
        ));
    }

    #[test]
    fn client_replies_round_trip() {
        let mut buf = BytesMut::new();
        PasswordMessage::new("s3cret").encode(&mut buf);
        SaslInitialResponse {
            mechanism: "SCRAM-SHA-256".into(),
            data: Some(Bytes::from_static(b"n,,n=,r=abc")),
        }
        .encode(&mut buf);
        SaslInitialResponse {
            mechanism: "SCRAM-SHA-256".into(),
            data: None,
        }
        .encode(&mut buf);
        SaslResponse {
            data: Bytes::from_static(b"c=biws,r=abc,p=xyz"),
        }
        .encode(&mut buf);
        buf.put_slice(b"X\0\0\0\x04");

        let body = |b: &mut BytesMut| match AuthReply::decode(b) {
            Ok(Some(AuthReply::Password(body))) => body,
            other => panic!("{other:?}"),
        };
        let pw = PasswordMessage::parse(&body(&mut buf)).expect("password");
        assert_eq!(pw.password.expose(), "s3cret");
        assert_eq!(
            format!("{pw:?}"),
            "PasswordMessage { password: Secret(***) }"
        );
        let init = SaslInitialResponse::parse(&body(&mut buf)).expect("initial");
        assert_eq!(init.data.as_deref(), Some(&b"n,,n=,r=abc"[..]));
        let init = SaslInitialResponse::parse(&body(&mut buf)).expect("initial");
        assert_eq!(init.data, None);
        let resp = SaslResponse::parse(&body(&mut buf)).expect("response");
        assert_eq!(&resp.data[..], b"c=biws,r=abc,p=xyz");
        assert_eq!(AuthReply::decode(&mut buf), Ok(Some(AuthReply::Terminate)));

        let mut q = BytesMut::from(&b"Q\0\0\0\x05\0"[..]);
        assert!(matches!(
            AuthReply::decode(&mut q),
            Err(ProtocolError::Unexpected {
                peer: Peer::Client,
                ..
            })
        ));
        assert!(PasswordMessage::parse(b"abc").is_err());
        assert!(PasswordMessage::parse(b"abc\0x").is_err());
        assert!(SaslInitialResponse::parse(&Bytes::from_static(b"M\0\0\0\0\x09ab")).is_err());
    }
}
