//! Starting `novas` and `novac` as child processes, and reading their
//! memory and CPU use from /proc. Children are stopped by their PID on drop.

use std::{
    fs,
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

/// Linux USER_HZ: the unit of utime/stime in /proc/PID/stat.
const TICKS_PER_SEC: f64 = 100.0;

/// A child process with its log file, killed (by PID) and reaped on drop.
pub struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of the process's log (stderr).
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Fails with the log tail when the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); log {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail()
            );
        }
        Ok(())
    }

    pub fn rss_kib(&self) -> u64 {
        status_kib(self.pid(), "VmRSS").unwrap_or(0)
    }

    pub fn hwm_kib(&self) -> u64 {
        status_kib(self.pid(), "VmHWM").unwrap_or(0)
    }

    /// CPU seconds (user + system) used so far.
    pub fn cpu_s(&self) -> f64 {
        cpu_ticks(self.pid()).unwrap_or(0) as f64 / TICKS_PER_SEC
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `kB` field of /proc/PID/status (VmRSS, VmHWM, …).
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let after = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Busy CPU time of the whole machine (all CPUs), in clock ticks, from
/// /proc/stat: user + nice + system + irq + softirq + steal.
pub fn machine_busy_ticks() -> Option<u64> {
    let text = fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …
    Some([0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum())
}

/// CPU seconds (user + system) this benchmark process used so far.
pub fn self_cpu_s() -> f64 {
    cpu_ticks(std::process::id()).unwrap_or(0) as f64 / TICKS_PER_SEC
}

/// Converts clock ticks to seconds.
pub fn ticks_to_s(t: u64) -> f64 {
    t as f64 / TICKS_PER_SEC
}

fn command(bin: &Path, log: &Path, workers: Option<usize>) -> anyhow::Result<Command> {
    let mut cmd = Command::new(bin);
    // Only what the benchmark sets below reaches the binaries.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("NOVAS_") || k.starts_with("NOVAC_") || k == "RUST_LOG" {
            cmd.env_remove(k.as_ref());
        }
    }
    let logf = fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    cmd.env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(logf);
    if let Some(n) = workers {
        cmd.env("NOVAS_WORKER_THREADS", n.to_string())
            .env("NOVAC_WORKER_THREADS", n.to_string());
    }
    Ok(cmd)
}

/// A running `novas`.
pub struct Novas {
    pub proc: Proc,
    pub agent_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub fingerprint: String,
    pub admin_token: String,
}

pub struct NovasOpts<'a> {
    pub token: &'a str,
    pub resources: Option<&'a Path>,
    pub heartbeat: Option<&'a str>,
    /// NOVAS_WORKER_THREADS / NOVAC_WORKER_THREADS
    pub workers: Option<usize>,
}

/// Starts `novas serve` in `dir` on 127.0.0.1 with ephemeral agent and HTTP
/// ports; returns once it prints `listening:`.
pub fn start_novas(bin: &Path, dir: &Path, opts: &NovasOpts) -> anyhow::Result<Novas> {
    let data_dir = dir.join("data");
    let log = dir.join("novas.log");
    let mut cmd = command(bin, &log, opts.workers)?;
    cmd.arg("serve")
        .env("NOVAS_BIND", "127.0.0.1")
        .env("NOVAS_AGENT_PORT", "0")
        .env("NOVAS_HTTP_PORT", "0")
        .env("NOVAS_DATA_DIR", &data_dir)
        .env("NOVAS_AGENT_TOKEN", opts.token)
        .env("NOVAS_NODE_NAME", "bench")
        .env("NOVAS_LOG_FORMAT", "text")
        .stdout(Stdio::piped());
    if let Some(r) = opts.resources {
        cmd.env("NOVAS_RESOURCES", r);
    }
    if let Some(h) = opts.heartbeat {
        cmd.env("NOVAS_HEARTBEAT_INTERVAL", h);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let stdout = child.stdout.take().context("novas stdout")?;
    let mut proc = Proc {
        name: "novas",
        child,
        log,
    };
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut fingerprint = None;
    let (agent_addr, http_addr) = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if let Some(fp) = line.strip_prefix("fingerprint: ") {
                    fingerprint = Some(fp.trim().to_string());
                } else if let Some(rest) = line.strip_prefix("listening: ") {
                    break parse_listening(rest)
                        .with_context(|| format!("unexpected novas line {line:?}"))?;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                proc.check_alive()?;
                bail!("novas closed its stdout before `listening:`");
            }
        }
        proc.check_alive()?;
        if Instant::now() > deadline {
            bail!(
                "novas printed no `listening:` line within 20 s; log:\n{}",
                proc.log_tail()
            );
        }
    };
    let fingerprint = fingerprint.context("novas printed no `fingerprint:` line")?;
    check_fingerprint_cli(bin, &data_dir, &fingerprint)?;
    let admin_token = fs::read_to_string(data_dir.join("admin-token"))
        .with_context(|| format!("read {}/admin-token", data_dir.display()))?
        .trim()
        .to_string();
    Ok(Novas {
        proc,
        agent_addr,
        http_addr,
        fingerprint,
        admin_token,
    })
}

/// `listening: agent=<addr> http=<addr>`.
fn parse_listening(rest: &str) -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let mut agent = None;
    let mut http = None;
    for part in rest.split_whitespace() {
        if let Some(a) = part.strip_prefix("agent=") {
            agent = Some(a.parse()?);
        } else if let Some(h) = part.strip_prefix("http=") {
            http = Some(h.parse()?);
        }
    }
    Ok((agent.context("no agent=")?, http.context("no http=")?))
}

/// `novas fingerprint --data-dir` must agree with the startup line.
fn check_fingerprint_cli(bin: &Path, data_dir: &Path, printed: &str) -> anyhow::Result<()> {
    let out = Command::new(bin)
        .arg("fingerprint")
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .context("run novas fingerprint")?;
    let cli = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || cli != printed {
        bail!(
            "`novas fingerprint --data-dir` says {cli:?} ({}), the server printed {printed:?}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Starts `novac` dialling `server`, pinned to `fingerprint`.
pub fn start_novac(
    bin: &Path,
    dir: &Path,
    server: SocketAddr,
    token: &str,
    name: &str,
    fingerprint: &str,
    workers: Option<usize>,
) -> anyhow::Result<Proc> {
    let log = dir.join("novac.log");
    let mut cmd = command(bin, &log, workers)?;
    cmd.env("NOVAC_SERVER", server.to_string())
        .env("NOVAC_TOKEN", token)
        .env("NOVAC_NAME", name)
        .env("NOVAC_TAGS", "Role=bench")
        .env("NOVAC_SERVER_FINGERPRINT", fingerprint)
        .env("NOVAC_LOG_FORMAT", "text");
    let child = cmd
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    Ok(Proc {
        name: "novac",
        child,
        log,
    })
}

/// How this machine's idle CPUs wait, which decides what a wake-up costs
/// on a VM (docs/OPERATIONS.md, "Virtual machines: idle polling"): the
/// cpuidle driver, and the haltpoll driver's polling time when it is loaded.
pub fn idle_polling() -> String {
    let read = |p: &str| fs::read_to_string(p).ok().map(|s| s.trim().to_string());
    let driver =
        read("/sys/devices/system/cpu/cpuidle/current_driver").unwrap_or_else(|| "unknown".into());
    match read("/sys/module/haltpoll/parameters/guest_halt_poll_ns") {
        Some(ns) => format!("cpuidle {driver}, guest_halt_poll_ns={ns}"),
        None => format!("cpuidle {driver}"),
    }
}
