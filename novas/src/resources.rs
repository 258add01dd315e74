//! The resources file (YAML): what users can reach, through which agents.

use std::{collections::HashSet, path::Path};

use serde::Deserialize;
use tunnel_proto::{stream::split_target, Secret, StreamKind};

use crate::access::Policies;

use crate::registry::Selector;

/// Default range for resource ports without an explicit `listen`.
pub const DEFAULT_RANGE: (u16, u16) = (40000, 41000);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    listen_range: Option<String>,
    #[serde(default)]
    resources: Vec<RawResource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResource {
    name: String,
    kind: String,
    /// Kubernetes resources may leave it out: the agent knows its API server.
    #[serde(default)]
    target: String,
    #[serde(default)]
    listen: Option<u16>,
    agent: Selector,
    /// Database resources: the database to open when the client names none.
    #[serde(default)]
    database: Option<String>,
    /// Database resources: the accounts NOVAS logs in with upstream.
    #[serde(default)]
    accounts: Vec<RawAccount>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    name: String,
    username: String,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    password_file: Option<String>,
    /// SSH resources: an OpenSSH private key file NOVAS logs in with.
    #[serde(default)]
    key_file: Option<String>,
}

/// Upstream credentials of a resource. The secret stays inside NOVAS: it
/// is never printed, logged or sent to a user.
#[derive(Debug, Clone)]
pub struct Account {
    /// The name policies refer to.
    pub name: String,
    /// The database user name, or the login on an SSH target.
    pub username: String,
    /// Empty for an SSH account that logs in with `key` instead.
    pub password: Secret,
    /// SSH accounts: the OpenSSH private key text (from `key_file`).
    pub key: Option<Secret>,
}

/// A validated resource.
#[derive(Debug, Clone)]
pub struct Resource {
    pub name: String,
    pub kind: StreamKind,
    pub target: String,
    pub listen_port: u16,
    pub selector: Selector,
    pub database: Option<String>,
    pub accounts: Vec<Account>,
}

impl Resource {
    /// The account a policy asks for; `None` means the only one.
    pub fn account(&self, name: Option<&str>) -> Option<&Account> {
        match name {
            Some(n) => self.accounts.iter().find(|a| a.name == n),
            None if self.accounts.len() == 1 => self.accounts.first(),
            None => None,
        }
    }
}

/// Why a resources file is refused.
#[derive(Debug, thiserror::Error)]
pub enum ResourcesError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: {1}")]
    Parse(String, serde_yaml::Error),
    #[error("{file}: resource {name:?}: {msg}")]
    Invalid {
        file: String,
        name: String,
        msg: String,
    },
    #[error("{file}: {msg}")]
    File { file: String, msg: String },
}

pub fn load(path: &Path) -> Result<Vec<Resource>, ResourcesError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ResourcesError::Read(file.clone(), e))?;
    parse_with(&text, &file, &|var| std::env::var(var).ok())
}

/// Reads an account's password from its variable or file. Errors name the
/// source, never the value.
fn account_password(
    a: &RawAccount,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Secret, String> {
    if a.key_file.is_some() {
        return Err(format!(
            "account {:?}: key_file applies to ssh resources only",
            a.name
        ));
    }
    let value = match (&a.password_env, &a.password_file) {
        (Some(var), None) => {
            env(var).ok_or_else(|| format!("account {:?}: variable {var} is not set", a.name))?
        }
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| {
                format!(
                    "account {:?}: cannot read password_file {path}: {e}",
                    a.name
                )
            })?
            .trim_end_matches(['\n', '\r'])
            .to_string(),
        (None, None) => {
            return Err(format!(
                "account {:?}: needs password_env or password_file",
                a.name
            ))
        }
        (Some(_), Some(_)) => {
            return Err(format!(
                "account {:?}: give password_env or password_file, not both",
                a.name
            ))
        }
    };
    if value.is_empty() {
        return Err(format!("account {:?}: the password is empty", a.name));
    }
    Ok(Secret::new(value))
}

/// An SSH account's secret: a key file, or a password like the databases'.
fn ssh_credentials(
    a: &RawAccount,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Secret, Option<Secret>), String> {
    let Some(path) = &a.key_file else {
        let raw = RawAccount {
            name: a.name.clone(),
            username: a.username.clone(),
            password_env: a.password_env.clone(),
            password_file: a.password_file.clone(),
            key_file: None,
        };
        return account_password(&raw, env)
            .map(|p| (p, None))
            .map_err(|m| m.replace("password_file", "password_file or key_file"));
    };
    if a.password_env.is_some() || a.password_file.is_some() {
        return Err(format!(
            "account {:?}: give key_file or a password, not both",
            a.name
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("account {:?}: cannot read key_file {path}: {e}", a.name))?;
    // Checked here so a bad key fails at start, not at the first login.
    russh::keys::decode_secret_key(&text, None).map_err(|e| {
        format!(
            "account {:?}: key_file {path} is not an unencrypted OpenSSH private key ({e})",
            a.name
        )
    })?;
    Ok((Secret::new(String::new()), Some(Secret::new(text))))
}

fn parse_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-')?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a > 0 && a <= b).then_some((a, b))
}

#[cfg(test)]
pub fn parse(text: &str, file: &str) -> Result<Vec<Resource>, ResourcesError> {
    parse_with(text, file, &|_| None)
}

pub fn parse_with(
    text: &str,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Resource>, ResourcesError> {
    let raw: File =
        serde_yaml::from_str(text).map_err(|e| ResourcesError::Parse(file.into(), e))?;
    let range = match &raw.listen_range {
        None => DEFAULT_RANGE,
        Some(s) => parse_range(s).ok_or_else(|| ResourcesError::File {
            file: file.into(),
            msg: format!("listen_range {s:?} is not like 40000-41000"),
        })?,
    };
    let invalid = |name: &str, msg: String| ResourcesError::Invalid {
        file: file.into(),
        name: name.into(),
        msg,
    };
    let mut names = HashSet::new();
    let mut used: HashSet<u16> = raw.resources.iter().filter_map(|r| r.listen).collect();
    let mut next = range.0;
    let mut out = Vec::new();
    for r in raw.resources {
        tunnel_proto::control::validate_name(&r.name).map_err(|m| invalid(&r.name, m))?;
        if !names.insert(r.name.clone()) {
            return Err(invalid(&r.name, "is declared twice".into()));
        }
        let kind = match r.kind.as_str() {
            "tcp" => StreamKind::Tcp,
            "postgres" => StreamKind::Postgres,
            "mysql" => StreamKind::Mysql,
            "ssh" => StreamKind::Ssh,
            "kubernetes" => StreamKind::Kubernetes,
            other => {
                return Err(invalid(
                    &r.name,
                    format!(
                        "kind {other:?} is not supported (supported: tcp, postgres, mysql, ssh, kubernetes)"
                    ),
                ))
            }
        };
        let mut accounts = Vec::new();
        for a in &r.accounts {
            if accounts.iter().any(|x: &Account| x.name == a.name) {
                return Err(invalid(
                    &r.name,
                    format!("account {:?} is declared twice", a.name),
                ));
            }
            let (password, key) = if kind == StreamKind::Ssh {
                ssh_credentials(a, env)
            } else {
                account_password(a, env).map(|p| (p, None))
            }
            .map_err(|m| invalid(&r.name, m))?;
            accounts.push(Account {
                name: a.name.clone(),
                username: a.username.clone(),
                password,
                key,
            });
        }
        match kind {
            StreamKind::Tcp if !accounts.is_empty() || r.database.is_some() => {
                return Err(invalid(
                    &r.name,
                    "accounts and database apply to postgres and mysql resources only".into(),
                ))
            }
            StreamKind::Postgres | StreamKind::Mysql if accounts.is_empty() => {
                return Err(invalid(
                    &r.name,
                    "a database resource needs at least one account (username + password_env or password_file)".into(),
                ))
            }
            StreamKind::Ssh if accounts.is_empty() => {
                return Err(invalid(
                    &r.name,
                    "an ssh resource needs at least one account (username + key_file, password_env or password_file)".into(),
                ))
            }
            StreamKind::Ssh if r.listen.is_some() || r.database.is_some() => {
                return Err(invalid(
                    &r.name,
                    "ssh resources take no listen or database: they share NOVAS_SSH_PORT and are chosen in the login name".into(),
                ))
            }
            StreamKind::Kubernetes
                if r.listen.is_some() || r.database.is_some() || !r.accounts.is_empty() =>
            {
                return Err(invalid(
                    &r.name,
                    "kubernetes resources take no listen, database or accounts: they share NOVAS_KUBE_PORT (path /clusters/<name>) and the agent uses its own credentials".into(),
                ))
            }
            _ => {}
        }
        // A kubernetes target is informational (the agent decides the API
        // address); if given it must still look like one.
        if !(kind == StreamKind::Kubernetes && r.target.is_empty()) {
            split_target(&r.target).map_err(|m| invalid(&r.name, m))?;
        }
        if r.agent.name.is_none() && r.agent.tags.is_empty() {
            return Err(invalid(
                &r.name,
                "agent selector needs a name or tags".into(),
            ));
        }
        let listen_port = match r.listen {
            // Served by the one SSH (or KAC) listener, never a port of its own.
            None if matches!(kind, StreamKind::Ssh | StreamKind::Kubernetes) => 0,
            Some(0) => return Err(invalid(&r.name, "listen port 0".into())),
            Some(p) => p,
            None => {
                let Some(port) = (next..=range.1).find(|p| !used.contains(p)) else {
                    return Err(invalid(
                        &r.name,
                        format!("no free port left in {}-{}", range.0, range.1),
                    ));
                };
                used.insert(port);
                next = port;
                port
            }
        };
        if listen_port != 0 && out.iter().any(|o: &Resource| o.listen_port == listen_port) {
            return Err(invalid(
                &r.name,
                format!("listen port {listen_port} is used twice"),
            ));
        }
        out.push(Resource {
            name: r.name,
            kind,
            target: r.target,
            listen_port,
            selector: r.agent,
            database: r.database,
            accounts,
        });
    }
    Ok(out)
}

/// Every policy must name accounts that exist on the database resources
/// it covers, or a user would only find out at login.
pub fn check_policies(resources: &[Resource], policies: &Policies) -> Result<(), String> {
    for p in policies.iter() {
        for r in resources.iter().filter(|r| p.covers_resource(&r.name)) {
            if matches!(r.kind, StreamKind::Tcp | StreamKind::Kubernetes) {
                continue;
            }
            if r.kind == StreamKind::Ssh {
                crate::access::ssh_logins(p, r)?;
                continue;
            }
            if r.account(p.account.as_deref()).is_none() {
                return Err(match &p.account {
                    Some(a) => format!(
                        "policy {:?}: resource {:?} has no account {a:?}",
                        p.name, r.name
                    ),
                    None => format!(
                        "policy {:?}: resource {:?} has several accounts; say which with `account:`",
                        p.name, r.name
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files under examples/ stay valid (and consistent together).
    #[test]
    fn example_files_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let text = std::fs::read_to_string(dir.join("resources.yaml")).expect("read");
        let r = parse_with(&text, "examples/resources.yaml", &|_| Some("x".into()))
            .expect("examples/resources.yaml");
        let pol = Policies::load(&dir.join("policies.yaml")).expect("examples/policies.yaml");
        check_policies(&r, &pol).expect("examples agree");
    }

    #[test]
    fn database_resources_carry_accounts() {
        let y = r#"
resources:
  - name: pg
    kind: postgres
    target: "10.0.1.5:5432"
    database: app
    agent: { tags: { VPC: dev } }
    accounts:
      - { name: rw, username: app, password_env: PG_RW }
      - { name: ro, username: reader, password_env: PG_RO }
  - name: my
    kind: mysql
    target: "db:3306"
    agent: { name: a }
    accounts: [{ name: app, username: app, password_env: MY }]
"#;
        let env = |v: &str| match v {
            "PG_RW" => Some("s3cret-rw".to_string()),
            "PG_RO" => Some("s3cret-ro".to_string()),
            "MY" => Some("my-pw".to_string()),
            _ => None,
        };
        let r = parse_with(y, "r.yaml", &env).expect("parse");
        assert_eq!(r[0].kind, StreamKind::Postgres);
        assert_eq!(r[0].database.as_deref(), Some("app"));
        assert_eq!(
            r[0].account(Some("ro")).map(|a| a.username.as_str()),
            Some("reader")
        );
        assert_eq!(
            r[0].account(Some("ro")).map(|a| a.password.expose()),
            Some("s3cret-ro")
        );
        assert!(r[0].account(None).is_none(), "two accounts: must be named");
        assert_eq!(r[1].account(None).map(|a| a.name.as_str()), Some("app"));
        // The password never shows in Debug output.
        assert!(!format!("{r:?}").contains("s3cret"));

        let err = parse_with(y, "r.yaml", &|_| None)
            .expect_err("unset")
            .to_string();
        assert!(err.contains("PG_RW") && err.contains("\"pg\""), "{err}");

        let pol = Policies::parse(
            "policies: [{name: p1, users: [u], resources: [pg], account: rw}, {name: p2, users: [u], resources: [my]}]",
            "p",
        )
        .expect("policies");
        check_policies(&r, &pol).expect("valid");
        let pol = Policies::parse(
            "policies: [{name: p3, users: [u], resources: [\"*\"]}]",
            "p",
        )
        .expect("policies");
        let e = check_policies(&r, &pol).expect_err("ambiguous");
        assert!(e.contains("p3") && e.contains("several accounts"), "{e}");
        let pol = Policies::parse(
            "policies: [{name: p4, users: [u], resources: [pg], account: nope}]",
            "p",
        )
        .expect("policies");
        assert!(check_policies(&r, &pol)
            .expect_err("missing")
            .contains("nope"));
    }

    #[test]
    fn ssh_resources_carry_keys_or_passwords() {
        let dir = tempfile::tempdir().expect("tmp");
        let (key, _) = crate::ssh::hostkey::load_or_generate(dir.path()).expect("key");
        let key_path = crate::ssh::hostkey::host_key_path(dir.path());
        let junk = dir.path().join("junk");
        std::fs::write(&junk, "not a key").expect("write");
        let y = format!(
            r#"
resources:
  - name: web-1
    kind: ssh
    target: "10.0.2.7:22"
    agent: {{ tags: {{ VPC: dev }} }}
    accounts:
      - {{ name: deploy, username: deploy, key_file: "{k}" }}
      - {{ name: root, username: root, password_env: ROOT_PW }}
  - name: web-2
    kind: ssh
    target: "10.0.2.8:22"
    agent: {{ name: a }}
    accounts: [{{ name: deploy, username: deploy, key_file: "{k}" }}]
"#,
            k = key_path.display()
        );
        let env = |v: &str| (v == "ROOT_PW").then(|| "r00t-secret".to_string());
        let r = parse_with(&y, "r.yaml", &env).expect("parse");
        assert_eq!(r[0].kind, StreamKind::Ssh);
        assert_eq!(
            (r[0].listen_port, r[1].listen_port),
            (0, 0),
            "no ports of their own"
        );
        let deploy = r[0].account(Some("deploy")).expect("deploy");
        let pem = deploy.key.as_ref().expect("key").expose().to_string();
        assert_eq!(
            russh::keys::decode_secret_key(&pem, None)
                .expect("key")
                .public_key(),
            key.public_key()
        );
        assert!(r[0].account(Some("root")).expect("root").key.is_none());
        let shown = format!("{r:?}");
        assert!(
            !shown.contains("PRIVATE KEY") && !shown.contains("r00t-secret"),
            "{shown}"
        );

        let k = key_path.display();
        let j = junk.display();
        for (y, needle) in [
            ("resources: [{name: s, kind: ssh, target: h:22, agent: {name: x}}]".to_string(), "needs at least one account"),
            (format!("resources: [{{name: s, kind: ssh, target: h:22, listen: 2200, agent: {{name: x}}, accounts: [{{name: a, username: u, key_file: \"{k}\"}}]}}]"), "NOVAS_SSH_PORT"),
            (format!("resources: [{{name: s, kind: ssh, target: h:22, agent: {{name: x}}, accounts: [{{name: a, username: u, key_file: \"{j}\"}}]}}]"), "not an unencrypted OpenSSH private key"),
            (format!("resources: [{{name: s, kind: ssh, target: h:22, agent: {{name: x}}, accounts: [{{name: a, username: u, key_file: \"{k}\", password_env: P}}]}}]"), "not both"),
            ("resources: [{name: s, kind: ssh, target: h:22, agent: {name: x}, accounts: [{name: a, username: u}]}]".to_string(), "key_file"),
            (format!("resources: [{{name: s, kind: postgres, target: h:1, agent: {{name: x}}, accounts: [{{name: a, username: u, key_file: \"{k}\"}}]}}]"), "ssh resources only"),
        ] {
            let e = parse_with(&y, "res.yaml", &|_| Some("pw".into()))
                .expect_err(&y)
                .to_string();
            assert!(e.contains(needle), "{y}: {e}");
        }

        let pol = Policies::parse(
            "policies: [{name: p, users: [u], resources: [web-1], logins: [root, deploy]}, {name: q, users: [v], resources: [\"web-*\"], account: deploy}]",
            "p",
        )
        .expect("policies");
        check_policies(&r, &pol).expect("valid");
        let pol = Policies::parse("policies: [{name: p, users: [u], resources: [web-1]}]", "p")
            .expect("policies");
        let e = check_policies(&r, &pol).expect_err("two accounts, none named");
        assert!(e.contains("several accounts"), "{e}");
    }

    #[test]
    fn ports_are_assigned_from_the_range() {
        let y = r#"
resources:
  - { name: a, kind: tcp, target: "10.0.1.5:5432", agent: { tags: { VPC: dev } } }
  - { name: b, kind: tcp, target: "db:3306", listen: 40000, agent: { name: novac-1 } }
  - { name: c, kind: tcp, target: "[fd00::1]:22", agent: { tags: { A: "1" } } }
"#;
        let r = parse(y, "t").expect("parse");
        assert_eq!(r[0].listen_port, 40001);
        assert_eq!(r[1].listen_port, 40000);
        assert_eq!(r[2].listen_port, 40002);
    }

    #[test]
    fn errors_name_file_and_resource() {
        for (y, needle) in [
            ("resources: [{name: a, kind: tcp, target: nope, agent: {name: x}}]", "\"a\""),
            ("resources: [{name: a, kind: ftp, target: h:1, agent: {name: x}}]", "not supported"),
            ("resources: [{name: a, kind: postgres, target: h:1, agent: {name: x}}]", "account"),
            ("resources: [{name: a, kind: tcp, target: h:1, agent: {name: x}, database: d}]", "postgres and mysql"),
            (
                "resources: [{name: a, kind: mysql, target: h:1, agent: {name: x}, accounts: [{name: a, username: u}]}]",
                "password_env or password_file",
            ),
            ("resources: [{name: a, kind: tcp, target: h:1, agent: {}}]", "selector"),
            ("resources: [{name: a, kind: tcp, target: h:1, agent: {name: x}, extra: 1}]", "extra"),
            (
                "resources: [{name: a, kind: tcp, target: h:1, agent: {name: x}}, {name: a, kind: tcp, target: h:2, agent: {name: x}}]",
                "twice",
            ),
        ] {
            let e = parse(y, "res.yaml").expect_err(y).to_string();
            assert!(e.contains("res.yaml") && e.contains(needle), "{e}");
        }
    }
}
