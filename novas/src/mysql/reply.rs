//! The generic server replies: OK, ERR and EOF packets, and the ERR
//! packets NOVAS itself sends (policy refusals, login failures).

use bytes::{BufMut, Bytes, BytesMut};

use super::{
    caps::{status, Capabilities},
    packet::put_packet,
    wire::{put_lenenc, put_lenenc_bytes, text, DecodeError, Reader},
};

/// First byte of an OK packet.
pub const OK_HEADER: u8 = 0x00;
/// First byte of an EOF packet, and of an OK packet that ends rows under
/// `CLIENT_DEPRECATE_EOF`.
pub const EOF_HEADER: u8 = 0xFE;
/// First byte of an ERR packet.
pub const ERR_HEADER: u8 = 0xFF;
/// First byte of a LOCAL INFILE request.
pub const LOCAL_INFILE_HEADER: u8 = 0xFB;

/// Longest message clients keep (`MYSQL_ERRMSG_SIZE` - 1).
const MAX_MESSAGE: usize = 511;

/// An OK packet (or an OK packet with the `0xFE` header that replaces EOF
/// under `CLIENT_DEPRECATE_EOF`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OkPacket {
    /// [`OK_HEADER`] or [`EOF_HEADER`].
    pub header: u8,
    pub affected_rows: u64,
    pub last_insert_id: u64,
    /// [`status`] flags.
    pub status: u16,
    pub warnings: u16,
    /// Human-readable info ("Rows matched: 1  Changed: 1 ...").
    pub info: String,
    /// Session-state change records, kept raw (`CLIENT_SESSION_TRACK` and
    /// [`status::SESSION_STATE_CHANGED`]).
    pub session_state: Bytes,
}

impl OkPacket {
    /// Decodes an OK payload (header `0x00` or `0xFE`) under the
    /// capabilities in force on the hop it came from.
    pub fn decode(payload: &[u8], caps: Capabilities) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let header = r.u8("OK header")?;
        if header != OK_HEADER && header != EOF_HEADER {
            return Err(DecodeError::Invalid("OK header"));
        }
        let mut ok = Self {
            header,
            affected_rows: r.lenenc("affected rows")?,
            last_insert_id: r.lenenc("last insert id")?,
            status: r.u16("status flags")?,
            warnings: r.u16("warning count")?,
            ..Self::default()
        };
        if caps.contains(Capabilities::SESSION_TRACK) {
            if !r.is_empty() {
                ok.info = text(r.lenenc_bytes("info")?);
                if ok.status & status::SESSION_STATE_CHANGED != 0 && !r.is_empty() {
                    ok.session_state = Bytes::copy_from_slice(r.lenenc_bytes("session state")?);
                }
            }
        } else {
            ok.info = text(r.rest());
        }
        Ok(ok)
    }

    /// Appends the payload.
    pub fn encode(&self, caps: Capabilities, dst: &mut impl BufMut) {
        dst.put_u8(self.header);
        put_lenenc(dst, self.affected_rows);
        put_lenenc(dst, self.last_insert_id);
        dst.put_u16_le(self.status);
        dst.put_u16_le(self.warnings);
        if caps.contains(Capabilities::SESSION_TRACK) {
            let with_state = self.status & status::SESSION_STATE_CHANGED != 0;
            if !self.info.is_empty() || with_state {
                put_lenenc_bytes(dst, self.info.as_bytes());
            }
            if with_state {
                put_lenenc_bytes(dst, &self.session_state);
            }
        } else {
            dst.put_slice(self.info.as_bytes());
        }
    }

    /// The packet framed with sequence id `seq`.
    pub fn to_packet(&self, caps: Capabilities, seq: u8) -> Bytes {
        let mut payload = BytesMut::new();
        self.encode(caps, &mut payload);
        let mut out = BytesMut::new();
        put_packet(&mut out, seq, &payload);
        out.freeze()
    }
}

/// An EOF packet (without `CLIENT_DEPRECATE_EOF`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EofPacket {
    pub warnings: u16,
    pub status: u16,
}

impl EofPacket {
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        if r.u8("EOF header")? != EOF_HEADER {
            return Err(DecodeError::Invalid("EOF header"));
        }
        // Pre-4.1 EOF packets are the bare header.
        if r.is_empty() {
            return Ok(Self::default());
        }
        Ok(Self {
            warnings: r.u16("warning count")?,
            status: r.u16("status flags")?,
        })
    }

    pub fn encode(&self, dst: &mut impl BufMut) {
        dst.put_u8(EOF_HEADER);
        dst.put_u16_le(self.warnings);
        dst.put_u16_le(self.status);
    }
}

/// The end of a result set or of a list of definitions: an EOF packet, or
/// the `0xFE` OK packet that replaces it under `CLIENT_DEPRECATE_EOF`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terminator {
    pub warnings: u16,
    pub status: u16,
    /// Affected rows (only an OK-style terminator has them).
    pub affected_rows: u64,
}

impl Terminator {
    /// Decodes either form. They are told apart by length, not by the
    /// negotiated flags: an EOF payload is 5 bytes (1 before 4.1) and an
    /// OK-style one at least 7, and servers answer a few commands
    /// (COM_SET_OPTION, COM_DEBUG) with a classic EOF either way.
    pub fn decode(payload: &[u8], caps: Capabilities) -> Result<Self, DecodeError> {
        if payload.len() < 7 {
            let eof = EofPacket::decode(payload)?;
            Ok(Self {
                warnings: eof.warnings,
                status: eof.status,
                affected_rows: 0,
            })
        } else {
            let ok = OkPacket::decode(payload, caps)?;
            Ok(Self {
                warnings: ok.warnings,
                status: ok.status,
                affected_rows: ok.affected_rows,
            })
        }
    }
}

/// An ERR packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrPacket {
    pub code: u16,
    /// Five characters, e.g. `42000`; `HY000` when the packet had none.
    pub sqlstate: String,
    pub message: String,
}

impl std::fmt::Display for ErrPacket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ERROR {} ({}): {}",
            self.code, self.sqlstate, self.message
        )
    }
}

impl ErrPacket {
    /// A packet with `code`, `sqlstate` (five characters) and `message`.
    pub fn new(code: u16, sqlstate: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            sqlstate: sqlstate.to_string(),
            message: message.into(),
        }
    }

    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        if r.u8("ERR header")? != ERR_HEADER {
            return Err(DecodeError::Invalid("ERR header"));
        }
        let code = r.u16("error code")?;
        // The SQLSTATE marker is absent before the client's capabilities
        // are known (an ERR instead of the greeting).
        let sqlstate = if r.peek() == Some(b'#') {
            r.u8("sqlstate marker")?;
            text(r.bytes(5, "sqlstate")?)
        } else {
            "HY000".to_string()
        };
        Ok(Self {
            code,
            sqlstate,
            message: text(r.rest()),
        })
    }

    /// Appends the payload (always with the SQLSTATE marker: NOVAS only
    /// speaks protocol 4.1).
    pub fn encode(&self, dst: &mut impl BufMut) {
        dst.put_u8(ERR_HEADER);
        dst.put_u16_le(self.code);
        dst.put_u8(b'#');
        let mut state = [b'H', b'Y', b'0', b'0', b'0'];
        for (d, s) in state.iter_mut().zip(self.sqlstate.bytes()) {
            *d = s;
        }
        dst.put_slice(&state);
        let mut end = self.message.len().min(MAX_MESSAGE);
        while !self.message.is_char_boundary(end) {
            end -= 1;
        }
        dst.put_slice(&self.message.as_bytes()[..end]);
    }

    /// The packet framed with sequence id `seq`.
    pub fn to_packet(&self, seq: u8) -> Bytes {
        let mut payload = BytesMut::new();
        self.encode(&mut payload);
        let mut out = BytesMut::new();
        put_packet(&mut out, seq, &payload);
        out.freeze()
    }

    /// A statement refused by policy: `ER_TABLEACCESS_DENIED_ERROR`-style
    /// (1142, SQLSTATE 42000), so clients and ORMs treat it as a permission
    /// error, not a broken connection. `what` says what was refused (e.g.
    /// `"DROP command"`), `policy` names the rule.
    pub fn denied_by_policy(what: &str, policy: &str) -> Self {
        Self::new(
            1142,
            "42000",
            format!("{what} denied by NOVAS policy '{policy}'"),
        )
    }

    /// A failed login (`ER_ACCESS_DENIED_ERROR`), worded like the server's.
    pub fn access_denied(user: &str, using_password: bool) -> Self {
        let yes = if using_password { "YES" } else { "NO" };
        Self::new(
            1045,
            "28000",
            format!("Access denied for user '{user}' (using password: {yes})"),
        )
    }

    /// `caching_sha2_password` needs the cleartext password once, and NOVAS
    /// only accepts it over TLS (it does not do the RSA key exchange).
    pub fn full_auth_needs_tls(user: &str) -> Self {
        Self::new(
            1045,
            "28000",
            format!(
                "Access denied for user '{user}': caching_sha2_password needs the password once \
                 over TLS; connect with --ssl"
            ),
        )
    }

    /// COM_CHANGE_USER: NOVAS authenticated one identity and logged in
    /// upstream with that identity's stored credentials; switching inside
    /// the session would bypass both.
    pub fn change_user_refused() -> Self {
        Self::new(
            1227,
            "42000",
            "Access denied; COM_CHANGE_USER is not allowed through NOVAS (reconnect as the other user)",
        )
    }

    /// A command whose response NOVAS cannot follow (replication, MariaDB
    /// bulk commands...): `ER_UNKNOWN_COM_ERROR`.
    pub fn unsupported_command(name: &str) -> Self {
        Self::new(
            1047,
            "08S01",
            format!("Command {name} is not supported through NOVAS"),
        )
    }

    /// A command larger than NOVAS parses (`ER_NET_PACKET_TOO_LARGE`).
    pub fn packet_too_large() -> Self {
        Self::new(
            1153,
            "08S01",
            "Got a packet bigger than 'max_allowed_packet' bytes",
        )
    }

    /// The login to the upstream failed; `why` is for the user (no stored
    /// credentials in it).
    pub fn upstream_failed(why: &str) -> Self {
        Self::new(
            1105,
            "HY000",
            format!("NOVAS could not log in to the database: {why}"),
        )
    }
}

/// What the first byte of a server reply says it is.
pub fn is_err(payload: &[u8]) -> bool {
    payload.first() == Some(&ERR_HEADER)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track() -> Capabilities {
        Capabilities::PROTOCOL_41 | Capabilities::SESSION_TRACK | Capabilities::DEPRECATE_EOF
    }

    #[test]
    fn ok_round_trips_with_and_without_session_track() {
        let ok = OkPacket {
            header: OK_HEADER,
            affected_rows: 300,
            last_insert_id: 70_000,
            status: status::AUTOCOMMIT | status::SESSION_STATE_CHANGED,
            warnings: 2,
            info: "Rows matched: 1".into(),
            session_state: Bytes::from_static(b"\x01\x05\x04test"),
        };
        let mut b = BytesMut::new();
        ok.encode(track(), &mut b);
        assert_eq!(OkPacket::decode(&b, track()).expect("decode"), ok);

        let plain = OkPacket {
            session_state: Bytes::new(),
            status: status::AUTOCOMMIT,
            ..ok.clone()
        };
        let mut b = BytesMut::new();
        plain.encode(Capabilities::PROTOCOL_41, &mut b);
        assert_eq!(
            OkPacket::decode(&b, Capabilities::PROTOCOL_41).expect("decode"),
            plain
        );
    }

    #[test]
    fn minimal_ok_from_a_server() {
        // 00 | affected 1 | insert id 0 | status 0x0002 | warnings 0
        let p = [0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00];
        let ok = OkPacket::decode(&p, track()).expect("decode");
        assert_eq!((ok.affected_rows, ok.status, ok.info.as_str()), (1, 2, ""));
        assert!(OkPacket::decode(&p[..4], track()).is_err());
    }

    #[test]
    fn err_round_trip_and_without_marker() {
        let e = ErrPacket::denied_by_policy("DROP command", "read-only");
        let wire = e.to_packet(1);
        assert_eq!(&wire[3..5], &[1, 0xFF]);
        let back = ErrPacket::decode(&wire[4..]).expect("decode");
        assert_eq!(back, e);
        assert_eq!(back.code, 1142);
        assert_eq!(back.sqlstate, "42000");
        assert!(back.message.contains("'read-only'"));

        let old = ErrPacket::decode(b"\xff\x10\x04Too many connections").expect("decode");
        assert_eq!(
            (old.code, old.sqlstate.as_str(), old.message.as_str()),
            (1040, "HY000", "Too many connections")
        );
        assert!(ErrPacket::decode(b"\xff\x10").is_err());
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let e = ErrPacket::new(1, "HY000", "é".repeat(400));
        let mut b = BytesMut::new();
        e.encode(&mut b);
        let back = ErrPacket::decode(&b).expect("decode");
        assert!(back.message.len() <= MAX_MESSAGE);
        assert!(back.message.chars().all(|c| c == 'é'));
    }

    #[test]
    fn terminators() {
        let mut b = BytesMut::new();
        EofPacket {
            warnings: 1,
            status: status::MORE_RESULTS_EXISTS,
        }
        .encode(&mut b);
        let t = Terminator::decode(&b, Capabilities::PROTOCOL_41).expect("eof");
        assert_eq!(t.status, status::MORE_RESULTS_EXISTS);
        let ok = OkPacket {
            header: EOF_HEADER,
            status: status::AUTOCOMMIT,
            ..OkPacket::default()
        };
        let mut b = BytesMut::new();
        ok.encode(track(), &mut b);
        assert_eq!(b[0], 0xFE);
        let t = Terminator::decode(&b, track()).expect("ok-eof");
        assert_eq!(t.status, status::AUTOCOMMIT);
    }
}
