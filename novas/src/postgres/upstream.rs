//! NOVAS as a client of the real server: log in through the agent's stream
//! with the resource's stored account (SCRAM-SHA-256, md5, cleartext or
//! trust), collecting what the client must be told afterwards.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{
    md5_password, Authentication, CancelKey, ErrorResponse, LoginMessage, PasswordMessage,
    ProtocolError, SaslResponse, ScramClient, StartupMessage, StartupRequest, TransactionStatus,
    SCRAM_SHA_256,
};
use crate::resources::Account;

/// Startup parameters passed on from the client. Anything else (notably
/// `options`, which can set any GUC including `role`, and `replication`) is
/// NOVAS's to decide.
const PASSED_PARAMS: [&str; 6] = [
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "extra_float_digits",
    "intervalstyle",
];

/// Why the upstream login failed; says which side.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The server refused (bad stored credentials, no such database, …).
    #[error("the database refused the login: {0}")]
    Refused(ErrorResponse),
    #[error("the database asked for an authentication method NOVAS does not support: {0}")]
    Unsupported(String),
    #[error("the database's SCRAM exchange failed: {0}")]
    Scram(String),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("connection to the database failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A logged-in upstream session, ready for the relay.
pub struct Upstream {
    /// ParameterStatus messages to replay to the client, in order.
    pub params: Vec<(String, String)>,
    pub key: Option<CancelKey>,
    pub status: TransactionStatus,
    /// Bytes read past ReadyForQuery (normally none).
    pub leftover: BytesMut,
    /// NoticeResponses the server sent during login.
    pub notices: Vec<ErrorResponse>,
}

/// What to ask the server for.
pub struct LoginRequest<'a> {
    pub account: &'a Account,
    pub database: &'a str,
    pub client: &'a StartupMessage,
    /// Ask the server to enforce read-only itself (defence in depth behind
    /// the statement classifier).
    pub read_only: bool,
}

pub async fn login<S>(io: &mut S, req: LoginRequest<'_>) -> Result<Upstream, UpstreamError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut startup =
        StartupMessage::new(req.account.username.clone()).param("database", req.database);
    for (k, v) in &req.client.params {
        if PASSED_PARAMS.contains(&k.to_ascii_lowercase().as_str()) {
            startup = startup.param(k.clone(), v.clone());
        }
    }
    if req.read_only {
        startup = startup.param("options", "-c default_transaction_read_only=on");
    }
    let mut out = BytesMut::new();
    StartupRequest::Startup(startup).encode(&mut out);
    io.write_all(&out).await?;
    io.flush().await?;

    let password = req.account.password.expose();
    let user = &req.account.username;
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut scram: Option<ScramClient> = None;
    let mut params = Vec::new();
    let mut notices = Vec::new();
    let mut key = None;
    loop {
        let msg = loop {
            if let Some(m) = LoginMessage::decode(&mut buf)? {
                break m;
            }
            if io.read_buf(&mut buf).await? == 0 {
                return Err(UpstreamError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the database closed the connection during login",
                )));
            }
        };
        let mut out = BytesMut::new();
        match msg {
            LoginMessage::Authentication(a) => match a {
                Authentication::Ok => {}
                Authentication::CleartextPassword => {
                    PasswordMessage::new(password).encode(&mut out)
                }
                Authentication::Md5Password { salt } => {
                    PasswordMessage::new(md5_password(user, password, salt)).encode(&mut out)
                }
                Authentication::Sasl { mechanisms } => {
                    if !mechanisms.iter().any(|m| m == SCRAM_SHA_256) {
                        return Err(UpstreamError::Unsupported(mechanisms.join(", ")));
                    }
                    let mut c = ScramClient::new(password);
                    c.initial_response().encode(&mut out);
                    scram = Some(c);
                }
                Authentication::SaslContinue(data) => {
                    let c = scram
                        .as_mut()
                        .ok_or_else(|| UpstreamError::Scram("SASLContinue before SASL".into()))?;
                    let reply = c
                        .server_first(&data)
                        .map_err(|e| UpstreamError::Scram(e.to_string()))?;
                    SaslResponse { data: reply.into() }.encode(&mut out);
                }
                Authentication::SaslFinal(data) => {
                    let c = scram
                        .as_mut()
                        .ok_or_else(|| UpstreamError::Scram("SASLFinal before SASL".into()))?;
                    // Proves the server knew the password too.
                    c.server_final(&data)
                        .map_err(|e| UpstreamError::Scram(e.to_string()))?;
                }
                Authentication::Unsupported(code) => {
                    return Err(UpstreamError::Unsupported(format!(
                        "authentication request {code}"
                    )))
                }
            },
            LoginMessage::ParameterStatus { name, value } => params.push((name, value)),
            LoginMessage::BackendKeyData(k) => key = Some(k),
            LoginMessage::NoticeResponse(n) => notices.push(n),
            LoginMessage::NegotiateProtocolVersion { .. } => {}
            LoginMessage::ErrorResponse(e) => return Err(UpstreamError::Refused(e)),
            LoginMessage::ReadyForQuery(status) => {
                return Ok(Upstream {
                    params,
                    key,
                    status,
                    leftover: buf,
                    notices,
                })
            }
        }
        if !out.is_empty() {
            io.write_all(&out).await?;
            io.flush().await?;
        }
    }
}
