//! A throwaway PostgreSQL 15 server: `initdb` and `pg_ctl` run as the
//! `postgres` user (they refuse root) in a dir owned by it, listening only on
//! 127.0.0.1 of the given network namespace (or of the host).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::{
    ports,
    procs::{clean_command, command_in, run, run_ok},
    require_program,
};

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
pub const SUPERUSER: &str = "postgres";

pub struct Postgres {
    pub port: u16,
    pub password: String,
    pub netns: Option<String>,
    dir: PathBuf,
    data: PathBuf,
}

/// `su postgres -c SCRIPT`, optionally inside a namespace, run from `dir`.
fn as_postgres(netns: Option<&str>, dir: &Path, script: &str) -> Command {
    let mut cmd = command_in(netns, Path::new("/usr/bin/su"));
    cmd.args([SUPERUSER, "-s", "/bin/bash", "-c", script])
        .current_dir(dir);
    cmd
}

fn quote(p: &Path) -> String {
    format!("'{}'", p.display())
}

impl Postgres {
    /// Initialises and starts a server under `base`, inside `netns` if given.
    pub fn start(base: &Path, netns: Option<&str>) -> Self {
        crate::require_root();
        for prog in ["initdb", "pg_ctl"] {
            require_program(&format!("{PG_BIN}/{prog}"));
        }
        require_program("psql");
        require_program("/usr/bin/su");

        let dir = base.join("pg");
        std::fs::create_dir_all(&dir).expect("create pg dir");
        let password = format!("pw-{}", crate::random_hex(12));
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n")).expect("write pwfile");
        // mktemp dirs are 0700 root: postgres must be able to reach its dir.
        let mut chmod = Command::new("chmod");
        chmod.arg("755").arg(base);
        run_ok(chmod, Duration::from_secs(10));
        let mut chown = Command::new("chown");
        chown.args(["-R", "postgres:postgres"]).arg(&dir);
        run_ok(chown, Duration::from_secs(10));

        let pg = Self {
            port: ports::free_port(),
            password,
            netns: netns.map(str::to_string),
            data: dir.join("data"),
            dir,
        };
        let initdb = format!(
            "{PG_BIN}/initdb -D {} -U {SUPERUSER} -A scram-sha-256 --pwfile={} --no-sync",
            quote(&pg.data),
            quote(&pwfile)
        );
        run_ok(
            as_postgres(None, &pg.dir, &initdb),
            Duration::from_secs(120),
        );
        let start = format!(
            "{PG_BIN}/pg_ctl -D {} -l {} -w -t 60 -o \"-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off\" start",
            quote(&pg.data),
            quote(&pg.dir.join("server.log")),
            pg.port,
            pg.dir.display()
        );
        let out = run(
            as_postgres(pg.netns.as_deref(), &pg.dir, &start),
            Duration::from_secs(90),
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}\nserver log:\n{}",
            out.stdout,
            out.stderr,
            std::fs::read_to_string(pg.dir.join("server.log")).unwrap_or_default()
        );
        pg
    }

    /// Runs statements with psql from inside the server's own network
    /// (directly, no tunnel).
    pub fn psql_local(&self, statements: &[&str]) -> Result<String, String> {
        psql(
            self.netns.as_deref(),
            "127.0.0.1",
            self.port,
            &self.password,
            statements,
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let stop = format!(
            "{PG_BIN}/pg_ctl -D {} -m immediate -w stop",
            quote(&self.data)
        );
        let _ = run(as_postgres(None, &self.dir, &stop), Duration::from_secs(60));
    }
}

/// `psql` as the superuser to `host:port`, one `-c` per statement, tuples
/// only, unaligned; stdout, or stderr on failure.
pub fn psql(
    netns: Option<&str>,
    host: &str,
    port: u16,
    password: &str,
    statements: &[&str],
) -> Result<String, String> {
    let mut cmd = match netns {
        Some(_) => command_in(netns, Path::new("/usr/bin/psql")),
        None => clean_command("psql"),
    };
    cmd.env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"])
        .args(["-h", host, "-p", &port.to_string()])
        .args(["-U", SUPERUSER, "-d", "postgres"]);
    for s in statements {
        cmd.args(["-c", s]);
    }
    let out = run(cmd, Duration::from_secs(60));
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!("psql failed ({}): {}", out.status, out.stderr))
    }
}

/// A psql client for NOVAS's PostgreSQL front end: a NOVAS user and
/// password, a database, an sslmode.
#[derive(Debug, Clone)]
pub struct PsqlClient {
    pub port: u16,
    pub user: String,
    pub password: String,
    pub database: String,
    pub sslmode: String,
}

impl PsqlClient {
    pub fn new(port: u16, user: &str, password: &str, database: &str) -> Self {
        Self {
            port,
            user: user.into(),
            password: password.into(),
            database: database.into(),
            sslmode: "require".into(),
        }
    }

    /// The environment and connection flags, for psql or pgbench.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = clean_command(program);
        cmd.env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGSSLMODE", &self.sslmode)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", &self.user]);
        cmd
    }

    /// Runs each statement with its own `-c` in one session; does not stop
    /// at an error (so a test can see that the session stays usable).
    pub fn run(&self, statements: &[&str]) -> crate::procs::Output {
        let mut cmd = self.command("psql");
        cmd.args(["-X", "-q", "-At", "-d", &self.database]);
        for s in statements {
            cmd.args(["-c", s]);
        }
        run(cmd, Duration::from_secs(120))
    }

    /// Like [`run`](Self::run), but every statement must succeed.
    pub fn ok(&self, statements: &[&str]) -> String {
        let out = self.run(statements);
        assert!(
            out.status.success() && out.stderr.trim().is_empty(),
            "psql as {} {statements:?} failed ({}): {}{}",
            self.user,
            out.status,
            out.stdout,
            out.stderr
        );
        out.stdout
    }
}
