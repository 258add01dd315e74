//! The client-facing login as NOVAS runs it: [`ServerHandshake`] greeting
//! with `caching_sha2_password` (MySQL 8's default), plus one rule the
//! machine alone does not have: a client that answered the greeting for
//! `mysql_native_password` is checked against the user's native verifier
//! directly, the way a MySQL server treats an account whose plugin is
//! `mysql_native_password`. Every NOVAS user has both verifiers, so both
//! plugins log in; an unknown user fails at the same step with the same
//! error as a wrong password.
//!
//! I/O-free like the machine it wraps: the glue calls the same methods in
//! the same order (see [`ServerHandshake`]).

use bytes::{Bytes, BytesMut};

use super::{
    auth::{self, AuthPlugin},
    caps::Capabilities,
    handshake::HandshakeResponse,
    packet::{put_packet, Packet},
    reply::{ErrPacket, OkPacket, OK_HEADER},
    server_auth::{AuthError, ServerConfig, ServerHandshake, ServerStep, Verifiers},
};

/// The plugin NOVAS's greeting names.
pub const GREETING_PLUGIN: AuthPlugin = AuthPlugin::CachingSha2;

/// One client's login.
#[derive(Debug)]
pub struct ClientLogin {
    hs: ServerHandshake,
    /// Sequence id of NOVAS's next packet when the native answer was
    /// accepted here (the machine is bypassed from then on).
    native_ok: Option<u8>,
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
                native_ok: None,
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

    /// The plugin the client ended up proving its password with.
    pub fn plugin(&self) -> AuthPlugin {
        if self.native_ok.is_some() {
            AuthPlugin::Native
        } else {
            GREETING_PLUGIN
        }
    }

    /// Feeds one complete client packet.
    pub fn on_packet(&mut self, packet: &Packet) -> ServerStep {
        self.next_seq = packet.last_seq.wrapping_add(1);
        self.hs.on_packet(packet)
    }

    /// The user's verifiers (the default for an unknown user), after
    /// [`ServerStep::LookUp`].
    pub fn credentials(&mut self, verifiers: Verifiers) -> ServerStep {
        let Some(r) = self.hs.response() else {
            return self.hs.credentials(verifiers);
        };
        let answered_native = match (
            &r.auth_plugin,
            r.capabilities.contains(Capabilities::PLUGIN_AUTH),
        ) {
            (Some(p), true) => p == AuthPlugin::Native.name(),
            // Without plugin auth the answer is a native scramble.
            _ => true,
        };
        if !answered_native || GREETING_PLUGIN == AuthPlugin::Native {
            return self.hs.credentials(verifiers);
        }
        let nonce = &self.hs.greeting().scramble;
        let ok = verifiers
            .native
            .as_deref()
            .is_some_and(|v| auth::native_verify(v, nonce, &r.auth_response));
        if ok {
            self.native_ok = Some(self.next_seq);
            return ServerStep::Authenticated;
        }
        let user = r.user.clone();
        let error = AuthError::AccessDenied {
            user: user.clone(),
            reason: "mysql_native_password answer does not match",
        };
        let packet = self.hs.reject(&ErrPacket::access_denied(&user, true));
        ServerStep::Failed { packet, error }
    }

    /// The result of the password check of [`ServerStep::CheckPassword`].
    pub fn password_checked(&mut self, ok: bool) -> ServerStep {
        self.hs.password_checked(ok)
    }

    /// Lets the client in (see [`ServerHandshake::accept`]).
    pub fn accept(&mut self, status: u16) -> Bytes {
        let Some(seq) = self.native_ok.take() else {
            return self.hs.accept(status);
        };
        // The machine would answer the same way; it is bypassed, so close
        // it too (a later accept from it is empty).
        let _ = self.hs.reject(&ErrPacket::new(0, "", ""));
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

    /// Turns the client away with `err` (after authentication, or at any
    /// point the glue gives up): the ERR packet to write.
    pub fn reject(&mut self, err: &ErrPacket) -> Bytes {
        match self.native_ok.take() {
            Some(seq) => err.to_packet(seq),
            None => self.hs.reject(err),
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
}
