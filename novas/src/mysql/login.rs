//! The client-facing login as NOVAS runs it: [`ServerHandshake`] greeting
//! with `caching_sha2_password` (MySQL 8's default), plus one rule the
//! machine alone does not have: a client that answered the greeting for
//! `mysql_native_password` is checked against the user's native verifier,
//! the way a MySQL server treats an account whose plugin is
//! `mysql_native_password`. A client whose default plugin differs from the
//! greeting's answers without data (libmariadb with
//! `--default-auth=mysql_native_password` does); it gets an
//! AuthSwitchRequest to `mysql_native_password` with the same nonce. Every
//! NOVAS user has both verifiers, so both plugins log in; an unknown user
//! fails at the same step with the same error as a wrong password.
//!
//! I/O-free like the machine it wraps: the glue calls the same methods in
//! the same order (see [`ServerHandshake`]).

use bytes::{Bytes, BytesMut};

use super::{
    auth::{self, AuthPlugin},
    caps::Capabilities,
    handshake::{AuthSwitchRequest, HandshakeResponse},
    packet::{put_packet, Packet},
    reply::{ErrPacket, OkPacket, OK_HEADER},
    server_auth::{AuthError, ServerConfig, ServerHandshake, ServerStep, Verifiers},
};

/// The plugin NOVAS's greeting names.
pub const GREETING_PLUGIN: AuthPlugin = AuthPlugin::CachingSha2;

/// Where the native path stands (the machine is bypassed once it starts).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Native {
    /// Not taken: the machine runs the login.
    Off,
    /// The client answered for `mysql_native_password` without data (a
    /// client whose default plugin differs from the greeting's does that)
    /// and was sent an AuthSwitchRequest; its answer comes with `seq`.
    Switched {
        verifier: Option<String>,
        seq: u8,
    },
    /// Proven; NOVAS's next packet carries `seq`.
    Proven {
        seq: u8,
    },
    Finished,
}

/// One client's login.
#[derive(Debug)]
pub struct ClientLogin {
    hs: ServerHandshake,
    native: Native,
    /// Sequence id after the client's latest packet.
    next_seq: u8,
}

impl ClientLogin {
    /// Starts a login; returns it and the greeting to write.
    pub fn new(cfg: ServerConfig) -> (Self, Bytes) {
        let (hs, greeting) = ServerHandshake::new(cfg);
        (
            Self {
                hs,
                native: Native::Off,
                next_seq: 1,
            },
            greeting,
        )
    }

    /// The client's HandshakeResponse41, once received.
    pub fn response(&self) -> Option<&HandshakeResponse> {
        self.hs.response()
    }

    /// Capabilities in force with the client.
    pub fn capabilities(&self) -> Capabilities {
        self.hs.capabilities()
    }

    /// Whether the client switched to TLS.
    pub fn tls(&self) -> bool {
        self.hs.tls()
    }

    /// The plugin the client proved its password with.
    pub fn plugin(&self) -> AuthPlugin {
        match self.native {
            Native::Off => GREETING_PLUGIN,
            _ => AuthPlugin::Native,
        }
    }

    /// Feeds one complete client packet.
    pub fn on_packet(&mut self, packet: &Packet) -> ServerStep {
        self.next_seq = packet.last_seq.wrapping_add(1);
        match std::mem::replace(&mut self.native, Native::Finished) {
            Native::Off => {
                self.native = Native::Off;
                self.hs.on_packet(packet)
            }
            Native::Switched { verifier, seq } if packet.seq == seq => {
                self.check_native(verifier.as_deref(), &packet.payload)
            }
            Native::Switched { seq, .. } => self.native_failed(
                AuthError::Sequence {
                    expected: seq,
                    got: packet.seq,
                },
                ErrPacket::new(1156, "08S01", "Got packets out of order"),
            ),
            _ => self.native_failed(
                AuthError::OutOfTurn("no client packet expected now"),
                ErrPacket::new(1105, "HY000", "NOVAS internal error"),
            ),
        }
    }

    /// The user's verifiers (the default for an unknown user), after
    /// [`ServerStep::LookUp`].
    pub fn credentials(&mut self, verifiers: Verifiers) -> ServerStep {
        let Some(r) = self.hs.response() else {
            return self.hs.credentials(verifiers);
        };
        let plugin_auth = r.capabilities.contains(Capabilities::PLUGIN_AUTH);
        let answered_native = match (&r.auth_plugin, plugin_auth) {
            (Some(p), true) => p == AuthPlugin::Native.name(),
            // Without plugin auth the answer is a native scramble.
            _ => true,
        };
        if !answered_native || GREETING_PLUGIN == AuthPlugin::Native {
            return self.hs.credentials(verifiers);
        }
        if r.auth_response.is_empty() && plugin_auth {
            // Ask for the native answer to the greeting's nonce.
            let mut payload = BytesMut::new();
            AuthSwitchRequest::new(AuthPlugin::Native, &self.hs.greeting().scramble)
                .encode(&mut payload);
            let mut out = BytesMut::new();
            let next = put_packet(&mut out, self.next_seq, &payload);
            self.native = Native::Switched {
                verifier: verifiers.native,
                seq: next,
            };
            return ServerStep::Send(out.freeze());
        }
        let answer = r.auth_response.clone();
        self.check_native(verifiers.native.as_deref(), &answer)
    }

    fn check_native(&mut self, verifier: Option<&str>, answer: &[u8]) -> ServerStep {
        let nonce = &self.hs.greeting().scramble;
        if verifier.is_some_and(|v| auth::native_verify(v, nonce, answer)) {
            self.native = Native::Proven { seq: self.next_seq };
            return ServerStep::Authenticated;
        }
        let user = self.user();
        self.native_failed(
            AuthError::AccessDenied {
                user: user.clone(),
                reason: "mysql_native_password answer does not match",
            },
            ErrPacket::access_denied(&user, true),
        )
    }

    fn native_failed(&mut self, error: AuthError, err: ErrPacket) -> ServerStep {
        self.native = Native::Finished;
        let packet = err.to_packet(self.next_seq);
        ServerStep::Failed { packet, error }
    }

    fn user(&self) -> String {
        self.hs
            .response()
            .map(|r| r.user.clone())
            .unwrap_or_default()
    }

    /// The result of the password check of [`ServerStep::CheckPassword`].
    pub fn password_checked(&mut self, ok: bool) -> ServerStep {
        self.hs.password_checked(ok)
    }

    /// Lets the client in (see [`ServerHandshake::accept`]).
    pub fn accept(&mut self, status: u16) -> Bytes {
        match std::mem::replace(&mut self.native, Native::Finished) {
            Native::Off => {
                self.native = Native::Off;
                self.hs.accept(status)
            }
            Native::Proven { seq } => {
                let ok = OkPacket {
                    header: OK_HEADER,
                    status: status & !super::caps::status::SESSION_STATE_CHANGED,
                    ..OkPacket::default()
                };
                let mut payload = BytesMut::new();
                ok.encode(self.hs.capabilities(), &mut payload);
                let mut out = BytesMut::new();
                put_packet(&mut out, seq, &payload);
                out.freeze()
            }
            _ => Bytes::new(),
        }
    }

    /// Turns the client away with `err` (after authentication, or at any
    /// point the glue gives up): the ERR packet to write.
    pub fn reject(&mut self, err: &ErrPacket) -> Bytes {
        match std::mem::replace(&mut self.native, Native::Finished) {
            Native::Off => self.hs.reject(err),
            Native::Proven { seq } => err.to_packet(seq),
            _ => err.to_packet(self.next_seq),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::{
        handshake::{AuthSwitchRequest, Greeting, ServerHello},
        packet::decode_packet,
    };

    fn cfg() -> ServerConfig {
        ServerConfig {
            server_version: "5.7.99-NOVA".into(),
            connection_id: 3,
            plugin: GREETING_PLUGIN,
            tls_available: true,
            require_tls: false,
        }
    }

    fn caps() -> Capabilities {
        Capabilities::PROTOCOL_41
            | Capabilities::SECURE_CONNECTION
            | Capabilities::PLUGIN_AUTH
            | Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA
            | Capabilities::DEPRECATE_EOF
    }

    fn hello(user: &str, plugin: &str, answer: Vec<u8>) -> Packet {
        let mut b = BytesMut::new();
        HandshakeResponse {
            capabilities: caps(),
            max_packet: 1 << 24,
            charset: 45,
            user: user.into(),
            auth_response: answer,
            database: None,
            auth_plugin: Some(plugin.into()),
            attrs: vec![],
            mariadb_capabilities: 0,
        }
        .encode(&mut b);
        Packet {
            seq: 1,
            last_seq: 1,
            payload: b.freeze(),
        }
    }

    fn nonce(greeting: &Bytes) -> Vec<u8> {
        let mut b = BytesMut::from(&greeting[..]);
        let p = decode_packet(&mut b, 4096)
            .expect("framing")
            .expect("packet");
        match Greeting::decode(&p.payload).expect("greeting") {
            ServerHello::Greeting(g) => {
                assert_eq!(g.auth_plugin, "caching_sha2_password");
                g.scramble
            }
            ServerHello::Error(e) => panic!("{e}"),
        }
    }

    fn packets(b: &Bytes) -> Vec<(u8, Vec<u8>)> {
        let mut buf = BytesMut::from(&b[..]);
        let mut out = Vec::new();
        while let Some(p) = decode_packet(&mut buf, 1 << 20).expect("framing") {
            out.push((p.seq, p.payload.to_vec()));
        }
        out
    }

    fn user(pw: &str) -> Verifiers {
        Verifiers {
            native: Some(auth::native_verifier(pw)),
            sha2_cached: None,
        }
    }

    #[test]
    fn native_answer_is_accepted_without_a_switch() {
        let (mut l, g) = ClientLogin::new(cfg());
        let answer = auth::native_scramble(b"pw", &nonce(&g)).to_vec();
        assert!(matches!(
            l.on_packet(&hello("alice", "mysql_native_password", answer)),
            ServerStep::LookUp { .. }
        ));
        assert!(matches!(
            l.credentials(user("pw")),
            ServerStep::Authenticated
        ));
        assert_eq!(l.plugin(), AuthPlugin::Native);
        let out = packets(&l.accept(2));
        assert_eq!(out, vec![(2, vec![0, 0, 0, 2, 0, 0, 0])]);
    }

    #[test]
    fn wrong_native_answer_and_unknown_user_fail_alike() {
        for (name, v) in [("alice", user("other")), ("nobody", Verifiers::default())] {
            let (mut l, g) = ClientLogin::new(cfg());
            let answer = auth::native_scramble(b"pw", &nonce(&g)).to_vec();
            l.on_packet(&hello(name, "mysql_native_password", answer));
            let ServerStep::Failed { packet, error } = l.credentials(v) else {
                panic!("expected a failure");
            };
            assert!(matches!(error, AuthError::AccessDenied { .. }));
            let out = packets(&packet);
            assert_eq!(out[0].0, 2);
            let err = ErrPacket::decode(&out[0].1).expect("err");
            assert_eq!(err.code, 1045);
            assert_eq!(
                err.message,
                format!("Access denied for user '{name}' (using password: YES)")
            );
        }
    }

    #[test]
    fn caching_sha2_answer_goes_through_the_machine() {
        let (mut l, g) = ClientLogin::new(cfg());
        let n = nonce(&g);
        let answer = auth::sha2_scramble(b"pw", &n).to_vec();
        l.on_packet(&hello("alice", "caching_sha2_password", answer));
        let v = Verifiers {
            native: Some(auth::native_verifier("pw")),
            sha2_cached: Some(auth::sha2_verifier("pw")),
        };
        assert!(matches!(l.credentials(v), ServerStep::Authenticated));
        assert_eq!(l.plugin(), AuthPlugin::CachingSha2);
        let out = packets(&l.accept(2));
        assert_eq!(out[0], (2, vec![0x01, 0x03]), "fast auth OK first");
        assert_eq!(out[1].0, 3);
    }

    #[test]
    fn other_plugins_are_switched_to_caching_sha2() {
        let (mut l, _) = ClientLogin::new(cfg());
        l.on_packet(&hello("alice", "client_ed25519", vec![1; 64]));
        let ServerStep::Send(b) = l.credentials(user("pw")) else {
            panic!("expected an auth switch");
        };
        let out = packets(&b);
        let sw = AuthSwitchRequest::decode(&out[0].1).expect("switch");
        assert_eq!(sw.plugin, "caching_sha2_password");
    }

    #[test]
    fn reject_after_native_login_uses_the_next_sequence_id() {
        let (mut l, g) = ClientLogin::new(cfg());
        let answer = auth::native_scramble(b"pw", &nonce(&g)).to_vec();
        l.on_packet(&hello("alice", "mysql_native_password", answer));
        l.credentials(user("pw"));
        let out = packets(&l.reject(&ErrPacket::upstream_failed("down")));
        assert_eq!(out[0].0, 2);
        assert_eq!(ErrPacket::decode(&out[0].1).expect("err").code, 1105);
    }

    #[test]
    fn empty_native_answer_gets_a_switch_to_native() {
        // libmariadb with --default-auth=mysql_native_password and a
        // caching_sha2_password greeting answers with no data.
        let (mut l, g) = ClientLogin::new(cfg());
        let n = nonce(&g);
        l.on_packet(&hello("alice", "mysql_native_password", vec![]));
        let ServerStep::Send(b) = l.credentials(user("pw")) else {
            panic!("expected an auth switch");
        };
        let out = packets(&b);
        assert_eq!(out[0].0, 2);
        let sw = AuthSwitchRequest::decode(&out[0].1).expect("switch");
        assert_eq!(sw.plugin, "mysql_native_password");
        assert_eq!(sw.nonce(), &n[..]);
        let answer = auth::native_scramble(b"pw", &n);
        let p = Packet {
            seq: 3,
            last_seq: 3,
            payload: Bytes::copy_from_slice(&answer),
        };
        assert!(matches!(l.on_packet(&p), ServerStep::Authenticated));
        assert_eq!(packets(&l.accept(2))[0].0, 4);

        // Wrong answer, and an answer out of order.
        for (seq, code) in [(3, 1045), (7, 1156)] {
            let (mut l, g) = ClientLogin::new(cfg());
            let n = nonce(&g);
            l.on_packet(&hello("alice", "mysql_native_password", vec![]));
            l.credentials(user("pw"));
            let answer = auth::native_scramble(b"wrong", &n);
            let p = Packet {
                seq,
                last_seq: seq,
                payload: Bytes::copy_from_slice(&answer),
            };
            let ServerStep::Failed { packet, .. } = l.on_packet(&p) else {
                panic!("expected failure");
            };
            let out = packets(&packet);
            assert_eq!(ErrPacket::decode(&out[0].1).expect("err").code, code);
        }
    }

    /// Random packets at every step, with and without a native hello
    /// first: failures are fine, panics are not.
    #[test]
    fn random_packets_never_panic() {
        use rand::{Rng, RngCore};
        let mut rng = rand::rng();
        for i in 0..2_000 {
            let (mut l, g) = ClientLogin::new(cfg());
            let mut seq = 1u8;
            if i % 2 == 0 {
                seq = 2;
                let answer = if i % 4 == 0 {
                    vec![]
                } else {
                    auth::native_scramble(b"pw", &nonce(&g)).to_vec()
                };
                if let ServerStep::LookUp { .. } =
                    l.on_packet(&hello("alice", "mysql_native_password", answer))
                {
                    // Empty answer: switched, the next packet is seq 3.
                    if let ServerStep::Send(_) = l.credentials(user("other")) {
                        seq = 3;
                    }
                }
            }
            for _ in 0..4 {
                let mut payload = vec![0u8; rng.random_range(0..64)];
                rng.fill_bytes(&mut payload);
                let s = if rng.random_bool(0.8) {
                    seq
                } else {
                    rng.random()
                };
                let p = Packet {
                    seq: s,
                    last_seq: s,
                    payload: Bytes::from(payload),
                };
                let mut step = l.on_packet(&p);
                for _ in 0..3 {
                    step = match step {
                        ServerStep::LookUp { .. } => l.credentials(user("pw")),
                        ServerStep::CheckPassword { .. } => l.password_checked(false),
                        _ => break,
                    };
                }
                seq = seq.wrapping_add(2);
            }
            let _ = l.accept(2);
            let _ = l.reject(&ErrPacket::upstream_failed("x"));
        }
    }
}
