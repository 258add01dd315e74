//! Child processes with stdout/stderr in files, killed on drop, and the
//! `novas` / `novac` wrappers built on them.

use std::{
    fs::File,
    io::Read,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{bins, http, ports, wait_for, TestDir};

/// A running child process. Its output goes to `<label>.stdout` and
/// `<label>.stderr`; it is killed (SIGKILL) when dropped.
pub struct Proc {
    pub label: String,
    child: Child,
    exited: Option<ExitStatus>,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
}

/// A command with every NOVAS_*/NOVAC_* variable and RUST_LOG of the test
/// environment removed, so only what the test sets applies.
pub fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("NOVAS_") || k.starts_with("NOVAC_") || k == "RUST_LOG" {
            cmd.env_remove(k.as_ref());
        }
    }
    cmd
}

/// `ip netns exec NS program`, or just `program` when `netns` is `None`.
pub fn command_in(netns: Option<&str>, program: &Path) -> Command {
    match netns {
        Some(ns) => {
            let mut cmd = clean_command("ip");
            cmd.args(["netns", "exec", ns]).arg(program);
            cmd
        }
        None => clean_command(program),
    }
}

impl Proc {
    /// Spawns `cmd` with its output in `dir`.
    pub fn spawn(label: &str, mut cmd: Command, dir: &Path) -> Self {
        let stdout_path = dir.join(format!("{label}.stdout"));
        let stderr_path = dir.join(format!("{label}.stderr"));
        let out = File::create(&stdout_path).expect("create stdout file");
        let err = File::create(&stderr_path).expect("create stderr file");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .current_dir(dir);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {label} ({cmd:?}): {e}"));
        Self {
            label: label.to_string(),
            child,
            exited: None,
            stdout_path,
            stderr_path,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Exit status if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait");
        }
        self.exited
    }

    pub fn is_running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_exit() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, then reap. Returns once the process is gone.
    pub fn kill(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }

    /// Waits until stdout has a line starting with `prefix`; returns the
    /// line. Panics, with the stderr, if the process exits first.
    pub fn wait_stdout_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let what = format!("{} to print a line starting with {prefix:?}", self.label);
        wait_for(timeout, &what, || {
            if let Some(line) = self.stdout().lines().find(|l| l.starts_with(prefix)) {
                return Some(line.to_string());
            }
            if let Some(st) = self.try_exit() {
                panic!(
                    "{} exited ({st}) before printing {prefix:?}\nstdout:\n{}\nstderr:\n{}",
                    self.label,
                    self.stdout(),
                    self.stderr()
                );
            }
            None
        })
    }

    /// Waits until stderr contains every one of `needles`; returns it.
    pub fn wait_stderr_all(&mut self, needles: &[&str], timeout: Duration) -> String {
        let what = format!("{}'s stderr to contain all of {needles:?}", self.label);
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.stderr();
            if needles.iter().all(|n| text.contains(n)) {
                return text;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out waiting for {what}; stderr (tail):\n{}",
                    tail(&text, 15)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last `n` lines of stderr, for failure messages.
    pub fn stderr_tail(&self, n: usize) -> String {
        tail(&self.stderr(), n)
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- {} ({}) stdout ----\n{}\n---- {} stderr (tail) ----\n{}",
                self.label,
                self.stdout_path.display(),
                tail(&self.stdout(), 20),
                self.label,
                self.stderr_tail(60)
            );
        }
    }
}

/// Which agents a resource routes to.
#[derive(Debug, Clone)]
pub enum Selector {
    Tags(Vec<(String, String)>),
    Name(String),
}

/// An upstream account of a database resource; the password goes to NOVAS
/// through the environment variable `password_env`.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub username: String,
    pub password_env: String,
    pub password: String,
}

/// One entry of the NOVAS resources file.
#[derive(Debug, Clone)]
pub struct Resource {
    pub name: String,
    /// tcp, postgres or mysql.
    pub kind: String,
    pub target: String,
    pub listen: u16,
    pub agent: Selector,
    pub database: Option<String>,
    pub accounts: Vec<Account>,
}

impl Resource {
    /// A `tcp` resource on a fresh free port.
    pub fn tcp(name: &str, target: &str, agent: Selector) -> Self {
        Self {
            name: name.to_string(),
            kind: "tcp".into(),
            target: target.to_string(),
            listen: ports::free_port(),
            agent,
            database: None,
            accounts: Vec::new(),
        }
    }

    /// A database resource (`postgres` or `mysql`) with one account.
    pub fn database(
        kind: &str,
        name: &str,
        target: &str,
        agent: Selector,
        account: Account,
    ) -> Self {
        Self {
            kind: kind.into(),
            accounts: vec![account],
            ..Self::tcp(name, target, agent)
        }
    }

    /// The address users connect to, on the host's loopback.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.listen)
    }
}

/// Renders the resources file.
pub fn resources_yaml(resources: &[Resource]) -> String {
    let list: Vec<Value> = resources
        .iter()
        .map(|r| {
            let agent = match &r.agent {
                Selector::Tags(tags) => {
                    let m: serde_json::Map<String, Value> = tags
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect();
                    serde_json::json!({ "tags": m })
                }
                Selector::Name(n) => serde_json::json!({ "name": n }),
            };
            let mut v = serde_json::json!({
                "name": r.name,
                "kind": r.kind,
                "target": r.target,
                "listen": r.listen,
                "agent": agent,
            });
            if let Some(db) = &r.database {
                v["database"] = Value::String(db.clone());
            }
            if !r.accounts.is_empty() {
                v["accounts"] = r
                    .accounts
                    .iter()
                    .map(|a| {
                        serde_json::json!({
                            "name": a.name,
                            "username": a.username,
                            "password_env": a.password_env,
                        })
                    })
                    .collect();
            }
            v
        })
        .collect();
    serde_yaml::to_string(&serde_json::json!({ "resources": list })).expect("render yaml")
}

/// Settings of one `novas` process.
#[derive(Debug, Clone)]
pub struct NovasConfig {
    pub agent_port: u16,
    pub http_port: u16,
    pub bind: String,
    pub data_dir: PathBuf,
    /// `None` leaves NOVAS_AGENT_TOKEN unset.
    pub agent_token: Option<String>,
    /// `None` lets novas generate DATA/admin-token.
    pub admin_token: Option<String>,
    pub node_name: String,
    pub resources: Vec<Resource>,
    /// The policy file's text, if any.
    pub policies: Option<String>,
    /// NOVAS users created with `novas user add` before the server starts:
    /// (name, roles, password).
    pub users: Vec<(String, Vec<String>, String)>,
    pub extra_env: Vec<(String, String)>,
}

impl NovasConfig {
    /// Fresh ports, data dir `<dir>/<label>-data`, bound to 127.0.0.1,
    /// 1 s heartbeat, an explicit admin token.
    pub fn new(dir: &TestDir, label: &str, agent_token: &str) -> Self {
        Self {
            agent_port: ports::free_port(),
            http_port: ports::free_port(),
            bind: "127.0.0.1".into(),
            data_dir: dir.join(&format!("{label}-data")),
            agent_token: Some(agent_token.to_string()),
            admin_token: Some(format!("admin-{}", crate::random_hex(16))),
            node_name: format!("node-{label}"),
            resources: Vec::new(),
            policies: None,
            users: Vec::new(),
            extra_env: vec![("NOVAS_HEARTBEAT_INTERVAL".into(), "1s".into())],
        }
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.extra_env.push((k.into(), v.into()));
        self
    }

    pub fn resource(mut self, r: Resource) -> Self {
        self.resources.push(r);
        self
    }

    pub fn policies(mut self, yaml: &str) -> Self {
        self.policies = Some(yaml.to_string());
        self
    }

    pub fn user(mut self, name: &str, roles: &[&str], password: &str) -> Self {
        let roles = roles.iter().map(|r| r.to_string()).collect();
        self.users.push((name.into(), roles, password.into()));
        self
    }

    /// `novas ARGS` with this server's data dir and store, for the CLI.
    pub fn cli(&self) -> Command {
        let mut cmd = clean_command(bins::novas());
        cmd.env("NOVAS_DATA_DIR", &self.data_dir);
        for (k, v) in &self.extra_env {
            if k == "NOVAS_STORE_URL" {
                cmd.env(k, v);
            }
        }
        cmd
    }

    /// Creates the configured users through the real CLI.
    fn create_users(&self) {
        for (name, roles, password) in &self.users {
            let mut cmd = self.cli();
            cmd.args(["user", "add", name, "--password-stdin"]);
            if !roles.is_empty() {
                cmd.args(["--roles", &roles.join(",")]);
            }
            let out = run_with_stdin(cmd, &format!("{password}\n"), Duration::from_secs(60));
            assert!(
                out.status.success(),
                "novas user add {name} failed: {}{}",
                out.stdout,
                out.stderr
            );
        }
    }

    /// The command, with every setting as an environment variable.
    pub fn command(&self, dir: &Path, label: &str) -> Command {
        let mut cmd = clean_command(bins::novas());
        cmd.arg("serve")
            .env("NOVAS_AGENT_PORT", self.agent_port.to_string())
            .env("NOVAS_HTTP_PORT", self.http_port.to_string())
            .env("NOVAS_BIND", &self.bind)
            .env("NOVAS_DATA_DIR", &self.data_dir)
            .env("NOVAS_NODE_NAME", &self.node_name);
        if let Some(t) = &self.agent_token {
            cmd.env("NOVAS_AGENT_TOKEN", t);
        }
        if let Some(t) = &self.admin_token {
            cmd.env("NOVAS_ADMIN_TOKEN", t);
        }
        if !self.resources.is_empty() {
            let path = dir.join(format!("{label}-resources.yaml"));
            std::fs::write(&path, resources_yaml(&self.resources)).expect("write resources");
            cmd.env("NOVAS_RESOURCES", &path);
            for a in self.resources.iter().flat_map(|r| &r.accounts) {
                cmd.env(&a.password_env, &a.password);
            }
        }
        if let Some(p) = &self.policies {
            let path = dir.join(format!("{label}-policies.yaml"));
            std::fs::write(&path, p).expect("write policies");
            cmd.env("NOVAS_POLICIES", &path);
        }
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }
}

/// A running, listening `novas`.
pub struct Novas {
    pub proc: Proc,
    pub cfg: NovasConfig,
    /// From the `fingerprint:` line.
    pub fingerprint: String,
}

impl Novas {
    /// Starts novas and waits for its `listening:` line.
    pub fn start(dir: &TestDir, label: &str, cfg: NovasConfig) -> Self {
        cfg.create_users();
        let mut proc = Proc::spawn(label, cfg.command(dir.path(), label), dir.path());
        proc.wait_stdout_line("listening:", Duration::from_secs(30));
        let fp_line = proc.wait_stdout_line("fingerprint:", Duration::from_secs(5));
        let fingerprint = fp_line["fingerprint:".len()..].trim().to_string();
        assert!(
            fingerprint.len() == 64 && fingerprint.chars().all(|c| c.is_ascii_hexdigit()),
            "fingerprint line {fp_line:?} is not `fingerprint: <64 hex>`"
        );
        Self {
            proc,
            cfg,
            fingerprint,
        }
    }

    /// `GET /api/audit?QUERY` with the admin token: the events.
    pub fn api_audit(&self, query: &str) -> Vec<Value> {
        let path = format!("/api/audit?{query}");
        let r = http::get(&self.http_addr(), &path, Some(&self.admin_token()))
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(r.status, 200, "GET {path}: {r:?}");
        match serde_json::from_str(&r.body) {
            Ok(Value::Array(a)) => a,
            other => panic!("GET {path}: not a JSON array: {other:?}"),
        }
    }

    /// `novas audit --json --limit 1000 ARGS` through the real CLI.
    pub fn cli_audit(&self, args: &[&str]) -> Vec<Value> {
        let mut cmd = self.cfg.cli();
        cmd.args(["audit", "--json", "--limit", "1000"]).args(args);
        let out = run(cmd, Duration::from_secs(30));
        assert!(out.status.success(), "novas audit: {}", out.stderr);
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("audit JSON: {e}: {}", out.stdout))
    }

    /// Where agents on this host dial.
    pub fn agent_addr(&self) -> String {
        format!("127.0.0.1:{}", self.cfg.agent_port)
    }

    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.cfg.http_port)
    }

    /// The configured admin token, or the generated DATA/admin-token.
    pub fn admin_token(&self) -> String {
        match &self.cfg.admin_token {
            Some(t) => t.clone(),
            None => {
                let path = self.cfg.data_dir.join("admin-token");
                std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
                    .trim()
                    .to_string()
            }
        }
    }

    /// `GET /api/tunnels` with the admin token; the JSON array.
    pub fn tunnels(&self) -> Vec<Value> {
        let r = http::get(&self.http_addr(), "/api/tunnels", Some(&self.admin_token()))
            .unwrap_or_else(|e| panic!("GET /api/tunnels on {}: {e}", self.proc.label));
        assert_eq!(r.status, 200, "/api/tunnels: {r:?}");
        match serde_json::from_str(&r.body) {
            Ok(Value::Array(a)) => a,
            other => panic!("/api/tunnels is not a JSON array: {other:?} from {r:?}"),
        }
    }

    /// Names of the registered agents.
    pub fn tunnel_names(&self) -> Vec<String> {
        self.tunnels()
            .iter()
            .filter_map(|t| t["name"].as_str().map(str::to_string))
            .collect()
    }

    /// Waits until an agent named `name` is registered; returns its entry.
    pub fn wait_registered(&self, name: &str, timeout: Duration) -> Value {
        let what = format!("agent {name} to register with {}", self.proc.label);
        wait_for(timeout, &what, || {
            self.tunnels()
                .into_iter()
                .find(|t| t["name"].as_str() == Some(name))
        })
    }

    /// Waits until no agent named `name` is registered.
    pub fn wait_unregistered(&self, name: &str, timeout: Duration) {
        let what = format!("agent {name} to leave {}'s registry", self.proc.label);
        wait_for(timeout, &what, || {
            (!self.tunnel_names().iter().any(|n| n == name)).then_some(())
        })
    }
}

/// How novac trusts the server.
#[derive(Debug, Clone)]
pub enum Trust {
    /// NOVAC_SERVER_FINGERPRINT (comma list allowed).
    Fingerprint(String),
    /// NOVAC_CA_FILE.
    CaFile(PathBuf),
}

/// Settings of one `novac` process.
#[derive(Debug, Clone)]
pub struct NovacConfig {
    /// NOVAC_SERVER entries.
    pub servers: Vec<String>,
    pub token: String,
    pub name: String,
    /// NOVAC_TAGS as written, `Key=Value;Key=Value`.
    pub tags: String,
    pub trust: Trust,
    /// Network namespace to run in.
    pub netns: Option<String>,
    pub extra_env: Vec<(String, String)>,
}

impl NovacConfig {
    /// An agent of `novas` on this host, pinned to its fingerprint, 1 s
    /// maximum backoff.
    pub fn for_server(novas: &Novas, name: &str, tags: &str) -> Self {
        Self {
            servers: vec![novas.agent_addr()],
            token: novas.cfg.agent_token.clone().unwrap_or_default(),
            name: name.to_string(),
            tags: tags.to_string(),
            trust: Trust::Fingerprint(novas.fingerprint.clone()),
            netns: None,
            extra_env: vec![("NOVAC_MAX_BACKOFF".into(), "1s".into())],
        }
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.extra_env.push((k.into(), v.into()));
        self
    }

    pub fn command(&self) -> Command {
        let mut cmd = command_in(self.netns.as_deref(), &bins::novac());
        cmd.env("NOVAC_SERVER", self.servers.join(","))
            .env("NOVAC_TOKEN", &self.token)
            .env("NOVAC_NAME", &self.name);
        if !self.tags.is_empty() {
            cmd.env("NOVAC_TAGS", &self.tags);
        }
        match &self.trust {
            Trust::Fingerprint(fp) => cmd.env("NOVAC_SERVER_FINGERPRINT", fp),
            Trust::CaFile(p) => cmd.env("NOVAC_CA_FILE", p),
        };
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts the agent (does not wait for registration).
    pub fn start(&self, dir: &TestDir, label: &str) -> Proc {
        Proc::spawn(label, self.command(), dir.path())
    }
}

/// Runs `novas <args>` to completion (CLI subcommands), bounded in time.
pub fn novas_cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = clean_command(bins::novas());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(cmd, Duration::from_secs(30))
}

/// Output of a finished command.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion; kills it and panics if it takes longer than
/// `timeout`.
pub fn run(cmd: Command, timeout: Duration) -> Output {
    run_inner(cmd, None, timeout)
}

/// Like [`run`], with `input` written to the program's stdin.
pub fn run_with_stdin(cmd: Command, input: &str, timeout: Duration) -> Output {
    run_inner(cmd, Some(input.to_string()), timeout)
}

fn run_inner(mut cmd: Command, input: Option<String>, timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {desc}: {e}"));
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(text.as_bytes());
        });
    }
    let mut out_pipe = child.stdout.take().expect("stdout pipe");
    let mut err_pipe = child.stderr.take().expect("stderr pipe");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{desc} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = String::from_utf8_lossy(&out_t.join().unwrap_or_default()).to_string();
    let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).to_string();
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Runs `cmd` and panics with its output unless it succeeds.
pub fn run_ok(cmd: Command, timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    let out = run(cmd, timeout);
    assert!(
        out.status.success(),
        "{desc} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        out.stdout,
        out.stderr
    );
    out
}
