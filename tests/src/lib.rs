//! Shared helpers for the end-to-end tests (see tests/).
//!
//! Every test runs the real `novas` and `novac` binaries (built by
//! `cargo build --bins`), real peers (PostgreSQL, echo servers) and, where a
//! private network is needed, Linux network namespaces. Each test gets its
//! own temp dir, ports and namespace names, so tests run in parallel.
//!
//! Map:
//! - [`bins`]: where the binaries are.
//! - [`ports`]: free ports, unique across concurrently running tests.
//! - [`procs`]: child processes with logs in files, killed on drop;
//!   [`procs::Novas`] / [`procs::Novac`] wrap the two binaries.
//! - [`netns`]: a namespace with a veth pair, deleted on drop.
//! - [`postgres`]: a throwaway PostgreSQL server, optionally in a namespace.
//! - [`mariadb`]: a throwaway MariaDB server, optionally in a namespace.
//! - [`sshd`]: a throwaway OpenSSH server, Unix users, OpenSSH client commands.
//! - [`http`]: a tiny HTTP/1.1 GET client.
//! - [`prom`]: `/metrics` scraped and parsed as Prometheus text.
//! - [`echo`]: a thread-based banner + echo TCP server.
//! - [`certs`]: a test CA and server certificate.
//! - [`proto`]: raw protocol clients built on `tunnel-proto`.

pub mod bins;
pub mod certs;
pub mod echo;
pub mod http;
pub mod locks;
pub mod mariadb;
pub mod netns;
pub mod ports;
pub mod postgres;
pub mod procs;
pub mod prom;
pub mod proto;
pub mod sshd;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Fails the test unless it runs as root (namespaces and PostgreSQL need it).
pub fn require_root() {
    let out = std::process::Command::new("id")
        .arg("-u")
        .output()
        .expect("run `id -u`");
    let uid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        uid, "0",
        "the end-to-end tests must run as root (network namespaces, PostgreSQL via su)"
    );
}

/// Fails the test unless `program` is on PATH or is an existing path.
pub fn require_program(program: &str) -> PathBuf {
    let p = Path::new(program);
    if p.is_absolute() {
        assert!(p.exists(), "required program {program} is missing");
        return p.to_path_buf();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let cand = dir.join(program);
        if cand.is_file() {
            return cand;
        }
    }
    panic!("required program `{program}` is not on PATH");
}

/// A per-test temp dir. Kept (and its path printed) when the test panics,
/// so the logs inside can be read afterwards.
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
}

impl TestDir {
    pub fn new(test: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("nova-e2e-{test}-"))
            .tempdir()
            .expect("create temp dir");
        Self { dir: Some(dir) }
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().map(|d| d.path()).expect("temp dir alive")
    }

    /// A path inside the dir.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("test failed: files kept in {}", kept.display());
            }
        }
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` and the last
/// observation after `timeout`. Timing is only ever a bound, never a measure.
pub fn wait_for<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A random lower-case hex string of `bytes` random bytes.
pub fn random_hex(bytes: usize) -> String {
    let v: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    hex::encode(v)
}

/// A short id, unique enough to name agents and tags of one test run.
pub fn unique_suffix() -> String {
    format!("{}-{}", std::process::id(), random_hex(3))
}

/// A fresh enrollment token (novas wants at least 16 characters).
pub fn new_token(prefix: &str) -> String {
    format!("{prefix}-{}", random_hex(16))
}
