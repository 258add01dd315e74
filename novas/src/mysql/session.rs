//! One MySQL client session, top to bottom: the greeting, TLS on request,
//! login as a NOVAS user (`caching_sha2_password` or
//! `mysql_native_password`), the policy check, the upstream login through
//! an agent with the resource's account, then the audited relay.
//!
//! The upstream hop is plain: the agent dials the database inside its own
//! network, and NOVAS logs in with `mysql_native_password` or the
//! `caching_sha2_password` fast path (a full `caching_sha2_password`
//! authentication upstream would need TLS there, which is not done yet).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
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
    client_auth::{
        LoginError as UpstreamLoginError, LoginStep, Upstream, UpstreamConfig, UpstreamLogin,
    },
    handshake::{self, MAX_HANDSHAKE_PACKET},
    login::{ClientLogin, GREETING_PLUGIN},
    packet::{decode_packet, Packet, PacketError},
    proxy::{read_only_upstream, Proxy, ReadOnlyError},
    reply::ErrPacket,
    rewind::Rewind,
    server_auth::{AuthError, ServerConfig, ServerStep, Verifiers},
    sha2_cache::Sha2Cache,
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

/// Bound on the client's login: a silent or slow client is dropped.
const CLIENT_LOGIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on the upstream login once the agent answered.
const UPSTREAM_LOGIN_TIMEOUT: Duration = Duration::from_secs(20);

type ClientIo = Either<TcpStream, tokio_rustls::server::TlsStream<Rewind<TcpStream>>>;

/// The MySQL front end, shared by every MySQL resource.
pub struct MysqlFront {
    pub dac: Arc<Dac>,
    /// TLS for clients that ask (`--ssl`); no ALPN.
    pub tls: TlsAcceptor,
    sha2_cache: Sha2Cache,
    /// Each resource's upstream version, announced once seen.
    versions: Mutex<HashMap<String, String>>,
    next_connection_id: AtomicU32,
}

impl MysqlFront {
    pub fn new(dac: Arc<Dac>, tls: TlsAcceptor) -> Self {
        Self {
            dac,
            tls,
            sha2_cache: Sha2Cache::default(),
            versions: Mutex::new(HashMap::new()),
            next_connection_id: AtomicU32::new(1),
        }
    }
}

/// A client that proved who it is.
struct LoggedIn {
    io: ClientIo,
    buf: BytesMut,
    login: ClientLogin,
    identity: Identity,
}

/// Why the upstream login failed; says which hop.
#[derive(Debug, thiserror::Error)]
enum UpstreamError {
    #[error(transparent)]
    Login(#[from] UpstreamLoginError),
    #[error("the database sent a bad packet: {0}")]
    Packet(#[from] PacketError),
    #[error("connection to the database failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the database asked for TLS, which NOVAS does not use upstream")]
    Tls,
    #[error(transparent)]
    ReadOnly(#[from] ReadOnlyError),
}

impl FrontEnd for MysqlFront {
    async fn handle(self: Arc<Self>, incoming: Incoming) {
        let Incoming {
            conn,
            client,
            session_id,
            resource,
            live,
        } = incoming;
        let mut audit = SessionAudit::new(&self.dac.auditor, &session_id, &resource, client);
        let first = tokio::time::timeout(
            CLIENT_LOGIN_TIMEOUT,
            self.client_login(conn, &resource, &mut audit),
        )
        .await;
        let login = match first {
            Err(_) => {
                tracing::info!("client did not finish its login in time; dropped");
                return;
            }
            Ok(Err(e)) => {
                tracing::info!(error = %e, "client login failed");
                return;
            }
            Ok(Ok(None)) => return,
            Ok(Ok(Some(l))) => *l,
        };
        tracing::Span::current().record("user", login.identity.user.as_str());
        live.set_user(&login.identity.user);
        self.session(login, &resource, &session_id, client, &audit, &live)
            .await;
    }
}

impl MysqlFront {
    /// Greeting, TLS and the password proof. Answers the client itself on
    /// failure (`None`).
    async fn client_login(
        &self,
        tcp: TcpStream,
        res: &Resource,
        audit: &mut SessionAudit,
    ) -> std::io::Result<Option<Box<LoggedIn>>> {
        let server_version = self
            .versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&res.name)
            .cloned()
            .unwrap_or_else(|| handshake::DEFAULT_SERVER_VERSION.to_string());
        let (mut login, greeting) = ClientLogin::new(ServerConfig {
            server_version,
            connection_id: self.next_connection_id.fetch_add(1, Ordering::Relaxed),
            plugin: GREETING_PLUGIN,
            tls_available: true,
            require_tls: false,
        });
        let mut io: ClientIo = Either::Left(tcp);
        io.write_all(&greeting).await?;
        io.flush().await?;
        let mut buf = BytesMut::with_capacity(1024);
        let mut name: Option<String> = None;
        let mut candidate: Option<Candidate> = None;
        let mut proven: Option<Identity> = None;
        loop {
            let packet = match read_packet(&mut io, &mut buf).await? {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(None),
                Err(e) => {
                    tracing::info!(error = %e, "bad packet during login");
                    if let Some(user) = &name {
                        audit.login_failure(user, format!("bad packet during login: {e}"));
                    }
                    let err = match e {
                        PacketError::TooLarge { .. } => ErrPacket::packet_too_large(),
                        PacketError::Sequence { .. } => {
                            ErrPacket::new(1156, "08S01", "Got packets out of order")
                        }
                    };
                    return finish(io, login.reject(&err)).await;
                }
            };
            let mut step = login.on_packet(&packet);
            loop {
                step = match step {
                    ServerStep::Read => break,
                    ServerStep::StartTls => {
                        let Either::Left(tcp) = io else {
                            return Ok(None);
                        };
                        // What followed the SSLRequest is the start of
                        // the TLS handshake.
                        let early = std::mem::take(&mut buf);
                        io = Either::Right(self.tls.accept(Rewind::new(early, tcp)).await?);
                        break;
                    }
                    ServerStep::LookUp { user } => {
                        audit.user = Some(user.clone());
                        name = Some(user.clone());
                        match self.dac.users.find(&user).await {
                            Ok(c) => {
                                let v = self.verifiers(&c);
                                candidate = Some(c);
                                login.credentials(v)
                            }
                            Err(e) => {
                                audit.login_failure(&user, e.audit_reason());
                                let err = login_error_packet(&e);
                                return finish(io, login.reject(&err)).await;
                            }
                        }
                    }
                    ServerStep::Send(b) => {
                        io.write_all(&b).await?;
                        io.flush().await?;
                        break;
                    }
                    ServerStep::CheckPassword { user, password } => {
                        match self
                            .dac
                            .users
                            .check_password(&user, password.expose())
                            .await
                        {
                            Ok(identity) => {
                                if let Some(Candidate::Known(u)) = &candidate {
                                    self.sha2_cache.put(u, password.expose());
                                }
                                proven = Some(identity);
                                login.password_checked(true)
                            }
                            Err(LoginError::Failed(_)) => login.password_checked(false),
                            Err(e) => {
                                audit.login_failure(&user, e.audit_reason());
                                let err = login_error_packet(&e);
                                return finish(io, login.reject(&err)).await;
                            }
                        }
                    }
                    ServerStep::Failed { packet, error } => {
                        tracing::info!(user = name.as_deref().unwrap_or(""), %error, "login refused");
                        if let Some(user) = &name {
                            audit.login_failure(user, auth_failure_reason(&error));
                        }
                        return finish(io, packet).await;
                    }
                    ServerStep::Authenticated => {
                        let identity = match (proven.take(), &candidate) {
                            (Some(i), _) => Ok(i),
                            (None, Some(Candidate::Known(u))) => users::admit(u),
                            (None, _) => Err(LoginError::Failed(name.clone().unwrap_or_default())),
                        };
                        match identity {
                            Ok(identity) => {
                                return Ok(Some(Box::new(LoggedIn {
                                    io,
                                    buf,
                                    login,
                                    identity,
                                })))
                            }
                            Err(e) => {
                                let user = name.clone().unwrap_or_default();
                                tracing::info!(%user, error = %e, "login refused");
                                audit.login_failure(&user, e.audit_reason());
                                let err = login_error_packet(&e);
                                return finish(io, login.reject(&err)).await;
                            }
                        }
                    }
                }
            }
        }
    }

    fn verifiers(&self, c: &Candidate) -> Verifiers {
        match c {
            Candidate::Known(u) => Verifiers {
                native: (!u.mysql_native.is_empty()).then(|| u.mysql_native.clone()),
                sha2_cached: self.sha2_cache.get(u),
            },
            Candidate::Unknown { .. } => Verifiers::default(),
        }
    }

    /// Policy, agent, upstream login, then the relay until either side ends.
    async fn session(
        &self,
        mut c: LoggedIn,
        res: &Resource,
        session_id: &str,
        client: SocketAddr,
        audit: &SessionAudit,
        live: &Live,
    ) {
        let who = c.identity.clone();
        let permit = match self.dac.policies.authorize(&who, &res.name) {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(error = %e, "no policy for this user");
                audit.login_failure(&who.user, e.to_string());
                let err = ErrPacket::new(1045, "28000", e.to_string());
                let _ = finish(c.io, c.login.reject(&err)).await;
                return;
            }
        };
        let policy = &permit.policy;
        if let Err(e) = self.dac.auditor.check() {
            let err = ErrPacket::new(1105, "HY000", format!("session refused: {e}"));
            let _ = finish(c.io, c.login.reject(&err)).await;
            return;
        }
        let Some(account) = res.account(policy.account.as_deref()) else {
            // Checked at start; only a changed file could get here.
            let err = ErrPacket::new(
                1045,
                "28000",
                format!(
                    "resource {:?} has no account for policy {:?}",
                    res.name, policy.name
                ),
            );
            let _ = finish(c.io, c.login.reject(&err)).await;
            return;
        };
        let (agent, stream) = match route(session_id, res, &self.dac.registry).await {
            Ok(x) => x,
            Err(e) => {
                log_route_error(&e);
                audit.emit(close_event(
                    format!("not connected: {e}"),
                    Instant::now(),
                    0,
                    0,
                ));
                let err = ErrPacket::upstream_failed(&format!(
                    "cannot reach resource {:?}: {e}",
                    res.name
                ));
                let _ = finish(c.io, c.login.reject(&err)).await;
                return;
            }
        };
        tracing::Span::current().record("agent.name", agent.name.as_str());
        live.set_agent(&agent.name);
        let started = Instant::now();
        let mut upstream_io = Metered::with_bytes(stream, agent.clone(), live.bytes.clone());
        audit.emit(EventKind::SessionOpen {
            agent: Some(agent.name.clone()),
            client_addr: client.to_string(),
            account: Some(account.name.clone()),
        });
        let Some(hello) = c.login.response().cloned() else {
            // Authenticated implies a response; nothing to log in with.
            audit.emit(close_event("no handshake response".into(), started, 0, 0));
            return;
        };
        let mut attrs: Vec<(String, String)> = hello
            .attrs
            .iter()
            .filter(|(k, _)| !k.starts_with("novas"))
            .cloned()
            .collect();
        attrs.push(("novas_user".into(), who.user.clone()));
        attrs.push(("novas_session".into(), session_id.to_string()));
        let database = hello
            .database
            .clone()
            .filter(|d| !d.is_empty())
            .or_else(|| res.database.clone());
        let cfg = UpstreamConfig {
            user: account.username.clone(),
            password: account.password.clone(),
            database: database.clone(),
            tls: false,
            client_capabilities: c.login.capabilities(),
            charset: hello.charset,
            max_packet: hello.max_packet,
            attrs,
        };
        let mut from_server = BytesMut::with_capacity(8 * 1024);
        let login = tokio::time::timeout(
            UPSTREAM_LOGIN_TIMEOUT,
            upstream_login(&mut upstream_io, &mut from_server, cfg, policy.read_only),
        )
        .await;
        let (up, status) = match login {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "upstream login failed");
                audit.emit(close_event(
                    format!("upstream login failed: {e}"),
                    started,
                    0,
                    0,
                ));
                let err = ErrPacket::upstream_failed(&e.to_string());
                let _ = finish(c.io, c.login.reject(&err)).await;
                return;
            }
            Err(_) => {
                audit.emit(close_event(
                    "upstream login timed out".into(),
                    started,
                    0,
                    0,
                ));
                let err =
                    ErrPacket::upstream_failed("the database did not complete the login in time");
                let _ = finish(c.io, c.login.reject(&err)).await;
                return;
            }
        };
        self.versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                res.name.clone(),
                handshake::announced_version(&up.greeting.server_version),
            );
        let ok = c.login.accept(status);
        if c.io.write_all(&ok).await.is_err() || c.io.flush().await.is_err() {
            audit.emit(close_event(
                "client left during login".into(),
                started,
                0,
                0,
            ));
            return;
        }
        tracing::info!(
            account = %account.name,
            policy = %policy.name,
            database = database.as_deref().unwrap_or(""),
            plugin = c.login.plugin().name(),
            tls = c.login.tls(),
            "session open"
        );

        let proxy = Proxy::new(
            policy,
            &self.dac.auditor,
            audit,
            c.login.capabilities(),
            status,
        );
        let end = proxy
            .run(&mut c.io, &mut upstream_io, c.buf, from_server)
            .await;
        let (up_bytes, down_bytes) = (upstream_io.sent(), upstream_io.received());
        tracing::info!(outcome = %end.outcome(), "session closed");
        audit.emit(close_event(end.outcome(), started, up_bytes, down_bytes));
    }
}

/// Logs in upstream with the stored account; for read-only policies also
/// makes the session read-only. Returns the session and the status flags
/// to give the client; `buf` keeps bytes read past the login.
async fn upstream_login<S>(
    io: &mut S,
    buf: &mut BytesMut,
    cfg: UpstreamConfig,
    read_only: bool,
) -> Result<(Upstream, u16), UpstreamError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut login = UpstreamLogin::new(cfg);
    let up = loop {
        let p = match decode_packet(buf, MAX_HANDSHAKE_PACKET)? {
            Some(p) => p,
            None => {
                buf.reserve(4096);
                if io.read_buf(buf).await? == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the database closed the connection during login",
                    )
                    .into());
                }
                continue;
            }
        };
        match login.on_packet(&p)? {
            LoginStep::Read => {}
            LoginStep::Send(b) => {
                io.write_all(&b).await?;
                io.flush().await?;
            }
            LoginStep::StartTls(_) => return Err(UpstreamError::Tls),
            LoginStep::Done(up) => break *up,
        }
    };
    let status = if read_only {
        read_only_upstream(io, buf, up.capabilities).await?
    } else {
        up.ok.status
    };
    Ok((up, status))
}

/// Reads one login packet (bounded by [`MAX_HANDSHAKE_PACKET`]); `Ok(None)`
/// when the client closed.
async fn read_packet<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
) -> std::io::Result<Result<Option<Packet>, PacketError>> {
    loop {
        match decode_packet(buf, MAX_HANDSHAKE_PACKET) {
            Ok(Some(p)) => return Ok(Ok(Some(p))),
            Err(e) => return Ok(Err(e)),
            Ok(None) => {}
        }
        buf.reserve(4096);
        if io.read_buf(buf).await? == 0 {
            return Ok(Ok(None));
        }
    }
}

/// Writes a final packet and closes the client connection.
async fn finish(mut io: ClientIo, packet: bytes::Bytes) -> std::io::Result<Option<Box<LoggedIn>>> {
    let _ = io.write_all(&packet).await;
    let _ = io.flush().await;
    let _ = io.shutdown().await;
    Ok(None)
}

fn login_error_packet(e: &LoginError) -> ErrPacket {
    match e {
        LoginError::Failed(u) => ErrPacket::access_denied(u, true),
        LoginError::Disabled(_) => ErrPacket::new(1045, "28000", e.to_string()),
        LoginError::Store(_) => ErrPacket::new(1105, "HY000", e.to_string()),
    }
}

fn auth_failure_reason(e: &AuthError) -> String {
    match e {
        AuthError::AccessDenied { .. } => "bad password or unknown user".into(),
        AuthError::FullAuthNeedsTls => {
            "caching_sha2_password needs the password once over TLS; client did not use TLS".into()
        }
        other => other.to_string(),
    }
}
