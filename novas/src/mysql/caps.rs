//! Capability flags, status flags, and which capabilities each hop uses.
//!
//! NOVAS relays command-phase packets between client and upstream without
//! rewriting them, so every capability that changes a packet's *format*
//! must be the same on both hops. [`upstream_capabilities`] computes the
//! set to request upstream from what the client negotiated with NOVAS:
//!
//! - **Same on both hops** (format): `CLIENT_DEPRECATE_EOF` (EOF packets
//!   vs. OK packets with a `0xFE` header), `CLIENT_SESSION_TRACK` (extra
//!   fields in OK packets), `CLIENT_MULTI_RESULTS` and
//!   `CLIENT_PS_MULTI_RESULTS` (several results per command),
//!   `CLIENT_LONG_FLAG`, `CLIENT_FOUND_ROWS` (what "affected rows" means).
//!   If the client negotiated one and the upstream lacks it, the login is
//!   refused with [`CapsError::Mismatch`] rather than relaying packets the
//!   client would misread.
//! - **Passed when the upstream has them** (behaviour, not format):
//!   `CLIENT_MULTI_STATEMENTS`, `CLIENT_LOCAL_FILES`, `CLIENT_IGNORE_SPACE`,
//!   `CLIENT_INTERACTIVE`, `CLIENT_TRANSACTIONS`. Without them the upstream
//!   answers the statement with an ordinary ERR.
//! - **Per hop** (this hop's login only): `CLIENT_SSL` (NOVAS terminates
//!   the client's TLS and opens its own to the upstream),
//!   `CLIENT_PLUGIN_AUTH`, `CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA`,
//!   `CLIENT_SECURE_CONNECTION`, `CLIENT_CONNECT_ATTRS`,
//!   `CLIENT_CONNECT_WITH_DB`.
//! - **Never**: `CLIENT_COMPRESS` (NOVAS must read the packets),
//!   `CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS` (an expired stored password
//!   should fail the login loudly, not open a sandbox session), and bits
//!   25-31, which mean different things to MySQL (`CLIENT_QUERY_ATTRIBUTES`
//!   changes COM_QUERY's layout, optional metadata, zstd, MFA) and MariaDB
//!   (progress reports). MariaDB's extended capabilities (bulk execute,
//!   metadata cache, `COM_MULTI`) are never negotiated either: NOVAS sets
//!   `CLIENT_MYSQL` (= `CLIENT_LONG_PASSWORD`, bit 0) towards the client,
//!   which tells MariaDB clients there are no extended flags, and sends
//!   zeros in their place to the upstream.

use std::{fmt, ops};

/// Client/server capability flags (the low 32 bits; MariaDB's extended
/// flags live elsewhere and NOVAS never sets them).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities(pub u32);

macro_rules! flags {
    ($($name:ident = $bit:expr, $text:literal;)*) => {
        impl Capabilities {
            $(pub const $name: Self = Self(1 << $bit);)*
        }
        const NAMES: &[(u32, &str)] = &[$((1 << $bit, $text)),*];
    };
}

flags! {
    LONG_PASSWORD = 0, "CLIENT_LONG_PASSWORD";
    FOUND_ROWS = 1, "CLIENT_FOUND_ROWS";
    LONG_FLAG = 2, "CLIENT_LONG_FLAG";
    CONNECT_WITH_DB = 3, "CLIENT_CONNECT_WITH_DB";
    NO_SCHEMA = 4, "CLIENT_NO_SCHEMA";
    COMPRESS = 5, "CLIENT_COMPRESS";
    ODBC = 6, "CLIENT_ODBC";
    LOCAL_FILES = 7, "CLIENT_LOCAL_FILES";
    IGNORE_SPACE = 8, "CLIENT_IGNORE_SPACE";
    PROTOCOL_41 = 9, "CLIENT_PROTOCOL_41";
    INTERACTIVE = 10, "CLIENT_INTERACTIVE";
    SSL = 11, "CLIENT_SSL";
    IGNORE_SIGPIPE = 12, "CLIENT_IGNORE_SIGPIPE";
    TRANSACTIONS = 13, "CLIENT_TRANSACTIONS";
    RESERVED = 14, "CLIENT_RESERVED";
    SECURE_CONNECTION = 15, "CLIENT_SECURE_CONNECTION";
    MULTI_STATEMENTS = 16, "CLIENT_MULTI_STATEMENTS";
    MULTI_RESULTS = 17, "CLIENT_MULTI_RESULTS";
    PS_MULTI_RESULTS = 18, "CLIENT_PS_MULTI_RESULTS";
    PLUGIN_AUTH = 19, "CLIENT_PLUGIN_AUTH";
    CONNECT_ATTRS = 20, "CLIENT_CONNECT_ATTRS";
    PLUGIN_AUTH_LENENC_CLIENT_DATA = 21, "CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA";
    CAN_HANDLE_EXPIRED_PASSWORDS = 22, "CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS";
    SESSION_TRACK = 23, "CLIENT_SESSION_TRACK";
    DEPRECATE_EOF = 24, "CLIENT_DEPRECATE_EOF";
    OPTIONAL_RESULTSET_METADATA = 25, "CLIENT_OPTIONAL_RESULTSET_METADATA";
    ZSTD_COMPRESSION = 26, "CLIENT_ZSTD_COMPRESSION_ALGORITHM";
    QUERY_ATTRIBUTES = 27, "CLIENT_QUERY_ATTRIBUTES";
    MULTI_FACTOR_AUTHENTICATION = 28, "MULTI_FACTOR_AUTHENTICATION";
    CAPABILITY_EXTENSION = 29, "CLIENT_CAPABILITY_EXTENSION";
    SSL_VERIFY_SERVER_CERT = 30, "CLIENT_SSL_VERIFY_SERVER_CERT";
    REMEMBER_OPTIONS = 31, "CLIENT_REMEMBER_OPTIONS";
}

impl Capabilities {
    /// MariaDB's name for bit 0: set by MySQL servers (and NOVAS), clear
    /// on MariaDB 10.2+ servers that send extended capabilities.
    pub const MYSQL: Self = Self::LONG_PASSWORD;

    pub const fn empty() -> Self {
        Self(0)
    }

    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any flag of `other` is set.
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The name of a single flag, for messages.
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(b, _)| *b == self.0)
            .map_or("(several flags)", |(_, n)| n)
    }
}

impl ops::BitOr for Capabilities {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl ops::BitOrAssign for Capabilities {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl ops::BitAnd for Capabilities {
    type Output = Self;
    fn bitand(self, rhs: Self) -> Self {
        Self(self.0 & rhs.0)
    }
}

impl ops::Sub for Capabilities {
    type Output = Self;
    fn sub(self, rhs: Self) -> Self {
        Self(self.0 & !rhs.0)
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = NAMES
            .iter()
            .filter(|(b, _)| self.0 & b != 0)
            .map(|(_, n)| *n)
            .collect();
        write!(f, "Capabilities({:#010x}: {})", self.0, names.join("|"))
    }
}

/// Server status flags (in OK and EOF packets and the greeting).
pub mod status {
    pub const IN_TRANS: u16 = 0x0001;
    pub const AUTOCOMMIT: u16 = 0x0002;
    /// Another result follows this one (multi-statements, procedures).
    pub const MORE_RESULTS_EXISTS: u16 = 0x0008;
    pub const NO_GOOD_INDEX_USED: u16 = 0x0010;
    pub const NO_INDEX_USED: u16 = 0x0020;
    /// COM_STMT_EXECUTE opened a cursor: rows come with COM_STMT_FETCH.
    pub const CURSOR_EXISTS: u16 = 0x0040;
    pub const LAST_ROW_SENT: u16 = 0x0080;
    pub const DB_DROPPED: u16 = 0x0100;
    pub const NO_BACKSLASH_ESCAPES: u16 = 0x0200;
    pub const METADATA_CHANGED: u16 = 0x0400;
    pub const QUERY_WAS_SLOW: u16 = 0x0800;
    pub const PS_OUT_PARAMS: u16 = 0x1000;
    pub const IN_TRANS_READONLY: u16 = 0x2000;
    /// The OK packet carries session-state changes.
    pub const SESSION_STATE_CHANGED: u16 = 0x4000;
}

/// Everything NOVAS can relay faithfully, offered to clients (see the
/// module doc for what is left out and why).
pub const SERVER_CAPABILITIES: Capabilities = Capabilities(
    Capabilities::LONG_PASSWORD.0
        | Capabilities::FOUND_ROWS.0
        | Capabilities::LONG_FLAG.0
        | Capabilities::CONNECT_WITH_DB.0
        | Capabilities::LOCAL_FILES.0
        | Capabilities::IGNORE_SPACE.0
        | Capabilities::PROTOCOL_41.0
        | Capabilities::INTERACTIVE.0
        | Capabilities::TRANSACTIONS.0
        | Capabilities::SECURE_CONNECTION.0
        | Capabilities::MULTI_STATEMENTS.0
        | Capabilities::MULTI_RESULTS.0
        | Capabilities::PS_MULTI_RESULTS.0
        | Capabilities::PLUGIN_AUTH.0
        | Capabilities::CONNECT_ATTRS.0
        | Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA.0
        | Capabilities::SESSION_TRACK.0
        | Capabilities::DEPRECATE_EOF.0,
);

/// Must be equal on both hops: they change packet formats or results.
pub const SAME_ON_BOTH_HOPS: Capabilities = Capabilities(
    Capabilities::DEPRECATE_EOF.0
        | Capabilities::SESSION_TRACK.0
        | Capabilities::MULTI_RESULTS.0
        | Capabilities::PS_MULTI_RESULTS.0
        | Capabilities::LONG_FLAG.0
        | Capabilities::FOUND_ROWS.0,
);

/// Passed upstream when both the client and the upstream have them.
pub const PASSED_IF_OFFERED: Capabilities = Capabilities(
    Capabilities::MULTI_STATEMENTS.0
        | Capabilities::LOCAL_FILES.0
        | Capabilities::IGNORE_SPACE.0
        | Capabilities::INTERACTIVE.0
        | Capabilities::TRANSACTIONS.0
        | Capabilities::LONG_PASSWORD.0,
);

/// What NOVAS offers a client, with `CLIENT_SSL` when it can do TLS.
pub fn server_capabilities(tls: bool) -> Capabilities {
    if tls {
        SERVER_CAPABILITIES | Capabilities::SSL
    } else {
        SERVER_CAPABILITIES
    }
}

/// The flags in force on the client hop: what the client asked for,
/// limited to what NOVAS offered.
pub fn negotiate(offered: Capabilities, client: Capabilities) -> Capabilities {
    offered & client
}

/// Why no capability set for the upstream hop works.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapsError {
    /// The upstream lacks a flag NOVAS needs for its own login.
    #[error("upstream server does not support {0}")]
    Missing(&'static str),
    /// The client negotiated a format-changing flag the upstream lacks;
    /// relaying would hand the client packets it misreads.
    #[error("client uses {0}, which the upstream server does not support")]
    Mismatch(&'static str),
}

/// The capabilities to request from the upstream, given what the client
/// negotiated with NOVAS (`client`, from [`negotiate`]), what the upstream
/// offers in its greeting, whether NOVAS uses TLS to the upstream, and
/// whether it names an initial database.
pub fn upstream_capabilities(
    client: Capabilities,
    upstream: Capabilities,
    tls: bool,
    with_db: bool,
) -> Result<Capabilities, CapsError> {
    let mut caps = Capabilities::empty();
    for required in [
        Capabilities::PROTOCOL_41,
        Capabilities::SECURE_CONNECTION,
        Capabilities::PLUGIN_AUTH,
    ] {
        if !upstream.contains(required) {
            return Err(CapsError::Missing(required.name()));
        }
        caps |= required;
    }
    for bit in NAMES.iter().map(|(b, _)| Capabilities(*b)) {
        if SAME_ON_BOTH_HOPS.contains(bit) && client.contains(bit) {
            if !upstream.contains(bit) {
                return Err(CapsError::Mismatch(bit.name()));
            }
            caps |= bit;
        }
    }
    caps |= client & upstream & PASSED_IF_OFFERED;
    caps |= upstream & (Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA | Capabilities::CONNECT_ATTRS);
    if tls {
        if !upstream.contains(Capabilities::SSL) {
            return Err(CapsError::Missing(Capabilities::SSL.name()));
        }
        caps |= Capabilities::SSL;
    }
    if with_db {
        if !upstream.contains(Capabilities::CONNECT_WITH_DB) {
            return Err(CapsError::Missing(Capabilities::CONNECT_WITH_DB.name()));
        }
        caps |= Capabilities::CONNECT_WITH_DB;
    }
    Ok(caps)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What MariaDB 10.11 with TLS offers (bit 0 clear: it has extended
    /// flags).
    const MARIADB_1011: Capabilities = Capabilities(0xFFFE | (0x81BF << 16));

    /// What libmariadb's `mysql` asks for after NOVAS's greeting.
    fn client() -> Capabilities {
        let asked = Capabilities::LONG_PASSWORD
            | Capabilities::LONG_FLAG
            | Capabilities::CONNECT_WITH_DB
            | Capabilities::LOCAL_FILES
            | Capabilities::PROTOCOL_41
            | Capabilities::INTERACTIVE
            | Capabilities::SSL
            | Capabilities::TRANSACTIONS
            | Capabilities::SECURE_CONNECTION
            | Capabilities::MULTI_STATEMENTS
            | Capabilities::MULTI_RESULTS
            | Capabilities::PS_MULTI_RESULTS
            | Capabilities::PLUGIN_AUTH
            | Capabilities::CONNECT_ATTRS
            | Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA
            | Capabilities::SESSION_TRACK
            | Capabilities::DEPRECATE_EOF
            | Capabilities::REMEMBER_OPTIONS;
        negotiate(server_capabilities(true), asked)
    }

    #[test]
    fn offered_set_is_exact() {
        let s = server_capabilities(false);
        assert!(
            s.contains(Capabilities::MYSQL),
            "bit 0 hides MariaDB extended flags"
        );
        for never in [
            Capabilities::COMPRESS,
            Capabilities::SSL,
            Capabilities::CAN_HANDLE_EXPIRED_PASSWORDS,
            Capabilities::QUERY_ATTRIBUTES,
            Capabilities::OPTIONAL_RESULTSET_METADATA,
            Capabilities::CAPABILITY_EXTENSION,
            Capabilities::REMEMBER_OPTIONS,
        ] {
            assert!(!s.intersects(never), "{never:?}");
        }
        assert_eq!(
            s.bits() >> 25,
            0,
            "bits 25-31 mean different things to MySQL and MariaDB"
        );
        assert!(server_capabilities(true).contains(Capabilities::SSL));
    }

    #[test]
    fn upstream_set_mirrors_format_flags_and_is_per_hop_for_the_rest() {
        let c = client();
        let up = upstream_capabilities(c, MARIADB_1011, false, true).expect("compatible");
        for f in [
            Capabilities::DEPRECATE_EOF,
            Capabilities::SESSION_TRACK,
            Capabilities::MULTI_RESULTS,
            Capabilities::PS_MULTI_RESULTS,
        ] {
            assert_eq!(up.contains(f), c.contains(f), "{f:?}");
        }
        assert!(up.contains(Capabilities::CONNECT_WITH_DB));
        assert!(!up.contains(Capabilities::SSL), "no TLS requested upstream");
        assert!(!up.intersects(Capabilities::COMPRESS | Capabilities::CAN_HANDLE_EXPIRED_PASSWORDS));
        assert_eq!(up.bits() >> 25, 0);
        let up_tls = upstream_capabilities(c, MARIADB_1011, true, false).expect("tls");
        assert!(up_tls.contains(Capabilities::SSL));
        assert!(!up_tls.contains(Capabilities::CONNECT_WITH_DB));
    }

    #[test]
    fn client_without_deprecate_eof_gets_eof_packets_upstream_too() {
        let c = client() - Capabilities::DEPRECATE_EOF;
        let up = upstream_capabilities(c, MARIADB_1011, false, false).expect("ok");
        assert!(!up.contains(Capabilities::DEPRECATE_EOF));
    }

    #[test]
    fn mismatches_and_missing_flags_are_errors() {
        let old = MARIADB_1011 - Capabilities::DEPRECATE_EOF;
        assert_eq!(
            upstream_capabilities(client(), old, false, false),
            Err(CapsError::Mismatch("CLIENT_DEPRECATE_EOF"))
        );
        let no_ssl = MARIADB_1011 - Capabilities::SSL;
        assert_eq!(
            upstream_capabilities(client(), no_ssl, true, false),
            Err(CapsError::Missing("CLIENT_SSL"))
        );
        let no_plugin = MARIADB_1011 - Capabilities::PLUGIN_AUTH;
        assert!(upstream_capabilities(client(), no_plugin, false, false).is_err());
    }

    #[test]
    fn debug_names_flags() {
        let s = format!("{:?}", Capabilities::SSL | Capabilities::PROTOCOL_41);
        assert!(
            s.contains("CLIENT_SSL") && s.contains("CLIENT_PROTOCOL_41"),
            "{s}"
        );
    }
}
