//! The SQL text for each backend, generated here and nowhere else so it can
//! be unit-tested without a database. Values are always bind parameters;
//! the only text put into a statement is column names and markers.

use std::sync::Arc;

use crate::audit::AuditQuery;

/// A value bound to, or read from, a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlValue {
    Text(Option<String>),
    /// Text bound without a copy: the drivers take an `Arc<str>` as it is,
    /// so a value shared by many rows (a session id, a user) is one
    /// allocation per batch instead of two per row.
    Shared(Option<Arc<str>>),
    Int(Option<i64>),
}

/// The column type to decode a result column as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    Text,
    Int,
}

/// The SQL flavour of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
    MySql,
}

/// Audit table columns, in bind order.
pub const EVENT_COLUMNS: [&str; 12] = [
    "id",
    "time_ms",
    "node",
    "session_id",
    "user_name",
    "resource",
    "resource_kind",
    "event_type",
    "decision",
    "policy",
    "stmt_text",
    "details",
];

/// How each of [`EVENT_COLUMNS`] decodes.
pub const EVENT_COLUMN_TYPES: [Col; 12] = [
    Col::Text,
    Col::Int,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
];

/// Users table columns, in bind order.
pub const USER_COLUMNS: [&str; 8] = [
    "name",
    "roles",
    "password_argon2",
    "scram_sha256",
    "mysql_native",
    "disabled",
    "created_at_ms",
    "updated_at_ms",
];

pub const USER_COLUMN_TYPES: [Col; 8] = [
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Int,
    Col::Int,
    Col::Int,
];

/// The escape character of `LIKE` patterns: not a backslash, whose meaning
/// in string literals differs between MySQL and PostgreSQL.
const LIKE_ESCAPE: char = '!';

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
            Dialect::MySql => "mysql",
        }
    }

    /// Turns the `?` markers of `text` into this backend's placeholders.
    /// Only for SQL written in this module, which has no `?` in literals.
    pub fn sql(self, text: &str) -> String {
        match self {
            Dialect::Sqlite | Dialect::MySql => text.to_string(),
            Dialect::Postgres => {
                let mut out = String::with_capacity(text.len() + 16);
                let mut n = 0;
                for c in text.chars() {
                    if c == '?' {
                        n += 1;
                        out.push('$');
                        out.push_str(&n.to_string());
                    } else {
                        out.push(c);
                    }
                }
                out
            }
        }
    }

    /// Short, indexed text (names, ids).
    fn key(self) -> &'static str {
        "VARCHAR(255)"
    }

    /// Unbounded text (statement text, JSON details, hashes).
    fn long_text(self) -> &'static str {
        match self {
            Dialect::MySql => "MEDIUMTEXT",
            Dialect::Sqlite | Dialect::Postgres => "TEXT",
        }
    }

    fn table_options(self) -> &'static str {
        match self {
            // Binary collation: names compare exactly, as on the other
            // backends (the default utf8mb4 collation ignores case).
            Dialect::MySql => " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            Dialect::Sqlite | Dialect::Postgres => "",
        }
    }

    pub fn create_schema_version(self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL PRIMARY KEY, applied_at_ms BIGINT NOT NULL){}",
            self.table_options()
        )
    }

    pub fn current_version(self) -> String {
        "SELECT MAX(version) FROM schema_version".to_string()
    }

    pub fn record_version(self) -> String {
        self.sql("INSERT INTO schema_version (version, applied_at_ms) VALUES (?, ?)")
    }

    /// Schema migrations; entry `i` brings the schema to version `i + 1`.
    /// Each statement is idempotent (`IF NOT EXISTS`) so a migration cut
    /// short (MySQL DDL is not transactional) can simply run again.
    pub fn migrations(self) -> Vec<Vec<String>> {
        let key = self.key();
        let long = self.long_text();
        let opts = self.table_options();
        let users = format!(
            "CREATE TABLE IF NOT EXISTS users (\
             name {key} NOT NULL PRIMARY KEY, \
             roles {long} NOT NULL, \
             password_argon2 {long} NOT NULL, \
             scram_sha256 {long} NOT NULL, \
             mysql_native {long} NOT NULL, \
             disabled BIGINT NOT NULL, \
             created_at_ms BIGINT NOT NULL, \
             updated_at_ms BIGINT NOT NULL){opts}"
        );
        let indexes = [
            ("audit_events_time", "time_ms"),
            ("audit_events_user", "user_name, time_ms"),
            ("audit_events_resource", "resource, time_ms"),
            ("audit_events_session", "session_id, time_ms"),
        ];
        // MySQL has no CREATE INDEX IF NOT EXISTS: its indexes go inside
        // the (idempotent) CREATE TABLE instead.
        let inline_indexes: String = match self {
            Dialect::MySql => indexes
                .iter()
                .map(|(name, cols)| format!(", INDEX {name} ({cols})"))
                .collect(),
            Dialect::Sqlite | Dialect::Postgres => String::new(),
        };
        let events = format!(
            "CREATE TABLE IF NOT EXISTS audit_events (\
             id {key} NOT NULL PRIMARY KEY, \
             time_ms BIGINT NOT NULL, \
             node {key} NOT NULL, \
             session_id {key}, \
             user_name {key}, \
             resource {key}, \
             resource_kind {key}, \
             event_type VARCHAR(32) NOT NULL, \
             decision VARCHAR(8), \
             policy {key}, \
             stmt_text {long}, \
             details {long} NOT NULL{inline_indexes}){opts}"
        );
        let mut v1 = vec![users, events];
        if self != Dialect::MySql {
            v1.extend(indexes.iter().map(|(name, cols)| {
                format!("CREATE INDEX IF NOT EXISTS {name} ON audit_events ({cols})")
            }));
        }
        // Version 2 (SAC): users' SSH public keys, pinned target host keys.
        let user_keys = format!(
            "CREATE TABLE IF NOT EXISTS user_keys (\
             user_name {key} NOT NULL, \
             fingerprint VARCHAR(128) NOT NULL, \
             public_key {long} NOT NULL, \
             added_at_ms BIGINT NOT NULL, \
             PRIMARY KEY (user_name, fingerprint)){opts}"
        );
        let host_keys = format!(
            "CREATE TABLE IF NOT EXISTS ssh_host_keys (\
             resource {key} NOT NULL PRIMARY KEY, \
             target {key} NOT NULL, \
             fingerprint VARCHAR(128) NOT NULL, \
             public_key {long} NOT NULL, \
             first_seen_ms BIGINT NOT NULL){opts}"
        );
        // Version 3: the policy document, shared by every node; each
        // change is a new row, so the history is kept.
        let policy_docs = format!(
            "CREATE TABLE IF NOT EXISTS policy_docs (\
             version BIGINT NOT NULL PRIMARY KEY, \
             sha256 VARCHAR(64) NOT NULL, \
             document {long} NOT NULL, \
             source {key} NOT NULL, \
             created_by {key} NOT NULL, \
             created_at_ms BIGINT NOT NULL){opts}"
        );
        // Version 4 (console): login sessions, shared by every NOVAS on
        // the store so a load balancer may send requests to any of them.
        let console_sessions = format!(
            "CREATE TABLE IF NOT EXISTS console_sessions (\
             id_hash VARCHAR(128) NOT NULL PRIMARY KEY, \
             user_name {key} NOT NULL, \
             csrf_token VARCHAR(128) NOT NULL, \
             created_ms BIGINT NOT NULL, \
             last_seen_ms BIGINT NOT NULL){opts}"
        );
        // Version 5 (KAC): NOVAS-issued Kubernetes bearer tokens, by the
        // SHA-256 of the token (the token itself is never stored).
        let kube_tokens = format!(
            "CREATE TABLE IF NOT EXISTS kube_tokens (\
             token_sha256 VARCHAR(64) NOT NULL PRIMARY KEY, \
             user_name {key} NOT NULL, \
             cluster {key} NOT NULL, \
             created_at_ms BIGINT NOT NULL, \
             expires_at_ms BIGINT NOT NULL){opts}"
        );
        vec![
            v1,
            vec![user_keys, host_keys],
            vec![policy_docs],
            vec![console_sessions],
            vec![kube_tokens],
        ]
    }

    pub fn insert_console_session(self) -> String {
        self.sql("INSERT INTO console_sessions (id_hash, user_name, csrf_token, created_ms, last_seen_ms) VALUES (?, ?, ?, ?, ?)")
    }

    pub fn get_console_session(self) -> String {
        self.sql("SELECT id_hash, user_name, csrf_token, created_ms, last_seen_ms FROM console_sessions WHERE id_hash = ?")
    }

    pub fn touch_console_session(self) -> String {
        self.sql("UPDATE console_sessions SET last_seen_ms = ? WHERE id_hash = ?")
    }

    pub fn delete_console_session(self) -> String {
        self.sql("DELETE FROM console_sessions WHERE id_hash = ?")
    }

    pub fn delete_stale_console_sessions(self) -> String {
        self.sql("DELETE FROM console_sessions WHERE created_ms < ? OR last_seen_ms < ?")
    }

    pub fn latest_policy_version(self) -> String {
        "SELECT MAX(version) FROM policy_docs".to_string()
    }

    pub fn policy_doc(self) -> String {
        self.sql("SELECT version, sha256, document, source, created_by, created_at_ms FROM policy_docs WHERE version = ?")
    }

    pub fn policy_history(self) -> String {
        self.sql("SELECT version, sha256, '', source, created_by, created_at_ms FROM policy_docs ORDER BY version DESC LIMIT ?")
    }

    pub fn insert_policy_doc(self) -> String {
        self.sql("INSERT INTO policy_docs (version, sha256, document, source, created_by, created_at_ms) VALUES (?, ?, ?, ?, ?, ?)")
    }

    pub fn insert_kube_token(self) -> String {
        self.sql("INSERT INTO kube_tokens (token_sha256, user_name, cluster, created_at_ms, expires_at_ms) VALUES (?, ?, ?, ?, ?)")
    }

    pub fn get_kube_token(self) -> String {
        self.sql("SELECT token_sha256, user_name, cluster, created_at_ms, expires_at_ms FROM kube_tokens WHERE token_sha256 = ?")
    }

    pub fn delete_user_kube_tokens(self) -> String {
        self.sql("DELETE FROM kube_tokens WHERE user_name = ?")
    }

    pub fn delete_expired_kube_tokens(self) -> String {
        self.sql("DELETE FROM kube_tokens WHERE expires_at_ms < ?")
    }

    pub fn insert_user_key(self) -> String {
        self.sql(
            "INSERT INTO user_keys (user_name, fingerprint, public_key, added_at_ms) VALUES (?, ?, ?, ?)",
        )
    }

    pub fn user_keys(self) -> String {
        self.sql("SELECT user_name, fingerprint, public_key, added_at_ms FROM user_keys WHERE user_name = ? ORDER BY added_at_ms")
    }

    pub fn delete_user_key(self) -> String {
        self.sql("DELETE FROM user_keys WHERE user_name = ? AND fingerprint = ?")
    }

    pub fn insert_host_key(self) -> String {
        self.sql("INSERT INTO ssh_host_keys (resource, target, fingerprint, public_key, first_seen_ms) VALUES (?, ?, ?, ?, ?)")
    }

    pub fn get_host_key(self) -> String {
        self.sql("SELECT resource, target, fingerprint, public_key, first_seen_ms FROM ssh_host_keys WHERE resource = ?")
    }

    pub fn list_host_keys(self) -> String {
        "SELECT resource, target, fingerprint, public_key, first_seen_ms FROM ssh_host_keys ORDER BY resource".to_string()
    }

    pub fn delete_host_key(self) -> String {
        self.sql("DELETE FROM ssh_host_keys WHERE resource = ?")
    }

    /// A cheap statement that fails unless the audit table is readable.
    pub fn ping(self) -> String {
        "SELECT 1 FROM audit_events WHERE 1 = 0".to_string()
    }

    /// Inserts `rows` events, skipping ids already stored (a retried or
    /// replayed batch).
    pub fn insert_events(self, rows: usize) -> String {
        let one = format!("({})", vec!["?"; EVENT_COLUMNS.len()].join(", "));
        let values = vec![one; rows].join(", ");
        let cols = EVENT_COLUMNS.join(", ");
        let text = match self {
            Dialect::Sqlite => {
                format!("INSERT OR IGNORE INTO audit_events ({cols}) VALUES {values}")
            }
            Dialect::Postgres => format!(
                "INSERT INTO audit_events ({cols}) VALUES {values} ON CONFLICT (id) DO NOTHING"
            ),
            Dialect::MySql => format!("INSERT IGNORE INTO audit_events ({cols}) VALUES {values}"),
        };
        self.sql(&text)
    }

    /// The search statement and its bind values, newest first.
    pub fn select_events(self, q: &AuditQuery) -> (String, Vec<SqlValue>) {
        let mut text = format!("SELECT {} FROM audit_events", EVENT_COLUMNS.join(", "));
        let mut conds: Vec<String> = Vec::new();
        let mut args = Vec::new();
        let mut eq = |col: &str, v: Option<String>| {
            if let Some(v) = v {
                conds.push(format!("{col} = ?"));
                args.push(SqlValue::Text(Some(v)));
            }
        };
        eq("user_name", q.user.clone());
        eq("resource", q.resource.clone());
        eq("event_type", q.kind.map(|k| k.as_str().to_string()));
        eq("decision", q.decision.map(|d| d.as_str().to_string()));
        eq("session_id", q.session_id.clone());
        if let Some(s) = q.since_ms {
            conds.push("time_ms >= ?".into());
            args.push(SqlValue::Int(Some(s)));
        }
        if let Some(u) = q.until_ms {
            conds.push("time_ms < ?".into());
            args.push(SqlValue::Int(Some(u)));
        }
        if let Some(t) = &q.text {
            conds.push(format!("LOWER(stmt_text) LIKE ? ESCAPE '{LIKE_ESCAPE}'"));
            args.push(SqlValue::Text(Some(like_contains(&t.to_lowercase()))));
        }
        if !conds.is_empty() {
            text.push_str(" WHERE ");
            text.push_str(&conds.join(" AND "));
        }
        text.push_str(" ORDER BY time_ms DESC, id DESC LIMIT ?");
        args.push(SqlValue::Int(Some(i64::from(q.effective_limit()))));
        (self.sql(&text), args)
    }

    pub fn upsert_user(self) -> String {
        let cols = USER_COLUMNS.join(", ");
        let marks = vec!["?"; USER_COLUMNS.len()].join(", ");
        // created_at_ms keeps its first value.
        let updated = USER_COLUMNS
            .iter()
            .filter(|c| **c != "name" && **c != "created_at_ms");
        let text = match self {
            Dialect::Sqlite | Dialect::Postgres => {
                let set: Vec<String> = updated.map(|c| format!("{c} = excluded.{c}")).collect();
                format!(
                    "INSERT INTO users ({cols}) VALUES ({marks}) ON CONFLICT (name) DO UPDATE SET {}",
                    set.join(", ")
                )
            }
            Dialect::MySql => {
                // VALUES(col) rather than a row alias: MariaDB has no alias.
                let set: Vec<String> = updated.map(|c| format!("{c} = VALUES({c})")).collect();
                format!(
                    "INSERT INTO users ({cols}) VALUES ({marks}) ON DUPLICATE KEY UPDATE {}",
                    set.join(", ")
                )
            }
        };
        self.sql(&text)
    }

    pub fn get_user(self) -> String {
        self.sql(&format!(
            "SELECT {} FROM users WHERE name = ?",
            USER_COLUMNS.join(", ")
        ))
    }

    pub fn list_users(self) -> String {
        format!(
            "SELECT {} FROM users ORDER BY name",
            USER_COLUMNS.join(", ")
        )
    }

    pub fn delete_user(self) -> String {
        self.sql("DELETE FROM users WHERE name = ?")
    }
}

/// A `LIKE` pattern matching `s` anywhere, with its own `%`, `_` and escape
/// characters taken literally.
fn like_contains(s: &str) -> String {
    let mut p = String::with_capacity(s.len() + 2);
    p.push('%');
    for c in s.chars() {
        if c == '%' || c == '_' || c == LIKE_ESCAPE {
            p.push(LIKE_ESCAPE);
        }
        p.push(c);
    }
    p.push('%');
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Decision, EventType};

    const ALL: [Dialect; 3] = [Dialect::Sqlite, Dialect::Postgres, Dialect::MySql];

    fn markers(sql: &str) -> (usize, usize) {
        let q = sql.matches('?').count();
        let dollar = sql.matches('$').count();
        (q, dollar)
    }

    #[test]
    fn placeholder_style_per_backend() {
        let q = AuditQuery {
            user: Some("alice".into()),
            kind: Some(EventType::Statement),
            decision: Some(Decision::Deny),
            since_ms: Some(1),
            until_ms: Some(2),
            text: Some("50%_off!".into()),
            ..Default::default()
        };
        for d in ALL {
            let (sel, args) = d.select_events(&q);
            let statements = [
                sel.clone(),
                d.insert_events(3),
                d.upsert_user(),
                d.get_user(),
                d.delete_user(),
                d.record_version(),
            ];
            let binds = [
                args.len(),
                3 * EVENT_COLUMNS.len(),
                USER_COLUMNS.len(),
                1,
                1,
                2,
            ];
            for (sql, n) in statements.iter().zip(binds) {
                let (qm, dollar) = markers(sql);
                match d {
                    Dialect::Postgres => {
                        assert_eq!((qm, dollar), (0, n), "{sql}");
                        assert!(sql.contains(&format!("${n}")), "{sql}");
                        assert!(!sql.contains(&format!("${}", n + 1)), "{sql}");
                    }
                    Dialect::Sqlite | Dialect::MySql => assert_eq!((qm, dollar), (n, 0), "{sql}"),
                }
            }
            assert_eq!(args.len(), 7);
            assert_eq!(
                args[5],
                SqlValue::Text(Some("%50!%!_off!!%".into())),
                "LIKE pattern escaped"
            );
            assert_eq!(args[6], SqlValue::Int(Some(100)), "default limit");
        }
    }

    #[test]
    fn backend_specific_syntax() {
        assert!(Dialect::MySql.insert_events(1).starts_with("INSERT IGNORE"));
        assert!(Dialect::Sqlite
            .insert_events(1)
            .starts_with("INSERT OR IGNORE"));
        assert!(Dialect::Postgres
            .insert_events(1)
            .ends_with("ON CONFLICT (id) DO NOTHING"));
        let my = Dialect::MySql.upsert_user();
        assert!(my.contains("ON DUPLICATE KEY UPDATE roles = VALUES(roles)"));
        assert!(!my.contains("created_at_ms = "), "created_at_ms is kept");
        let pg = Dialect::Postgres.upsert_user();
        assert!(pg.contains("ON CONFLICT (name) DO UPDATE SET roles = excluded.roles"));
        let my_schema = Dialect::MySql.migrations().concat().join(";");
        assert!(my_schema.contains("MEDIUMTEXT") && my_schema.contains("utf8mb4_bin"));
        assert!(my_schema.contains("INDEX audit_events_user (user_name, time_ms)"));
        assert!(!my_schema.contains("CREATE INDEX"));
        for d in ALL {
            for stmt in d.migrations().concat() {
                assert!(stmt.contains("IF NOT EXISTS"), "not idempotent: {stmt}");
            }
            let (sel, args) = d.select_events(&AuditQuery::default());
            assert!(!sel.contains("WHERE"));
            assert_eq!(args.len(), 1);
        }
    }
}
