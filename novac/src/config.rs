//! NOVAC configuration: environment (read with envy, prefix `NOVAC_`) with
//! command-line flags on top. Every value is checked here, at start, and a
//! bad one is reported in one line that names the variable.

use std::{path::PathBuf, time::Duration};

use clap::Parser;
use serde::{Deserialize, Serialize};
use tunnel_proto::{
    control::validate_name,
    tls::{parse_fingerprint, ServerTrust},
    Secret, Tags,
};

use crate::allowlist::Allowlist;

/// Flags; each overrides the `NOVAC_*` variable of the same name.
#[derive(Debug, Default, Parser)]
#[command(
    name = "novac",
    version,
    about = "NOVA agent: dials out to NOVAS and serves its sessions"
)]
pub struct Flags {
    /// NOVAC_SERVER: host:port[,host:port…] — a tunnel to every one at once
    #[arg(long)]
    pub server: Option<String>,
    /// NOVAC_TOKEN: enrollment token (prefer the variable: flags show in ps)
    #[arg(long)]
    pub token: Option<String>,
    /// NOVAC_NAME: agent name (default: hostname)
    #[arg(long)]
    pub name: Option<String>,
    /// NOVAC_TAGS: Key=Value;Key=Value
    #[arg(long)]
    pub tags: Option<String>,
    /// NOVAC_SERVER_FINGERPRINT: pinned SHA-256 of the server certificate (comma list)
    #[arg(long)]
    pub server_fingerprint: Option<String>,
    /// NOVAC_CA_FILE: PEM file of the CA that signs the server certificate
    #[arg(long)]
    pub ca_file: Option<String>,
    /// NOVAC_ALLOW: targets this agent may dial, CIDR[:PORTS],… (unset: all)
    #[arg(long)]
    pub allow: Option<String>,
    /// NOVAC_DIAL_TIMEOUT: bound on dialling a target (e.g. 10s)
    #[arg(long)]
    pub dial_timeout: Option<String>,
    /// NOVAC_SHUTDOWN_GRACE: on SIGTERM, how long active sessions may finish
    #[arg(long)]
    pub shutdown_grace: Option<String>,
    /// NOVAC_MAX_BACKOFF: ceiling of the reconnect delay
    #[arg(long)]
    pub max_backoff: Option<String>,
    /// NOVAC_LOG_FORMAT: text or json
    #[arg(long)]
    pub log_format: Option<String>,
    /// NOVAC_HEALTH_PORT: serve /healthz and /readyz on this port (default: off)
    #[arg(long)]
    pub health_port: Option<String>,
    /// NOVAC_KUBE_CLUSTER: serve KAC (Kubernetes API) streams, announcing this cluster name
    #[arg(long)]
    pub kube_cluster: Option<String>,
    /// NOVAC_KUBECONFIG: kubeconfig of the API server (default: the in-cluster service account)
    #[arg(long)]
    pub kubeconfig: Option<String>,
    /// NOVAC_WORKER_THREADS: threads that run sessions (default 1; see docs/OPERATIONS.md)
    #[arg(long)]
    pub worker_threads: Option<String>,
}

/// The same settings as read from the environment. Serialize only to list
/// the field names ([`env_names`]).
#[derive(Debug, Default, Deserialize, Serialize)]
struct EnvVars {
    server: Option<String>,
    token: Option<String>,
    name: Option<String>,
    tags: Option<String>,
    server_fingerprint: Option<String>,
    ca_file: Option<String>,
    allow: Option<String>,
    dial_timeout: Option<String>,
    shutdown_grace: Option<String>,
    max_backoff: Option<String>,
    log_format: Option<String>,
    health_port: Option<String>,
    kube_cluster: Option<String>,
    kubeconfig: Option<String>,
    worker_threads: Option<String>,
}

/// Variables read outside [`EnvVars`] (the default name, log filter).
const OTHER_ENV: [&str; 2] = ["HOSTNAME", "RUST_LOG"];

/// Every environment variable novac reads, derived from the struct envy
/// fills, so it cannot drift from what is parsed. Deployment files are
/// checked against it.
pub fn env_names() -> Vec<String> {
    let mut names: Vec<String> = match serde_json::to_value(EnvVars::default()) {
        Ok(serde_json::Value::Object(m)) => m
            .keys()
            .map(|f| format!("NOVAC_{}", f.to_ascii_uppercase()))
            .collect(),
        _ => Vec::new(),
    };
    names.extend(OTHER_ENV.iter().map(|s| s.to_string()));
    names.sort();
    names
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Validated agent configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub servers: Vec<String>,
    pub token: Secret,
    pub name: String,
    pub tags: Tags,
    pub trust: ServerTrust,
    pub allow: Allowlist,
    pub dial_timeout: Duration,
    pub shutdown_grace: Duration,
    pub max_backoff: Duration,
    pub log_format: LogFormat,
    /// Port of the health endpoint (all addresses), if enabled.
    pub health_port: Option<u16>,
    /// KAC: the API server kubernetes streams go to; `None`: not served.
    pub kube: Option<crate::kube::KubeSource>,
    /// Tokio worker threads.
    pub worker_threads: usize,
}

/// A configuration error: the variable and what is wrong with it.
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

fn duration(
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
            if d.is_zero() {
                return Err(err(var, "must be greater than zero"));
            }
            Ok(d)
        }
    }
}

fn nonempty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

impl Config {
    /// Reads the process environment and the given flags.
    pub fn load(flags: Flags) -> Result<Self, ConfigError> {
        let env: EnvVars = envy::prefixed("NOVAC_")
            .from_env()
            .map_err(|e| err("NOVAC_*", e.to_string()))?;
        Self::from_parts(flags, env)
    }

    fn from_parts(f: Flags, e: EnvVars) -> Result<Self, ConfigError> {
        let pick = |flag: Option<String>, env: Option<String>| nonempty(flag).or(nonempty(env));

        let servers_raw = pick(f.server, e.server)
            .ok_or_else(|| err("NOVAC_SERVER", "is required (host:port[,host:port…])"))?;
        let mut servers = Vec::new();
        for s in servers_raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            tunnel_proto::stream::split_target(s).map_err(|m| err("NOVAC_SERVER", m))?;
            if !servers.iter().any(|x: &String| x == s) {
                servers.push(s.to_string());
            }
        }
        if servers.is_empty() {
            return Err(err("NOVAC_SERVER", "lists no server"));
        }

        let token = pick(f.token, e.token).ok_or_else(|| err("NOVAC_TOKEN", "is required"))?;

        let name = match pick(f.name, e.name) {
            Some(n) => n,
            None => hostname()
                .ok_or_else(|| err("NOVAC_NAME", "is unset and the hostname is unknown"))?,
        };
        validate_name(&name).map_err(|m| err("NOVAC_NAME", m))?;

        let tags: Tags = pick(f.tags, e.tags)
            .unwrap_or_default()
            .parse()
            .map_err(|m| err("NOVAC_TAGS", m))?;

        let fp = pick(f.server_fingerprint, e.server_fingerprint);
        let ca = pick(f.ca_file, e.ca_file);
        let trust = match (fp, ca) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "NOVAC_SERVER_FINGERPRINT",
                    "and NOVAC_CA_FILE are both set; choose one way to verify the server",
                ))
            }
            (Some(fp), None) => ServerTrust::Pinned(
                fp.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        parse_fingerprint(s)
                            .map_err(|e| err("NOVAC_SERVER_FINGERPRINT", e.to_string()))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            (None, Some(ca)) => {
                let path = PathBuf::from(ca);
                if !path.is_file() {
                    return Err(err(
                        "NOVAC_CA_FILE",
                        format!("{} is not a readable file", path.display()),
                    ));
                }
                ServerTrust::CaFile(path)
            }
            (None, None) => {
                return Err(err(
                    "NOVAC_SERVER_FINGERPRINT",
                    "or NOVAC_CA_FILE is required: the server certificate is always verified \
                     (`novas fingerprint` prints the pin)",
                ))
            }
        };

        let allow = match pick(f.allow, e.allow) {
            None => Allowlist::allow_all(),
            Some(s) => s.parse().map_err(|m| err("NOVAC_ALLOW", m))?,
        };

        let log_format = match pick(f.log_format, e.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(err(
                    "NOVAC_LOG_FORMAT",
                    format!("{other:?} is not text or json"),
                ))
            }
        };

        let health_port = match pick(f.health_port, e.health_port) {
            None => None,
            Some(p) => match p.trim().parse::<u16>() {
                Ok(0) | Err(_) => {
                    return Err(err(
                        "NOVAC_HEALTH_PORT",
                        format!("{p:?} is not a port (1-65535)"),
                    ))
                }
                Ok(n) => Some(n),
            },
        };

        // One thread by default: an agent is a relay whose cost is wake-ups,
        // and on one thread a frame read by the tunnel's driver reaches its
        // session's task without waking a second thread (measured: lower
        // round-trip time, CPU per byte and per connection, same
        // throughput; docs/OPERATIONS.md).
        let worker_threads = match pick(f.worker_threads, e.worker_threads) {
            None => 1,
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n @ 1..=1024) => n,
                _ => {
                    return Err(err(
                        "NOVAC_WORKER_THREADS",
                        format!("{v:?} is not a thread count (1-1024)"),
                    ))
                }
            },
        };

        let kubeconfig = pick(f.kubeconfig, e.kubeconfig).map(PathBuf::from);
        let kube = match (pick(f.kube_cluster, e.kube_cluster), kubeconfig) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(err(
                    "NOVAC_KUBE_CLUSTER",
                    "is required with NOVAC_KUBECONFIG: it names the cluster this agent serves",
                ))
            }
            (Some(cluster), kubeconfig) => {
                let cluster = cluster.trim().to_string();
                validate_name(&cluster).map_err(|m| err("NOVAC_KUBE_CLUSTER", m))?;
                if let Some(p) = &kubeconfig {
                    if !p.is_file() {
                        return Err(err(
                            "NOVAC_KUBECONFIG",
                            format!("{} is not a readable file", p.display()),
                        ));
                    }
                }
                Some(crate::kube::KubeSource {
                    cluster,
                    kubeconfig,
                })
            }
        };

        Ok(Self {
            kube,
            health_port,
            worker_threads,
            servers,
            token: Secret::new(token),
            name,
            tags,
            trust,
            allow,
            dial_timeout: duration(
                "NOVAC_DIAL_TIMEOUT",
                pick(f.dial_timeout, e.dial_timeout),
                Duration::from_secs(10),
            )?,
            shutdown_grace: duration(
                "NOVAC_SHUTDOWN_GRACE",
                pick(f.shutdown_grace, e.shutdown_grace),
                Duration::from_secs(10),
            )?,
            max_backoff: duration(
                "NOVAC_MAX_BACKOFF",
                pick(f.max_backoff, e.max_backoff),
                Duration::from_secs(30),
            )?,
            log_format,
        })
    }
}

/// The machine's hostname (in Kubernetes: the pod name).
pub fn hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> EnvVars {
        EnvVars {
            server: Some("novas.example:9022, 10.0.0.2:9022".into()),
            token: Some("t0k".into()),
            name: Some("agent-1".into()),
            tags: Some("VPC=dev_infra;Env=Production".into()),
            server_fingerprint: Some("ab".repeat(32)),
            ..Default::default()
        }
    }

    #[test]
    fn valid_environment() {
        let c = Config::from_parts(Flags::default(), base()).expect("valid");
        assert_eq!(c.servers, ["novas.example:9022", "10.0.0.2:9022"]);
        assert_eq!(c.tags.0.len(), 2);
        assert!(c.allow.is_allow_all());
        assert_eq!(c.dial_timeout, Duration::from_secs(10));
        assert_eq!(c.health_port, None);
        assert_eq!(c.worker_threads, 1);
        let mut env = base();
        env.health_port = Some(" 8081 ".into());
        let c = Config::from_parts(Flags::default(), env).expect("valid");
        assert_eq!(c.health_port, Some(8081));
        assert!(c.kube.is_none());
        let mut env = base();
        env.kube_cluster = Some("prod-eu".into());
        let c = Config::from_parts(Flags::default(), env).expect("valid");
        let k = c.kube.expect("kube");
        assert_eq!((k.cluster.as_str(), k.kubeconfig), ("prod-eu", None));
    }

    #[test]
    fn env_names_come_from_the_struct() {
        let names = env_names();
        for n in [
            "NOVAC_SERVER",
            "NOVAC_TOKEN",
            "NOVAC_NAME",
            "NOVAC_TAGS",
            "NOVAC_HEALTH_PORT",
            "HOSTNAME",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
        assert!(names.len() >= 12 + OTHER_ENV.len(), "{names:?}");
    }

    #[test]
    fn flags_override_environment() {
        let flags = Flags {
            name: Some("from-flag".into()),
            ..Default::default()
        };
        let c = Config::from_parts(flags, base()).expect("valid");
        assert_eq!(c.name, "from-flag");
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        type Edit = fn(&mut EnvVars);
        let cases: [(Edit, &str); 16] = [
            (
                |e| e.kubeconfig = Some("/nonexistent".into()),
                "NOVAC_KUBE_CLUSTER",
            ),
            (
                |e| {
                    e.kube_cluster = Some("prod".into());
                    e.kubeconfig = Some("/nonexistent/kubeconfig".into())
                },
                "NOVAC_KUBECONFIG",
            ),
            (
                |e| e.kube_cluster = Some("a b".into()),
                "NOVAC_KUBE_CLUSTER",
            ),
            (|e| e.server = None, "NOVAC_SERVER"),
            (|e| e.server = Some("nohost".into()), "NOVAC_SERVER"),
            (|e| e.token = None, "NOVAC_TOKEN"),
            (|e| e.name = Some("bad name".into()), "NOVAC_NAME"),
            (|e| e.tags = Some("VPC".into()), "NOVAC_TAGS"),
            (
                |e| e.server_fingerprint = Some("xyz".into()),
                "NOVAC_SERVER_FINGERPRINT",
            ),
            (|e| e.server_fingerprint = None, "NOVAC_SERVER_FINGERPRINT"),
            (|e| e.allow = Some("10.0.0.0/99".into()), "NOVAC_ALLOW"),
            (
                |e| e.dial_timeout = Some("soon".into()),
                "NOVAC_DIAL_TIMEOUT",
            ),
            (|e| e.health_port = Some("http".into()), "NOVAC_HEALTH_PORT"),
            (|e| e.health_port = Some("0".into()), "NOVAC_HEALTH_PORT"),
            (
                |e| e.worker_threads = Some("0".into()),
                "NOVAC_WORKER_THREADS",
            ),
            (
                |e| e.worker_threads = Some("many".into()),
                "NOVAC_WORKER_THREADS",
            ),
        ];
        for (edit, var) in cases {
            let mut env = base();
            edit(&mut env);
            let e = Config::from_parts(Flags::default(), env).expect_err(var);
            assert_eq!(e.var, var, "{e}");
            assert!(!e.to_string().contains("t0k"), "token leaked: {e}");
        }
    }
}
