//! A throwaway MariaDB server: `mariadb-install-db` into a fresh data dir,
//! `mariadbd --no-defaults` (no /etc/mysql config) on a free port bound to
//! 127.0.0.1 of the given network namespace (or of the host), with its own
//! socket, pid file and error log. Killed when dropped.
//!
//! Users: `root` over the unix socket (bootstrap only), [`ADMIN_USER`]
//! with every privilege and [`APP_USER`] with all privileges on
//! [`APP_DB`], both `@'%'` with random passwords. The anonymous users of
//! a fresh install are deleted: they match before `app@'%'` and make a
//! correct password fail.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::{
    ports,
    procs::{
        clean_command, command_in, run, run_ok, run_with_stdin, tail, Account, Output, Proc,
        Resource, Selector,
    },
    require_program, wait_for,
};

pub const MARIADBD: &str = "/usr/sbin/mariadbd";
pub const ADMIN_USER: &str = "admin";
pub const APP_USER: &str = "app";
pub const APP_DB: &str = "appdb";

pub struct Mariadb {
    pub port: u16,
    pub admin_password: String,
    pub app_password: String,
    pub netns: Option<String>,
    dir: PathBuf,
    socket: PathBuf,
    proc: Proc,
}

impl Mariadb {
    /// Initialises and starts a server under `base`, inside `netns` if
    /// given. Panics, with the error log's tail, if anything fails.
    pub fn start(base: &Path, netns: Option<&str>) -> Self {
        crate::require_root();
        require_program(MARIADBD);
        require_program("mariadb-install-db");
        require_program("mysql");
        require_program("mariadb-admin");

        let dir = base.join("mariadb");
        let data = dir.join("data");
        // Its own tmpdir: a mariadbd starting up deletes every `#sql*` file
        // in its tmpdir, so with the shared /tmp one test's server start
        // removed another test's install-time temporary tables (CI saw
        // "Unknown table 'mysql.tmp_user_sys'").
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).expect("create mariadb dir");
        // mktemp dirs are 0700 root: the mysql user must reach its dir.
        let mut chmod = Command::new("chmod");
        chmod.arg("755").arg(base);
        run_ok(chmod, Duration::from_secs(10));
        let mut chown = Command::new("chown");
        chown.args(["-R", "mysql:mysql"]).arg(&dir);
        run_ok(chown, Duration::from_secs(10));

        let mut install = clean_command("mariadb-install-db");
        install
            .arg("--no-defaults")
            .arg("--user=mysql")
            .arg(format!("--datadir={}", data.display()))
            .arg("--skip-test-db")
            .arg(format!("--tmpdir={}", tmp.display()))
            .current_dir(&dir);
        // One at a time as well (it takes about a second): on 2 CPUs
        // parallel installs were seen failing before the tmpdir fix above.
        let serial = crate::locks::claim("mariadb-install-db");
        let out = run(install, Duration::from_secs(180));
        drop(serial);
        assert!(
            out.status.success(),
            "mariadb-install-db failed ({}):\n{}\n{}",
            out.status,
            tail(&out.stdout, 30),
            tail(&out.stderr, 30)
        );

        let port = ports::free_port();
        let socket = dir.join("mysqld.sock");
        let proc = launch(&dir, netns, port);
        let db = Self {
            port,
            admin_password: format!("adm-{}", crate::random_hex(12)),
            app_password: format!("app-{}", crate::random_hex(12)),
            netns: netns.map(str::to_string),
            dir,
            socket,
            proc,
        };
        let setup = [
            "DELETE FROM mysql.global_priv WHERE User=''".to_string(),
            "FLUSH PRIVILEGES".to_string(),
            format!(
                "CREATE USER '{ADMIN_USER}'@'%' IDENTIFIED BY '{}'",
                db.admin_password
            ),
            format!("GRANT ALL PRIVILEGES ON *.* TO '{ADMIN_USER}'@'%' WITH GRANT OPTION"),
            format!("CREATE DATABASE {APP_DB}"),
            format!(
                "CREATE USER '{APP_USER}'@'%' IDENTIFIED BY '{}'",
                db.app_password
            ),
            format!("GRANT ALL PRIVILEGES ON {APP_DB}.* TO '{APP_USER}'@'%'"),
            "FLUSH PRIVILEGES".to_string(),
        ];
        let stmts: Vec<&str> = setup.iter().map(String::as_str).collect();
        if let Err(e) = db.mysql_socket(&stmts) {
            panic!("bootstrap statements failed: {e}\n{}", db.log_tail(30));
        }
        db
    }

    /// A `mysql` resource named `my` on this server, logging in upstream as
    /// the app account (password in `MY_APP_PASSWORD`) to the app database.
    pub fn app_resource(&self, agent: Selector) -> Resource {
        let mut res = Resource::database(
            "mysql",
            "my",
            &self.addr(),
            agent,
            Account {
                name: "app".into(),
                username: APP_USER.into(),
                password_env: "MY_APP_PASSWORD".into(),
                password: self.app_password.clone(),
            },
        );
        res.database = Some(APP_DB.into());
        res
    }

    /// `host:port` as seen from inside the server's network.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The address as a socket address (reachable from the host only when
    /// the server is not in a namespace).
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Connects a TCP stream from the host (no namespace only).
    pub fn connect(&self) -> TcpStream {
        assert!(self.netns.is_none(), "the server is in a namespace");
        TcpStream::connect_timeout(&self.socket_addr(), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to MariaDB at {}: {e}", self.socket_addr()))
    }

    /// Runs statements as the admin over TCP from inside the server's own
    /// network (directly, no tunnel).
    pub fn mysql_local(&self, statements: &[&str]) -> Result<String, String> {
        mysql(
            self.netns.as_deref(),
            "127.0.0.1",
            self.port,
            ADMIN_USER,
            &self.admin_password,
            None,
            statements,
        )
    }

    /// Runs statements as root over the unix socket.
    fn mysql_socket(&self, statements: &[&str]) -> Result<String, String> {
        let mut cmd = clean_command("mysql");
        cmd.arg("--no-defaults")
            .arg("-uroot")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["--batch", "--skip-column-names", "-e"])
            .arg(statements.join(";\n"));
        finish(cmd)
    }

    /// The last `n` lines of the server's error log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(
            &std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default(),
            n,
        )
    }
}

/// Starts `mariadbd` on the data dir under `dir` and waits until it
/// answers on its socket.
fn launch(dir: &Path, netns: Option<&str>, port: u16) -> Proc {
    let socket = dir.join("mysqld.sock");
    let log = dir.join("error.log");
    let mut cmd = command_in(netns, Path::new(MARIADBD));
    cmd.arg("--no-defaults")
        .arg("--user=mysql")
        .arg(format!("--datadir={}", dir.join("data").display()))
        .arg(format!("--tmpdir={}", dir.join("tmp").display()))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
        .arg(format!("--log-error={}", log.display()))
        .arg("--skip-name-resolve")
        .arg("--character-set-server=utf8mb4")
        .arg("--max-allowed-packet=64M")
        .arg("--innodb-buffer-pool-size=32M")
        .arg("--innodb-log-file-size=16M")
        .arg("--innodb-flush-log-at-trx-commit=0");
    let mut proc = Proc::spawn("mariadbd", cmd, dir);

    let what = format!("mariadbd on port {port} to accept connections");
    wait_for(Duration::from_secs(90), &what, || {
        if let Some(st) = proc.try_exit() {
            panic!(
                "mariadbd exited ({st}) while starting; error log:\n{}\nstderr:\n{}",
                tail(&std::fs::read_to_string(&log).unwrap_or_default(), 40),
                proc.stderr_tail(20)
            );
        }
        let mut ping = clean_command("mariadb-admin");
        ping.arg("--no-defaults")
            .arg("-uroot")
            .arg(format!("--socket={}", socket.display()))
            .arg("--connect-timeout=2")
            .arg("ping");
        run(ping, Duration::from_secs(20))
            .status
            .success()
            .then_some(())
    });
    proc
}

impl Mariadb {
    /// Kills the server (SIGKILL: a crash, not a clean stop).
    pub fn stop(&mut self) {
        self.proc.kill();
    }

    /// Starts the server again on the same data, port and socket.
    pub fn restart(&mut self) {
        self.proc.kill();
        self.proc = launch(&self.dir, self.netns.as_deref(), self.port);
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- mariadbd error log (tail) ----\n{}", self.log_tail(40));
        }
        self.proc.kill();
    }
}

fn finish(cmd: Command) -> Result<String, String> {
    let out = run(cmd, Duration::from_secs(60));
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!("mysql failed ({}): {}", out.status, out.stderr))
    }
}

/// The `mysql` client (`--batch --skip-column-names`) as `user` to
/// `host:port`, optionally in a namespace and with a default database; the
/// statements run in order in one session. stdout, or stderr on failure.
pub fn mysql(
    netns: Option<&str>,
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    database: Option<&str>,
    statements: &[&str],
) -> Result<String, String> {
    let mut cmd = match netns {
        Some(_) => command_in(netns, Path::new("/usr/bin/mysql")),
        None => clean_command("mysql"),
    };
    cmd.env("MYSQL_PWD", password)
        .arg("--no-defaults")
        .args(["--protocol=TCP", "-h", host, "-P", &port.to_string()])
        .args(["-u", user, "--connect-timeout=10"])
        .args(["--batch", "--skip-column-names"]);
    if let Some(db) = database {
        cmd.arg(db);
    }
    cmd.arg("-e").arg(statements.join(";\n"));
    finish(cmd)
}

/// The `mysql` client against NOVAS's MySQL front end: a NOVAS user and
/// password, a database, TLS or not, an authentication plugin.
#[derive(Debug, Clone)]
pub struct MysqlClient {
    pub port: u16,
    pub user: String,
    pub password: String,
    pub database: Option<String>,
    /// `--ssl` (TLS to NOVAS, certificate not verified) or `--ssl=0`.
    pub tls: bool,
    /// `--default-auth=…`; `None`: the plugin the greeting names.
    pub default_auth: Option<String>,
}

impl MysqlClient {
    pub fn new(port: u16, user: &str, password: &str, database: &str) -> Self {
        Self {
            port,
            user: user.into(),
            password: password.into(),
            database: Some(database.into()),
            tls: true,
            default_auth: None,
        }
    }

    /// The program with the connection flags (`--batch --skip-column-names`).
    pub fn command(&self) -> Command {
        let mut cmd = clean_command("mysql");
        cmd.env("MYSQL_PWD", &self.password)
            .arg("--no-defaults")
            .args([
                "--protocol=TCP",
                "-h",
                "127.0.0.1",
                "-P",
                &self.port.to_string(),
            ])
            .args(["-u", &self.user, "--connect-timeout=10"])
            .args(["--batch", "--skip-column-names"])
            .arg(if self.tls { "--ssl" } else { "--ssl=0" });
        if let Some(p) = &self.default_auth {
            cmd.arg(format!("--default-auth={p}"));
        }
        if let Some(db) = &self.database {
            cmd.arg(db);
        }
        cmd
    }

    /// Runs the statements in one session, read from stdin with `--force`:
    /// an error does not stop the rest (so a test can see that the session
    /// stays usable). Each statement is its own COM_QUERY.
    pub fn run(&self, statements: &[&str]) -> Output {
        let mut cmd = self.command();
        cmd.arg("--force");
        let mut script = statements.join(";\n");
        script.push_str(";\n");
        run_with_stdin(cmd, &script, Duration::from_secs(120))
    }

    /// Like [`run`](Self::run), but every statement must succeed.
    pub fn ok(&self, statements: &[&str]) -> String {
        let out = self.run(statements);
        assert!(
            out.status.success() && out.stderr.trim().is_empty(),
            "mysql as {} {statements:?} failed ({}): {}{}",
            self.user,
            out.status,
            out.stdout,
            out.stderr
        );
        out.stdout
    }
}
