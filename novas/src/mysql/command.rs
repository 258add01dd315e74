//! Client commands of the command phase, decoded into a typed view.
//!
//! Only what NOVAS needs is decoded: the SQL of COM_QUERY and
//! COM_STMT_PREPARE, the schema of COM_INIT_DB, statement ids. Parameter
//! values of COM_STMT_EXECUTE and the data of COM_STMT_SEND_LONG_DATA are
//! never parsed: they pass through, so those two are decoded from their
//! first bytes alone ([`head_len`]).

use super::{
    reply::ErrPacket,
    response::Expect,
    wire::{text, DecodeError, Reader},
};

/// Command bytes.
pub mod com {
    pub const SLEEP: u8 = 0x00;
    pub const QUIT: u8 = 0x01;
    pub const INIT_DB: u8 = 0x02;
    pub const QUERY: u8 = 0x03;
    pub const FIELD_LIST: u8 = 0x04;
    pub const CREATE_DB: u8 = 0x05;
    pub const DROP_DB: u8 = 0x06;
    pub const REFRESH: u8 = 0x07;
    pub const SHUTDOWN: u8 = 0x08;
    pub const STATISTICS: u8 = 0x09;
    pub const PROCESS_INFO: u8 = 0x0A;
    pub const CONNECT: u8 = 0x0B;
    pub const PROCESS_KILL: u8 = 0x0C;
    pub const DEBUG: u8 = 0x0D;
    pub const PING: u8 = 0x0E;
    pub const TIME: u8 = 0x0F;
    pub const DELAYED_INSERT: u8 = 0x10;
    pub const CHANGE_USER: u8 = 0x11;
    pub const BINLOG_DUMP: u8 = 0x12;
    pub const TABLE_DUMP: u8 = 0x13;
    pub const CONNECT_OUT: u8 = 0x14;
    pub const REGISTER_SLAVE: u8 = 0x15;
    pub const STMT_PREPARE: u8 = 0x16;
    pub const STMT_EXECUTE: u8 = 0x17;
    pub const STMT_SEND_LONG_DATA: u8 = 0x18;
    pub const STMT_CLOSE: u8 = 0x19;
    pub const STMT_RESET: u8 = 0x1A;
    pub const SET_OPTION: u8 = 0x1B;
    pub const STMT_FETCH: u8 = 0x1C;
    pub const DAEMON: u8 = 0x1D;
    pub const BINLOG_DUMP_GTID: u8 = 0x1E;
    pub const RESET_CONNECTION: u8 = 0x1F;
    /// MariaDB: needs an extended capability NOVAS never negotiates.
    pub const STMT_BULK_EXECUTE: u8 = 0xFA;
    /// MariaDB: needs an extended capability NOVAS never negotiates.
    pub const MULTI: u8 = 0xFE;
}

/// "The statement prepared last" in COM_STMT_EXECUTE (MariaDB's
/// `mariadb_stmt_execute_direct` pipelines PREPARE and EXECUTE with it).
pub const LAST_PREPARED: u32 = 0xFFFF_FFFF;

/// A client command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Quit,
    InitDb {
        schema: String,
    },
    Query {
        sql: String,
    },
    /// Deprecated, but the `mysql` client's tab completion sends it.
    FieldList {
        table: String,
    },
    Statistics,
    ProcessInfo,
    ProcessKill {
        connection_id: u32,
    },
    Ping,
    /// Refused by NOVAS: see [`ErrPacket::change_user_refused`].
    ChangeUser {
        user: String,
    },
    StmtPrepare {
        sql: String,
    },
    StmtExecute {
        stmt_id: u32,
        flags: u8,
    },
    StmtSendLongData {
        stmt_id: u32,
        param: u16,
    },
    StmtClose {
        stmt_id: u32,
    },
    StmtReset {
        stmt_id: u32,
    },
    SetOption {
        option: u16,
    },
    StmtFetch {
        stmt_id: u32,
        rows: u32,
    },
    ResetConnection,
    /// Any other command, by its byte.
    Other {
        code: u8,
    },
}

/// Bytes of a command's payload NOVAS reads before deciding: the whole
/// packet, except for the two commands that carry bulk data.
pub fn head_len(code: u8) -> Option<usize> {
    match code {
        // command, stmt_id, flags, iteration count
        com::STMT_EXECUTE => Some(10),
        // command, stmt_id, param_id
        com::STMT_SEND_LONG_DATA => Some(7),
        _ => None,
    }
}

impl Command {
    /// Decodes a command payload (for [`head_len`] commands, at least
    /// that many bytes; more are ignored).
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let code = r.u8("command")?;
        Ok(match code {
            com::QUIT => Self::Quit,
            com::INIT_DB => Self::InitDb {
                schema: text(r.rest()),
            },
            com::QUERY => Self::Query {
                sql: text(r.rest()),
            },
            com::FIELD_LIST => Self::FieldList {
                table: text(r.nul_or_rest()),
            },
            com::STATISTICS => Self::Statistics,
            com::PROCESS_INFO => Self::ProcessInfo,
            com::PROCESS_KILL => Self::ProcessKill {
                connection_id: r.u32("connection id")?,
            },
            com::PING => Self::Ping,
            com::CHANGE_USER => Self::ChangeUser {
                user: text(r.nul_or_rest()),
            },
            com::STMT_PREPARE => Self::StmtPrepare {
                sql: text(r.rest()),
            },
            com::STMT_EXECUTE => {
                let stmt_id = r.u32("statement id")?;
                let flags = r.u8("cursor flags")?;
                Self::StmtExecute { stmt_id, flags }
            }
            com::STMT_SEND_LONG_DATA => {
                let stmt_id = r.u32("statement id")?;
                let param = r.u16("parameter id")?;
                Self::StmtSendLongData { stmt_id, param }
            }
            com::STMT_CLOSE => Self::StmtClose {
                stmt_id: r.u32("statement id")?,
            },
            com::STMT_RESET => Self::StmtReset {
                stmt_id: r.u32("statement id")?,
            },
            com::SET_OPTION => Self::SetOption {
                option: r.u16("option")?,
            },
            com::STMT_FETCH => {
                let stmt_id = r.u32("statement id")?;
                let rows = r.u32("row count")?;
                Self::StmtFetch { stmt_id, rows }
            }
            com::RESET_CONNECTION => Self::ResetConnection,
            code => Self::Other { code },
        })
    }

    /// The command byte.
    pub fn code(&self) -> u8 {
        match self {
            Self::Quit => com::QUIT,
            Self::InitDb { .. } => com::INIT_DB,
            Self::Query { .. } => com::QUERY,
            Self::FieldList { .. } => com::FIELD_LIST,
            Self::Statistics => com::STATISTICS,
            Self::ProcessInfo => com::PROCESS_INFO,
            Self::ProcessKill { .. } => com::PROCESS_KILL,
            Self::Ping => com::PING,
            Self::ChangeUser { .. } => com::CHANGE_USER,
            Self::StmtPrepare { .. } => com::STMT_PREPARE,
            Self::StmtExecute { .. } => com::STMT_EXECUTE,
            Self::StmtSendLongData { .. } => com::STMT_SEND_LONG_DATA,
            Self::StmtClose { .. } => com::STMT_CLOSE,
            Self::StmtReset { .. } => com::STMT_RESET,
            Self::SetOption { .. } => com::SET_OPTION,
            Self::StmtFetch { .. } => com::STMT_FETCH,
            Self::ResetConnection => com::RESET_CONNECTION,
            Self::Other { code } => *code,
        }
    }

    /// The protocol's name for the command, for audit records.
    pub fn name(&self) -> &'static str {
        name_of(self.code())
    }

    /// SQL text carried by the command itself.
    pub fn sql(&self) -> Option<&str> {
        match self {
            Self::Query { sql } | Self::StmtPrepare { sql } => Some(sql),
            _ => None,
        }
    }

    /// The prepared statement the command refers to.
    pub fn stmt_id(&self) -> Option<u32> {
        match self {
            Self::StmtExecute { stmt_id, .. }
            | Self::StmtSendLongData { stmt_id, .. }
            | Self::StmtClose { stmt_id }
            | Self::StmtReset { stmt_id }
            | Self::StmtFetch { stmt_id, .. } => Some(*stmt_id),
            _ => None,
        }
    }

    /// What the server answers, or `None` when NOVAS cannot follow the
    /// answer and must refuse the command.
    pub fn expects(&self) -> Option<Expect> {
        Some(match self {
            Self::Quit | Self::StmtClose { .. } | Self::StmtSendLongData { .. } => Expect::Nothing,
            Self::Query { .. } | Self::StmtExecute { .. } | Self::ProcessInfo => Expect::Results,
            Self::StmtPrepare { .. } => Expect::Prepare,
            Self::StmtFetch { .. } => Expect::Rows,
            Self::FieldList { .. } => Expect::FieldList,
            Self::Statistics => Expect::Statistics,
            Self::InitDb { .. }
            | Self::Ping
            | Self::ProcessKill { .. }
            | Self::StmtReset { .. }
            | Self::SetOption { .. }
            | Self::ResetConnection => Expect::Simple,
            Self::ChangeUser { .. } => return None,
            Self::Other { code } => match *code {
                // Obsolete or internal commands: today's servers answer
                // them with OK, EOF or ERR ("Unknown command").
                com::SLEEP
                | com::CREATE_DB
                | com::DROP_DB
                | com::REFRESH
                | com::SHUTDOWN
                | com::CONNECT
                | com::DEBUG
                | com::TIME
                | com::DELAYED_INSERT
                | com::DAEMON => Expect::Simple,
                // Replication streams, MariaDB's bulk commands, and
                // anything newer: their answers are not a known shape.
                _ => return None,
            },
        })
    }

    /// The ERR to answer with when NOVAS cannot relay this command at all
    /// (`None`: relayable; policy decides).
    pub fn refusal(&self) -> Option<ErrPacket> {
        match self {
            Self::ChangeUser { .. } => Some(ErrPacket::change_user_refused()),
            _ if self.expects().is_none() => Some(ErrPacket::unsupported_command(self.name())),
            _ => None,
        }
    }
}

/// The protocol's name for a command byte.
pub fn name_of(code: u8) -> &'static str {
    match code {
        com::SLEEP => "COM_SLEEP",
        com::QUIT => "COM_QUIT",
        com::INIT_DB => "COM_INIT_DB",
        com::QUERY => "COM_QUERY",
        com::FIELD_LIST => "COM_FIELD_LIST",
        com::CREATE_DB => "COM_CREATE_DB",
        com::DROP_DB => "COM_DROP_DB",
        com::REFRESH => "COM_REFRESH",
        com::SHUTDOWN => "COM_SHUTDOWN",
        com::STATISTICS => "COM_STATISTICS",
        com::PROCESS_INFO => "COM_PROCESS_INFO",
        com::CONNECT => "COM_CONNECT",
        com::PROCESS_KILL => "COM_PROCESS_KILL",
        com::DEBUG => "COM_DEBUG",
        com::PING => "COM_PING",
        com::TIME => "COM_TIME",
        com::DELAYED_INSERT => "COM_DELAYED_INSERT",
        com::CHANGE_USER => "COM_CHANGE_USER",
        com::BINLOG_DUMP => "COM_BINLOG_DUMP",
        com::TABLE_DUMP => "COM_TABLE_DUMP",
        com::CONNECT_OUT => "COM_CONNECT_OUT",
        com::REGISTER_SLAVE => "COM_REGISTER_SLAVE",
        com::STMT_PREPARE => "COM_STMT_PREPARE",
        com::STMT_EXECUTE => "COM_STMT_EXECUTE",
        com::STMT_SEND_LONG_DATA => "COM_STMT_SEND_LONG_DATA",
        com::STMT_CLOSE => "COM_STMT_CLOSE",
        com::STMT_RESET => "COM_STMT_RESET",
        com::SET_OPTION => "COM_SET_OPTION",
        com::STMT_FETCH => "COM_STMT_FETCH",
        com::DAEMON => "COM_DAEMON",
        com::BINLOG_DUMP_GTID => "COM_BINLOG_DUMP_GTID",
        com::RESET_CONNECTION => "COM_RESET_CONNECTION",
        com::STMT_BULK_EXECUTE => "COM_STMT_BULK_EXECUTE",
        com::MULTI => "COM_MULTI",
        _ => "COM_UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_table() {
        let cases: &[(&[u8], Command)] = &[
            (b"\x01", Command::Quit),
            (
                b"\x02shop",
                Command::InitDb {
                    schema: "shop".into(),
                },
            ),
            (
                b"\x03select 1",
                Command::Query {
                    sql: "select 1".into(),
                },
            ),
            (
                b"\x04items\0",
                Command::FieldList {
                    table: "items".into(),
                },
            ),
            (b"\x0e", Command::Ping),
            (b"\x0c\x07\0\0\0", Command::ProcessKill { connection_id: 7 }),
            (b"\x11bob\0rest", Command::ChangeUser { user: "bob".into() }),
            (
                b"\x16select ?",
                Command::StmtPrepare {
                    sql: "select ?".into(),
                },
            ),
            (
                b"\x17\x05\0\0\0\x01\x01\0\0\0params...",
                Command::StmtExecute {
                    stmt_id: 5,
                    flags: 1,
                },
            ),
            (
                b"\x18\x05\0\0\0\x02\0blob",
                Command::StmtSendLongData {
                    stmt_id: 5,
                    param: 2,
                },
            ),
            (b"\x19\x05\0\0\0", Command::StmtClose { stmt_id: 5 }),
            (b"\x1a\x05\0\0\0", Command::StmtReset { stmt_id: 5 }),
            (b"\x1b\x01\0", Command::SetOption { option: 1 }),
            (
                b"\x1c\x05\0\0\0\x0a\0\0\0",
                Command::StmtFetch {
                    stmt_id: 5,
                    rows: 10,
                },
            ),
            (b"\x1f", Command::ResetConnection),
            (b"\x12\0\0\0\0", Command::Other { code: 0x12 }),
        ];
        for (payload, want) in cases {
            let got = Command::decode(payload).expect("decode");
            assert_eq!(&got, want);
            assert_eq!(got.code(), payload[0]);
        }
    }

    #[test]
    fn truncated_commands_are_invalid() {
        for p in [&b""[..], b"\x17\x05\0", b"\x19\x01", b"\x0c"] {
            assert!(Command::decode(p).is_err(), "{p:?}");
        }
    }

    #[test]
    fn what_is_relayed() {
        assert_eq!(
            Command::decode(b"\x11bob\0").expect("decode").refusal(),
            Some(ErrPacket::change_user_refused())
        );
        let dump = Command::Other {
            code: com::BINLOG_DUMP,
        };
        let err = dump.refusal().expect("refused");
        assert_eq!(err.code, 1047);
        assert!(err.message.contains("COM_BINLOG_DUMP"));
        assert!(Command::Other { code: com::MULTI }.refusal().is_some());
        assert!(Command::Other { code: 0x40 }.refusal().is_some());
        assert!(Command::Query { sql: "x".into() }.refusal().is_none());
        assert_eq!(
            Command::StmtClose { stmt_id: 1 }.expects(),
            Some(Expect::Nothing)
        );
        assert_eq!(
            Command::StmtFetch {
                stmt_id: 1,
                rows: 1
            }
            .expects(),
            Some(Expect::Rows)
        );
        assert_eq!(head_len(com::STMT_EXECUTE), Some(10));
        assert_eq!(head_len(com::QUERY), None);
    }
}
