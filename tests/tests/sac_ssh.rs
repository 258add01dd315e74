//! SAC: real OpenSSH clients (ssh, scp, sftp, tmux for a terminal) log in
//! to NOVAS as NOVAS users; NOVAS logs in to a real sshd in a private
//! network namespace (reached only through the agent) with the resource's
//! stored key or password, relays every channel, records and audits.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use nova_e2e::{
    echo::EchoClient,
    netns::Netns,
    new_token, ports,
    procs::{run, run_ok, NovacConfig, Novas, NovasConfig, Output, Proc},
    random_hex, require_program, require_root,
    sshd::{keygen, SshClient, Sshd, UnixUser},
    unique_suffix, wait_for, TestDir,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

const T: Duration = Duration::from_secs(90);
const REGISTER: Duration = Duration::from_secs(20);
const ALICE_PW: &str = "alice-Pa55word";
const BOB_PW: &str = "bob-Pa55word";
const EVE_PW: &str = "eve-Pa55word";
/// NOVAS_SSH_LOGIN_TIMEOUT: generous (argon2 in a debug build on a busy
/// machine is slow), short only in the bad-input test.
const LOGIN_TIMEOUT_S: u64 = 60;
const SHORT_LOGIN_TIMEOUT_S: u64 = 8;

const POLICIES: &str = r#"
policies:
  - name: ops-full
    users: [alice]
    resources: [web]
    account: ops
    logins: [pw]
    port_forward: true
  - name: dev-no-forward
    users: [bob]
    resources: [web]
    account: pw
"#;

/// sshd and an echo server in a namespace, NOVAS with two ssh resources,
/// one agent. Fields drop in order: processes, the namespace, the user,
/// then the dir.
struct Stack {
    _agent: Proc,
    novas: Novas,
    _echo: Proc,
    sshd: Sshd,
    _ns: Netns,
    target_user: UnixUser,
    dir: TestDir,
    ssh_port: u16,
    echo_port: u16,
    alice_key: PathBuf,
    target_pw: String,
}

impl Stack {
    fn start(label: &str) -> Self {
        Self::start_with(label, LOGIN_TIMEOUT_S)
    }

    fn start_with(label: &str, login_timeout_s: u64) -> Self {
        require_root();
        for p in [
            "ssh",
            "scp",
            "sftp",
            "ssh-keygen",
            "tmux",
            "useradd",
            "chpasswd",
        ] {
            require_program(p);
        }
        let dir = TestDir::new(label);
        let ns = Netns::create();
        let target_pw = format!("tgt-{}", random_hex(8));
        let target_user = UnixUser::create(&format!("nsac{}", random_hex(3)), &target_pw);
        let (target_key, target_pub) = keygen(dir.path(), "target_key");
        target_user.authorize(&target_pub);
        let sshd = Sshd::start(&dir, Some(&ns.name));

        let echo_port = ports::free_port();
        let mut echo_cmd = ns.command(&nova_e2e::bins::echo_server());
        echo_cmd.args([format!("127.0.0.1:{echo_port}"), "sac-echo".into()]);
        let mut echo = Proc::spawn("echo", echo_cmd, dir.path());
        echo.wait_stdout_line("ready", Duration::from_secs(10));

        let vpc = format!("vpc-{}", unique_suffix());
        let resources = format!(
            r#"
resources:
  - name: web
    kind: ssh
    target: "127.0.0.1:{port}"
    agent: {{ tags: {{ VPC: "{vpc}" }} }}
    accounts:
      - {{ name: ops, username: {user}, key_file: "{key}" }}
      - {{ name: pw, username: {user}, password_env: SAC_TARGET_PW }}
  - name: other
    kind: ssh
    target: "127.0.0.1:{port}"
    agent: {{ tags: {{ VPC: "{vpc}" }} }}
    accounts:
      - {{ name: ops, username: {user}, key_file: "{key}" }}
"#,
            port = sshd.port,
            user = target_user.name,
            key = target_key.display(),
        );
        let res_path = dir.join("resources.yaml");
        std::fs::write(&res_path, resources).expect("write resources");
        let ssh_port = ports::free_port();
        let mut cfg = NovasConfig::new(&dir, "novas", &new_token("agent"))
            .policies(POLICIES)
            .user("alice", &[], ALICE_PW)
            .user("bob", &[], BOB_PW)
            .user("eve", &[], EVE_PW)
            .env("NOVAS_RESOURCES", &res_path.display().to_string())
            .env("NOVAS_SSH_PORT", &ssh_port.to_string())
            .env("NOVAS_SSH_LOGIN_TIMEOUT", &format!("{login_timeout_s}s"))
            .env("SAC_TARGET_PW", &target_pw);
        cfg.bind = "0.0.0.0".into();
        let novas = Novas::start(&dir, "novas", cfg);
        let name = format!("sac-agent-{}", unique_suffix());
        let mut agent = NovacConfig::for_server(&novas, &name, &format!("VPC={vpc}"));
        agent.servers = vec![format!("{}:{}", ns.host_ip, novas.cfg.agent_port)];
        agent.netns = Some(ns.name.clone());
        let agent = agent.start(&dir, "novac");
        novas.wait_registered(&name, REGISTER);

        let (alice_key, alice_pub) = keygen(dir.path(), "alice_key");
        let s = Self {
            _agent: agent,
            novas,
            _echo: echo,
            sshd,
            _ns: ns,
            target_user,
            dir,
            ssh_port,
            echo_port,
            alice_key,
            target_pw,
        };
        s.add_key("alice", &alice_pub);
        s
    }

    /// `novas user add-key NAME FILE` through the real CLI.
    fn add_key(&self, user: &str, public: &str) {
        let path = self.dir.join(&format!("{user}-{}.pub", random_hex(3)));
        std::fs::write(&path, public).expect("write pub");
        let out = self.cli(&["user", "add-key", user, &path.display().to_string()]);
        assert!(out.status.success(), "add-key: {}", out.stderr);
    }

    fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = self.novas.cfg.cli();
        cmd.args(args);
        run(cmd, Duration::from_secs(30))
    }

    /// alice with her key, as `login` (e.g. `alice%web`).
    fn alice(&self, login: &str) -> SshClient {
        SshClient::new(self.ssh_port, login, Some(&self.alice_key), &self.dir)
    }

    /// A password login (SSH_ASKPASS).
    fn with_password(&self, login: &str, password: &str, args: &[&str]) -> Output {
        let c = SshClient::new(self.ssh_port, login, None, &self.dir);
        let mut cmd = c.ssh(args);
        SshClient::with_password(&mut cmd, self.dir.path(), password);
        run(cmd, T)
    }

    /// Audit events through the real CLI.
    fn audit(&self, args: &[&str]) -> Vec<Value> {
        self.novas.cli_audit(args)
    }

    /// Waits (writes are batched) for an event matching `args` and `pred`.
    fn audit_find(&self, args: &[&str], what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let events = self.audit(args);
            if let Some(e) = events.iter().find(|e| pred(e)) {
                return e.clone();
            }
            if Instant::now() > deadline {
                panic!("no audit event {what} among {args:?}: {events:#?}");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

fn ev<'a>(e: &'a Value, name: &str) -> &'a Value {
    e.get(name)
        .filter(|v| !v.is_null())
        .or_else(|| e.get("event").and_then(|x| x.get(name)))
        .unwrap_or(&Value::Null)
}

fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// exec returns output and exit status, with the key and with the password
/// account; a tmux-driven shell runs commands, resizes, and is recorded;
/// `novas recordings` lists and replays it; the audit has it all.
#[test]
fn exec_shell_recording_and_audit() {
    let s = Stack::start("sac-exec");
    let alice = s.alice("alice%web");
    let out = run(alice.ssh(&["echo sac-out; echo sac-err >&2; exit 7"]), T);
    assert_eq!(
        out.status.code(),
        Some(7),
        "exit status propagated: {out:?}"
    );
    assert_eq!(out.stdout.trim(), "sac-out");
    assert!(out.stderr.contains("sac-err"), "{out:?}");
    // NOVAS logged in with the stored key as the target user.
    let out = run_ok(alice.ssh(&["whoami"]), T);
    assert_eq!(out.stdout.trim(), s.target_user.name);
    // The password account, picked in the login name.
    let out = run_ok(s.alice("alice%web%pw").ssh(&["echo via-password"]), T);
    assert_eq!(out.stdout.trim(), "via-password");
    // bob logs in to NOVAS with his password.
    let out = s.with_password("bob%web", BOB_PW, &["echo bob-was-here"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout.trim(), "bob-was-here");
    // Neither target secret is printed anywhere by NOVAS.
    let logs = format!("{}{}", s.novas.proc.stdout(), s.novas.proc.stderr());
    assert!(
        !logs.contains(&s.target_pw),
        "target password in NOVAS logs"
    );
    assert!(
        !logs.contains("OPENSSH PRIVATE KEY"),
        "target key in NOVAS logs"
    );

    // Interactive shell in a real terminal (tmux).
    let sock = format!("sac-{}", random_hex(4));
    let tmux = |args: &[&str]| {
        let mut c = Command::new("tmux");
        c.args(["-L", &sock]).args(args);
        run(c, Duration::from_secs(20))
    };
    let ssh_line = |login: &str| {
        let mut parts = vec!["ssh".to_string(), "-t".into()];
        parts.extend(alice.options());
        parts.extend([
            "-p".into(),
            s.ssh_port.to_string(),
            format!("{login}@127.0.0.1"),
        ]);
        parts.join(" ")
    };
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        "sac",
        "-x",
        "120",
        "-y",
        "40",
        &ssh_line("alice%web"),
    ]);
    assert!(started.status.success(), "tmux: {started:?}");
    let screen = || tmux(&["capture-pane", "-p", "-t", "sac"]).stdout;
    wait_for(Duration::from_secs(30), "a shell prompt", || {
        screen().contains('$').then_some(())
    });
    tmux(&[
        "send-keys",
        "-t",
        "sac",
        "echo shell-$((6*7))-marker",
        "Enter",
    ]);
    wait_for(Duration::from_secs(20), "the command's output", || {
        screen().contains("shell-42-marker").then_some(())
    });
    tmux(&["resize-window", "-t", "sac", "-x", "100", "-y", "30"]);
    std::thread::sleep(Duration::from_millis(500));
    tmux(&["send-keys", "-t", "sac", "stty size", "Enter"]);
    wait_for(Duration::from_secs(20), "the new terminal size", || {
        screen().contains("30 100").then_some(())
    });
    tmux(&["send-keys", "-t", "sac", "exit 5", "Enter"]);
    wait_for(Duration::from_secs(20), "the shell to end", || {
        (!tmux(&["has-session", "-t", "sac"]).status.success()).then_some(())
    });

    // No resource in the login: a menu of the ones alice may use.
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        "menu",
        "-x",
        "100",
        "-y",
        "30",
        &ssh_line("alice"),
    ]);
    assert!(started.status.success(), "tmux: {started:?}");
    let menu = || tmux(&["capture-pane", "-p", "-t", "menu"]).stdout;
    let shown = wait_for(Duration::from_secs(30), "the resource menu", || {
        let m = menu();
        m.contains("number or name").then_some(m)
    });
    assert!(shown.contains("1) web"), "{shown}");
    assert!(
        !shown.contains("other"),
        "alice has no policy for other: {shown}"
    );
    tmux(&["send-keys", "-t", "menu", "7", "Enter"]);
    wait_for(Duration::from_secs(20), "a second prompt", || {
        menu().contains("no choice \"7\"").then_some(())
    });
    tmux(&["send-keys", "-t", "menu", "1", "Enter"]);
    tmux(&[
        "send-keys",
        "-t",
        "menu",
        "echo menu-$((40+2))-chosen",
        "Enter",
    ]);
    wait_for(
        Duration::from_secs(30),
        "a shell on the chosen resource",
        || menu().contains("menu-42-chosen").then_some(()),
    );
    tmux(&["send-keys", "-t", "menu", "exit", "Enter"]);
    wait_for(Duration::from_secs(20), "the menu shell to end", || {
        (!tmux(&["has-session", "-t", "menu"]).status.success()).then_some(())
    });
    let _ = tmux(&["kill-server"]);

    // The recording: listed, with input, output and the resize.
    let out = s.cli(&["recordings", "list", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let list: Vec<Value> = serde_json::from_str(&out.stdout).expect("recordings JSON");
    let shell = list
        .iter()
        .find(|r| r["title"].as_str().is_some_and(|t| t.contains("(shell)")))
        .unwrap_or_else(|| panic!("no shell recording in {list:#?}"));
    assert!(list
        .iter()
        .any(|r| r["command"].as_str() == Some("echo sac-out; echo sac-err >&2; exit 7")));
    let id = shell["id"].as_str().expect("id");
    let cast = std::fs::read_to_string(
        s.novas
            .cfg
            .data_dir
            .join("recordings")
            .join(format!("{id}.cast")),
    )
    .expect("read cast");
    let header: Value = serde_json::from_str(cast.lines().next().expect("header")).expect("header");
    assert_eq!(header["version"], 2);
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(120), Some(40))
    );
    let events: Vec<(f64, String, String)> = cast
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).expect("event line"))
        .collect();
    let typed: String = events
        .iter()
        .filter(|e| e.1 == "i")
        .map(|e| e.2.as_str())
        .collect();
    assert!(
        typed.contains("echo shell-$((6*7))-marker"),
        "input recorded: {typed:?}"
    );
    assert!(events
        .iter()
        .any(|e| e.1 == "o" && e.2.contains("shell-42-marker")));
    assert!(
        events.iter().any(|e| e.1 == "r" && e.2 == "100x30"),
        "resize recorded"
    );
    assert!(events.windows(2).all(|w| w[0].0 <= w[1].0), "times grow");
    let play = s.cli(&["recordings", "play", id, "--speed", "0"]);
    assert!(play.status.success(), "{play:?}");
    assert!(play.stdout.contains("shell-42-marker"), "{}", play.stdout);

    // Audit: open with agent and login, each command, close with status.
    let open = s.audit_find(
        &["--user", "alice", "--kind", "session_open"],
        "open",
        |e| ev(e, "account") == "ops",
    );
    assert_eq!(open["resource"], "web");
    assert!(ev(&open, "agent")
        .as_str()
        .is_some_and(|a| a.starts_with("sac-agent-")));
    assert!(ev(&open, "client_addr")
        .as_str()
        .is_some_and(|a| a.starts_with("127.0.0.1:")));
    let cmd = s.audit_find(&["--user", "alice", "--kind", "command"], "exec", |e| {
        ev(e, "text") == "echo sac-out; echo sac-err >&2; exit 7"
    });
    assert_eq!(ev(&cmd, "decision"), "allow");
    assert_eq!(ev(&cmd, "policy"), "ops-full");
    assert_eq!(ev(&cmd, "channel"), "exec");
    s.audit_find(
        &["--user", "alice", "--kind", "session_close"],
        "close 7",
        |e| ev(e, "exit_status") == 7 && ev(e, "bytes_down").as_u64().is_some_and(|b| b > 0),
    );
    s.audit_find(
        &["--user", "alice", "--kind", "session_close"],
        "close 5",
        |e| ev(e, "exit_status") == 5,
    );
    s.audit_find(&["--user", "bob", "--kind", "session_open"], "bob", |e| {
        ev(e, "account") == "pw"
    });
}

/// scp (sftp protocol and legacy `-O`) of 100 MB both ways, sftp batch.
#[test]
fn scp_and_sftp() {
    let s = Stack::start("sac-scp");
    let alice = s.alice("alice%web");
    let big = s.dir.join("big.bin");
    let mut dd = Command::new("dd");
    dd.args([
        "if=/dev/urandom",
        &format!("of={}", big.display()),
        "bs=1M",
        "count=100",
        "status=none",
    ]);
    run_ok(dd, T);
    let want = sha256_file(&big);
    let big_s = big.display().to_string();

    run_ok(
        alice.scp(&[&big_s, &alice.remote("big-up.bin")]),
        Duration::from_secs(300),
    );
    // The namespace shares the file system: check the target's copy.
    let remote = s.target_user.home.join("big-up.bin");
    assert_eq!(sha256_file(&remote), want, "upload intact");
    let down = s.dir.join("big-down.bin");
    let down_s = down.display().to_string();
    run_ok(
        alice.scp(&[&alice.remote("big-up.bin"), &down_s]),
        Duration::from_secs(300),
    );
    assert_eq!(sha256_file(&down), want, "download intact");

    // Legacy scp protocol (an exec of `scp -t`/`-f`).
    let small = s.dir.join("small.txt");
    std::fs::write(&small, "hello over scp -O\n").expect("write");
    let small_s = small.display().to_string();
    run_ok(alice.scp(&["-O", &small_s, &alice.remote("legacy.txt")]), T);
    assert_eq!(
        std::fs::read_to_string(s.target_user.home.join("legacy.txt")).expect("legacy copy"),
        "hello over scp -O\n"
    );

    // sftp: ls, put, get.
    let back = s.dir.join("small-back.txt");
    let batch = s.dir.join("batch");
    std::fs::write(
        &batch,
        format!(
            "put {small_s} sftp.txt\nls -1\nget sftp.txt {}\n",
            back.display()
        ),
    )
    .expect("batch");
    let out = run_ok(alice.sftp(&batch), T);
    assert!(
        out.stdout.contains("sftp.txt") && out.stdout.contains("big-up.bin"),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&back).expect("got"),
        "hello over scp -O\n"
    );
    s.audit_find(&["--user", "alice", "--kind", "command"], "sftp", |e| {
        ev(e, "channel") == "subsystem" && ev(e, "text") == "sftp"
    });
    let close = s.audit_find(
        &["--user", "alice", "--kind", "session_close"],
        "big close",
        |e| ev(e, "bytes_up").as_u64().is_some_and(|b| b > 100_000_000),
    );
    assert!(ev(&close, "outcome")
        .as_str()
        .is_some_and(|o| !o.is_empty()));
}

/// `ssh -L` reaches a server in the private network when the policy allows
/// it, and is refused (and audited) when it does not.
#[test]
fn local_forward_follows_policy() {
    let s = Stack::start("sac-fwd");
    let (bob_key, bob_pub) = keygen(s.dir.path(), "bob_key");
    s.add_key("bob", &bob_pub);
    // NOVAS itself cannot reach the echo server: it is inside the namespace.
    let direct = format!("127.0.0.1:{}", s.echo_port);
    assert!(EchoClient::connect(&direct, Duration::from_secs(2)).is_err());

    let forward = |who: &str, key: &Path| {
        let port = ports::free_port();
        let c = SshClient::new(s.ssh_port, &format!("{who}%web"), Some(key), &s.dir);
        let spec = format!("127.0.0.1:{port}:127.0.0.1:{}", s.echo_port);
        let cmd = c.ssh_with(&["-N", "-L", &spec], &[]);
        let p = Proc::spawn(&format!("ssh-L-{who}"), cmd, s.dir.path());
        (p, format!("127.0.0.1:{port}"))
    };
    let (_alice_fwd, a_addr) = forward("alice", &s.alice_key);
    let mut client = wait_for(Duration::from_secs(30), "alice's forward", || {
        EchoClient::connect(&a_addr, Duration::from_secs(5)).ok()
    });
    assert_eq!(client.banner, "sac-echo");
    client.echo("through the ssh forward").expect("echo");

    let (_bob_fwd, b_addr) = forward("bob", &bob_key);
    // The local port opens (ssh listens), but the channel is refused.
    wait_for(Duration::from_secs(30), "bob's ssh to listen", || {
        TcpStream::connect(&b_addr).ok()
    });
    assert!(
        EchoClient::connect(&b_addr, Duration::from_secs(5)).is_err(),
        "bob's policy forbids forwarding"
    );
    s.audit_find(
        &["--user", "bob", "--kind", "command"],
        "denied forward",
        |e| {
            ev(e, "channel") == "direct-tcpip"
                && ev(e, "decision") == "deny"
                && ev(e, "error")
                    .as_str()
                    .is_some_and(|m| m.contains("does not allow port forwarding"))
        },
    );
    s.audit_find(
        &["--user", "alice", "--kind", "command"],
        "allowed forward",
        |e| ev(e, "channel") == "direct-tcpip" && ev(e, "decision") == "allow",
    );
}

/// Wrong password, unknown key, no policy, unknown resource, a login the
/// policy does not allow, a changed target host key: refused with a message
/// the user can act on, and audited; `novas ssh-hostkey forget` recovers.
#[test]
fn refusals_are_explained_and_audited() {
    let mut s = Stack::start("sac-refuse");
    let out = s.with_password("alice%web", "not-her-password", &["true"]);
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
    s.audit_find(
        &["--user", "alice", "--kind", "login_failure"],
        "bad pw",
        |e| {
            ev(e, "reason")
                .as_str()
                .is_some_and(|r| r.contains("password"))
        },
    );

    let (stranger, _) = keygen(s.dir.path(), "stranger_key");
    let c = SshClient::new(s.ssh_port, "alice%web", Some(&stranger), &s.dir);
    let out = run(c.ssh(&["true"]), T);
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
    s.audit_find(
        &["--user", "alice", "--kind", "login_failure"],
        "unknown key",
        |e| {
            ev(e, "reason")
                .as_str()
                .is_some_and(|r| r.contains("not registered"))
        },
    );

    for (login, password, needle) in [
        (
            "eve%web",
            EVE_PW,
            "novas: no policy grants eve access to web",
        ),
        (
            "alice%other",
            ALICE_PW,
            "novas: no policy grants alice access to other",
        ),
        (
            "alice%nope",
            ALICE_PW,
            "novas: no ssh resource named \"nope\"; resources you may use: web",
        ),
        ("alice%web%root", ALICE_PW, "does not allow login \"root\""),
        ("alice", ALICE_PW, "name the resource in the login"),
    ] {
        let out = s.with_password(login, password, &["echo should-not-run"]);
        assert_eq!(out.status.code(), Some(1), "{login}: {out:?}");
        assert!(out.stderr.contains(needle), "{login}: {}", out.stderr);
        assert!(!out.stdout.contains("should-not-run"));
    }
    s.audit_find(&["--user", "eve", "--kind", "access_denied"], "eve", |e| {
        ev(e, "reason")
            .as_str()
            .is_some_and(|r| r.contains("no policy grants eve"))
    });

    // Pin the key, then change it.
    let alice = s.alice("alice%web");
    run_ok(alice.ssh(&["true"]), T);
    let old = s.sshd.host_fingerprint();
    let out = s.cli(&["ssh-hostkey", "list"]);
    assert!(out.stdout.contains(&old), "pinned on first use: {out:?}");
    s.sshd.restart_with_new_host_key();
    let new = s.sshd.host_fingerprint();
    assert_ne!(old, new);
    let out = run(alice.ssh(&["echo should-not-run"]), T);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let want = format!("novas: host key of web changed (expected {old}, got {new})");
    assert!(out.stderr.contains(&want), "{}", out.stderr);
    assert!(
        out.stderr.contains("novas ssh-hostkey forget web"),
        "{}",
        out.stderr
    );
    assert!(!out.stdout.contains("should-not-run"));
    s.audit_find(
        &["--user", "alice", "--kind", "access_denied"],
        "host key",
        |e| {
            ev(e, "reason")
                .as_str()
                .is_some_and(|r| r.contains("host key of web changed"))
        },
    );
    let out = s.cli(&["ssh-hostkey", "forget", "web"]);
    assert!(out.status.success(), "{out:?}");
    let out = run_ok(alice.ssh(&["echo after-forget"]), T);
    assert_eq!(out.stdout.trim(), "after-forget");
    assert!(s.cli(&["ssh-hostkey", "list"]).stdout.contains(&new));
}

/// Garbage instead of a banner, and a client that stalls after its banner:
/// both dropped within the login deadline while other sessions work.
#[test]
fn bad_clients_are_dropped() {
    let s = Stack::start_with("sac-bad", SHORT_LOGIN_TIMEOUT_S);
    let addr = format!("127.0.0.1:{}", s.ssh_port);
    let mut garbage = TcpStream::connect(&addr).expect("connect");
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff\xfe garbage garbage\r\n")
        .expect("write garbage");
    let mut stall = TcpStream::connect(&addr).expect("connect");
    stall.write_all(b"SSH-2.0-stalling\r\n").expect("banner");
    // Sends nothing more: the key exchange never completes.
    let started = Instant::now();

    // Meanwhile a real session works.
    let out = run_ok(s.alice("alice%web").ssh(&["echo still-serving"]), T);
    assert_eq!(out.stdout.trim(), "still-serving");

    let bound = Duration::from_secs(SHORT_LOGIN_TIMEOUT_S + 15);
    for (name, conn) in [("garbage", &mut garbage), ("stall", &mut stall)] {
        conn.set_read_timeout(Some(bound)).expect("timeout");
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("{name}: not dropped within {bound:?}: {e}"),
            }
        }
        assert!(started.elapsed() < bound, "{name} dropped late");
    }
    // And the server still serves.
    let out = run_ok(s.alice("alice%web").ssh(&["echo after-garbage"]), T);
    assert_eq!(out.stdout.trim(), "after-garbage");
}
