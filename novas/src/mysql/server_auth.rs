//! The client-facing connection phase: NOVAS as the server.
//!
//! A state machine the glue drives; it never touches a socket:
//!
//! 1. [`ServerHandshake::new`] gives the greeting to write.
//! 2. Each packet from the client goes to [`ServerHandshake::on_packet`];
//!    the glue does what the returned [`ServerStep`] says and calls the
//!    named method for the steps that need something from it (TLS, the
//!    user's verifiers, a password check).
//! 3. At [`ServerStep::Authenticated`] the glue logs in upstream, then
//!    writes [`ServerHandshake::accept`] (or [`ServerHandshake::reject`]
//!    with the reason). The client only learns it is in once the upstream
//!    said yes.
//!
//! Plugins: the greeting names one (`caching_sha2_password` or
//! `mysql_native_password`); a client that answered for another gets an
//! AuthSwitchRequest to it. `caching_sha2_password` tries the fast path
//! against the cached `SHA256(SHA256(pw))` and otherwise asks for the
//! password once, which NOVAS only accepts over TLS.

use bytes::{Bytes, BytesMut};
use tunnel_proto::Secret;

use super::{
    auth::{self, fast_auth, AuthPlugin},
    caps::{self, Capabilities},
    handshake::{self, AuthMoreData, AuthSwitchRequest, ClientHello, Greeting, HandshakeResponse},
    packet::{put_packet, Packet},
    reply::{ErrPacket, OkPacket, OK_HEADER},
    wire::DecodeError,
};

/// Settings for one client connection.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// See [`handshake::DEFAULT_SERVER_VERSION`] and
    /// [`handshake::announced_version`].
    pub server_version: String,
    pub connection_id: u32,
    /// The plugin the greeting names.
    pub plugin: AuthPlugin,
    /// NOVAS has a certificate: offer `CLIENT_SSL`.
    pub tls_available: bool,
    /// Refuse clients that do not switch to TLS.
    pub require_tls: bool,
}

/// What NOVAS knows about a user's password, for the fast checks. An
/// unknown user gets the default (nothing), which fails the same way a
/// wrong password does.
#[derive(Clone, Default)]
pub struct Verifiers {
    /// [`auth::native_verifier`] of the password, for
    /// `mysql_native_password`.
    pub native: Option<String>,
    /// The `caching_sha2_password` cache entry ([`auth::sha2_verifier`]),
    /// if a full authentication succeeded earlier.
    pub sha2_cached: Option<[u8; 32]>,
}

impl std::fmt::Debug for Verifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifiers")
            .field("native", &self.native.as_ref().map(|_| "***"))
            .field("sha2_cached", &self.sha2_cached.map(|_| "***"))
            .finish()
    }
}

/// Why a client's login failed (for the log; the client sees the ERR in
/// [`ServerStep::Failed`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A packet that is not what the protocol allows here.
    #[error("bad handshake: {0}")]
    Malformed(#[from] DecodeError),
    /// A packet with an unexpected sequence id.
    #[error("handshake packet out of order: expected {expected}, got {got}")]
    Sequence { expected: u8, got: u8 },
    /// SSLRequest although NOVAS did not offer TLS, or a second one.
    #[error("unexpected SSLRequest")]
    UnexpectedSsl,
    /// The client did not switch to TLS and NOVAS requires it.
    #[error("client did not use TLS, which is required")]
    TlsRequired,
    /// The client cannot switch plugins and answered for another one.
    #[error("client answered for {0:?} and cannot switch plugins")]
    NoPluginAuth(String),
    /// Unknown user, wrong password or no usable verifier (deliberately
    /// one error: the client must not learn which).
    #[error("access denied for user {user:?}: {reason}")]
    AccessDenied { user: String, reason: &'static str },
    /// `caching_sha2_password` needs the cleartext password and the
    /// connection is not TLS.
    #[error("full caching_sha2_password authentication needs TLS")]
    FullAuthNeedsTls,
    /// The glue called a method the current state does not allow.
    #[error("handshake driven out of order: {0}")]
    OutOfTurn(&'static str),
}

impl AuthError {
    /// The ERR packet the client gets.
    pub fn to_err_packet(&self) -> ErrPacket {
        match self {
            Self::Malformed(_) | Self::UnexpectedSsl | Self::NoPluginAuth(_) => {
                ErrPacket::new(1043, "08S01", "Bad handshake")
            }
            Self::Sequence { .. } => ErrPacket::new(1156, "08S01", "Got packets out of order"),
            Self::TlsRequired => ErrPacket::new(
                1045,
                "28000",
                "Access denied: NOVAS requires TLS (connect with --ssl)",
            ),
            Self::AccessDenied { user, .. } => ErrPacket::access_denied(user, true),
            Self::FullAuthNeedsTls => ErrPacket::full_auth_needs_tls(""),
            Self::OutOfTurn(_) => ErrPacket::new(1105, "HY000", "NOVAS internal error"),
        }
    }
}

/// What the glue does next.
#[derive(Debug)]
pub enum ServerStep {
    /// Read the client's next packet and pass it to `on_packet`.
    Read,
    /// Accept TLS on the client connection now, then read the next packet.
    /// Clients send their TLS ClientHello right behind the SSLRequest, so
    /// bytes already read belong to the TLS handshake: hand them to TLS
    /// (`mysql::rewind`), never to this state machine.
    StartTls,
    /// Look up the user (`response()` has the rest of the hello) and call
    /// [`ServerHandshake::credentials`].
    LookUp { user: String },
    /// Write this, then read the client's next packet.
    Send(Bytes),
    /// Check the cleartext password against the user's stored hash and
    /// call [`ServerHandshake::password_checked`]; on success also refresh
    /// the cache entry with [`auth::sha2_verifier`].
    CheckPassword { user: String, password: Secret },
    /// The client proved who it is. Log in upstream, then write
    /// [`ServerHandshake::accept`] or [`ServerHandshake::reject`].
    Authenticated,
    /// Write `packet` and close the connection.
    Failed { packet: Bytes, error: AuthError },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Hello,
    HelloOverTls,
    LookUp,
    SwitchAnswer,
    Password,
    CheckingPassword,
    Authenticated,
    Finished,
}

/// The client-facing login of one connection.
#[derive(Debug)]
pub struct ServerHandshake {
    cfg: ServerConfig,
    greeting: Greeting,
    state: State,
    /// Sequence id of NOVAS's next packet.
    seq: u8,
    tls: bool,
    response: Option<HandshakeResponse>,
    negotiated: Capabilities,
    verifiers: Verifiers,
    /// Fast path succeeded: AuthMoreData(0x03) goes before the OK.
    fast_ok: bool,
}

impl ServerHandshake {
    /// Starts a login; returns the machine and the greeting to write.
    pub fn new(cfg: ServerConfig) -> (Self, Bytes) {
        let greeting = Greeting::new(
            &cfg.server_version,
            cfg.connection_id,
            cfg.plugin,
            cfg.tls_available,
        );
        let packet = greeting.to_packet();
        let hs = Self {
            cfg,
            greeting,
            state: State::Hello,
            seq: 1,
            tls: false,
            response: None,
            negotiated: Capabilities::empty(),
            verifiers: Verifiers::default(),
            fast_ok: false,
        };
        (hs, packet)
    }

    /// The greeting sent (its scramble is the nonce).
    pub fn greeting(&self) -> &Greeting {
        &self.greeting
    }

    /// The client's HandshakeResponse41, once received.
    pub fn response(&self) -> Option<&HandshakeResponse> {
        self.response.as_ref()
    }

    /// The capabilities in force with the client (use them for the relay
    /// and for [`caps::upstream_capabilities`]).
    pub fn capabilities(&self) -> Capabilities {
        self.negotiated
    }

    /// Whether the client switched to TLS.
    pub fn tls(&self) -> bool {
        self.tls
    }

    fn user(&self) -> String {
        self.response
            .as_ref()
            .map(|r| r.user.clone())
            .unwrap_or_default()
    }

    fn fail(&mut self, error: AuthError) -> ServerStep {
        self.state = State::Finished;
        let mut err = error.to_err_packet();
        if error == AuthError::FullAuthNeedsTls {
            err = ErrPacket::full_auth_needs_tls(&self.user());
        }
        let packet = err.to_packet(self.seq);
        ServerStep::Failed { packet, error }
    }

    fn denied(&mut self, reason: &'static str) -> ServerStep {
        let user = self.user();
        self.fail(AuthError::AccessDenied { user, reason })
    }

    fn send(&mut self, payload: &[u8]) -> ServerStep {
        let mut out = BytesMut::new();
        self.seq = put_packet(&mut out, self.seq, payload);
        ServerStep::Send(out.freeze())
    }

    /// Feeds one complete packet from the client.
    pub fn on_packet(&mut self, packet: &Packet) -> ServerStep {
        if packet.seq != self.seq {
            return self.fail(AuthError::Sequence {
                expected: self.seq,
                got: packet.seq,
            });
        }
        self.seq = packet.last_seq.wrapping_add(1);
        match self.state {
            State::Hello | State::HelloOverTls => self.on_hello(&packet.payload),
            State::SwitchAnswer => self.check_answer(&packet.payload),
            State::Password => self.on_password(&packet.payload),
            _ => self.fail(AuthError::OutOfTurn("no client packet expected now")),
        }
    }

    fn on_hello(&mut self, payload: &[u8]) -> ServerStep {
        let hello = match ClientHello::decode(payload) {
            Ok(h) => h,
            Err(e) => return self.fail(e.into()),
        };
        match hello {
            ClientHello::Ssl(_) => {
                if !self.cfg.tls_available || self.state == State::HelloOverTls {
                    return self.fail(AuthError::UnexpectedSsl);
                }
                self.state = State::HelloOverTls;
                self.tls = true;
                ServerStep::StartTls
            }
            ClientHello::Response(r) => {
                if self.cfg.require_tls && !self.tls {
                    return self.fail(AuthError::TlsRequired);
                }
                self.negotiated = caps::negotiate(self.greeting.capabilities, r.capabilities);
                let user = r.user.clone();
                self.response = Some(r);
                self.state = State::LookUp;
                ServerStep::LookUp { user }
            }
        }
    }

    /// The user's verifiers (the default for an unknown user).
    pub fn credentials(&mut self, verifiers: Verifiers) -> ServerStep {
        if self.state != State::LookUp {
            return self.fail(AuthError::OutOfTurn("credentials"));
        }
        self.verifiers = verifiers;
        let Some(r) = &self.response else {
            return self.fail(AuthError::OutOfTurn("credentials before the response"));
        };
        let ours = self.cfg.plugin;
        let theirs = match (
            &r.auth_plugin,
            r.capabilities.contains(Capabilities::PLUGIN_AUTH),
        ) {
            (Some(p), true) => p.clone(),
            // Without plugin auth the answer is a native scramble.
            _ => AuthPlugin::Native.name().to_string(),
        };
        if theirs == ours.name() {
            let answer = r.auth_response.clone();
            return self.check_answer(&answer);
        }
        if !r.capabilities.contains(Capabilities::PLUGIN_AUTH) {
            return self.fail(AuthError::NoPluginAuth(theirs));
        }
        let mut payload = BytesMut::new();
        AuthSwitchRequest::new(ours, &self.greeting.scramble).encode(&mut payload);
        self.state = State::SwitchAnswer;
        self.send(&payload)
    }

    fn check_answer(&mut self, answer: &[u8]) -> ServerStep {
        let nonce = self.greeting.scramble.clone();
        match self.cfg.plugin {
            AuthPlugin::Native => {
                let ok = self
                    .verifiers
                    .native
                    .as_deref()
                    .is_some_and(|v| auth::native_verify(v, &nonce, answer));
                if ok {
                    self.state = State::Authenticated;
                    ServerStep::Authenticated
                } else {
                    self.denied("mysql_native_password answer does not match")
                }
            }
            AuthPlugin::CachingSha2 => {
                if answer.is_empty() || answer == [0] {
                    return self.denied("empty password");
                }
                let fast = self
                    .verifiers
                    .sha2_cached
                    .as_ref()
                    .is_some_and(|c| auth::sha2_verify(c, &nonce, answer));
                if fast {
                    self.fast_ok = true;
                    self.state = State::Authenticated;
                    return ServerStep::Authenticated;
                }
                // No cache entry, or a stale one: ask for the password.
                if !self.tls {
                    return self.fail(AuthError::FullAuthNeedsTls);
                }
                self.state = State::Password;
                let mut payload = BytesMut::new();
                AuthMoreData {
                    data: vec![fast_auth::PERFORM_FULL_AUTH],
                }
                .encode(&mut payload);
                self.send(&payload)
            }
        }
    }

    fn on_password(&mut self, payload: &[u8]) -> ServerStep {
        if payload == [fast_auth::REQUEST_PUBLIC_KEY] {
            return self.fail(AuthError::FullAuthNeedsTls);
        }
        match handshake::decode_cleartext_password(payload) {
            Ok(password) if !password.is_empty() => {
                self.state = State::CheckingPassword;
                ServerStep::CheckPassword {
                    user: self.user(),
                    password,
                }
            }
            Ok(_) => self.denied("empty password"),
            Err(_) => self.denied("password is not UTF-8"),
        }
    }

    /// The result of checking the password from
    /// [`ServerStep::CheckPassword`].
    pub fn password_checked(&mut self, ok: bool) -> ServerStep {
        if self.state != State::CheckingPassword {
            return self.fail(AuthError::OutOfTurn("password_checked"));
        }
        if ok {
            self.state = State::Authenticated;
            ServerStep::Authenticated
        } else {
            self.denied("wrong password")
        }
    }

    /// Lets the client in: the packets to write (AuthMoreData 0x03 after a
    /// fast `caching_sha2_password` check, then OK with `status` flags —
    /// pass the upstream login OK's status so autocommit and friends are
    /// the real server's). Empty if called in the wrong state.
    pub fn accept(&mut self, status: u16) -> Bytes {
        if self.state != State::Authenticated {
            return Bytes::new();
        }
        self.state = State::Finished;
        let mut out = BytesMut::new();
        if self.fast_ok {
            let mut more = BytesMut::new();
            AuthMoreData {
                data: vec![fast_auth::FAST_AUTH_OK],
            }
            .encode(&mut more);
            self.seq = put_packet(&mut out, self.seq, &more);
        }
        let ok = OkPacket {
            header: OK_HEADER,
            status: status & !super::caps::status::SESSION_STATE_CHANGED,
            ..OkPacket::default()
        };
        let mut payload = BytesMut::new();
        ok.encode(self.negotiated, &mut payload);
        self.seq = put_packet(&mut out, self.seq, &payload);
        out.freeze()
    }

    /// Turns the client away after it authenticated (the upstream login
    /// failed): the ERR packet to write.
    pub fn reject(&mut self, err: &ErrPacket) -> Bytes {
        self.state = State::Finished;
        err.to_packet(self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::{
        handshake::{ServerHello, SslRequest},
        packet::decode_packet,
        reply::{ErrPacket, ERR_HEADER},
    };

    fn cfg(plugin: AuthPlugin, tls: bool) -> ServerConfig {
        ServerConfig {
            server_version: "5.7.99-NOVA".into(),
            connection_id: 9,
            plugin,
            tls_available: tls,
            require_tls: false,
        }
    }

    fn client_caps() -> Capabilities {
        Capabilities::PROTOCOL_41
            | Capabilities::SECURE_CONNECTION
            | Capabilities::PLUGIN_AUTH
            | Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA
            | Capabilities::DEPRECATE_EOF
            | Capabilities::SESSION_TRACK
    }

    fn hello(seq: u8, plugin: &str, answer: Vec<u8>, caps: Capabilities) -> Packet {
        let mut b = BytesMut::new();
        HandshakeResponse {
            capabilities: caps,
            max_packet: 1 << 24,
            charset: 45,
            user: "alice".into(),
            auth_response: answer,
            database: None,
            auth_plugin: Some(plugin.into()),
            attrs: vec![],
            mariadb_capabilities: 0,
        }
        .encode(&mut b);
        Packet {
            seq,
            last_seq: seq,
            payload: b.freeze(),
        }
    }

    fn raw(seq: u8, payload: &[u8]) -> Packet {
        Packet {
            seq,
            last_seq: seq,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    fn nonce_of(greeting: &Bytes) -> Vec<u8> {
        let mut b = BytesMut::from(&greeting[..]);
        let p = decode_packet(&mut b, 1024).expect("ok").expect("greeting");
        match Greeting::decode(&p.payload).expect("decode") {
            ServerHello::Greeting(g) => g.scramble,
            ServerHello::Error(e) => panic!("{e}"),
        }
    }

    /// Splits written bytes into (seq, payload) packets.
    fn packets(b: &Bytes) -> Vec<(u8, Vec<u8>)> {
        let mut buf = BytesMut::from(&b[..]);
        let mut out = Vec::new();
        while let Some(p) = decode_packet(&mut buf, 1 << 20).expect("framing") {
            out.push((p.seq, p.payload.to_vec()));
        }
        out
    }

    fn native_user(pw: &str) -> Verifiers {
        Verifiers {
            native: Some(auth::native_verifier(pw)),
            sha2_cached: None,
        }
    }

    #[test]
    fn native_login_succeeds_with_the_right_password() {
        let (mut hs, greeting) = ServerHandshake::new(cfg(AuthPlugin::Native, false));
        let nonce = nonce_of(&greeting);
        let answer = auth::native_scramble(b"pw1", &nonce).to_vec();
        let step = hs.on_packet(&hello(1, "mysql_native_password", answer, client_caps()));
        assert!(matches!(step, ServerStep::LookUp { ref user } if user == "alice"));
        assert!(matches!(
            hs.credentials(native_user("pw1")),
            ServerStep::Authenticated
        ));
        let out = packets(&hs.accept(2));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, 2, "OK follows the client's packet 1");
        assert_eq!(out[0].1[0], 0x00);
        assert!(hs.capabilities().contains(Capabilities::DEPRECATE_EOF));
    }

    #[test]
    fn native_login_fails_with_a_wrong_password_or_unknown_user() {
        for verifiers in [native_user("other"), Verifiers::default()] {
            let (mut hs, greeting) = ServerHandshake::new(cfg(AuthPlugin::Native, false));
            let answer = auth::native_scramble(b"pw1", &nonce_of(&greeting)).to_vec();
            hs.on_packet(&hello(1, "mysql_native_password", answer, client_caps()));
            let ServerStep::Failed { packet, error } = hs.credentials(verifiers) else {
                panic!("expected failure");
            };
            assert!(matches!(error, AuthError::AccessDenied { .. }));
            let out = packets(&packet);
            assert_eq!(out[0].0, 2);
            let err = ErrPacket::decode(&out[0].1).expect("err");
            assert_eq!((err.code, err.sqlstate.as_str()), (1045, "28000"));
        }
    }

    #[test]
    fn client_answering_for_another_plugin_is_switched() {
        let (mut hs, greeting) = ServerHandshake::new(cfg(AuthPlugin::Native, false));
        let nonce = nonce_of(&greeting);
        let wrong = auth::sha2_scramble(b"pw1", &nonce).to_vec();
        hs.on_packet(&hello(1, "caching_sha2_password", wrong, client_caps()));
        let ServerStep::Send(sw) = hs.credentials(native_user("pw1")) else {
            panic!("expected an auth switch");
        };
        let out = packets(&sw);
        assert_eq!(out[0].0, 2);
        let req = AuthSwitchRequest::decode(&out[0].1).expect("switch");
        assert_eq!(req.plugin, "mysql_native_password");
        assert_eq!(req.nonce(), &nonce[..]);
        let answer = auth::native_scramble(b"pw1", req.nonce());
        assert!(matches!(
            hs.on_packet(&raw(3, &answer)),
            ServerStep::Authenticated
        ));
        assert_eq!(packets(&hs.accept(2))[0].0, 4);
    }

    #[test]
    fn caching_sha2_fast_path_sends_fast_auth_ok_then_ok() {
        let (mut hs, greeting) = ServerHandshake::new(cfg(AuthPlugin::CachingSha2, false));
        let nonce = nonce_of(&greeting);
        let answer = auth::sha2_scramble(b"pw1", &nonce).to_vec();
        hs.on_packet(&hello(1, "caching_sha2_password", answer, client_caps()));
        let v = Verifiers {
            native: None,
            sha2_cached: Some(auth::sha2_verifier("pw1")),
        };
        assert!(matches!(hs.credentials(v), ServerStep::Authenticated));
        let out = packets(&hs.accept(2));
        assert_eq!(
            out,
            vec![(2, vec![0x01, 0x03]), (3, vec![0, 0, 0, 2, 0, 0, 0])]
        );
    }

    #[test]
    fn caching_sha2_full_auth_over_tls() {
        let (mut hs, greeting) = ServerHandshake::new(cfg(AuthPlugin::CachingSha2, true));
        let nonce = nonce_of(&greeting);
        let mut ssl = BytesMut::new();
        SslRequest {
            capabilities: client_caps() | Capabilities::SSL,
            max_packet: 1 << 24,
            charset: 45,
        }
        .encode(&mut ssl);
        assert!(matches!(hs.on_packet(&raw(1, &ssl)), ServerStep::StartTls));
        let answer = auth::sha2_scramble(b"pw1", &nonce).to_vec();
        hs.on_packet(&hello(
            2,
            "caching_sha2_password",
            answer,
            client_caps() | Capabilities::SSL,
        ));
        // No cache entry: full authentication.
        let ServerStep::Send(more) = hs.credentials(Verifiers::default()) else {
            panic!("expected perform-full-auth");
        };
        assert_eq!(packets(&more), vec![(3, vec![0x01, 0x04])]);
        let ServerStep::CheckPassword { user, password } = hs.on_packet(&raw(4, b"pw1\0")) else {
            panic!("expected a password check");
        };
        assert_eq!((user.as_str(), password.expose()), ("alice", "pw1"));
        assert!(matches!(
            hs.password_checked(true),
            ServerStep::Authenticated
        ));
        assert_eq!(packets(&hs.accept(2)), vec![(5, vec![0, 0, 0, 2, 0, 0, 0])]);
        assert!(hs.tls());
    }

    #[test]
    fn caching_sha2_full_auth_without_tls_fails_clearly() {
        let (mut hs, greeting) = ServerHandshake::new(cfg(AuthPlugin::CachingSha2, false));
        let answer = auth::sha2_scramble(b"pw1", &nonce_of(&greeting)).to_vec();
        hs.on_packet(&hello(1, "caching_sha2_password", answer, client_caps()));
        let ServerStep::Failed { packet, error } = hs.credentials(Verifiers::default()) else {
            panic!("expected failure");
        };
        assert_eq!(error, AuthError::FullAuthNeedsTls);
        let err = ErrPacket::decode(&packets(&packet)[0].1).expect("err");
        assert!(err.message.contains("TLS"), "{}", err.message);
        assert!(err.message.contains("alice"), "{}", err.message);
    }

    #[test]
    fn wrong_full_password_and_out_of_order_packets_fail() {
        let (mut hs, greeting) = ServerHandshake::new(cfg(AuthPlugin::CachingSha2, true));
        let mut ssl = BytesMut::new();
        SslRequest {
            capabilities: client_caps() | Capabilities::SSL,
            max_packet: 0,
            charset: 45,
        }
        .encode(&mut ssl);
        hs.on_packet(&raw(1, &ssl));
        let answer = auth::sha2_scramble(b"x", &nonce_of(&greeting)).to_vec();
        hs.on_packet(&hello(2, "caching_sha2_password", answer, client_caps()));
        hs.credentials(Verifiers::default());
        hs.on_packet(&raw(4, b"x\0"));
        assert!(matches!(
            hs.password_checked(false),
            ServerStep::Failed {
                error: AuthError::AccessDenied { .. },
                ..
            }
        ));

        let (mut hs, _) = ServerHandshake::new(cfg(AuthPlugin::Native, false));
        let ServerStep::Failed { packet, error } =
            hs.on_packet(&hello(5, "mysql_native_password", vec![], client_caps()))
        else {
            panic!("expected failure");
        };
        assert_eq!(
            error,
            AuthError::Sequence {
                expected: 1,
                got: 5
            }
        );
        assert_eq!(packets(&packet)[0].1[0], ERR_HEADER);
    }

    #[test]
    fn tls_policy() {
        let (mut hs, _) = ServerHandshake::new(cfg(AuthPlugin::Native, false));
        let mut ssl = BytesMut::new();
        SslRequest {
            capabilities: client_caps() | Capabilities::SSL,
            max_packet: 0,
            charset: 45,
        }
        .encode(&mut ssl);
        assert!(matches!(
            hs.on_packet(&raw(1, &ssl)),
            ServerStep::Failed {
                error: AuthError::UnexpectedSsl,
                ..
            }
        ));
        let mut c = cfg(AuthPlugin::Native, true);
        c.require_tls = true;
        let (mut hs, _) = ServerHandshake::new(c);
        assert!(matches!(
            hs.on_packet(&hello(
                1,
                "mysql_native_password",
                vec![1; 20],
                client_caps()
            )),
            ServerStep::Failed {
                error: AuthError::TlsRequired,
                ..
            }
        ));
    }

    #[test]
    fn garbage_is_a_bad_handshake() {
        let (mut hs, _) = ServerHandshake::new(cfg(AuthPlugin::Native, false));
        let ServerStep::Failed { packet, error } = hs.on_packet(&raw(1, b"\x01\x02")) else {
            panic!("expected failure");
        };
        assert!(matches!(error, AuthError::Malformed(_)));
        let err = ErrPacket::decode(&packets(&packet)[0].1).expect("err");
        assert_eq!(err.code, 1043);
    }

    #[test]
    fn reject_after_authentication() {
        let (mut hs, greeting) = ServerHandshake::new(cfg(AuthPlugin::Native, false));
        let answer = auth::native_scramble(b"pw1", &nonce_of(&greeting)).to_vec();
        hs.on_packet(&hello(1, "mysql_native_password", answer, client_caps()));
        hs.credentials(native_user("pw1"));
        let out = packets(&hs.reject(&ErrPacket::upstream_failed("connection refused")));
        assert_eq!(out[0].0, 2);
        assert_eq!(ErrPacket::decode(&out[0].1).expect("err").code, 1105);
    }
}
