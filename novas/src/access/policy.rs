//! The policy file and the two decisions made from it: may this identity
//! use this resource (and as which account), and may this statement run.
//! Both are pure functions of their inputs, so they are tested by tables.
//!
//! ```yaml
//! policies:
//!   - name: dba-full            # named in every decision and audit event
//!     roles: [dba]              # subjects: roles and/or users
//!     users: [alice]
//!     resources: ["pg-*"]       # names, `*` matches any run of characters
//!     account: app              # the resource account used upstream
//!     deny: [drop, truncate, delete_without_where]
//!   - name: analysts-read-only
//!     roles: [analyst]
//!     resources: [pg-main]
//!     account: readonly
//!     read_only: true
//!   - name: ops-ssh             # ssh resources (decisions in ssh.rs)
//!     roles: [ops]
//!     resources: ["web-*"]
//!     account: deploy           # the login used when the user names none
//!     logins: [deploy, root]    # logins the user may pick (`alice%web-1%root`)
//!     port_forward: true        # `ssh -L` allowed (default false)
//!   - name: dev-k8s             # kubernetes resources (crate::kube::policy)
//!     roles: [dev]
//!     resources: [prod-eu]
//!     kubernetes:
//!       groups: [nova-dev]
//!       rules: [{verbs: [get, list, watch], namespaces: [default]}]
//! ```
//! The first policy (in file order) whose subjects and resources match is
//! the one that applies; no match means no access.

use std::{collections::HashSet, path::Path};

use serde::Deserialize;

use super::sql::{classify, Classified, SqlDialect, StatementKind};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    policies: Vec<RawPolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: String,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
    resources: Vec<String>,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    allow_unparsed: bool,
    #[serde(default)]
    logins: Vec<String>,
    #[serde(default)]
    port_forward: bool,
    /// Kubernetes resources (decisions in `crate::kube::policy`).
    #[serde(default)]
    kubernetes: Option<crate::kube::policy::RawKube>,
}

/// One validated policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub users: Vec<String>,
    pub roles: Vec<String>,
    pub resources: Vec<String>,
    /// The resource account to log in as; `None` means the resource's only
    /// account.
    pub account: Option<String>,
    pub read_only: bool,
    pub deny: Vec<StatementKind>,
    /// Let statements the parser cannot read through a restricted policy.
    /// Off by default: a deny list that unparsable SQL slips past is no
    /// restriction.
    pub allow_unparsed: bool,
    /// SSH resources: the accounts a user may ask for by name; empty means
    /// only the default one (`account`, or the resource's only account).
    pub logins: Vec<String>,
    /// SSH resources: whether local port forwarding (`ssh -L`) is allowed.
    pub port_forward: bool,
    /// Kubernetes resources: the request rules and the impersonated
    /// identity; `None` grants nothing on a cluster.
    pub kubernetes: Option<crate::kube::policy::KubeRules>,
}

/// Who is asking: a NOVAS user and their roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub roles: Vec<String>,
}

/// Access to a resource was granted by `policy`.
#[derive(Debug, Clone)]
pub struct Permit {
    pub policy: Policy,
}

/// Why access to a resource is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No policy names this user (or one of their roles) for the resource.
    #[error("no policy grants user {user:?} access to resource {resource:?}")]
    NoPolicy { user: String, resource: String },
}

/// The verdict on one request (one or several statements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementDecision {
    pub statements: Vec<Classified>,
    pub allowed: bool,
    /// The policy that decided, always set.
    pub policy: String,
    /// For a denial: what the user reads.
    pub reason: Option<String>,
}

impl StatementDecision {
    /// The kinds joined for the audit record: `select` or `select,drop`.
    pub fn kinds(&self) -> String {
        let mut out = String::new();
        for (i, c) in self.statements.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(c.kind.as_str());
        }
        out
    }
}

/// Why a policy file is refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: {1}")]
    Parse(String, serde_yaml::Error),
    #[error("{file}: policy {name:?}: {msg}")]
    Invalid {
        file: String,
        name: String,
        msg: String,
    },
}

/// All policies, in file order.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    list: Vec<Policy>,
}

impl Policies {
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Read(file.clone(), e))?;
        Self::parse(&text, &file)
    }

    pub fn parse(text: &str, file: &str) -> Result<Self, PolicyError> {
        let raw: File =
            serde_yaml::from_str(text).map_err(|e| PolicyError::Parse(file.into(), e))?;
        let mut names = HashSet::new();
        let mut list = Vec::new();
        for p in raw.policies {
            let invalid = |msg: String| PolicyError::Invalid {
                file: file.into(),
                name: p.name.clone(),
                msg,
            };
            if p.name.trim().is_empty() {
                return Err(invalid("name is empty".into()));
            }
            if !names.insert(p.name.clone()) {
                return Err(invalid("is declared twice".into()));
            }
            if p.users.is_empty() && p.roles.is_empty() {
                return Err(invalid("names no users and no roles".into()));
            }
            if p.resources.is_empty() {
                return Err(invalid("names no resources".into()));
            }
            let mut deny = Vec::new();
            for d in &p.deny {
                let kind = StatementKind::parse(d).ok_or_else(|| {
                    let known: Vec<&str> = StatementKind::ALL.iter().map(|k| k.as_str()).collect();
                    invalid(format!(
                        "deny: unknown statement kind {d:?} (known: {})",
                        known.join(", ")
                    ))
                })?;
                deny.push(kind);
            }
            let kubernetes = match p.kubernetes {
                None => None,
                Some(raw) => Some(crate::kube::policy::KubeRules::from_raw(raw).map_err(invalid)?),
            };
            list.push(Policy {
                kubernetes,
                name: p.name,
                users: p.users,
                roles: p.roles,
                resources: p.resources,
                account: p.account,
                read_only: p.read_only,
                deny,
                allow_unparsed: p.allow_unparsed,
                logins: p.logins,
                port_forward: p.port_forward,
            });
        }
        Ok(Self { list })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Policy> {
        self.list.iter()
    }

    /// The first policy that lets `who` use `resource`.
    pub fn authorize(&self, who: &Identity, resource: &str) -> Result<Permit, Denied> {
        self.list
            .iter()
            .find(|p| p.covers_subject(who) && p.covers_resource(resource))
            .map(|p| Permit { policy: p.clone() })
            .ok_or_else(|| Denied::NoPolicy {
                user: who.user.clone(),
                resource: resource.into(),
            })
    }
}

impl Policy {
    fn covers_subject(&self, who: &Identity) -> bool {
        self.users.iter().any(|u| u == &who.user)
            || self.roles.iter().any(|r| who.roles.contains(r))
    }

    pub fn covers_resource(&self, resource: &str) -> bool {
        self.resources.iter().any(|pat| glob(pat, resource))
    }

    fn restricted(&self) -> bool {
        self.read_only || !self.deny.is_empty()
    }

    /// Decides on one request. Every statement must pass; the first that
    /// does not gives the reason.
    pub fn check(&self, dialect: SqlDialect, sql: &str) -> StatementDecision {
        let statements = classify(dialect, sql);
        let reason = statements.iter().find_map(|c| self.refusal(c));
        StatementDecision {
            allowed: reason.is_none(),
            policy: self.name.clone(),
            reason,
            statements,
        }
    }

    fn refusal(&self, c: &Classified) -> Option<String> {
        let name = &self.name;
        if c.kind == StatementKind::Unparsed {
            if self.restricted() && !self.allow_unparsed {
                let why = c.parse_error.as_deref().unwrap_or("parse error");
                return Some(format!(
                    "statement denied by policy {name:?}: it could not be parsed ({why}) and the policy is restricted"
                ));
            }
            return None;
        }
        if self.read_only && !c.kind.is_read_only() {
            return Some(format!(
                "statement denied by policy {name:?}: read-only access, {} is not allowed",
                c.kind
            ));
        }
        if let Some(d) = self.deny.iter().find(|d| c.kind.covered_by(**d)) {
            return Some(format!(
                "statement denied by policy {name:?}: {} is on its deny list ({d})",
                c.kind
            ));
        }
        None
    }
}

/// `*` matches any run of characters; everything else literally.
pub(crate) fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    if !name.ends_with(last) {
        return false;
    }
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
policies:
  - name: dba-full
    roles: [dba]
    resources: ["pg-*", mysql-main]
    account: app
    deny: [drop, truncate, delete_without_where]
  - name: analysts-ro
    roles: [analyst]
    users: [carol]
    resources: [pg-main]
    account: readonly
    read_only: true
  - name: open
    users: [dave]
    resources: ["*"]
"#;

    fn who(user: &str, roles: &[&str]) -> Identity {
        Identity {
            user: user.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn first_matching_policy_grants_access() {
        let p = Policies::parse(FILE, "p.yaml").expect("parse");
        for (user, roles, resource, want) in [
            ("alice", &["dba"][..], "pg-main", Some("dba-full")),
            ("alice", &["dba"][..], "mysql-main", Some("dba-full")),
            ("alice", &["dba"][..], "mysql-other", None),
            ("bob", &["analyst"][..], "pg-main", Some("analysts-ro")),
            ("bob", &["analyst"][..], "pg-other", None),
            ("carol", &[][..], "pg-main", Some("analysts-ro")),
            ("eve", &[][..], "pg-main", None),
            ("dave", &[][..], "anything", Some("open")),
            // Both dba and analyst: file order decides.
            (
                "frank",
                &["analyst", "dba"][..],
                "pg-main",
                Some("dba-full"),
            ),
        ] {
            let got = p.authorize(&who(user, roles), resource);
            assert_eq!(
                got.as_ref().ok().map(|x| x.policy.name.as_str()),
                want,
                "{user} {resource}"
            );
            if let Err(e) = got {
                assert!(e.to_string().contains(user) && e.to_string().contains(resource));
            }
        }
    }

    #[test]
    fn statements_are_checked_against_the_policy() {
        let p = Policies::parse(FILE, "p.yaml").expect("parse");
        let list: Vec<&Policy> = p.iter().collect();
        let (dba, ro, open) = (list[0], list[1], list[2]);
        let pg = SqlDialect::Postgres;
        for (policy, sql, allowed, needle) in [
            (ro, "SELECT * FROM t", true, ""),
            (ro, "EXPLAIN SELECT 1", true, ""),
            (ro, "INSERT INTO t VALUES (1)", false, "read-only"),
            (ro, "UPDATE t SET a = 1 WHERE b = 2", false, "read-only"),
            (ro, "CREATE TABLE x (a int)", false, "read-only"),
            (
                ro,
                "SET default_transaction_read_only = off",
                false,
                "read-only",
            ),
            (ro, "SELECT 1; DELETE FROM t WHERE a = 1", false, "delete"),
            (ro, "SELEKT nonsense", false, "could not be parsed"),
            (dba, "DROP TABLE t", false, "deny list"),
            (dba, "TRUNCATE t", false, "deny list"),
            (dba, "DELETE FROM t", false, "deny list"),
            (dba, "DELETE FROM t WHERE id = 3", true, ""),
            (dba, "INSERT INTO t VALUES (1)", true, ""),
            (dba, "SELEKT nonsense", false, "could not be parsed"),
            (open, "DROP TABLE t", true, ""),
            (open, "SELEKT nonsense", true, ""),
        ] {
            let d = policy.check(pg, sql);
            assert_eq!(d.allowed, allowed, "{} {sql}: {:?}", policy.name, d.reason);
            assert_eq!(d.policy, policy.name);
            if !allowed {
                let reason = d.reason.unwrap_or_default();
                assert!(reason.contains(needle), "{reason}");
                assert!(reason.contains(&policy.name), "{reason}");
            }
        }
    }

    #[test]
    fn bad_files_name_the_problem() {
        for (y, needle) in [
            ("policies: [{name: a, resources: [x]}]", "no users and no roles"),
            ("policies: [{name: a, users: [u], resources: []}]", "no resources"),
            ("policies: [{name: a, users: [u], resources: [x], deny: [dropp]}]", "dropp"),
            ("policies: [{name: a, users: [u], resources: [x], extra: 1}]", "extra"),
            (
                "policies: [{name: a, users: [u], resources: [x]}, {name: a, users: [u], resources: [x]}]",
                "twice",
            ),
        ] {
            let e = Policies::parse(y, "pol.yaml").expect_err(y).to_string();
            assert!(e.contains("pol.yaml") && e.contains(needle), "{e}");
        }
    }

    #[test]
    fn glob_matches() {
        assert!(glob("*", "x"));
        assert!(glob("pg-*", "pg-main"));
        assert!(!glob("pg-*", "mysql-main"));
        assert!(glob("*-main", "pg-main"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXc"));
        assert!(!glob("ab*ba", "aba"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
    }
}
