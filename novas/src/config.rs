//! NOVAS server configuration: environment (envy, prefix `NOVAS_`) with
//! flags on top, validated at start; errors name the variable.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::Args;
use serde::{Deserialize, Serialize};
use tunnel_proto::Secret;

/// `novas serve` flags; each overrides the `NOVAS_*` variable of that name.
#[derive(Debug, Default, Clone, Args)]
pub struct ServeFlags {
    /// NOVAS_AGENT_PORT: agent tunnel port (default 9022)
    #[arg(long)]
    pub agent_port: Option<String>,
    /// NOVAS_AGENT_TOKEN: shared enrollment token (required; prefer the variable)
    #[arg(long)]
    pub agent_token: Option<String>,
    /// NOVAS_BIND: address every listener binds (default 0.0.0.0)
    #[arg(long)]
    pub bind: Option<String>,
    /// NOVAS_HTTP_PORT: health and API port (default 80)
    #[arg(long)]
    pub http_port: Option<String>,
    /// NOVAS_DATA_DIR: generated certificate and admin token (default ./novas-data)
    #[arg(long)]
    pub data_dir: Option<String>,
    /// NOVAS_TLS_CERT: PEM certificate chain (with NOVAS_TLS_KEY)
    #[arg(long)]
    pub tls_cert: Option<String>,
    /// NOVAS_TLS_KEY: PEM private key
    #[arg(long)]
    pub tls_key: Option<String>,
    /// NOVAS_TLS_NAMES: extra names for the generated certificate (comma list)
    #[arg(long)]
    pub tls_names: Option<String>,
    /// NOVAS_RESOURCES: YAML resources file
    #[arg(long)]
    pub resources: Option<String>,
    /// NOVAS_POLICIES: YAML policy file (who reaches which resource, how)
    #[arg(long)]
    pub policies: Option<String>,
    /// NOVAS_ADMIN_TOKEN: bearer token for /api (default: generated in the data dir)
    #[arg(long)]
    pub admin_token: Option<String>,
    /// NOVAS_HEARTBEAT_INTERVAL: e.g. 10s; agents are dead after 3 silent intervals
    #[arg(long)]
    pub heartbeat_interval: Option<String>,
    /// NOVAS_HANDSHAKE_TIMEOUT: bound on TLS + registration (default 10s)
    #[arg(long)]
    pub handshake_timeout: Option<String>,
    /// NOVAS_NODE_NAME: this node's name (default: hostname)
    #[arg(long)]
    pub node_name: Option<String>,
    /// NOVAS_LOG_FORMAT: text or json
    #[arg(long)]
    pub log_format: Option<String>,
    /// NOVAS_STORE_URL: sqlite://PATH, postgres://… or mysql://… (default sqlite://$NOVAS_DATA_DIR/novas.db)
    #[arg(long)]
    pub store_url: Option<String>,
    /// NOVAS_AUDIT_FAIL_OPEN: true to keep serving when the audit store fails (default false: refuse)
    #[arg(long)]
    pub audit_fail_open: Option<String>,
    /// NOVAS_METRICS_PUBLIC: true serves /metrics without the admin token (default false)
    #[arg(long)]
    pub metrics_public: Option<String>,
    /// NOVAS_SSH_PORT: the SSH listener for every ssh resource (default 2222)
    #[arg(long)]
    pub ssh_port: Option<String>,
    /// NOVAS_SSH_LOGIN_TIMEOUT: bound on an SSH client's handshake and login (default 60s)
    #[arg(long)]
    pub ssh_login_timeout: Option<String>,
    /// NOVAS_POLICY_REFRESH: how often the store is checked for a new policy version (default 5s)
    #[arg(long)]
    pub policy_refresh: Option<String>,
    /// NOVAS_CONSOLE_IDLE_TIMEOUT: a console session unused this long ends (default 30m)
    #[arg(long)]
    pub console_idle_timeout: Option<String>,
    /// NOVAS_CONSOLE_SESSION_MAX: a console session ends this long after login (default 12h)
    #[arg(long)]
    pub console_session_max: Option<String>,
    /// NOVAS_CONSOLE_SECURE_COOKIE: true marks the console cookie Secure (behind a TLS proxy)
    #[arg(long)]
    pub console_secure_cookie: Option<String>,
    /// NOVAS_KUBE_PORT: the HTTPS listener for every kubernetes resource (default 6443)
    #[arg(long)]
    pub kube_port: Option<String>,
    /// NOVAS_WORKER_THREADS: threads that run sessions (default: one per CPU)
    #[arg(long)]
    pub worker_threads: Option<String>,
}

/// Serialize only to list the field names ([`env_names`]).
#[derive(Debug, Default, Deserialize, Serialize)]
struct EnvVars {
    agent_port: Option<String>,
    agent_token: Option<String>,
    bind: Option<String>,
    http_port: Option<String>,
    data_dir: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    tls_names: Option<String>,
    resources: Option<String>,
    policies: Option<String>,
    admin_token: Option<String>,
    heartbeat_interval: Option<String>,
    handshake_timeout: Option<String>,
    node_name: Option<String>,
    log_format: Option<String>,
    store_url: Option<String>,
    audit_fail_open: Option<String>,
    metrics_public: Option<String>,
    ssh_port: Option<String>,
    ssh_login_timeout: Option<String>,
    policy_refresh: Option<String>,
    console_idle_timeout: Option<String>,
    console_session_max: Option<String>,
    console_secure_cookie: Option<String>,
    kube_port: Option<String>,
    worker_threads: Option<String>,
}

/// Variables read outside [`EnvVars`]: by the CLI subcommands
/// (`novas tunnels`) and for the default node name.
const OTHER_ENV: [&str; 4] = ["NOVAS_URL", "NOVAS_KUBE_URL", "HOSTNAME", "RUST_LOG"];

/// Every environment variable novas reads, derived from the struct envy
/// fills (so this cannot drift from what is parsed). Resource files name
/// further variables of their own (`password_env`). Deployment files are
/// checked against this list.
pub fn env_names() -> Vec<String> {
    let fields = match serde_json::to_value(EnvVars::default()) {
        Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect::<Vec<_>>(),
        _ => Vec::new(),
    };
    let mut names: Vec<String> = fields
        .iter()
        .map(|f| format!("NOVAS_{}", f.to_ascii_uppercase()))
        .chain(OTHER_ENV.iter().map(|s| s.to_string()))
        .collect();
    names.sort();
    names
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub enum TlsSource {
    Files { cert: PathBuf, key: PathBuf },
    Generated { names: Vec<String> },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub agent_port: u16,
    pub agent_token: Secret,
    pub bind: IpAddr,
    pub http_port: u16,
    pub data_dir: PathBuf,
    pub tls: TlsSource,
    pub resources: Option<PathBuf>,
    pub policies: Option<PathBuf>,
    pub admin_token: Option<Secret>,
    pub heartbeat: Duration,
    pub handshake_timeout: Duration,
    pub node_name: String,
    pub log_format: LogFormat,
    /// May hold a database password, hence a [`Secret`]; print it with
    /// [`crate::store::redact`].
    pub store_url: Secret,
    pub audit_fail_open: bool,
    /// Serve `/metrics` without the admin token.
    pub metrics_public: bool,
    /// Listened on only when an ssh resource exists.
    pub ssh_port: u16,
    pub ssh_login_timeout: Duration,
    /// Poll interval for policy versions in the store.
    pub policy_refresh: Duration,
    pub console: crate::console::ConsoleConfig,
    /// KAC listener, opened only when a kubernetes resource exists.
    pub kube_port: u16,
    /// Tokio worker threads; `None`: one per CPU.
    pub worker_threads: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
#[error("{var}: {msg}")]
pub struct ConfigError {
    pub var: &'static str,
    pub msg: String,
}

fn err(var: &'static str, msg: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        msg: msg.into(),
    }
}

pub(crate) fn duration(
    var: &'static str,
    v: Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => {
            let d = humantime::parse_duration(s.trim()).map_err(|e| {
                err(
                    var,
                    format!("{s:?} is not a duration like 10s or 500ms ({e})"),
                )
            })?;
            if d < Duration::from_millis(100) {
                return Err(err(var, "must be at least 100ms"));
            }
            Ok(d)
        }
    }
}

fn port(var: &'static str, v: Option<String>, default: u16) -> Result<u16, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => s
            .trim()
            .parse::<u16>()
            .map_err(|_| err(var, format!("{s:?} is not a port (0-65535)"))),
    }
}

fn boolean(var: &'static str, v: Option<String>, default: bool) -> Result<bool, ConfigError> {
    match v.as_deref().map(|s| s.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(s) => match s.as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(err(var, format!("{s:?} is not true or false"))),
        },
    }
}

/// The default store: a SQLite file in the data dir.
pub fn default_store_url(data_dir: &std::path::Path) -> String {
    format!("sqlite://{}", data_dir.join("novas.db").display())
}

/// Minimum enrollment-token length: shorter tokens are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.trim().is_empty())
}

impl Config {
    pub fn load(flags: ServeFlags) -> Result<Self, ConfigError> {
        let env: EnvVars = envy::prefixed("NOVAS_")
            .from_env()
            .map_err(|e| err("NOVAS_*", e.to_string()))?;
        Self::from_parts(flags, env)
    }

    fn from_parts(f: ServeFlags, e: EnvVars) -> Result<Self, ConfigError> {
        let pick = |a: Option<String>, b: Option<String>| {
            a.filter(|s| !s.trim().is_empty())
                .or(b.filter(|s| !s.trim().is_empty()))
        };
        let token = pick(f.agent_token, e.agent_token).ok_or_else(|| {
            err(
                "NOVAS_AGENT_TOKEN",
                "is required (`novas gen-token` makes one)",
            )
        })?;
        if token.len() < MIN_TOKEN_LEN {
            return Err(err(
                "NOVAS_AGENT_TOKEN",
                format!("must be at least {MIN_TOKEN_LEN} characters"),
            ));
        }
        let bind = pick(f.bind, e.bind).unwrap_or_else(|| "0.0.0.0".into());
        let bind: IpAddr = bind
            .trim()
            .parse()
            .map_err(|_| err("NOVAS_BIND", format!("{bind:?} is not an IP address")))?;
        let tls = match (pick(f.tls_cert, e.tls_cert), pick(f.tls_key, e.tls_key)) {
            (Some(cert), Some(key)) => TlsSource::Files {
                cert: cert.into(),
                key: key.into(),
            },
            (Some(_), None) => return Err(err("NOVAS_TLS_KEY", "is required with NOVAS_TLS_CERT")),
            (None, Some(_)) => return Err(err("NOVAS_TLS_CERT", "is required with NOVAS_TLS_KEY")),
            (None, None) => {
                let mut names = vec![
                    "localhost".to_string(),
                    "127.0.0.1".to_string(),
                    "::1".to_string(),
                ];
                if let Some(h) = hostname() {
                    names.push(h);
                }
                if let Some(extra) = pick(f.tls_names, e.tls_names) {
                    names.extend(
                        extra
                            .split(',')
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty()),
                    );
                }
                names.dedup();
                TlsSource::Generated { names }
            }
        };
        let admin_token = pick(f.admin_token, e.admin_token).map(Secret::new);
        if admin_token
            .as_ref()
            .is_some_and(|t| t.expose().len() < MIN_TOKEN_LEN)
        {
            return Err(err(
                "NOVAS_ADMIN_TOKEN",
                format!("must be at least {MIN_TOKEN_LEN} characters"),
            ));
        }
        let log_format = match pick(f.log_format, e.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(o) => {
                return Err(err(
                    "NOVAS_LOG_FORMAT",
                    format!("{o:?} is not text or json"),
                ))
            }
        };
        let node_name = pick(f.node_name, e.node_name)
            .or_else(hostname)
            .unwrap_or_else(|| "novas".into());
        tunnel_proto::control::validate_name(&node_name).map_err(|m| err("NOVAS_NODE_NAME", m))?;
        let data_dir: PathBuf = pick(f.data_dir, e.data_dir)
            .unwrap_or_else(|| "novas-data".into())
            .into();
        let store_url =
            pick(f.store_url, e.store_url).unwrap_or_else(|| default_store_url(&data_dir));
        crate::store::StoreUrl::parse(&store_url).map_err(|e| match e {
            crate::store::StoreError::BadUrl { msg, .. } => err("NOVAS_STORE_URL", msg),
            other => err("NOVAS_STORE_URL", other.to_string()),
        })?;
        Ok(Self {
            agent_port: port("NOVAS_AGENT_PORT", pick(f.agent_port, e.agent_port), 9022)?,
            agent_token: Secret::new(token),
            bind,
            http_port: port("NOVAS_HTTP_PORT", pick(f.http_port, e.http_port), 80)?,
            data_dir,
            tls,
            resources: pick(f.resources, e.resources).map(PathBuf::from),
            policies: pick(f.policies, e.policies).map(PathBuf::from),
            admin_token,
            heartbeat: duration(
                "NOVAS_HEARTBEAT_INTERVAL",
                pick(f.heartbeat_interval, e.heartbeat_interval),
                Duration::from_secs(10),
            )?,
            handshake_timeout: duration(
                "NOVAS_HANDSHAKE_TIMEOUT",
                pick(f.handshake_timeout, e.handshake_timeout),
                Duration::from_secs(10),
            )?,
            node_name,
            log_format,
            store_url: Secret::new(store_url),
            audit_fail_open: boolean(
                "NOVAS_AUDIT_FAIL_OPEN",
                pick(f.audit_fail_open, e.audit_fail_open),
                false,
            )?,
            metrics_public: boolean(
                "NOVAS_METRICS_PUBLIC",
                pick(f.metrics_public, e.metrics_public),
                false,
            )?,
            ssh_port: port("NOVAS_SSH_PORT", pick(f.ssh_port, e.ssh_port), 2222)?,
            kube_port: port("NOVAS_KUBE_PORT", pick(f.kube_port, e.kube_port), 6443)?,
            worker_threads: match pick(f.worker_threads, e.worker_threads) {
                None => None,
                Some(v) => match v.trim().parse::<usize>() {
                    Ok(n @ 1..=1024) => Some(n),
                    _ => {
                        return Err(err(
                            "NOVAS_WORKER_THREADS",
                            format!("{v:?} is not a thread count (1-1024)"),
                        ))
                    }
                },
            },
            ssh_login_timeout: duration(
                "NOVAS_SSH_LOGIN_TIMEOUT",
                pick(f.ssh_login_timeout, e.ssh_login_timeout),
                Duration::from_secs(60),
            )?,
            policy_refresh: duration(
                "NOVAS_POLICY_REFRESH",
                pick(f.policy_refresh, e.policy_refresh),
                Duration::from_secs(5),
            )?,
            console: {
                let idle = duration(
                    "NOVAS_CONSOLE_IDLE_TIMEOUT",
                    pick(f.console_idle_timeout, e.console_idle_timeout),
                    crate::console::ConsoleConfig::default().idle_timeout,
                )?;
                let max_age = duration(
                    "NOVAS_CONSOLE_SESSION_MAX",
                    pick(f.console_session_max, e.console_session_max),
                    crate::console::ConsoleConfig::default().max_age,
                )?;
                if idle > max_age {
                    return Err(err(
                        "NOVAS_CONSOLE_IDLE_TIMEOUT",
                        "must not be longer than NOVAS_CONSOLE_SESSION_MAX",
                    ));
                }
                crate::console::ConsoleConfig {
                    idle_timeout: idle,
                    max_age,
                    secure_cookie: boolean(
                        "NOVAS_CONSOLE_SECURE_COOKIE",
                        pick(f.console_secure_cookie, e.console_secure_cookie),
                        false,
                    )?,
                }
            },
        })
    }
}

pub fn hostname() -> Option<String> {
    env_var("HOSTNAME")
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> EnvVars {
        EnvVars {
            agent_token: Some("0123456789abcdef-token".into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults() {
        let c = Config::from_parts(ServeFlags::default(), base()).expect("valid");
        assert_eq!(c.agent_port, 9022);
        assert_eq!(c.http_port, 80);
        assert_eq!(c.heartbeat, Duration::from_secs(10));
        assert!(matches!(c.tls, TlsSource::Generated { .. }));
        assert_eq!(c.store_url.expose(), "sqlite://novas-data/novas.db");
        assert!(!c.audit_fail_open);
        assert!(!c.metrics_public);
        assert_eq!(c.ssh_port, 2222);
        assert_eq!(c.kube_port, 6443);
        assert_eq!(c.worker_threads, None);
        assert_eq!(c.ssh_login_timeout, Duration::from_secs(60));
    }

    #[test]
    fn env_names_come_from_the_struct() {
        let names = env_names();
        for n in [
            "NOVAS_AGENT_PORT",
            "NOVAS_AGENT_TOKEN",
            "NOVAS_STORE_URL",
            "NOVAS_METRICS_PUBLIC",
            "NOVAS_URL",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
        // One per EnvVars field plus the others: a field added to the
        // struct shows up without editing a list.
        assert!(names.len() >= 18 + OTHER_ENV.len(), "{names:?}");
    }

    #[test]
    fn store_settings() {
        let mut env = base();
        env.data_dir = Some("/var/lib/novas".into());
        env.audit_fail_open = Some("TRUE".into());
        let c = Config::from_parts(ServeFlags::default(), env).expect("valid");
        assert_eq!(c.store_url.expose(), "sqlite:///var/lib/novas/novas.db");
        assert!(c.audit_fail_open);
        let mut env = base();
        env.store_url = Some("postgres://novas:pw-secret@db/novas".into());
        let c = Config::from_parts(ServeFlags::default(), env).expect("valid");
        assert!(!format!("{c:?}").contains("pw-secret"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        type Edit = fn(&mut EnvVars);
        let cases: [(Edit, &str); 14] = [
            (|e| e.ssh_port = Some("ssh".into()), "NOVAS_SSH_PORT"),
            (|e| e.kube_port = Some("k8s".into()), "NOVAS_KUBE_PORT"),
            (
                |e| e.worker_threads = Some("0".into()),
                "NOVAS_WORKER_THREADS",
            ),
            (
                |e| e.ssh_login_timeout = Some("1 fortnight-ish".into()),
                "NOVAS_SSH_LOGIN_TIMEOUT",
            ),
            (|e| e.agent_token = None, "NOVAS_AGENT_TOKEN"),
            (
                |e| e.agent_token = Some("short".into()),
                "NOVAS_AGENT_TOKEN",
            ),
            (|e| e.agent_port = Some("99999".into()), "NOVAS_AGENT_PORT"),
            (|e| e.bind = Some("everywhere".into()), "NOVAS_BIND"),
            (|e| e.tls_cert = Some("c.pem".into()), "NOVAS_TLS_KEY"),
            (
                |e| e.heartbeat_interval = Some("often".into()),
                "NOVAS_HEARTBEAT_INTERVAL",
            ),
            (|e| e.log_format = Some("xml".into()), "NOVAS_LOG_FORMAT"),
            (
                |e| e.store_url = Some("redis://u:0123456789abcdef@h".into()),
                "NOVAS_STORE_URL",
            ),
            (
                |e| e.audit_fail_open = Some("sometimes".into()),
                "NOVAS_AUDIT_FAIL_OPEN",
            ),
            (
                |e| e.metrics_public = Some("maybe".into()),
                "NOVAS_METRICS_PUBLIC",
            ),
        ];
        for (edit, var) in cases {
            let mut env = base();
            edit(&mut env);
            let e = Config::from_parts(ServeFlags::default(), env).expect_err(var);
            assert_eq!(e.var, var);
            assert!(
                !e.to_string().contains("0123456789abcdef"),
                "token leaked: {e}"
            );
        }
    }
}
