//! The upstream connection phase: NOVAS as a client, logging in with the
//! resource's stored credentials.
//!
//! The glue reads packets from the upstream and feeds them to
//! [`UpstreamLogin::on_packet`], doing what each [`LoginStep`] says:
//!
//! ```text
//! greeting ─► StartTls{SSLRequest} ─► (TLS) ─► tls_established() = response
//!          └► Send(response)
//! then: AuthSwitchRequest ─► Send(answer)      (native / caching_sha2)
//!       AuthMoreData 0x03 ─► Read              (fast path OK, OK follows)
//!       AuthMoreData 0x04 ─► Send(password)    (only over TLS)
//!       OK ─► Done            ERR ─► Err(Refused)
//! ```

use bytes::{Bytes, BytesMut};
use tunnel_proto::Secret;

use super::{
    auth::{fast_auth, AuthPlugin},
    caps::{self, Capabilities, CapsError},
    handshake::{
        self, AuthMoreData, AuthSwitchRequest, Greeting, HandshakeResponse, ServerHello,
        SslRequest, AUTH_MORE_DATA_HEADER, AUTH_SWITCH_HEADER,
    },
    packet::{put_packet, Packet},
    reply::{ErrPacket, OkPacket, ERR_HEADER, OK_HEADER},
    wire::DecodeError,
};

/// How to log in upstream.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub user: String,
    pub password: Secret,
    /// Initial database (the client's, if policy allows it).
    pub database: Option<String>,
    /// Use TLS to the upstream (needed for a full `caching_sha2_password`
    /// authentication).
    pub tls: bool,
    /// Capabilities in force with the client
    /// ([`super::server_auth::ServerHandshake::capabilities`]).
    pub client_capabilities: Capabilities,
    /// The client's character set and max packet size, passed on.
    pub charset: u8,
    pub max_packet: u32,
    /// Connection attributes to send (e.g. the client's, plus NOVAS's own).
    pub attrs: Vec<(String, String)>,
}

/// Why the upstream login failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// The upstream sent something the protocol does not allow here.
    #[error("upstream sent a malformed handshake packet: {0}")]
    Malformed(#[from] DecodeError),
    /// The upstream refused the login (or the connection) with this ERR.
    #[error("upstream refused the login: {0}")]
    Refused(ErrPacket),
    /// No capability set makes both hops speak the same format.
    #[error(transparent)]
    Capabilities(#[from] CapsError),
    /// The upstream asked for a plugin NOVAS does not implement.
    #[error("upstream asked for authentication plugin {0:?}, which NOVAS does not support")]
    UnsupportedPlugin(String),
    /// `caching_sha2_password` needs the password in full and the upstream
    /// connection is not TLS (NOVAS does not do the RSA key exchange).
    #[error(
        "upstream needs a full caching_sha2_password authentication, which needs TLS to the \
         upstream: enable it for this resource"
    )]
    FullAuthNeedsTls,
    /// A packet with an unexpected sequence id.
    #[error("upstream packet out of order: expected {expected}, got {got}")]
    Sequence { expected: u8, got: u8 },
    /// The glue called a method the current state does not allow.
    #[error("upstream login driven out of order: {0}")]
    OutOfTurn(&'static str),
}

/// The logged-in upstream session.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Capabilities in force on the upstream hop.
    pub capabilities: Capabilities,
    pub greeting: Greeting,
    /// The final OK (its status flags are worth passing to
    /// [`super::server_auth::ServerHandshake::accept`]).
    pub ok: OkPacket,
}

/// What the glue does next.
#[derive(Debug)]
pub enum LoginStep {
    /// Read the upstream's next packet.
    Read,
    /// Write this, then read the next packet.
    Send(Bytes),
    /// Write this SSLRequest, start TLS on the connection, then write what
    /// [`UpstreamLogin::tls_established`] returns and read.
    StartTls(Bytes),
    /// Logged in; the command phase starts.
    Done(Box<Upstream>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Greeting,
    Tls,
    Auth,
    Finished,
}

/// The upstream login of one connection.
#[derive(Debug)]
pub struct UpstreamLogin {
    cfg: UpstreamConfig,
    state: State,
    seq: u8,
    caps: Capabilities,
    plugin: Option<AuthPlugin>,
    nonce: Vec<u8>,
    greeting: Option<Greeting>,
}

impl UpstreamLogin {
    pub fn new(cfg: UpstreamConfig) -> Self {
        Self {
            cfg,
            state: State::Greeting,
            seq: 0,
            caps: Capabilities::empty(),
            plugin: None,
            nonce: Vec::new(),
            greeting: None,
        }
    }

    /// The upstream's greeting, once received.
    pub fn greeting(&self) -> Option<&Greeting> {
        self.greeting.as_ref()
    }

    fn packet(&mut self, payload: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        self.seq = put_packet(&mut out, self.seq, payload);
        out.freeze()
    }

    fn response(&mut self) -> Bytes {
        let plugin = self.plugin.unwrap_or(AuthPlugin::Native);
        let auth_response = plugin.scramble(self.cfg.password.expose().as_bytes(), &self.nonce);
        let mut payload = BytesMut::new();
        HandshakeResponse {
            capabilities: self.caps,
            max_packet: self.cfg.max_packet,
            charset: self.cfg.charset,
            user: self.cfg.user.clone(),
            auth_response,
            database: self.cfg.database.clone(),
            auth_plugin: Some(plugin.name().to_string()),
            attrs: self.cfg.attrs.clone(),
            mariadb_capabilities: 0,
        }
        .encode(&mut payload);
        self.packet(&payload)
    }

    /// Feeds one complete packet from the upstream.
    pub fn on_packet(&mut self, packet: &Packet) -> Result<LoginStep, LoginError> {
        if packet.seq != self.seq {
            return Err(LoginError::Sequence {
                expected: self.seq,
                got: packet.seq,
            });
        }
        self.seq = packet.last_seq.wrapping_add(1);
        match self.state {
            State::Greeting => self.on_greeting(&packet.payload),
            State::Auth => self.on_auth(&packet.payload),
            State::Tls | State::Finished => Err(LoginError::OutOfTurn("no packet expected now")),
        }
    }

    fn on_greeting(&mut self, payload: &[u8]) -> Result<LoginStep, LoginError> {
        let g = match Greeting::decode(payload)? {
            ServerHello::Greeting(g) => g,
            ServerHello::Error(e) => return Err(LoginError::Refused(e)),
        };
        self.caps = caps::upstream_capabilities(
            self.cfg.client_capabilities,
            g.capabilities,
            self.cfg.tls,
            self.cfg.database.is_some(),
        )?;
        // An unknown default plugin: answer natively, the server switches.
        self.plugin = Some(AuthPlugin::from_name(&g.auth_plugin).unwrap_or(AuthPlugin::Native));
        self.nonce = g.scramble.clone();
        self.greeting = Some(g);
        if self.cfg.tls {
            self.state = State::Tls;
            let mut payload = BytesMut::new();
            SslRequest {
                capabilities: self.caps,
                max_packet: self.cfg.max_packet,
                charset: self.cfg.charset,
            }
            .encode(&mut payload);
            return Ok(LoginStep::StartTls(self.packet(&payload)));
        }
        self.state = State::Auth;
        Ok(LoginStep::Send(self.response()))
    }

    /// TLS is up: the HandshakeResponse to write.
    pub fn tls_established(&mut self) -> Result<Bytes, LoginError> {
        if self.state != State::Tls {
            return Err(LoginError::OutOfTurn("tls_established"));
        }
        self.state = State::Auth;
        Ok(self.response())
    }

    fn on_auth(&mut self, payload: &[u8]) -> Result<LoginStep, LoginError> {
        match payload.first() {
            Some(&OK_HEADER) => {
                let ok = OkPacket::decode(payload, self.caps)?;
                self.state = State::Finished;
                let greeting = self
                    .greeting
                    .clone()
                    .ok_or(LoginError::OutOfTurn("OK before the greeting"))?;
                Ok(LoginStep::Done(Box::new(Upstream {
                    capabilities: self.caps,
                    greeting,
                    ok,
                })))
            }
            Some(&ERR_HEADER) => Err(LoginError::Refused(ErrPacket::decode(payload)?)),
            Some(&AUTH_SWITCH_HEADER) => {
                let req = AuthSwitchRequest::decode(payload)?;
                let plugin = AuthPlugin::from_name(&req.plugin)
                    .ok_or_else(|| LoginError::UnsupportedPlugin(req.plugin.clone()))?;
                self.plugin = Some(plugin);
                self.nonce = req.nonce().to_vec();
                let answer = plugin.scramble(self.cfg.password.expose().as_bytes(), &self.nonce);
                Ok(LoginStep::Send(self.packet(&answer)))
            }
            Some(&AUTH_MORE_DATA_HEADER) if self.plugin == Some(AuthPlugin::CachingSha2) => {
                let more = AuthMoreData::decode(payload)?;
                match more.data.as_slice() {
                    [fast_auth::FAST_AUTH_OK] => Ok(LoginStep::Read),
                    [fast_auth::PERFORM_FULL_AUTH] if self.cfg.tls => {
                        let mut pw = BytesMut::new();
                        handshake::encode_cleartext_password(&self.cfg.password, &mut pw);
                        Ok(LoginStep::Send(self.packet(&pw)))
                    }
                    [fast_auth::PERFORM_FULL_AUTH] => Err(LoginError::FullAuthNeedsTls),
                    _ => Err(DecodeError::Invalid("caching_sha2_password status").into()),
                }
            }
            _ => Err(DecodeError::Invalid("authentication reply").into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::{
        auth,
        caps::{status, SERVER_CAPABILITIES},
        handshake::ClientHello,
        packet::decode_packet,
        server_auth::{ServerConfig, ServerHandshake, ServerStep, Verifiers},
    };

    fn cfg(tls: bool) -> UpstreamConfig {
        UpstreamConfig {
            user: "app".into(),
            password: Secret::new("app-pw".into()),
            database: Some("shop".into()),
            tls,
            client_capabilities: SERVER_CAPABILITIES,
            charset: 45,
            max_packet: 1 << 24,
            attrs: vec![("program_name".into(), "mysql".into())],
        }
    }

    fn split(b: &Bytes) -> Vec<Packet> {
        let mut buf = BytesMut::from(&b[..]);
        let mut out = Vec::new();
        while let Some(p) = decode_packet(&mut buf, 1 << 20).expect("framing") {
            out.push(p);
        }
        out
    }

    fn one(b: &Bytes) -> Packet {
        let mut v = split(b);
        assert_eq!(v.len(), 1);
        v.remove(0)
    }

    /// Runs NOVAS's own server machine against the upstream login: each
    /// side checks the other's packets.
    fn run(server_plugin: AuthPlugin, tls: bool, cache: bool) -> Result<Upstream, LoginError> {
        let (mut server, greeting) = ServerHandshake::new(ServerConfig {
            server_version: "8.0.36".into(),
            connection_id: 1,
            plugin: server_plugin,
            tls_available: true,
            require_tls: false,
        });
        let mut login = UpstreamLogin::new(cfg(tls));
        let mut to_server = match login.on_packet(&one(&greeting))? {
            LoginStep::StartTls(ssl) => {
                assert!(matches!(server.on_packet(&one(&ssl)), ServerStep::StartTls));
                login.tls_established()?
            }
            LoginStep::Send(b) => b,
            other => panic!("unexpected {other:?}"),
        };
        loop {
            let step = server.on_packet(&one(&to_server));
            let mut step = step;
            let reply = loop {
                match step {
                    ServerStep::LookUp { user } => {
                        assert_eq!(user, "app");
                        let r = server.response().expect("response");
                        assert_eq!(r.database.as_deref(), Some("shop"));
                        assert_eq!(r.attrs[0].1, "mysql");
                        step = server.credentials(Verifiers {
                            native: Some(auth::native_verifier("app-pw")),
                            sha2_cached: cache.then(|| auth::sha2_verifier("app-pw")),
                        });
                    }
                    ServerStep::CheckPassword { password, .. } => {
                        step = server.password_checked(password.expose() == "app-pw");
                    }
                    ServerStep::Authenticated => break server.accept(status::AUTOCOMMIT),
                    ServerStep::Send(b) => break b,
                    ServerStep::Failed { packet, .. } => break packet,
                    other => panic!("unexpected {other:?}"),
                }
            };
            let mut next = None;
            for p in split(&reply) {
                match login.on_packet(&p)? {
                    LoginStep::Read => {}
                    LoginStep::Send(b) => next = Some(b),
                    LoginStep::Done(up) => return Ok(*up),
                    LoginStep::StartTls(_) => panic!("TLS twice"),
                }
            }
            to_server = next.expect("the login needs to answer something");
        }
    }

    #[test]
    fn native_login() {
        let up = run(AuthPlugin::Native, false, false).expect("login");
        assert_eq!(up.ok.status, status::AUTOCOMMIT);
        assert!(up.capabilities.contains(Capabilities::CONNECT_WITH_DB));
        assert!(!up.capabilities.contains(Capabilities::SSL));
    }

    #[test]
    fn caching_sha2_fast_path() {
        run(AuthPlugin::CachingSha2, false, true).expect("login");
    }

    #[test]
    fn caching_sha2_full_path_over_tls() {
        let up = run(AuthPlugin::CachingSha2, true, false).expect("login");
        assert!(up.capabilities.contains(Capabilities::SSL));
    }

    #[test]
    fn caching_sha2_full_path_without_tls_is_a_clear_error() {
        // NOVAS's server refuses first (it needs TLS too); test the
        // client side alone against a scripted server.
        let mut login = UpstreamLogin::new(cfg(false));
        let g = Greeting::new("8.0.36", 1, AuthPlugin::CachingSha2, false);
        let LoginStep::Send(resp) = login.on_packet(&one(&g.to_packet())).expect("greeting") else {
            panic!("expected the response");
        };
        let p = one(&resp);
        assert_eq!(p.seq, 1);
        let ClientHello::Response(r) = ClientHello::decode(&p.payload).expect("decode") else {
            panic!("not a response");
        };
        assert_eq!(r.auth_plugin.as_deref(), Some("caching_sha2_password"));
        assert_eq!(
            r.auth_response,
            auth::sha2_scramble(b"app-pw", &g.scramble).to_vec()
        );
        let more = Packet {
            seq: 2,
            last_seq: 2,
            payload: Bytes::from_static(&[0x01, 0x04]),
        };
        let err = login.on_packet(&more).expect_err("needs TLS");
        assert_eq!(err, LoginError::FullAuthNeedsTls);
        assert!(err.to_string().contains("TLS"));
    }

    #[test]
    fn switch_to_an_unknown_plugin_and_refusals() {
        let mut login = UpstreamLogin::new(cfg(false));
        let g = Greeting::new("10.11.6-MariaDB", 1, AuthPlugin::Native, false);
        login.on_packet(&one(&g.to_packet())).expect("greeting");
        let mut sw = BytesMut::new();
        AuthSwitchRequest {
            plugin: "client_ed25519".into(),
            data: vec![1; 32],
        }
        .encode(&mut sw);
        let p = Packet {
            seq: 2,
            last_seq: 2,
            payload: sw.freeze(),
        };
        assert_eq!(
            login.on_packet(&p).expect_err("unsupported"),
            LoginError::UnsupportedPlugin("client_ed25519".into())
        );

        let mut login = UpstreamLogin::new(cfg(false));
        let e = ErrPacket::new(1040, "08004", "Too many connections");
        let mut b = BytesMut::new();
        e.encode(&mut b);
        let p = Packet {
            seq: 0,
            last_seq: 0,
            payload: b.freeze(),
        };
        assert_eq!(
            login.on_packet(&p).expect_err("refused"),
            LoginError::Refused(e)
        );
    }

    #[test]
    fn upstream_without_tls_when_tls_is_wanted() {
        let mut login = UpstreamLogin::new(cfg(true));
        let mut g = Greeting::new("10.11.6", 1, AuthPlugin::Native, false);
        g.capabilities = g.capabilities - Capabilities::SSL;
        assert!(matches!(
            login.on_packet(&one(&g.to_packet())),
            Err(LoginError::Capabilities(CapsError::Missing("CLIENT_SSL")))
        ));
    }
}
