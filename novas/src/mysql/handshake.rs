//! Connection-phase packets: the server greeting (HandshakeV10), the
//! client's SSLRequest and HandshakeResponse41, AuthSwitchRequest,
//! AuthMoreData and the cleartext password of a full
//! `caching_sha2_password` authentication.
//!
//! NOVAS encodes a greeting for its clients and decodes the upstream's;
//! it decodes the client's response and encodes its own for the upstream.

use bytes::{BufMut, Bytes, BytesMut};
use tunnel_proto::Secret;

use super::{
    auth::{self, AuthPlugin},
    caps::{self, status, Capabilities},
    packet::put_packet,
    reply::{ErrPacket, ERR_HEADER},
    wire::{put_lenenc, put_lenenc_bytes, put_nul_bytes, text, until_nul, DecodeError, Reader},
};

/// The only protocol version spoken since MySQL 3.21.
pub const PROTOCOL_VERSION: u8 = 10;

/// Cap for connection-phase packets: they are small, and an
/// unauthenticated peer should not make NOVAS buffer more (connection
/// attributes are limited to 64 KiB by the servers too).
pub const MAX_HANDSHAKE_PACKET: usize = 80 * 1024;

/// `utf8mb4_general_ci`: known to MariaDB and MySQL alike (MySQL 8's
/// `utf8mb4_0900_ai_ci`, 255, is unknown to MariaDB). Only a default: the
/// client names its own character set in its response, and NOVAS passes
/// that one upstream.
pub const DEFAULT_CHARSET: u8 = 45;

/// The version NOVAS announces when it has not seen the upstream's.
///
/// Clients act on this string:
/// - libmariadb (the `mysql` client) strips a `5.5.5-` prefix, the
///   "replication hack" MariaDB servers send, and then treats the server
///   as MariaDB; if in addition the greeting's `CLIENT_MYSQL` bit
///   (`CLIENT_LONG_PASSWORD`) is clear, it reads the last four reserved
///   bytes of the greeting as MariaDB extended capabilities and answers
///   with its own in the response filler (bulk execute, metadata cache,
///   `COM_MULTI`). NOVAS relays none of those, so it always sets
///   `CLIENT_MYSQL`, sends zeros there, and its default has no prefix.
/// - Connectors pick SQL by version: MySQL Connector/J reads
///   `@@transaction_isolation` from 8.0.3 on and `@@tx_isolation` before,
///   and MariaDB 10.11 only knows the latter (MySQL 8 only the former).
///   No single string is right for every upstream, hence
///   [`announced_version`] when the glue has the upstream's greeting.
/// - Servers with "MariaDB" in the string get a `MariaDB [db]>` prompt
///   from the `mysql` client; harmless either way.
///
/// 5.7 is what MariaDB 10.x resembles most for connectors, and the
/// `-NOVA` suffix shows users (`mysql` prints it) that a proxy answers.
pub const DEFAULT_SERVER_VERSION: &str = "5.7.99-NOVA";

/// The version to announce to clients given the upstream's greeting:
/// the upstream's own string, so connectors choose the dialect the real
/// server speaks, marked with `-NOVA`. A MariaDB `5.5.5-` prefix is kept:
/// connectors rely on it, and it is harmless because NOVAS sets
/// `CLIENT_MYSQL` (see [`DEFAULT_SERVER_VERSION`]).
pub fn announced_version(upstream: &str) -> String {
    let v = text(until_nul(upstream.as_bytes()));
    format!("{v}-NOVA")
}

/// HandshakeV10, the server's first packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    pub server_version: String,
    pub connection_id: u32,
    /// The authentication nonce (20 bytes for the built-in plugins),
    /// without the trailing NUL.
    pub scramble: Vec<u8>,
    pub capabilities: Capabilities,
    pub charset: u8,
    /// [`status`] flags.
    pub status: u16,
    /// Empty when the server does not have `CLIENT_PLUGIN_AUTH`.
    pub auth_plugin: String,
    /// MariaDB extended capabilities, present when `CLIENT_MYSQL` is
    /// clear; 0 otherwise and always 0 from NOVAS.
    pub mariadb_capabilities: u32,
}

/// What a server sends first: a greeting, or an ERR ("Too many
/// connections", "Host is blocked").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerHello {
    Greeting(Greeting),
    Error(ErrPacket),
}

impl Greeting {
    /// NOVAS's own greeting: a fresh scramble from the OS-seeded CSPRNG,
    /// [`caps::server_capabilities`], autocommit on.
    pub fn new(server_version: &str, connection_id: u32, plugin: AuthPlugin, tls: bool) -> Self {
        Self {
            server_version: text(until_nul(server_version.as_bytes())),
            connection_id,
            scramble: auth::new_scramble().to_vec(),
            capabilities: caps::server_capabilities(tls),
            charset: DEFAULT_CHARSET,
            status: status::AUTOCOMMIT,
            auth_plugin: plugin.name().to_string(),
            mariadb_capabilities: 0,
        }
    }

    /// Decodes the upstream's first packet.
    pub fn decode(payload: &[u8]) -> Result<ServerHello, DecodeError> {
        if payload.first() == Some(&ERR_HEADER) {
            return Ok(ServerHello::Error(ErrPacket::decode(payload)?));
        }
        let mut r = Reader::new(payload);
        let version = r.u8("protocol version")?;
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::Unsupported(format!(
                "handshake protocol version {version}"
            )));
        }
        let server_version = text(r.nul_bytes("server version")?);
        let connection_id = r.u32("connection id")?;
        let mut scramble = r.bytes(8, "auth plugin data")?.to_vec();
        r.u8("filler")?;
        let low = r.u16("capability flags")?;
        let mut g = Self {
            server_version,
            connection_id,
            scramble: Vec::new(),
            capabilities: Capabilities(u32::from(low)),
            charset: 0,
            status: 0,
            auth_plugin: String::new(),
            mariadb_capabilities: 0,
        };
        if r.is_empty() {
            g.scramble = scramble;
            return Ok(ServerHello::Greeting(g));
        }
        g.charset = r.u8("character set")?;
        g.status = r.u16("status flags")?;
        let high = r.u16("capability flags")?;
        g.capabilities = Capabilities(u32::from(low) | u32::from(high) << 16);
        let data_len = usize::from(r.u8("auth plugin data length")?);
        let reserved = r.bytes(10, "reserved")?;
        if !g.capabilities.contains(Capabilities::MYSQL) {
            g.mariadb_capabilities =
                u32::from_le_bytes([reserved[6], reserved[7], reserved[8], reserved[9]]);
        }
        if g.capabilities.contains(Capabilities::SECURE_CONNECTION) {
            let part2 = data_len.saturating_sub(8).max(13).min(r.remaining());
            let b = r.bytes(part2, "auth plugin data")?;
            // The part ends with a NUL that is not part of the nonce.
            scramble.extend_from_slice(b.strip_suffix(&[0]).unwrap_or(b));
        }
        g.scramble = scramble;
        if g.capabilities.contains(Capabilities::PLUGIN_AUTH) {
            g.auth_plugin = text(r.nul_or_rest());
        }
        Ok(ServerHello::Greeting(g))
    }

    /// Appends the payload.
    pub fn encode(&self, dst: &mut impl BufMut) {
        dst.put_u8(PROTOCOL_VERSION);
        put_nul_bytes(dst, until_nul(self.server_version.as_bytes()));
        dst.put_u32_le(self.connection_id);
        let mut data = self.scramble.clone();
        data.resize(data.len().max(8), 0);
        dst.put_slice(&data[..8]);
        dst.put_u8(0);
        let caps = self.capabilities.bits();
        dst.put_u16_le(caps as u16);
        dst.put_u8(self.charset);
        dst.put_u16_le(self.status);
        dst.put_u16_le((caps >> 16) as u16);
        let plugin_auth = self.capabilities.contains(Capabilities::PLUGIN_AUTH);
        dst.put_u8(if plugin_auth {
            (data.len() + 1) as u8
        } else {
            0
        });
        dst.put_slice(&[0; 6]);
        dst.put_u32_le(if self.capabilities.contains(Capabilities::MYSQL) {
            0
        } else {
            self.mariadb_capabilities
        });
        let mut part2 = data[8..].to_vec();
        part2.push(0);
        part2.resize(part2.len().max(13), 0);
        dst.put_slice(&part2);
        if plugin_auth {
            put_nul_bytes(dst, until_nul(self.auth_plugin.as_bytes()));
        }
    }

    /// The greeting framed as packet 0.
    pub fn to_packet(&self) -> Bytes {
        let mut payload = BytesMut::new();
        self.encode(&mut payload);
        let mut out = BytesMut::new();
        put_packet(&mut out, 0, &payload);
        out.freeze()
    }
}

/// The fixed head shared by SSLRequest and HandshakeResponse41.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SslRequest {
    pub capabilities: Capabilities,
    pub max_packet: u32,
    pub charset: u8,
}

/// Length of an SSLRequest payload.
pub const SSL_REQUEST_LEN: usize = 32;

impl SslRequest {
    pub fn encode(&self, dst: &mut impl BufMut) {
        dst.put_u32_le(self.capabilities.bits());
        dst.put_u32_le(self.max_packet);
        dst.put_u8(self.charset);
        dst.put_slice(&[0; 23]);
    }
}

/// HandshakeResponse41.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    pub capabilities: Capabilities,
    pub max_packet: u32,
    pub charset: u8,
    pub user: String,
    /// The plugin's first answer (a scramble; may be empty).
    pub auth_response: Vec<u8>,
    /// Initial database (`CLIENT_CONNECT_WITH_DB`).
    pub database: Option<String>,
    /// Plugin the answer is for (`CLIENT_PLUGIN_AUTH`).
    pub auth_plugin: Option<String>,
    /// Connection attributes (`CLIENT_CONNECT_ATTRS`), in order.
    pub attrs: Vec<(String, String)>,
    /// MariaDB extended capabilities from the filler (when the server
    /// announced it has some; NOVAS never does, so it ignores them).
    pub mariadb_capabilities: u32,
}

/// What a client sends after the greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHello {
    /// Switch to TLS, then the real response follows.
    Ssl(SslRequest),
    Response(HandshakeResponse),
}

impl ClientHello {
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let capabilities = Capabilities(r.u32("capability flags")?);
        if !capabilities.contains(Capabilities::PROTOCOL_41) {
            return Err(DecodeError::Unsupported(
                "pre-4.1 client handshake (HandshakeResponse320)".into(),
            ));
        }
        let head = SslRequest {
            capabilities,
            max_packet: r.u32("max packet size")?,
            charset: r.u8("character set")?,
        };
        let filler = r.bytes(23, "filler")?;
        if r.is_empty() && capabilities.contains(Capabilities::SSL) {
            return Ok(Self::Ssl(head));
        }
        let user = text(r.nul_bytes("user name")?);
        let auth_response =
            if capabilities.contains(Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA) {
                r.lenenc_bytes("auth response")?
            } else if capabilities.contains(Capabilities::SECURE_CONNECTION) {
                let n = r.u8("auth response length")?;
                r.bytes(usize::from(n), "auth response")?
            } else {
                r.nul_bytes("auth response")?
            }
            .to_vec();
        let database = if capabilities.contains(Capabilities::CONNECT_WITH_DB) && !r.is_empty() {
            Some(text(r.nul_or_rest()))
        } else {
            None
        };
        let auth_plugin = if capabilities.contains(Capabilities::PLUGIN_AUTH) && !r.is_empty() {
            Some(text(r.nul_or_rest()))
        } else {
            None
        };
        let mut attrs = Vec::new();
        if capabilities.contains(Capabilities::CONNECT_ATTRS) && !r.is_empty() {
            let mut a = Reader::new(r.lenenc_bytes("connection attributes")?);
            while !a.is_empty() {
                let k = text(a.lenenc_bytes("attribute name")?);
                let v = text(a.lenenc_bytes("attribute value")?);
                attrs.push((k, v));
            }
        }
        Ok(Self::Response(HandshakeResponse {
            capabilities,
            max_packet: head.max_packet,
            charset: head.charset,
            user,
            auth_response,
            database,
            auth_plugin,
            attrs,
            mariadb_capabilities: u32::from_le_bytes([
                filler[19], filler[20], filler[21], filler[22],
            ]),
        }))
    }
}

impl HandshakeResponse {
    /// Appends the payload, laid out by `self.capabilities`: the caller
    /// sets `CLIENT_CONNECT_WITH_DB` exactly when `database` is present
    /// (see [`caps::upstream_capabilities`]).
    pub fn encode(&self, dst: &mut impl BufMut) {
        let caps = self.capabilities;
        SslRequest {
            capabilities: caps,
            max_packet: self.max_packet,
            charset: self.charset,
        }
        .encode(dst);
        put_nul_bytes(dst, until_nul(self.user.as_bytes()));
        if caps.contains(Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA) {
            put_lenenc_bytes(dst, &self.auth_response);
        } else if caps.contains(Capabilities::SECURE_CONNECTION) {
            let n = self.auth_response.len().min(255);
            dst.put_u8(n as u8);
            dst.put_slice(&self.auth_response[..n]);
        } else {
            put_nul_bytes(dst, until_nul(&self.auth_response));
        }
        if caps.contains(Capabilities::CONNECT_WITH_DB) {
            let db = self.database.as_deref().unwrap_or("");
            put_nul_bytes(dst, until_nul(db.as_bytes()));
        }
        if caps.contains(Capabilities::PLUGIN_AUTH) {
            let p = self.auth_plugin.as_deref().unwrap_or("");
            put_nul_bytes(dst, until_nul(p.as_bytes()));
        }
        if caps.contains(Capabilities::CONNECT_ATTRS) {
            let mut a = BytesMut::new();
            for (k, v) in &self.attrs {
                put_lenenc_bytes(&mut a, k.as_bytes());
                put_lenenc_bytes(&mut a, v.as_bytes());
            }
            put_lenenc(dst, a.len() as u64);
            dst.put_slice(&a);
        }
    }
}

/// First byte of AuthSwitchRequest.
pub const AUTH_SWITCH_HEADER: u8 = 0xFE;
/// First byte of AuthMoreData.
pub const AUTH_MORE_DATA_HEADER: u8 = 0x01;

/// AuthSwitchRequest: "answer again, for this plugin, with this nonce".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSwitchRequest {
    pub plugin: String,
    /// Plugin data as sent (the built-ins send the nonce and a NUL).
    pub data: Vec<u8>,
}

impl AuthSwitchRequest {
    /// A request for `plugin` with `scramble` (a NUL is appended, as the
    /// servers do).
    pub fn new(plugin: AuthPlugin, scramble: &[u8]) -> Self {
        let mut data = scramble.to_vec();
        data.push(0);
        Self {
            plugin: plugin.name().to_string(),
            data,
        }
    }

    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        if r.u8("auth switch header")? != AUTH_SWITCH_HEADER {
            return Err(DecodeError::Invalid("auth switch header"));
        }
        if r.is_empty() {
            // The pre-4.1 "switch to old password" request.
            return Err(DecodeError::Unsupported(
                "switch to mysql_old_password".into(),
            ));
        }
        Ok(Self {
            plugin: text(r.nul_or_rest()),
            data: r.rest().to_vec(),
        })
    }

    pub fn encode(&self, dst: &mut impl BufMut) {
        dst.put_u8(AUTH_SWITCH_HEADER);
        put_nul_bytes(dst, until_nul(self.plugin.as_bytes()));
        dst.put_slice(&self.data);
    }

    /// The nonce: the data without its trailing NUL.
    pub fn nonce(&self) -> &[u8] {
        self.data.strip_suffix(&[0]).unwrap_or(&self.data)
    }
}

/// AuthMoreData: plugin-specific data from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthMoreData {
    pub data: Vec<u8>,
}

impl AuthMoreData {
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        if r.u8("auth more data header")? != AUTH_MORE_DATA_HEADER {
            return Err(DecodeError::Invalid("auth more data header"));
        }
        Ok(Self {
            data: r.rest().to_vec(),
        })
    }

    pub fn encode(&self, dst: &mut impl BufMut) {
        dst.put_u8(AUTH_MORE_DATA_HEADER);
        dst.put_slice(&self.data);
    }
}

/// The cleartext password packet of a full `caching_sha2_password` (or
/// `mysql_clear_password`) authentication: the password and a NUL. Only
/// ever accepted over TLS. Lenient about a missing NUL; a password that
/// is not UTF-8 cannot match a NOVAS password and is refused.
pub fn decode_cleartext_password(payload: &[u8]) -> Result<Secret, DecodeError> {
    let pw = payload.strip_suffix(&[0]).unwrap_or(payload);
    let pw = std::str::from_utf8(pw).map_err(|_| DecodeError::Invalid("password encoding"))?;
    Ok(Secret::new(pw.to_string()))
}

/// The cleartext password packet for the upstream.
pub fn encode_cleartext_password(password: &Secret, dst: &mut impl BufMut) {
    put_nul_bytes(dst, until_nul(password.expose().as_bytes()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_round_trip_and_layout() {
        let g = Greeting::new("5.7.99-NOVA", 42, AuthPlugin::CachingSha2, true);
        assert_eq!(g.scramble.len(), 20);
        assert!(g.scramble.iter().all(|&b| b != 0 && b != b'$' && b < 0x80));
        let mut b = BytesMut::new();
        g.encode(&mut b);
        // version 10, "5.7.99-NOVA\0", id, 8 bytes, filler, caps, charset,
        // status, caps, 21, 10 reserved, 13 bytes, plugin name and NUL.
        assert_eq!(
            b.len(),
            1 + 12 + 4 + 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10 + 13 + 22
        );
        assert_eq!(b[0], 10);
        let plugin_len_at = 1 + 12 + 4 + 8 + 1 + 2 + 1 + 2 + 2;
        assert_eq!(b[plugin_len_at], 21);
        assert_eq!(&b[plugin_len_at + 1..plugin_len_at + 11], &[0u8; 10]);
        assert_eq!(*b.last().expect("byte"), 0);
        assert_eq!(Greeting::decode(&b), Ok(ServerHello::Greeting(g.clone())));
        let framed = g.to_packet();
        assert_eq!(&framed[..4], &[b.len() as u8, 0, 0, 0]);
    }

    /// The greeting of a MariaDB 10.11 server, as captured on the wire.
    #[test]
    fn decodes_a_mariadb_greeting() {
        let mut p = vec![10u8];
        p.extend_from_slice(b"5.5.5-10.11.6-MariaDB-0+deb12u1\0");
        p.extend_from_slice(&7u32.to_le_bytes());
        p.extend_from_slice(b"abcdefgh\0");
        p.extend_from_slice(&0xF7FEu16.to_le_bytes());
        p.push(45);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&0x81BFu16.to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 6]);
        p.extend_from_slice(&0x1Du32.to_le_bytes());
        p.extend_from_slice(b"ijklmnopqrst\0");
        p.extend_from_slice(b"mysql_native_password\0");
        let ServerHello::Greeting(g) = Greeting::decode(&p).expect("decode") else {
            panic!("not a greeting");
        };
        assert_eq!(g.server_version, "5.5.5-10.11.6-MariaDB-0+deb12u1");
        assert_eq!(g.connection_id, 7);
        assert_eq!(g.scramble, b"abcdefghijklmnopqrst");
        assert_eq!(g.auth_plugin, "mysql_native_password");
        assert!(!g.capabilities.contains(Capabilities::MYSQL));
        assert_eq!(g.mariadb_capabilities, 0x1D);
        assert!(g.capabilities.contains(Capabilities::DEPRECATE_EOF));
        // Every truncation is an error, never a panic.
        for cut in 0..p.len() - 22 {
            let _ = Greeting::decode(&p[..cut]);
        }
        assert!(Greeting::decode(&p[..20]).is_err());
    }

    #[test]
    fn greeting_may_be_an_error_and_old_versions_are_refused() {
        let e = ErrPacket::new(1040, "08004", "Too many connections");
        let mut b = BytesMut::new();
        e.encode(&mut b);
        assert_eq!(Greeting::decode(&b), Ok(ServerHello::Error(e)));
        assert!(matches!(
            Greeting::decode(&[9, b'x', 0]),
            Err(DecodeError::Unsupported(_))
        ));
    }

    fn response(caps: Capabilities) -> HandshakeResponse {
        HandshakeResponse {
            capabilities: caps,
            max_packet: 16 * 1024 * 1024,
            charset: 45,
            user: "alice".into(),
            auth_response: (0u8..32).collect(),
            database: caps
                .contains(Capabilities::CONNECT_WITH_DB)
                .then(|| "shop".to_string()),
            auth_plugin: Some("caching_sha2_password".into()),
            attrs: if caps.contains(Capabilities::CONNECT_ATTRS) {
                vec![
                    ("_client_name".into(), "libmariadb".into()),
                    ("program_name".into(), "mysql".into()),
                ]
            } else {
                Vec::new()
            },
            mariadb_capabilities: 0,
        }
    }

    #[test]
    fn handshake_response_round_trips_in_every_auth_layout() {
        let base = Capabilities::PROTOCOL_41 | Capabilities::PLUGIN_AUTH;
        for caps in [
            base | Capabilities::SECURE_CONNECTION,
            base | Capabilities::SECURE_CONNECTION | Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA,
            base | Capabilities::SECURE_CONNECTION
                | Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA
                | Capabilities::CONNECT_WITH_DB
                | Capabilities::CONNECT_ATTRS,
        ] {
            let r = response(caps);
            let mut b = BytesMut::new();
            r.encode(&mut b);
            assert_eq!(
                ClientHello::decode(&b),
                Ok(ClientHello::Response(r)),
                "{caps:?}"
            );
        }
    }

    #[test]
    fn long_auth_response_needs_lenenc() {
        let caps = Capabilities::PROTOCOL_41
            | Capabilities::PLUGIN_AUTH
            | Capabilities::SECURE_CONNECTION
            | Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA;
        let mut r = response(caps);
        r.auth_response = vec![7; 300];
        let mut b = BytesMut::new();
        r.encode(&mut b);
        assert_eq!(ClientHello::decode(&b), Ok(ClientHello::Response(r)));
    }

    #[test]
    fn ssl_request_is_recognised() {
        let caps = Capabilities::PROTOCOL_41 | Capabilities::SSL | Capabilities::PLUGIN_AUTH;
        let s = SslRequest {
            capabilities: caps,
            max_packet: 1 << 24,
            charset: 33,
        };
        let mut b = BytesMut::new();
        s.encode(&mut b);
        assert_eq!(b.len(), SSL_REQUEST_LEN);
        assert_eq!(ClientHello::decode(&b), Ok(ClientHello::Ssl(s)));
        // Without CLIENT_SSL a 32-byte packet is a truncated response.
        let mut b = BytesMut::new();
        SslRequest {
            capabilities: Capabilities::PROTOCOL_41,
            ..s
        }
        .encode(&mut b);
        assert!(ClientHello::decode(&b).is_err());
    }

    #[test]
    fn pre_41_clients_are_refused_and_truncations_fail() {
        assert!(matches!(
            ClientHello::decode(&[0x05, 0x04, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::Unsupported(_))
        ));
        let mut b = BytesMut::new();
        response(
            Capabilities::PROTOCOL_41
                | Capabilities::SECURE_CONNECTION
                | Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA
                | Capabilities::CONNECT_ATTRS,
        )
        .encode(&mut b);
        for cut in 0..b.len() {
            let _ = ClientHello::decode(&b[..cut]);
        }
        assert!(ClientHello::decode(&b[..40]).is_err());
    }

    #[test]
    fn auth_switch_and_more_data() {
        let s = AuthSwitchRequest::new(AuthPlugin::Native, b"01234567890123456789");
        let mut b = BytesMut::new();
        s.encode(&mut b);
        assert_eq!(&b[..23], b"\xfemysql_native_password\0");
        let back = AuthSwitchRequest::decode(&b).expect("decode");
        assert_eq!(back.nonce(), b"01234567890123456789");
        assert!(AuthSwitchRequest::decode(&[0xFE]).is_err());
        let m = AuthMoreData::decode(&[0x01, 0x04]).expect("decode");
        assert_eq!(m.data, [4]);
        assert_eq!(
            decode_cleartext_password(b"s3cret\0").expect("pw").expose(),
            "s3cret"
        );
    }
}
