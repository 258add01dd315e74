//! Statement classification with a real SQL parser (sqlparser), so that a
//! policy can say "read-only" or "no DROP" and mean it.
//!
//! Each statement gets one [`StatementKind`]. Read-only means: cannot change
//! data, schema, privileges or the session's read-only guard. Anything the
//! parser cannot understand is [`StatementKind::Unparsed`], which is never
//! read-only: a restricted policy refuses what it cannot see into.

use std::fmt;

use sqlparser::{
    ast::{Query, Set as SetStatement, SetExpr, Statement, TransactionAccessMode, TransactionMode},
    dialect::{Dialect, MySqlDialect, PostgreSqlDialect},
    parser::Parser,
};

/// Which SQL grammar to parse with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqlDialect {
    Postgres,
    MySql,
}

/// What a statement does, at the granularity policies speak about. The
/// `as_str` names are the words used in a policy's `deny` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementKind {
    Select,
    /// SELECT … FOR UPDATE/SHARE: reads, but takes row locks.
    SelectForUpdate,
    /// SELECT … INTO new_table: creates a table.
    SelectInto,
    Insert,
    Update,
    UpdateWithoutWhere,
    Delete,
    DeleteWithoutWhere,
    Merge,
    CopyFrom,
    CopyTo,
    Create,
    Alter,
    Drop,
    Truncate,
    Grant,
    Revoke,
    /// EXPLAIN without ANALYZE (EXPLAIN ANALYZE is classified by what it runs).
    Explain,
    Show,
    Set,
    /// SET of something that lifts a guard: read-only mode, role, session
    /// authorization.
    SetPrivileged,
    Transaction,
    /// BEGIN/START TRANSACTION READ WRITE or SET TRANSACTION READ WRITE.
    TransactionReadWrite,
    Prepare,
    /// SQL-level EXECUTE of a named prepared statement: what it runs is not
    /// visible here.
    Execute,
    Deallocate,
    Call,
    Lock,
    Maintenance,
    Listen,
    Notify,
    Use,
    Kill,
    Other,
    Unparsed,
    Empty,
}

impl StatementKind {
    pub fn as_str(self) -> &'static str {
        use StatementKind::*;
        match self {
            Select => "select",
            SelectForUpdate => "select_for_update",
            SelectInto => "select_into",
            Insert => "insert",
            Update => "update",
            UpdateWithoutWhere => "update_without_where",
            Delete => "delete",
            DeleteWithoutWhere => "delete_without_where",
            Merge => "merge",
            CopyFrom => "copy_from",
            CopyTo => "copy_to",
            Create => "create",
            Alter => "alter",
            Drop => "drop",
            Truncate => "truncate",
            Grant => "grant",
            Revoke => "revoke",
            Explain => "explain",
            Show => "show",
            Set => "set",
            SetPrivileged => "set_privileged",
            Transaction => "transaction",
            TransactionReadWrite => "transaction_read_write",
            Prepare => "prepare",
            Execute => "execute",
            Deallocate => "deallocate",
            Call => "call",
            Lock => "lock",
            Maintenance => "maintenance",
            Listen => "listen",
            Notify => "notify",
            Use => "use",
            Kill => "kill",
            Other => "other",
            Unparsed => "unparsed",
            Empty => "empty",
        }
    }

    /// Every kind, for validating policy files.
    pub const ALL: [StatementKind; 36] = {
        use StatementKind::*;
        [
            Select,
            SelectForUpdate,
            SelectInto,
            Insert,
            Update,
            UpdateWithoutWhere,
            Delete,
            DeleteWithoutWhere,
            Merge,
            CopyFrom,
            CopyTo,
            Create,
            Alter,
            Drop,
            Truncate,
            Grant,
            Revoke,
            Explain,
            Show,
            Set,
            SetPrivileged,
            Transaction,
            TransactionReadWrite,
            Prepare,
            Execute,
            Deallocate,
            Call,
            Lock,
            Maintenance,
            Listen,
            Notify,
            Use,
            Kill,
            Other,
            Unparsed,
            Empty,
        ]
    };

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether a read-only policy lets it through.
    pub fn is_read_only(self) -> bool {
        use StatementKind::*;
        matches!(
            self,
            Select
                | CopyTo
                | Explain
                | Show
                | Set
                | Transaction
                | Deallocate
                | Listen
                | Use
                | Empty
        )
    }

    /// Kinds a deny-list entry also covers: denying `delete` denies a DELETE
    /// without WHERE too, denying `update` likewise.
    pub fn covered_by(self, denied: StatementKind) -> bool {
        use StatementKind::*;
        self == denied
            || matches!(
                (self, denied),
                (DeleteWithoutWhere, Delete) | (UpdateWithoutWhere, Update)
            )
    }
}

impl fmt::Display for StatementKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One statement of a request, with the text the audit records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub kind: StatementKind,
    /// Why it is `Unparsed`, for the denial message.
    pub parse_error: Option<String>,
    /// The statement re-rendered, when the request held several (the
    /// audit records each one); `None` when the request is this statement.
    pub text: Option<String>,
}

/// Statements up to this long are remembered once classified…
const CACHE_MAX_TEXT: usize = 1024;
/// … this many per worker thread (then the cache starts over).
const CACHE_ENTRIES: usize = 256;

/// Classified statement texts, keyed by grammar, whether the text is
/// literal-blind (see [`literal_blind`]), and text.
type Cache = std::collections::HashMap<(SqlDialect, bool, Box<str>), Vec<Classified>>;

thread_local! {
    /// Applications send the same statement texts again and again (every
    /// extended-protocol Parse, every prepared statement of a pool's
    /// connections), or the same text with other numbers in it: parsing
    /// each with sqlparser was a tenth of NOVAS's CPU per statement.
    static CACHE: std::cell::RefCell<Cache> = std::cell::RefCell::new(Cache::new());
}

/// Classifies every statement in `sql` (one simple-protocol query may hold
/// several). An empty or comment-only text is one `Empty` statement.
pub fn classify(dialect: SqlDialect, sql: &str) -> Vec<Classified> {
    if sql.len() > CACHE_MAX_TEXT {
        return classify_uncached(dialect, sql);
    }
    let blind = literal_blind(sql);
    let key = match blind {
        Some(b) => (dialect, true, b.into_boxed_str()),
        None => (dialect, false, Box::<str>::from(sql)),
    };
    if let Some(hit) = CACHE.with_borrow(|c| c.get(&key).cloned()) {
        return hit;
    }
    let out = classify_uncached(dialect, sql);
    // A literal-blind answer is shared by texts that differ in their
    // numbers, so it may hold nothing taken from one text: one statement,
    // no re-rendered text, no parse error (whose message quotes tokens).
    let shareable =
        !key.1 || matches!(out.as_slice(), [c] if c.text.is_none() && c.parse_error.is_none());
    if shareable {
        CACHE.with_borrow_mut(|c| {
            if c.len() >= CACHE_ENTRIES {
                c.clear();
            }
            c.insert(key, out.clone());
        });
    }
    out
}

/// `sql` with every integer literal written as `0`, when that cannot change
/// what the statement is: statement kinds depend on a statement's shape,
/// never on the value of a number in it. Only plain ASCII texts without
/// quotes, comments, escapes or dollar signs qualify (there a digit can
/// only be part of a name or a number), and only digit runs standing alone
/// (not `t1`, `1.5`, `1e5` or `0x1f`) of at most nine digits. `None` when
/// the text does not qualify or has no such number.
fn literal_blind(sql: &str) -> Option<String> {
    let b = sql.as_bytes();
    if !sql.is_ascii()
        || b.iter()
            .any(|c| matches!(c, b'\'' | b'"' | b'`' | b'$' | b'\\' | b'#'))
        || sql.contains("--")
        || sql.contains("/*")
    {
        return None;
    }
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'.';
    let mut out = String::with_capacity(sql.len());
    let mut replaced = false;
    let mut i = 0;
    while i < b.len() {
        let standalone_start = b[i].is_ascii_digit() && (i == 0 || !word(b[i - 1]));
        if standalone_start {
            let j = i + b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            // Up to nine digits: any such value parses wherever another
            // does (a huge one might not).
            if j - i > 9 {
                return None;
            }
            if j == b.len() || !word(b[j]) {
                out.push('0');
                replaced = true;
            } else {
                // A number like 1.5 or 1e5, or a name starting with
                // digits: copied as it is.
                out.push_str(&sql[i..j]);
            }
            i = j;
            continue;
        }
        out.push(b[i] as char);
        i += 1;
    }
    replaced.then_some(out)
}

fn classify_uncached(dialect: SqlDialect, sql: &str) -> Vec<Classified> {
    let parsed = match dialect {
        SqlDialect::Postgres => parse(&PostgreSqlDialect {}, sql),
        SqlDialect::MySql => parse(&MySqlDialect {}, sql),
    };
    match parsed {
        Ok(stmts) if stmts.is_empty() => vec![Classified {
            kind: StatementKind::Empty,
            parse_error: None,
            text: None,
        }],
        Ok(stmts) => {
            let several = stmts.len() > 1;
            stmts
                .iter()
                .map(|s| Classified {
                    kind: kind_of(s),
                    parse_error: None,
                    text: several.then(|| s.to_string()),
                })
                .collect()
        }
        Err(e) => vec![Classified {
            kind: StatementKind::Unparsed,
            parse_error: Some(e),
            text: None,
        }],
    }
}

fn parse(dialect: &dyn Dialect, sql: &str) -> Result<Vec<Statement>, String> {
    Parser::parse_sql(dialect, sql).map_err(|e| e.to_string())
}

fn kind_of(stmt: &Statement) -> StatementKind {
    use StatementKind as K;
    match stmt {
        Statement::Query(q) => query_kind(q),
        Statement::Insert(_) => K::Insert,
        Statement::Update(u) => {
            if u.selection.is_some() {
                K::Update
            } else {
                K::UpdateWithoutWhere
            }
        }
        Statement::Delete(d) => {
            if d.selection.is_some() || d.using.is_some() {
                K::Delete
            } else {
                K::DeleteWithoutWhere
            }
        }
        Statement::Merge(_) => K::Merge,
        Statement::Copy { to, .. } => {
            if *to {
                K::CopyTo
            } else {
                K::CopyFrom
            }
        }
        Statement::LoadData { .. } => K::CopyFrom,
        Statement::Truncate(_) => K::Truncate,
        Statement::Grant(_) | Statement::GrantRole(_) | Statement::AlterDefaultPrivileges(_) => {
            K::Grant
        }
        Statement::Revoke(_) | Statement::RevokeRole(_) | Statement::Deny(_) => K::Revoke,
        Statement::Explain {
            analyze, statement, ..
        } => {
            // EXPLAIN ANALYZE executes its statement.
            let inner = kind_of(statement);
            if *analyze && !inner.is_read_only() {
                inner
            } else {
                K::Explain
            }
        }
        Statement::ExplainTable { .. } => K::Explain,
        Statement::ShowFunctions { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowProcessList { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowCharset(_)
        | Statement::ShowObjects(_)
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowCollation { .. } => K::Show,
        Statement::Set(set) => set_kind(set),
        Statement::StartTransaction { modes, .. } => transaction_kind(modes),
        Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => K::Transaction,
        Statement::Prepare { statement, .. } => {
            // Preparing a write is as good as running it later.
            let inner = kind_of(statement);
            if inner.is_read_only() {
                K::Prepare
            } else {
                inner
            }
        }
        Statement::Execute { .. } => K::Execute,
        Statement::Deallocate { .. } | Statement::Discard { .. } => K::Deallocate,
        // PostgreSQL's RESET var is harmless, MySQL's RESET MASTER is not.
        Statement::Reset(_) => K::Maintenance,
        Statement::Call(_) => K::Call,
        Statement::Lock(_) | Statement::LockTables { .. } | Statement::UnlockTables => K::Lock,
        Statement::Analyze(_)
        | Statement::Vacuum(_)
        | Statement::OptimizeTable { .. }
        | Statement::RefreshMaterializedView(_)
        | Statement::Flush { .. }
        | Statement::Cache { .. }
        | Statement::UNCache { .. }
        | Statement::Msck(_)
        | Statement::Pragma { .. } => K::Maintenance,
        Statement::LISTEN { .. } | Statement::UNLISTEN { .. } => K::Listen,
        Statement::NOTIFY { .. } => K::Notify,
        Statement::Use(_) => K::Use,
        Statement::Kill { .. } => K::Kill,
        Statement::Declare { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Open(_) => K::Other,
        Statement::Drop { .. }
        | Statement::DropFunction(_)
        | Statement::DropDomain(_)
        | Statement::DropProcedure { .. }
        | Statement::DropSecret { .. }
        | Statement::DropPolicy(_)
        | Statement::DropRule(_)
        | Statement::DropConnector { .. }
        | Statement::DropExtension(_)
        | Statement::DropOperator(_)
        | Statement::DropOperatorFamily(_)
        | Statement::DropOperatorClass(_)
        | Statement::DropTrigger(_) => K::Drop,
        other => ddl_kind(other),
    }
}

/// The remaining statements are DDL or administration; name them by their
/// leading keyword, which is stable across sqlparser releases where the
/// variant list is not.
fn ddl_kind(stmt: &Statement) -> StatementKind {
    let text = stmt.to_string();
    let first = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    match first.as_str() {
        "CREATE" | "COMMENT" | "INSTALL" | "ATTACH" => StatementKind::Create,
        "ALTER" | "RENAME" => StatementKind::Alter,
        "DROP" | "DETACH" => StatementKind::Drop,
        _ => StatementKind::Other,
    }
}

fn query_kind(q: &Query) -> StatementKind {
    // A data-modifying CTE (WITH d AS (DELETE …) SELECT …) writes.
    if let Some(with) = &q.with {
        for cte in &with.cte_tables {
            let k = query_kind(&cte.query);
            if !k.is_read_only() {
                return k;
            }
        }
    }
    let body = set_expr_kind(&q.body);
    if body != StatementKind::Select {
        return body;
    }
    if !q.locks.is_empty() {
        return StatementKind::SelectForUpdate;
    }
    StatementKind::Select
}

fn set_expr_kind(e: &SetExpr) -> StatementKind {
    match e {
        SetExpr::Select(s) => {
            if s.into.is_some() {
                StatementKind::SelectInto
            } else {
                StatementKind::Select
            }
        }
        SetExpr::Query(q) => query_kind(q),
        SetExpr::SetOperation { left, right, .. } => {
            let l = set_expr_kind(left);
            if l != StatementKind::Select {
                l
            } else {
                set_expr_kind(right)
            }
        }
        SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) | SetExpr::Merge(s) => {
            kind_of(s)
        }
        SetExpr::Values(_) | SetExpr::Table(_) => StatementKind::Select,
    }
}

fn set_kind(set: &SetStatement) -> StatementKind {
    match set {
        SetStatement::SetRole { .. } | SetStatement::SetSessionAuthorization(_) => {
            StatementKind::SetPrivileged
        }
        SetStatement::SetTransaction { modes, .. } => transaction_kind(modes),
        other => {
            // Anything touching the read-only guard lifts it, whatever the
            // spelling (transaction_read_only, default_transaction_read_only,
            // SESSION CHARACTERISTICS, tx_read_only in MySQL).
            let text = other.to_string().to_ascii_lowercase();
            if text.contains("read_only")
                || text.contains("read write")
                || text.contains("characteristics")
                || text.contains("role")
                || text.contains("authorization")
                || text.contains("password")
                || text.contains("global")
                || text.contains("persist")
                || text.contains("sql_log_bin")
            {
                StatementKind::SetPrivileged
            } else {
                StatementKind::Set
            }
        }
    }
}

fn transaction_kind(modes: &[TransactionMode]) -> StatementKind {
    if modes.iter().any(|m| {
        matches!(
            m,
            TransactionMode::AccessMode(TransactionAccessMode::ReadWrite)
        )
    }) {
        StatementKind::TransactionReadWrite
    } else {
        StatementKind::Transaction
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use StatementKind as K;

    fn kinds(d: SqlDialect, sql: &str) -> Vec<StatementKind> {
        classify(d, sql).into_iter().map(|c| c.kind).collect()
    }

    #[test]
    fn only_standalone_integers_are_blinded() {
        assert_eq!(
            literal_blind("SELECT abalance FROM pgbench_accounts WHERE aid = 4242;").as_deref(),
            Some("SELECT abalance FROM pgbench_accounts WHERE aid = 0;")
        );
        assert_eq!(
            literal_blind("select t1.a from t1 where b=-7 and c in (1,22) limit 5").as_deref(),
            Some("select t1.a from t1 where b=-0 and c in (0,0) limit 0")
        );
        assert_eq!(
            literal_blind("SELECT 1.5, 1e5, 0x1f, 2abc").as_deref(),
            None,
            "nothing standalone"
        );
        for unsafe_text in [
            "SELECT 1 WHERE a = '1'",
            "SELECT \"1\" FROM t",
            "SELECT `a` FROM t WHERE id = 1",
            "SELECT $1 + 2",
            "SELECT $$1$$",
            "SELECT 1 -- 2",
            "SELECT 1 /* 2 */",
            "SELECT 1 # 2",
            "SELECT 'é', 1",
            "SELECT 1234567890",
        ] {
            assert_eq!(literal_blind(unsafe_text), None, "{unsafe_text}");
        }
    }

    #[test]
    fn literal_blind_answers_are_the_fresh_ones() {
        let texts = [
            "SELECT abalance FROM pgbench_accounts WHERE aid = {n};",
            "DELETE FROM t WHERE id = {n}",
            "UPDATE t SET a = {n}",
            "INSERT INTO t VALUES ({n}, {n})",
            "SELECT * FROM t LIMIT {n} FOR UPDATE",
            "SELECT {n}; DROP TABLE t{n}",
            "SELECT {n}; SELECT {n}",
            "SELEC {n} FROM t",
            "CREATE TABLE t (a VARCHAR({n}))",
            "SET statement_timeout = {n}",
            "DROP TABLE t{n}",
        ];
        for d in [SqlDialect::Postgres, SqlDialect::MySql] {
            for t in texts {
                for n in [0u32, 7, 42, 123_456_789] {
                    let sql = t.replace("{n}", &n.to_string());
                    assert_eq!(classify(d, &sql), classify_uncached(d, &sql), "{d:?} {sql}");
                    assert_eq!(classify(d, &sql), classify_uncached(d, &sql), "{d:?} {sql}");
                }
            }
        }
    }

    #[test]
    fn remembered_answers_are_the_fresh_ones_per_dialect_and_bounded() {
        for sql in [
            "SELECT 1",
            "DROP TABLE t",
            "SELEC nonsense",
            "SELECT 1; DELETE FROM t",
        ] {
            for d in [SqlDialect::Postgres, SqlDialect::MySql] {
                let first = classify(d, sql);
                assert_eq!(classify(d, sql), first, "{sql}");
                assert_eq!(classify_uncached(d, sql), first, "{sql}");
            }
        }
        // Backquoted names are MySQL's: the same text must not share an
        // answer across dialects.
        let sql = "SELECT `a` FROM t";
        let pg = classify(SqlDialect::Postgres, sql);
        let my = classify(SqlDialect::MySql, sql);
        assert_ne!(pg, my);
        assert_eq!(my, classify_uncached(SqlDialect::MySql, sql));
        for i in 0..CACHE_ENTRIES * 3 {
            classify(SqlDialect::Postgres, &format!("SELECT c{i} FROM t"));
        }
        let kept = CACHE.with_borrow(|c| c.len());
        assert!(kept > 0 && kept <= CACHE_ENTRIES, "{kept}");
        let long = format!("SELECT {}1", " ".repeat(CACHE_MAX_TEXT));
        let before = CACHE.with_borrow(|c| c.len());
        assert_eq!(kinds(SqlDialect::Postgres, &long), vec![K::Select]);
        assert_eq!(
            CACHE.with_borrow(|c| c.len()),
            before,
            "long texts are not kept"
        );
    }

    #[test]
    fn postgres_statements_are_classified() {
        let pg = SqlDialect::Postgres;
        for (sql, want) in [
            ("SELECT 1", K::Select),
            ("select * from t where a = 1 order by b limit 3", K::Select),
            ("SELECT * FROM t FOR UPDATE", K::SelectForUpdate),
            ("SELECT * INTO newt FROM t", K::SelectInto),
            ("VALUES (1), (2)", K::Select),
            ("INSERT INTO t VALUES (1)", K::Insert),
            ("UPDATE t SET a = 1 WHERE id = 2", K::Update),
            ("UPDATE t SET a = 1", K::UpdateWithoutWhere),
            ("DELETE FROM t WHERE id = 1", K::Delete),
            ("DELETE FROM t", K::DeleteWithoutWhere),
            (
                "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
                K::DeleteWithoutWhere,
            ),
            ("WITH x AS (SELECT 1) SELECT * FROM x", K::Select),
            ("COPY t FROM STDIN", K::CopyFrom),
            ("COPY t TO STDOUT", K::CopyTo),
            ("COPY (SELECT 1) TO STDOUT", K::CopyTo),
            ("CREATE TABLE x (a int)", K::Create),
            ("CREATE INDEX i ON t (a)", K::Create),
            ("ALTER TABLE t ADD COLUMN b int", K::Alter),
            ("DROP TABLE t", K::Drop),
            ("TRUNCATE t", K::Truncate),
            ("GRANT SELECT ON t TO bob", K::Grant),
            ("REVOKE SELECT ON t FROM bob", K::Revoke),
            ("EXPLAIN SELECT 1", K::Explain),
            ("EXPLAIN ANALYZE SELECT 1", K::Explain),
            ("EXPLAIN ANALYZE DELETE FROM t", K::DeleteWithoutWhere),
            ("SHOW search_path", K::Show),
            ("SET search_path = public", K::Set),
            ("SET default_transaction_read_only = off", K::SetPrivileged),
            (
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
                K::TransactionReadWrite,
            ),
            ("SET ROLE admin", K::SetPrivileged),
            ("BEGIN", K::Transaction),
            ("BEGIN READ WRITE", K::TransactionReadWrite),
            ("START TRANSACTION READ ONLY", K::Transaction),
            ("COMMIT", K::Transaction),
            ("ROLLBACK", K::Transaction),
            ("PREPARE p AS SELECT 1", K::Prepare),
            ("PREPARE p AS DELETE FROM t", K::DeleteWithoutWhere),
            ("EXECUTE p", K::Execute),
            ("DEALLOCATE p", K::Deallocate),
            ("VACUUM t", K::Maintenance),
            ("LISTEN ch", K::Listen),
            ("NOTIFY ch", K::Notify),
            ("LOCK TABLE t", K::Lock),
        ] {
            assert_eq!(kinds(pg, sql), vec![want], "{sql}");
        }
    }

    #[test]
    fn mysql_statements_are_classified() {
        let my = SqlDialect::MySql;
        for (sql, want) in [
            ("SELECT * FROM `t` WHERE a = 1", K::Select),
            ("SHOW TABLES", K::Show),
            ("SHOW DATABASES", K::Show),
            ("USE db", K::Use),
            ("INSERT INTO t (a) VALUES (1)", K::Insert),
            ("REPLACE INTO t (a) VALUES (1)", K::Insert),
            ("DELETE FROM t", K::DeleteWithoutWhere),
            ("DROP DATABASE d", K::Drop),
            ("SET NAMES utf8mb4", K::Set),
            ("SET autocommit = 1", K::Set),
            (
                "SET SESSION TRANSACTION READ WRITE",
                K::TransactionReadWrite,
            ),
        ] {
            assert_eq!(kinds(my, sql), vec![want], "{sql}");
        }
    }

    #[test]
    fn several_statements_and_edge_cases() {
        let pg = SqlDialect::Postgres;
        assert_eq!(
            kinds(pg, "SELECT 1; DROP TABLE t;"),
            vec![K::Select, K::Drop]
        );
        assert_eq!(kinds(pg, ""), vec![K::Empty]);
        assert_eq!(kinds(pg, "  ;  "), vec![K::Empty]);
        assert_eq!(kinds(pg, "-- only a comment"), vec![K::Empty]);
        let c = classify(pg, "SELEKT everything");
        assert_eq!(c[0].kind, K::Unparsed);
        assert!(c[0].parse_error.is_some());
        // A hostile nesting depth is a parse error, not a stack overflow.
        let deep = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
        assert_eq!(kinds(pg, &deep), vec![K::Unparsed]);
    }

    #[test]
    fn read_only_and_deny_coverage() {
        assert!(K::Select.is_read_only());
        assert!(!K::SelectForUpdate.is_read_only());
        assert!(!K::Unparsed.is_read_only());
        assert!(!K::SetPrivileged.is_read_only());
        assert!(K::DeleteWithoutWhere.covered_by(K::Delete));
        assert!(!K::Delete.covered_by(K::DeleteWithoutWhere));
        for k in StatementKind::ALL {
            assert_eq!(StatementKind::parse(k.as_str()), Some(k));
        }
    }
}
