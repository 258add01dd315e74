//! One PostgreSQL client session, top to bottom: startup (TLS on request),
//! SCRAM-SHA-256 login as a NOVAS user, the policy check, the upstream login
//! through an agent with the resource's account, then the relay.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::BytesMut;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;

use super::{
    cancel::{CancelKeys, Upstream as CancelTarget},
    relay::Relay,
    sqlstate,
    upstream::{self, LoginRequest, UpstreamError},
    AuthReply, Authentication, CancelKey, ErrorResponse, LoginMessage, SaslInitialResponse,
    SaslResponse, ScramServer, ScramVerifier, Severity, StartupMessage, StartupRequest,
    SCRAM_SHA_256,
};
use crate::{
    access::Identity,
    audit::EventKind,
    dac::{close_event, Dac, SessionAudit},
    frontend::{FrontEnd, Incoming},
    resources::Resource,
    route::{log_route_error, route, Metered},
    sessions::Live,
    users::{self, Candidate, LoginError},
};

/// Bound on the client's startup and login: a silent or slow client is
/// dropped after this.
const CLIENT_LOGIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on the upstream login once the agent answered.
const UPSTREAM_LOGIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Login messages are small; a 1 MB "password" is refused unread.
const MAX_LOGIN_MESSAGE: usize = 16 * 1024;

type ClientIo = Either<TcpStream, tokio_rustls::server::TlsStream<TcpStream>>;

pub struct PostgresFront {
    pub dac: Arc<Dac>,
    pub tls: TlsAcceptor,
    pub cancel: CancelKeys,
}

/// A client that proved who it is.
struct LoggedIn {
    io: ClientIo,
    buf: BytesMut,
    startup: StartupMessage,
    identity: Identity,
}

enum First {
    Login(Box<LoggedIn>),
    Cancel(CancelKey),
    /// Refused; the client has been told and the audit written.
    Done,
}

impl FrontEnd for PostgresFront {
    async fn handle(self: Arc<Self>, incoming: Incoming) {
        let Incoming {
            conn,
            client,
            session_id,
            resource,
            live,
        } = incoming;
        let mut audit = SessionAudit::new(&self.dac.auditor, &session_id, &resource, client);
        let first =
            tokio::time::timeout(CLIENT_LOGIN_TIMEOUT, self.client_login(conn, &mut audit)).await;
        let login = match first {
            Err(_) => {
                tracing::info!("client did not finish its login in time; dropped");
                return;
            }
            Ok(Err(e)) => {
                tracing::info!(error = %e, "client login failed");
                return;
            }
            Ok(Ok(First::Done)) => return,
            Ok(Ok(First::Cancel(key))) => return self.forward_cancel(key, &resource).await,
            Ok(Ok(First::Login(l))) => *l,
        };
        tracing::Span::current().record("user", login.identity.user.as_str());
        live.set_user(&login.identity.user);
        self.session(login, &resource, &session_id, client, &audit, &live)
            .await;
    }
}

impl PostgresFront {
    /// Startup, TLS and SCRAM. Answers the client itself on failure.
    async fn client_login(
        &self,
        tcp: TcpStream,
        audit: &mut SessionAudit,
    ) -> std::io::Result<First> {
        let mut buf = BytesMut::with_capacity(1024);
        let mut io: ClientIo = Either::Left(tcp);
        let startup = loop {
            let req = match StartupRequest::decode(&mut buf) {
                Ok(Some(r)) => r,
                Ok(None) => {
                    if io.read_buf(&mut buf).await? == 0 {
                        return Ok(First::Done);
                    }
                    continue;
                }
                Err(e) => {
                    tracing::info!(error = %e, "bad startup packet");
                    if let Some(er) = e.client_error() {
                        let _ = io.write_all(&er.to_bytes()).await;
                    }
                    return Ok(First::Done);
                }
            };
            match req {
                StartupRequest::SslRequest => {
                    let Either::Left(tcp) = io else {
                        return refuse(io, "SSLRequest inside TLS").await;
                    };
                    // Bytes sent after SSLRequest but before the handshake
                    // would bypass TLS (CVE-2021-23214): refuse them.
                    if !buf.is_empty() {
                        return refuse(Either::Left(tcp), "data after SSLRequest").await;
                    }
                    let mut tcp = tcp;
                    tcp.write_all(b"S").await?;
                    io = Either::Right(self.tls.accept(tcp).await?);
                }
                StartupRequest::GssEncRequest => io.write_all(b"N").await?,
                StartupRequest::DirectTls => {
                    return refuse(
                        io,
                        "direct TLS is not supported; use sslnegotiation=postgres",
                    )
                    .await
                }
                StartupRequest::Cancel(key) => return Ok(First::Cancel(key)),
                StartupRequest::Startup(m) => break m,
            }
        };
        let name = startup.user().to_string();
        audit.user = Some(name.clone());
        match self.authenticate(&mut io, &mut buf, &name).await? {
            Ok(identity) => Ok(First::Login(Box::new(LoggedIn {
                io,
                buf,
                startup,
                identity,
            }))),
            Err(e) => {
                tracing::info!(user = %name, error = %e, "login refused");
                audit.login_failure(&name, e.audit_reason());
                let er = match &e {
                    LoginError::Failed(u) => ErrorResponse::auth_failed(u),
                    LoginError::Disabled(_) => ErrorResponse::new(
                        Severity::Fatal,
                        sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                        e.to_string(),
                    ),
                    LoginError::Store(_) => {
                        ErrorResponse::new(Severity::Fatal, "57P03", e.to_string())
                    }
                };
                let _ = io.write_all(&er.to_bytes()).await;
                let _ = io.shutdown().await;
                Ok(First::Done)
            }
        }
    }

    /// SCRAM-SHA-256 against the user's stored verifier; unknown users run
    /// the same exchange against a stand-in and fail at the same step.
    async fn authenticate(
        &self,
        io: &mut ClientIo,
        buf: &mut BytesMut,
        name: &str,
    ) -> std::io::Result<Result<Identity, LoginError>> {
        let cand = match self.dac.users.find(name).await {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let mut server = match &cand {
            Candidate::Known(u) => match u.scram_sha256.parse::<ScramVerifier>() {
                Ok(v) => ScramServer::new(v),
                Err(_) => {
                    tracing::warn!(user = %name, "stored SCRAM verifier unreadable");
                    ScramServer::mock(&self.dac.users.decoy_salt(name), 4096)
                }
            },
            Candidate::Unknown { .. } => ScramServer::mock(&self.dac.users.decoy_salt(name), 4096),
        };
        let mut out = BytesMut::new();
        LoginMessage::from(Authentication::Sasl {
            mechanisms: vec![SCRAM_SHA_256.into()],
        })
        .encode(&mut out);
        io.write_all(&out).await?;

        let failed = || Ok(Err(LoginError::Failed(name.to_string())));
        let Some(body) = read_auth_reply(io, buf).await? else {
            return failed();
        };
        let Ok(init) = SaslInitialResponse::parse(&body) else {
            return failed();
        };
        let Ok(first) = server.client_first(&init) else {
            return failed();
        };
        out.clear();
        LoginMessage::from(Authentication::SaslContinue(first.into())).encode(&mut out);
        io.write_all(&out).await?;
        let Some(body) = read_auth_reply(io, buf).await? else {
            return failed();
        };
        let Ok(resp) = SaslResponse::parse(&body) else {
            return failed();
        };
        let Ok(fin) = server.client_final(&resp.data) else {
            return failed();
        };
        let identity = match cand {
            Candidate::Known(u) => match users::admit(&u) {
                Ok(i) => i,
                Err(e) => return Ok(Err(e)),
            },
            Candidate::Unknown { .. } => return failed(),
        };
        out.clear();
        LoginMessage::from(Authentication::SaslFinal(fin.into())).encode(&mut out);
        LoginMessage::from(Authentication::Ok).encode(&mut out);
        io.write_all(&out).await?;
        Ok(Ok(identity))
    }

    /// Policy, agent, upstream login, then the relay until either side ends.
    async fn session(
        &self,
        mut login: LoggedIn,
        res: &Resource,
        session_id: &str,
        client: SocketAddr,
        audit: &SessionAudit,
        live: &Live,
    ) {
        let who = login.identity.clone();
        let permit = match self.dac.policies.authorize(&who, &res.name) {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(error = %e, "no policy for this user");
                audit.login_failure(&who.user, e.to_string());
                fatal(
                    &mut login.io,
                    sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                    e.to_string(),
                )
                .await;
                return;
            }
        };
        let policy = &permit.policy;
        if let Err(e) = self.dac.auditor.check() {
            fatal(&mut login.io, "57P03", format!("session refused: {e}")).await;
            return;
        }
        let Some(account) = res.account(policy.account.as_deref()) else {
            // Checked at start; only a changed file could get here.
            fatal(
                &mut login.io,
                "28000",
                format!(
                    "resource {:?} has no account for policy {:?}",
                    res.name, policy.name
                ),
            )
            .await;
            return;
        };
        let (agent, stream) = match route(session_id, res, &self.dac.registry).await {
            Ok(x) => x,
            Err(e) => {
                log_route_error(&e);
                audit.emit(EventKind::SessionClose {
                    outcome: format!("not connected: {e}"),
                    bytes_up: 0,
                    bytes_down: 0,
                    duration_ms: 0,
                    exit_status: None,
                });
                fatal(
                    &mut login.io,
                    "08001",
                    format!("cannot reach resource {:?}: {e}", res.name),
                )
                .await;
                return;
            }
        };
        tracing::Span::current().record("agent.name", agent.name.as_str());
        live.set_agent(&agent.name);
        let started = Instant::now();
        let mut upstream_io = Metered::with_bytes(stream, agent.clone(), live.bytes.clone());
        let database = database_for(&login.startup, &login.identity, res, &account.username);
        audit.emit(EventKind::SessionOpen {
            agent: Some(agent.name.clone()),
            client_addr: client.to_string(),
            account: Some(account.name.clone()),
        });
        let req = LoginRequest {
            account,
            database: &database,
            client: &login.startup,
            read_only: policy.read_only,
        };
        let up = match tokio::time::timeout(
            UPSTREAM_LOGIN_TIMEOUT,
            upstream::login(&mut upstream_io, req),
        )
        .await
        {
            Ok(Ok(u)) => u,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "upstream login failed");
                let er = upstream_error(&e);
                let _ = login.io.write_all(&er.to_bytes()).await;
                let _ = login.io.shutdown().await;
                audit.emit(close_event(
                    format!("upstream login failed: {e}"),
                    started,
                    0,
                    0,
                ));
                return;
            }
            Err(_) => {
                fatal(
                    &mut login.io,
                    "08001",
                    "the database did not complete the login in time".into(),
                )
                .await;
                audit.emit(close_event(
                    "upstream login timed out".into(),
                    started,
                    0,
                    0,
                ));
                return;
            }
        };
        let registration = up.key.clone().map(|real| {
            self.cancel.register(CancelTarget {
                resource: res.name.clone(),
                target: res.target.clone(),
                session_id: session_id.to_string(),
                agent: agent.clone(),
                key: real,
            })
        });
        let mut hello = BytesMut::new();
        for n in &up.notices {
            n.encode_notice(&mut hello);
        }
        for (name, value) in &up.params {
            LoginMessage::ParameterStatus {
                name: name.clone(),
                value: value.clone(),
            }
            .encode(&mut hello);
        }
        if let Some((key, _)) = &registration {
            LoginMessage::BackendKeyData(CancelKey::v3_0(key.0 as i32, key.1)).encode(&mut hello);
        }
        LoginMessage::ReadyForQuery(up.status).encode(&mut hello);
        if login.io.write_all(&hello).await.is_err() {
            audit.emit(close_event(
                "client left during login".into(),
                started,
                0,
                0,
            ));
            return;
        }
        tracing::info!(account = %account.name, policy = %policy.name, %database, "session open");

        let relay = Relay::new(policy, &self.dac.auditor, audit);
        let end = relay
            .run(
                login.io,
                &mut upstream_io,
                login.buf,
                up.leftover,
                up.status,
            )
            .await;
        drop(registration);
        let (up_bytes, down_bytes) = (upstream_io.sent(), upstream_io.received());
        tracing::info!(outcome = %end.outcome(), "session closed");
        audit.emit(close_event(end.outcome(), started, up_bytes, down_bytes));
    }

    /// A CancelRequest: NOVAS's key for a live session is traded for the
    /// real one and sent to the server through the same agent.
    async fn forward_cancel(&self, key: CancelKey, res: &Resource) {
        let secret = match <[u8; 4]>::try_from(key.secret.as_ref()) {
            Ok(s) => u32::from_be_bytes(s),
            Err(_) => return,
        };
        let Some(target) = self.cancel.lookup(key.pid as u32, secret) else {
            tracing::info!("cancel request with an unknown key ignored");
            return;
        };
        if target.resource != res.name {
            tracing::info!("cancel request on the wrong resource port ignored");
            return;
        }
        let header = tunnel_proto::StreamOpen {
            session_id: format!("{}-cancel", target.session_id),
            target: target.target.clone(),
            kind: tunnel_proto::StreamKind::Postgres,
            kube: None,
        };
        match crate::route::open_on(&target.agent, &header).await {
            Ok(mut stream) => {
                let mut out = BytesMut::new();
                StartupRequest::Cancel(target.key.clone()).encode(&mut out);
                let _ = stream.write_all(&out).await;
                let _ = stream.flush().await;
                // The server closes after reading it.
                let mut sink = [0u8; 16];
                let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut sink)).await;
                tracing::info!(session = %target.session_id, "cancel forwarded");
            }
            Err(e) => tracing::warn!(error = %e, "cancel could not be forwarded"),
        }
    }
}

/// libpq sends the user name as the database when none is given; that
/// means "the resource's database" here.
fn database_for(
    startup: &StartupMessage,
    who: &Identity,
    res: &Resource,
    account_user: &str,
) -> String {
    let asked = startup.get("database").filter(|d| !d.is_empty());
    match (asked, &res.database) {
        (Some(d), Some(default)) if d == who.user => default.clone(),
        (Some(d), _) => d.to_string(),
        (None, Some(default)) => default.clone(),
        (None, None) => account_user.to_string(),
    }
}

fn upstream_error(e: &UpstreamError) -> ErrorResponse {
    match e {
        // The server's own words, but never as the server's FATAL about
        // *its* user: the client should know the hop that failed.
        UpstreamError::Refused(er) => ErrorResponse::new(
            Severity::Fatal,
            er.code(),
            format!(
                "the database refused NOVAS's login for this resource: {}",
                er.message()
            ),
        ),
        other => ErrorResponse::new(Severity::Fatal, "08001", other.to_string()),
    }
}

async fn fatal<W: AsyncWrite + Unpin>(io: &mut W, code: &str, message: String) {
    let er = ErrorResponse::new(Severity::Fatal, code, message);
    let _ = io.write_all(&er.to_bytes()).await;
    let _ = io.shutdown().await;
}

async fn refuse(mut io: ClientIo, why: &str) -> std::io::Result<First> {
    tracing::info!(reason = why, "startup refused");
    let er = ErrorResponse::protocol_violation(why.to_string());
    let _ = io.write_all(&er.to_bytes()).await;
    Ok(First::Done)
}

/// Reads one `'p'` message during login, bounded in size.
async fn read_auth_reply<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
) -> std::io::Result<Option<bytes::Bytes>> {
    loop {
        if buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf[0] != b'p' || len > MAX_LOGIN_MESSAGE {
                return Ok(None);
            }
        }
        match AuthReply::decode(buf) {
            Ok(Some(AuthReply::Password(body))) => return Ok(Some(body)),
            Ok(Some(_)) | Err(_) => return Ok(None),
            Ok(None) => {}
        }
        if io.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}
