//! A throwaway OpenSSH server (`/usr/sbin/sshd -D`) on a free port of a
//! network namespace's own 127.0.0.1, with a local Unix user made for the
//! test (deleted on drop), key and password login, and internal-sftp.
//! Also key pairs made with `ssh-keygen` and the OpenSSH client commands.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::{
    locks, ports,
    procs::{clean_command, run, run_ok, Proc},
    require_program, wait_for, TestDir,
};

const T: Duration = Duration::from_secs(30);
pub const SSHD: &str = "/usr/sbin/sshd";

/// An ed25519 key pair in `dir`: (private key path, public key line).
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    require_program("ssh-keygen");
    let path = dir.join(name);
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path);
    run_ok(cmd, T);
    let public = std::fs::read_to_string(path.with_extension("pub"))
        .expect("read public key")
        .trim()
        .to_string();
    (path, public)
}

/// A Unix user that exists while this value lives.
pub struct UnixUser {
    pub name: String,
    pub home: PathBuf,
}

impl UnixUser {
    /// Creates `name` with a home dir and the password `password`.
    pub fn create(name: &str, password: &str) -> Self {
        // useradd locks /etc/passwd: one at a time across tests.
        let _lock = locks::claim("useradd");
        let mut del = Command::new("userdel");
        del.args(["-r", name]);
        let _ = run(del, T);
        let mut add = Command::new("useradd");
        add.args(["-m", "-s", "/bin/bash", name]);
        run_ok(add, T);
        let out = crate::procs::run_with_stdin(
            {
                let mut c = Command::new("chpasswd");
                c.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
                c
            },
            &format!("{name}:{password}\n"),
            T,
        );
        assert!(out.status.success(), "chpasswd: {}", out.stderr);
        Self {
            name: name.into(),
            home: PathBuf::from(format!("/home/{name}")),
        }
    }

    /// Lets `public_key` log in as this user.
    pub fn authorize(&self, public_key: &str) {
        let ssh = self.home.join(".ssh");
        std::fs::create_dir_all(&ssh).expect("mkdir .ssh");
        std::fs::write(ssh.join("authorized_keys"), format!("{public_key}\n"))
            .expect("write authorized_keys");
        let mut chown = Command::new("chown");
        chown.args(["-R", &format!("{0}:{0}", self.name)]).arg(&ssh);
        run_ok(chown, T);
    }
}

impl Drop for UnixUser {
    fn drop(&mut self) {
        let _lock = locks::claim("useradd");
        let mut del = Command::new("userdel");
        del.args(["-r", "-f", &self.name]);
        let _ = run(del, T);
    }
}

/// A running sshd.
pub struct Sshd {
    pub port: u16,
    pub netns: Option<String>,
    dir: PathBuf,
    proc: Option<Proc>,
    /// Changes with [`Sshd::restart_with_new_host_key`].
    generation: u32,
}

impl Sshd {
    pub fn start(dir: &TestDir, netns: Option<&str>) -> Self {
        crate::require_root();
        require_program(SSHD);
        std::fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        let dir = dir.join("sshd");
        std::fs::create_dir_all(&dir).expect("mkdir sshd dir");
        let mut s = Self {
            port: ports::free_port(),
            netns: netns.map(str::to_string),
            dir,
            proc: None,
            generation: 0,
        };
        s.spawn();
        s
    }

    /// The host key fingerprint (`SHA256:…`) this sshd presents now.
    pub fn host_fingerprint(&self) -> String {
        let mut cmd = Command::new("ssh-keygen");
        cmd.arg("-lf").arg(self.host_key().with_extension("pub"));
        let out = run_ok(cmd, T);
        out.stdout
            .split_whitespace()
            .nth(1)
            .expect("fingerprint")
            .to_string()
    }

    fn host_key(&self) -> PathBuf {
        self.dir.join(format!("host_key_{}", self.generation))
    }

    fn spawn(&mut self) {
        let key = self.host_key();
        if !key.exists() {
            let mut cmd = Command::new("ssh-keygen");
            cmd.args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key);
            run_ok(cmd, T);
        }
        let config = self.dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {key}\nPidFile {pid}\n\
                 UsePAM no\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\nStrictModes no\nPermitRootLogin no\n\
                 AllowTcpForwarding yes\nSubsystem sftp internal-sftp\nLogLevel VERBOSE\n",
                port = self.port,
                key = key.display(),
                pid = self.dir.join("sshd.pid").display(),
            ),
        )
        .expect("write sshd_config");
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = clean_command("ip");
                c.args(["netns", "exec", ns, SSHD]);
                c
            }
            None => clean_command(SSHD),
        };
        cmd.args(["-D", "-e", "-f"]).arg(&config);
        let label = format!("sshd-{}", self.generation);
        let proc = Proc::spawn(&label, cmd, &self.dir);
        self.proc = Some(proc);
        // Listening once its log says so.
        let p = self.proc.as_mut().expect("proc");
        p.wait_stderr_all(&["Server listening"], T);
    }

    /// Stops sshd and starts it again on the same port with a new host key.
    pub fn restart_with_new_host_key(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
        self.generation += 1;
        // The port is free again once the old process is gone.
        wait_for(T, "sshd restart", || {
            self.spawn();
            Some(())
        });
    }

    pub fn log(&self) -> String {
        self.proc.as_ref().map(|p| p.stderr()).unwrap_or_default()
    }
}

/// The OpenSSH client against NOVAS: key login, no host key prompts, no
/// config files, bounded waits.
pub struct SshClient {
    pub port: u16,
    pub login: String,
    pub key: Option<PathBuf>,
    pub known_hosts: PathBuf,
}

impl SshClient {
    pub fn new(port: u16, login: &str, key: Option<&Path>, dir: &TestDir) -> Self {
        require_program("ssh");
        Self {
            port,
            login: login.into(),
            key: key.map(Path::to_path_buf),
            known_hosts: dir.join("known_hosts"),
        }
    }

    /// Options shared by ssh, scp and sftp.
    pub fn options(&self) -> Vec<String> {
        let mut v = vec![
            "-F".into(),
            "/dev/null".into(),
            "-o".into(),
            "StrictHostKeyChecking=no".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o".into(),
            "ConnectTimeout=20".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
        ];
        match &self.key {
            Some(k) => v.extend([
                "-o".into(),
                "BatchMode=yes".into(),
                "-o".into(),
                "IdentitiesOnly=yes".into(),
                "-o".into(),
                "PasswordAuthentication=no".into(),
                "-i".into(),
                k.display().to_string(),
            ]),
            None => v.extend([
                "-o".into(),
                "PubkeyAuthentication=no".into(),
                "-o".into(),
                "NumberOfPasswordPrompts=1".into(),
            ]),
        }
        v
    }

    /// `ssh … LOGIN@127.0.0.1 ARGS`.
    pub fn ssh(&self, args: &[&str]) -> Command {
        self.ssh_with(&[], args)
    }

    /// `ssh … OPTIONS LOGIN@127.0.0.1 ARGS` (options must precede the host).
    pub fn ssh_with(&self, options: &[&str], args: &[&str]) -> Command {
        let mut cmd = clean_command("ssh");
        cmd.args(self.options())
            .args(["-p", &self.port.to_string()])
            .args(options)
            .arg(format!("{}@127.0.0.1", self.login))
            .args(args);
        cmd
    }

    /// `scp -P PORT … ARGS` (remote paths as `R:path`, see [`Self::remote`]).
    pub fn scp(&self, args: &[&str]) -> Command {
        let mut cmd = clean_command("scp");
        cmd.args(self.options())
            .args(["-P", &self.port.to_string()])
            .args(args);
        cmd
    }

    pub fn sftp(&self, batch: &Path) -> Command {
        let mut cmd = clean_command("sftp");
        cmd.args(self.options())
            .args(["-P", &self.port.to_string(), "-b"])
            .arg(batch)
            .arg(format!("{}@127.0.0.1", self.login));
        cmd
    }

    /// `LOGIN@127.0.0.1:path` for scp.
    pub fn remote(&self, path: &str) -> String {
        format!("{}@127.0.0.1:{path}", self.login)
    }

    /// Password login through `SSH_ASKPASS` (no sshpass needed).
    pub fn with_password(cmd: &mut Command, dir: &Path, password: &str) {
        let script = dir.join(format!("askpass-{}", crate::random_hex(4)));
        std::fs::write(&script, format!("#!/bin/sh\necho '{password}'\n")).expect("askpass");
        let mut chmod = Command::new("chmod");
        chmod.arg("700").arg(&script);
        run_ok(chmod, T);
        cmd.env("SSH_ASKPASS", &script)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0");
    }
}
