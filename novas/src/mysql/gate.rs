//! Policy and audit for the MySQL command phase, without I/O: what to do
//! with each client command ([`Gate::decide`]) and what each audited
//! statement amounted to once the answer is in ([`outcomes`]).
//!
//! Audited statements: every SQL statement of a COM_QUERY (one event per
//! statement of a multi-statement text), every COM_STMT_EXECUTE (with the
//! SQL it runs), COM_INIT_DB (as `USE`), COM_PROCESS_KILL (as `KILL`), and
//! every refusal (a denied COM_STMT_PREPARE, COM_CHANGE_USER, commands
//! NOVAS cannot relay). Protocol housekeeping (ping, statistics, field
//! lists, closing statements, fetching from a cursor) is not.
//!
//! Two MySQL quirks the SQL classifier cannot see are handled here:
//! MariaDB's executable comments `/*M!…*/` (run by the server; the
//! classifier only knows MySQL's `/*!…*/`), and the `NO_BACKSLASH_ESCAPES`
//! SQL mode, which moves string boundaries: once a session may be in it,
//! texts with a backslash are classified both ways and the stricter
//! verdict wins.

use std::{borrow::Cow, collections::HashMap, sync::Arc};

use super::{
    command::{Command, LAST_PREPARED},
    reply::ErrPacket,
    response::Summary,
};
use crate::access::{Policy, SqlDialect, StatementDecision};

/// Kinds remembered per prepared SQL text; cleared when it grows past this.
const KIND_CACHE: usize = 1024;

/// One statement to audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stmt {
    pub text: Arc<str>,
    /// Statement kind(s) as the classifier named them.
    pub kind: Arc<str>,
}

/// What to do with a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Relay it; audit these statements (maybe none) when it is answered.
    Allow(Vec<Stmt>),
    /// Answer with `err` instead; audit these statements as denied.
    Refuse {
        err: ErrPacket,
        reason: String,
        audit: Vec<Stmt>,
    },
}

/// The per-session policy gate.
#[derive(Debug)]
pub struct Gate<'a> {
    policy: &'a Policy,
    kinds: HashMap<Arc<str>, Arc<str>>,
    /// The latest COM_STMT_PREPARE was refused: a pipelined EXECUTE of
    /// "the last prepared statement" must not run an older one.
    last_prepare_refused: bool,
    /// The session may be in `NO_BACKSLASH_ESCAPES` (seen in a status).
    no_backslash_escapes: bool,
}

impl<'a> Gate<'a> {
    pub fn new(policy: &'a Policy) -> Self {
        Self {
            policy,
            kinds: HashMap::new(),
            last_prepare_refused: false,
            no_backslash_escapes: false,
        }
    }

    /// Server status flags seen (login OK, every answer's summary).
    pub fn observe_status(&mut self, status: u16) {
        if status & super::caps::status::NO_BACKSLASH_ESCAPES != 0 {
            self.no_backslash_escapes = true;
        }
    }

    /// Decides one command. `statement` is the SQL of the prepared
    /// statement it refers to; `audit_down` says why nothing can be
    /// audited right now (then only commands that run no SQL pass).
    pub fn decide(
        &mut self,
        command: &Command,
        statement: Option<&str>,
        audit_down: impl Fn() -> Option<String>,
    ) -> Verdict {
        let verdict = self.policy_verdict(command, statement);
        match verdict {
            Verdict::Allow(stmts) if !stmts.is_empty() || command.sql().is_some() => {
                match audit_down() {
                    None => Verdict::Allow(stmts),
                    Some(why) => {
                        if matches!(command, Command::StmtPrepare { .. }) {
                            self.last_prepare_refused = true;
                        }
                        let reason = format!("statement refused: {why}");
                        Verdict::Refuse {
                            err: ErrPacket::new(1105, "HY000", reason.clone()),
                            reason,
                            audit: stmts,
                        }
                    }
                }
            }
            v => v,
        }
    }

    fn policy_verdict(&mut self, command: &Command, statement: Option<&str>) -> Verdict {
        match command {
            Command::Query { sql } => self.sql_verdict(sql),
            Command::InitDb { schema } => {
                self.sql_verdict(&format!("USE `{}`", schema.replace('`', "``")))
            }
            Command::ProcessKill { connection_id } => {
                self.sql_verdict(&format!("KILL {connection_id}"))
            }
            Command::StmtPrepare { sql } => {
                let d = self.check(sql);
                let kind: Arc<str> = d.kinds().into();
                match d.reason {
                    Some(reason) => {
                        self.last_prepare_refused = true;
                        refusal(
                            reason,
                            vec![Stmt {
                                text: sql.as_str().into(),
                                kind,
                            }],
                        )
                    }
                    None => {
                        self.last_prepare_refused = false;
                        if self.kinds.len() >= KIND_CACHE {
                            self.kinds.clear();
                        }
                        self.kinds.insert(sql.as_str().into(), kind);
                        // Audited when executed.
                        Verdict::Allow(Vec::new())
                    }
                }
            }
            Command::StmtExecute { stmt_id, .. } => {
                if *stmt_id == LAST_PREPARED && self.last_prepare_refused {
                    return unknown_statement(*stmt_id);
                }
                let stmt = match statement {
                    Some(sql) => Stmt {
                        text: sql.into(),
                        kind: self.kind_of(sql),
                    },
                    // The server does not know it either and says so.
                    None => Stmt {
                        text: format!("<unknown prepared statement {stmt_id}>").into(),
                        kind: "other".into(),
                    },
                };
                Verdict::Allow(vec![stmt])
            }
            Command::StmtSendLongData { stmt_id, .. }
                if *stmt_id == LAST_PREPARED && self.last_prepare_refused =>
            {
                unknown_statement(*stmt_id)
            }
            Command::ChangeUser { .. } | Command::Other { .. } => {
                let err = command
                    .refusal()
                    .unwrap_or_else(|| ErrPacket::unsupported_command(command.name()));
                Verdict::Refuse {
                    reason: err.message.clone(),
                    err,
                    audit: vec![Stmt {
                        text: command.name().into(),
                        kind: "other".into(),
                    }],
                }
            }
            _ => match command.refusal() {
                Some(err) => Verdict::Refuse {
                    reason: err.message.clone(),
                    err,
                    audit: Vec::new(),
                },
                None => Verdict::Allow(Vec::new()),
            },
        }
    }

    fn sql_verdict(&self, sql: &str) -> Verdict {
        let d = self.check(sql);
        let stmts = d
            .statements
            .iter()
            .map(|c| Stmt {
                text: c.text.as_deref().unwrap_or(sql).into(),
                kind: c.kind.as_str().into(),
            })
            .collect();
        match d.reason {
            Some(reason) => refusal(reason, stmts),
            None => Verdict::Allow(stmts),
        }
    }

    /// The policy's decision on `sql` as the server will read it.
    fn check(&self, sql: &str) -> StatementDecision {
        let text = expose_mariadb_comments(sql);
        let d = self.policy.check(SqlDialect::MySql, &text);
        if !d.allowed || !text.contains('\\') {
            return d;
        }
        let lowered = text.to_ascii_lowercase();
        if !(self.no_backslash_escapes || lowered.contains("sql_mode")) {
            return d;
        }
        // Read with backslashes as plain characters too.
        let literal = self
            .policy
            .check(SqlDialect::MySql, &text.replace('\\', "\\\\"));
        if literal.allowed {
            d
        } else {
            StatementDecision {
                statements: d.statements,
                ..literal
            }
        }
    }

    fn kind_of(&mut self, sql: &str) -> Arc<str> {
        if let Some(k) = self.kinds.get(sql) {
            return k.clone();
        }
        let kind: Arc<str> = self.check(sql).kinds().into();
        if self.kinds.len() >= KIND_CACHE {
            self.kinds.clear();
        }
        self.kinds.insert(sql.into(), kind.clone());
        kind
    }
}

fn refusal(reason: String, audit: Vec<Stmt>) -> Verdict {
    Verdict::Refuse {
        err: ErrPacket::new(1142, "42000", reason.clone()),
        reason,
        audit,
    }
}

fn unknown_statement(stmt_id: u32) -> Verdict {
    let err = ErrPacket::new(
        1243,
        "HY000",
        format!("Unknown prepared statement handler ({stmt_id}) given to mysqld_stmt_execute"),
    );
    Verdict::Refuse {
        reason: err.message.clone(),
        err,
        audit: Vec::new(),
    }
}

/// MariaDB runs the body of `/*M!…*/` (and `/*M!100100 …*/`) like MySQL's
/// `/*!…*/`, which the classifier already reads as SQL: rewrite the one
/// into the other. Inside string literals the rewrite changes nothing the
/// classifier cares about.
fn expose_mariadb_comments(sql: &str) -> Cow<'_, str> {
    if sql.contains("/*M!") {
        Cow::Owned(sql.replace("/*M!", "/*!"))
    } else {
        Cow::Borrowed(sql)
    }
}

/// What each audited statement of an answered command amounted to:
/// `(rows, error)` per statement, in order.
///
/// A multi-statement text stops at its first error: statements before it
/// ran, the one at the error failed, the rest did not run. Row counts are
/// only known for the whole answer, so they are given when the command
/// was one statement (rows of its result sets, else rows affected).
pub fn outcomes(stmts: &[Stmt], s: &Summary) -> Vec<(Option<u64>, Option<String>)> {
    let rows = if s.result_sets > 0 {
        s.rows
    } else {
        s.affected_rows
    };
    let failed_at = s.error.as_ref().map(|_| s.results as usize);
    stmts
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let error = match failed_at {
                Some(at) if i == at.min(stmts.len() - 1) => s.error.as_ref().map(err_text),
                Some(at) if i > at => Some("not executed".to_string()),
                _ => None,
            };
            let rows = (stmts.len() == 1 && error.is_none()).then_some(rows);
            (rows, error)
        })
        .collect()
}

/// An ERR as the audit records it.
pub fn err_text(e: &ErrPacket) -> String {
    format!("{} ({}): {}", e.code, e.sqlstate, e.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Policies;

    const POLICIES: &str = r#"
policies:
  - name: ro
    users: [bob]
    resources: [my]
    read_only: true
  - name: guarded
    users: [alice]
    resources: [my]
    deny: [drop, truncate]
  - name: open
    users: [dave]
    resources: [my]
"#;

    fn policy(name: &str) -> Policy {
        Policies::parse(POLICIES, "p.yaml")
            .expect("parse")
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .expect("policy")
    }

    fn q(sql: &str) -> Command {
        Command::Query { sql: sql.into() }
    }

    fn up() -> Option<String> {
        None
    }

    fn allowed(v: &Verdict) -> bool {
        matches!(v, Verdict::Allow(_))
    }

    #[test]
    fn queries_follow_the_policy() {
        let ro = policy("ro");
        let guarded = policy("guarded");
        for (p, sql, ok) in [
            (&ro, "select * from t", true),
            (&ro, "show tables", true),
            (&ro, "set names utf8mb4", true),
            (&ro, "drop table t", false),
            (&ro, "insert into t values (1)", false),
            (&ro, "select 1; delete from t where a = 1", false),
            (&ro, "set session transaction read write", false),
            (&ro, "set @@session.tx_read_only = 0", false),
            (&ro, "select 1 /*!50000 ; drop table t */", false),
            (&ro, "select 1; /*M!100100 drop table t */", false),
            (&ro, "select 1 --1; drop table t", false),
            (&guarded, "drop table t", false),
            (&guarded, "delete from t", true),
            (&guarded, "create table u (a int)", true),
        ] {
            let mut g = Gate::new(p);
            assert_eq!(
                allowed(&g.decide(&q(sql), None, up)),
                ok,
                "{} {sql}",
                p.name
            );
        }
    }

    #[test]
    fn a_denial_is_1142_naming_the_policy_and_audits_each_statement() {
        let ro = policy("ro");
        let mut g = Gate::new(&ro);
        let Verdict::Refuse { err, reason, audit } =
            g.decide(&q("select 1; drop table t"), None, up)
        else {
            panic!("expected a refusal");
        };
        assert_eq!((err.code, err.sqlstate.as_str()), (1142, "42000"));
        assert!(err.message.contains("\"ro\""), "{}", err.message);
        assert_eq!(reason, err.message);
        let kinds: Vec<&str> = audit.iter().map(|s| &*s.kind).collect();
        assert_eq!(kinds, ["select", "drop"]);
    }

    #[test]
    fn multi_statements_are_audited_one_by_one() {
        let open = policy("open");
        let mut g = Gate::new(&open);
        let Verdict::Allow(stmts) = g.decide(&q("select 1; select 2"), None, up) else {
            panic!("allowed");
        };
        assert_eq!(stmts.len(), 2);
        assert_eq!(&*stmts[1].text, "SELECT 2");
        let Verdict::Allow(one) = g.decide(&q("select 1"), None, up) else {
            panic!("allowed");
        };
        assert_eq!(&*one[0].text, "select 1");
    }

    #[test]
    fn init_db_and_kill_are_statements() {
        let ro = policy("ro");
        let mut g = Gate::new(&ro);
        let Verdict::Allow(s) = g.decide(
            &Command::InitDb {
                schema: "app`db".into(),
            },
            None,
            up,
        ) else {
            panic!("USE is read-only");
        };
        assert_eq!((&*s[0].text, &*s[0].kind), ("USE `app``db`", "use"));
        let v = g.decide(&Command::ProcessKill { connection_id: 7 }, None, up);
        assert!(!allowed(&v));
    }

    #[test]
    fn prepared_statements() {
        let ro = policy("ro");
        let mut g = Gate::new(&ro);
        let prep = Command::StmtPrepare {
            sql: "select * from t where id = ?".into(),
        };
        assert_eq!(g.decide(&prep, None, up), Verdict::Allow(vec![]));
        let exec = Command::StmtExecute {
            stmt_id: 1,
            flags: 0,
        };
        let Verdict::Allow(s) = g.decide(&exec, Some("select * from t where id = ?"), up) else {
            panic!("allowed");
        };
        assert_eq!(&*s[0].kind, "select");
        // A refused prepare, then "execute the last prepared one".
        let bad = Command::StmtPrepare {
            sql: "delete from t where id = ?".into(),
        };
        let Verdict::Refuse { audit, .. } = g.decide(&bad, None, up) else {
            panic!("refused");
        };
        assert_eq!(&*audit[0].kind, "delete");
        let last = Command::StmtExecute {
            stmt_id: LAST_PREPARED,
            flags: 0,
        };
        let Verdict::Refuse { err, .. } = g.decide(&last, Some("select 1"), up) else {
            panic!("refused");
        };
        assert_eq!(err.code, 1243);
        // Unknown ids go to the server, which refuses them itself.
        let Verdict::Allow(s) = g.decide(&exec, None, up) else {
            panic!("allowed");
        };
        assert!(s[0].text.contains("unknown"));
    }

    #[test]
    fn change_user_and_odd_commands_are_refused_and_audited() {
        let open = policy("open");
        let mut g = Gate::new(&open);
        for c in [
            Command::ChangeUser { user: "x".into() },
            Command::Other { code: 0x08 },
            Command::Other { code: 0x12 },
        ] {
            let Verdict::Refuse { audit, .. } = g.decide(&c, None, up) else {
                panic!("{c:?} refused");
            };
            assert_eq!(audit.len(), 1);
        }
        assert!(allowed(&g.decide(&Command::Ping, None, up)));
        assert!(allowed(&g.decide(&Command::ResetConnection, None, up)));
    }

    #[test]
    fn audit_outage_refuses_sql_but_not_housekeeping() {
        let open = policy("open");
        let mut g = Gate::new(&open);
        let down = || Some("the audit store is unavailable".to_string());
        let Verdict::Refuse { err, .. } = g.decide(&q("select 1"), None, down) else {
            panic!("refused");
        };
        assert!(err.message.contains("audit"));
        let prep = Command::StmtPrepare {
            sql: "select 1".into(),
        };
        assert!(!allowed(&g.decide(&prep, None, down)));
        assert!(allowed(&g.decide(&Command::Ping, None, down)));
    }

    #[test]
    fn no_backslash_escapes_cannot_hide_a_statement() {
        let ro = policy("ro");
        let hidden = r"select 'a\'; drop table t; -- '";
        let mut g = Gate::new(&ro);
        // Default mode: one string, one SELECT.
        assert!(allowed(&g.decide(&q(hidden), None, up)));
        assert!(allowed(&g.decide(&q(r"select 'it\'s'"), None, up)));
        // Switching the mode in the same text, or having seen it on.
        let same = format!("set sql_mode = 'NO_BACKSLASH_ESCAPES'; {hidden}");
        assert!(!allowed(&g.decide(&q(&same), None, up)));
        g.observe_status(super::super::caps::status::NO_BACKSLASH_ESCAPES);
        assert!(!allowed(&g.decide(&q(hidden), None, up)));
        assert!(allowed(&g.decide(&q(r"select 'C:\\dir'"), None, up)));
    }

    fn summary(results: u32, sets: u32, rows: u64, affected: u64, err: bool) -> Summary {
        Summary {
            results,
            result_sets: sets,
            rows,
            affected_rows: affected,
            error: err.then(|| ErrPacket::new(1146, "42S02", "Table 'x' doesn't exist")),
            ..Summary::default()
        }
    }

    fn stmts(n: usize) -> Vec<Stmt> {
        (0..n)
            .map(|i| Stmt {
                text: format!("s{i}").into(),
                kind: "select".into(),
            })
            .collect()
    }

    #[test]
    fn outcomes_per_statement() {
        assert_eq!(
            outcomes(&stmts(1), &summary(1, 1, 5, 0, false)),
            vec![(Some(5), None)]
        );
        assert_eq!(
            outcomes(&stmts(1), &summary(1, 0, 0, 3, false)),
            vec![(Some(3), None)]
        );
        let o = outcomes(&stmts(1), &summary(0, 0, 0, 0, true));
        assert_eq!(o[0].0, None);
        assert!(o[0]
            .1
            .as_deref()
            .is_some_and(|e| e.starts_with("1146 (42S02)")));
        let o = outcomes(&stmts(3), &summary(1, 1, 1, 0, true));
        assert_eq!(o[0], (None, None));
        assert!(o[1].1.as_deref().is_some_and(|e| e.contains("1146")));
        assert_eq!(o[2].1.as_deref(), Some("not executed"));
        assert_eq!(
            outcomes(&stmts(2), &summary(2, 2, 2, 0, false)),
            vec![(None, None), (None, None)]
        );
    }
}
