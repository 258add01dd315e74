//! The web console end to end: real NOVAS, two real agents (one in a
//! private namespace with sshd and an echo server behind it), a real SSH
//! exec (audited and recorded) and a held TCP session, driven by real
//! headless Chromium through playwright-core (tests/console/console.spec.mjs):
//! log in, watch an agent appear and disappear live, filter by tag, find the
//! command in Audit, replay its recording, terminate the TCP session (the
//! client sees its connection end). Refusals of anonymous and non-admin
//! callers and of state changes without the CSRF token are plain HTTP
//! requests from here.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::PathBuf,
    time::Duration,
};

use nova_e2e::{
    http,
    netns::Netns,
    new_token, ports,
    procs::{clean_command, run_ok, NovacConfig, Novas, NovasConfig, Proc},
    random_hex, require_program, require_root,
    sshd::{keygen, SshClient, Sshd, UnixUser},
    unique_suffix, wait_for, TestDir,
};
use serde_json::Value;

const T: Duration = Duration::from_secs(90);
const ROOT_PW: &str = "root-Console-pw1";
const DEV_PW: &str = "dev-Console-pw1";
const ALICE_PW: &str = "alice-Console-pw1";

const POLICIES: &str = r#"
policies:
  - name: ops
    users: [alice]
    resources: [web]
    account: ops
"#;

/// playwright-core's module directory: NOVA_PLAYWRIGHT_CORE, or where
/// scripts/test installs it. Missing is a failure, not a skip.
fn playwright_core() -> PathBuf {
    let p = std::env::var_os("NOVA_PLAYWRIGHT_CORE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/nova-test-tools/node/node_modules/playwright-core"));
    assert!(
        p.join("package.json").is_file(),
        "playwright-core is missing at {} (scripts/test installs it: npm install --prefix \
         /opt/nova-test-tools/node playwright-core@1.64.1; or set NOVA_PLAYWRIGHT_CORE)",
        p.display()
    );
    p
}

/// Where screenshots are kept after the run.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    target
        .join("console-screenshots")
        .join(format!("run-{}", unique_suffix()))
}

/// `name=value` of a console login's cookie.
fn login(addr: &str, user: &str, pw: &str) -> String {
    let origin = format!("http://{addr}");
    let r = http::request(
        addr,
        "POST",
        "/login",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", &origin),
        ],
        Some(&format!("user={user}&password={pw}")),
    )
    .expect("POST /login");
    assert_eq!(r.status, 303, "login as {user}: {r:?}");
    let cookie = r.header("set-cookie").expect("Set-Cookie");
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Path=/"),
        "{cookie}"
    );
    cookie.split(';').next().expect("pair").to_string()
}

fn get(addr: &str, path: &str, cookie: Option<&str>) -> http::Response {
    let headers: Vec<(&str, &str)> = cookie.map(|c| vec![("Cookie", c)]).unwrap_or_default();
    http::request(addr, "GET", path, &headers, None).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn json(r: &http::Response) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
}

#[test]
fn console_in_a_real_browser() {
    require_root();
    for p in ["ssh", "ssh-keygen", "useradd", "node"] {
        require_program(p);
    }
    let chromium = require_program("/usr/bin/chromium");
    let playwright = playwright_core();
    let script = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/console/console.spec.mjs"
    ));
    assert!(script.is_file(), "{} missing", script.display());

    let dir = TestDir::new("console");
    let ns = Netns::create();
    let target_user = UnixUser::create(
        &format!("ncon{}", random_hex(3)),
        &format!("t-{}", random_hex(8)),
    );
    let (target_key, target_pub) = keygen(dir.path(), "target_key");
    target_user.authorize(&target_pub);
    let sshd = Sshd::start(&dir, Some(&ns.name));
    let echo_port = ports::free_port();
    let mut echo_cmd = ns.command(&nova_e2e::bins::echo_server());
    echo_cmd.args([format!("127.0.0.1:{echo_port}"), "console-echo".into()]);
    let mut echo = Proc::spawn("echo", echo_cmd, dir.path());
    echo.wait_stdout_line("ready", Duration::from_secs(10));

    let vpc = format!("vpc-{}", unique_suffix());
    let tcp_port = ports::free_port();
    let ssh_port = ports::free_port();
    let resources = format!(
        r#"
resources:
  - name: web
    kind: ssh
    target: "127.0.0.1:{sshd_port}"
    agent: {{ tags: {{ VPC: "{vpc}" }} }}
    accounts:
      - {{ name: ops, username: {user}, key_file: "{key}" }}
  - name: echo
    kind: tcp
    target: "127.0.0.1:{echo_port}"
    listen: {tcp_port}
    agent: {{ tags: {{ VPC: "{vpc}" }} }}
"#,
        sshd_port = sshd.port,
        user = target_user.name,
        key = target_key.display(),
    );
    let res_path = dir.join("resources.yaml");
    std::fs::write(&res_path, resources).expect("write resources");
    let mut cfg = NovasConfig::new(&dir, "novas", &new_token("agent"))
        .policies(POLICIES)
        .user("root", &["admin"], ROOT_PW)
        .user("dev", &["dev"], DEV_PW)
        .user("alice", &[], ALICE_PW)
        .env("NOVAS_RESOURCES", &res_path.display().to_string())
        .env("NOVAS_SSH_PORT", &ssh_port.to_string())
        .env("NOVAS_SSH_LOGIN_TIMEOUT", "60s");
    cfg.bind = "0.0.0.0".into();
    let novas = Novas::start(&dir, "novas", cfg);
    let addr = novas.http_addr();

    let agent_name = format!("con-agent-{}", unique_suffix());
    let mut agent_cfg =
        NovacConfig::for_server(&novas, &agent_name, &format!("VPC={vpc};Team=blue"));
    agent_cfg.servers = vec![format!("{}:{}", ns.host_ip, novas.cfg.agent_port)];
    agent_cfg.netns = Some(ns.name.clone());
    let _agent = agent_cfg.start(&dir, "novac");
    novas.wait_registered(&agent_name, Duration::from_secs(30));

    // An ssh exec: a command in the audit and a recording.
    let (alice_key, alice_pub) = keygen(dir.path(), "alice_key");
    let pub_path = dir.join("alice.pub");
    std::fs::write(&pub_path, alice_pub).expect("write pub");
    let mut add_key = novas.cfg.cli();
    add_key.args(["user", "add-key", "alice"]).arg(&pub_path);
    run_ok(add_key, T);
    let marker = format!("console-marker-{}", random_hex(4));
    let ssh = SshClient::new(ssh_port, "alice%web", Some(&alice_key), &dir);
    // Output with a colour (SGR) and a carriage return, which the
    // browser's player must interpret: `X` overwrites the first character.
    let command = format!(r"printf '%s \033[1;31mred\033[0m\rX\n' {marker}");
    let out = run_ok(ssh.ssh(&[&command]), T);
    assert!(out.stdout.contains(&marker), "{out:?}");
    let rendered = format!("X{} red", &marker[1..]);

    // A long-running TCP session through the agent, held open.
    let mut tcp = TcpStream::connect(format!("127.0.0.1:{tcp_port}")).expect("connect echo");
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut reader = BufReader::new(tcp.try_clone().expect("clone"));
    let mut banner = String::new();
    reader.read_line(&mut banner).expect("banner");
    assert_eq!(banner.trim(), "console-echo");

    // Anonymous: pages redirect to the login, the API says 401.
    for p in ["/tunnels", "/sessions", "/audit", "/recordings"] {
        let r = get(&addr, p, None);
        assert_eq!(
            (r.status, r.header("location")),
            (303, Some("/login")),
            "{p}: {r:?}"
        );
    }
    for p in [
        "/api/tunnels",
        "/api/sessions",
        "/api/audit",
        "/api/recordings",
    ] {
        let r = get(&addr, p, None);
        assert_eq!(r.status, 401, "{p}: {r:?}");
        assert!(json(&r)["error"].is_string());
    }
    let r = get(&addr, "/tunnels", None);
    assert!(
        r.header("content-security-policy")
            .is_some_and(|c| c.contains("script-src 'self'")),
        "{r:?}"
    );
    // Probes stay open and plain.
    assert_eq!(get(&addr, "/healthz", None).status, 200);
    assert_eq!(get(&addr, "/readyz", None).status, 200);

    // A user without the admin role: 403 on pages and API.
    let dev = login(&addr, "dev", DEV_PW);
    for p in ["/tunnels", "/sessions"] {
        let r = get(&addr, p, Some(&dev));
        assert_eq!(r.status, 403, "{p}: {r:?}");
        assert!(r.body.contains("admin"), "{}", r.body);
    }
    for p in ["/api/tunnels", "/api/sessions", "/api/recordings"] {
        let r = get(&addr, p, Some(&dev));
        assert_eq!(r.status, 403, "{p}: {r:?}");
        assert_eq!(json(&r)["error"], "the admin role is required");
    }

    // The admin: the held session is listed; terminating it without the
    // CSRF token, or from another origin, is refused and changes nothing.
    let root = login(&addr, "root", ROOT_PW);
    let me = json(&get(&addr, "/api/me", Some(&root)));
    assert_eq!(me["admin"], true);
    let csrf = me["csrf_token"].as_str().expect("csrf token").to_string();
    let sessions = json(&get(&addr, "/api/sessions", Some(&root)));
    let tcp_session = sessions["active"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|s| s["kind"] == "tcp" && s["state"] == "active")
        })
        .unwrap_or_else(|| panic!("no active tcp session in {sessions:#}"))
        .clone();
    let id = tcp_session["id"].as_str().expect("id").to_string();
    assert_eq!(tcp_session["resource"], "echo");
    assert_eq!(tcp_session["agent"].as_str(), Some(agent_name.as_str()));
    let terminate = format!("/api/sessions/{id}/terminate");
    let origin = format!("http://{addr}");
    for headers in [
        vec![("Cookie", root.as_str()), ("Origin", origin.as_str())],
        vec![
            ("Cookie", root.as_str()),
            ("Origin", "http://evil.example"),
            ("X-CSRF-Token", csrf.as_str()),
        ],
    ] {
        let r = http::request(&addr, "POST", &terminate, &headers, None).expect("POST");
        assert_eq!(r.status, 403, "{headers:?}: {r:?}");
    }
    tcp.write_all(b"still-alive\n").expect("write");
    let mut line = String::new();
    reader.read_line(&mut line).expect("echo");
    assert_eq!(
        line.trim(),
        "still-alive",
        "the session survived the refused requests"
    );
    // The bearer token keeps working for the API (CLI and scripts).
    assert!(novas.tunnel_names().contains(&agent_name));

    // The browser.
    let shots = screenshot_dir();
    let signals = dir.join("signals");
    std::fs::create_dir_all(&signals).expect("signal dir");
    let extra_name = format!("con-extra-{}", unique_suffix());
    let extra_tag = format!("Team=red-{}", random_hex(3));
    let mut node = clean_command("node");
    node.arg(&script)
        .env("NOVA_PLAYWRIGHT_CORE", &playwright)
        .env("NOVA_CHROMIUM", &chromium)
        .env("NOVA_CONSOLE_URL", format!("http://{addr}"))
        .env("NOVA_CONSOLE_USER", "root")
        .env("NOVA_CONSOLE_PASSWORD", ROOT_PW)
        .env("NOVA_CONSOLE_AGENT", &agent_name)
        .env("NOVA_CONSOLE_AGENT_TAG", "Team=blue")
        .env("NOVA_CONSOLE_EXTRA_AGENT", &extra_name)
        .env("NOVA_CONSOLE_EXTRA_TAG", &extra_tag)
        .env("NOVA_CONSOLE_MARKER", &marker)
        .env("NOVA_CONSOLE_REPLAY_EXPECT", &rendered)
        .env("NOVA_CONSOLE_SCREENSHOTS", &shots)
        .env("NOVA_CONSOLE_SIGNAL_DIR", &signals);
    println!("console screenshots: {}", shots.display());
    let mut browser = Proc::spawn("playwright", node, dir.path());
    browser.wait_stdout_line("STEP tunnels-ready", Duration::from_secs(120));
    let mut extra =
        NovacConfig::for_server(&novas, &extra_name, &extra_tag).start(&dir, "novac-extra");
    browser.wait_stdout_line("STEP extra-seen", T);
    extra.kill();
    browser.wait_stdout_line("STEP terminated", T);

    // The terminated session's client sees its connection end.
    let mut rest = Vec::new();
    match reader.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the TCP client's connection is still open after terminate: {e}"
        ),
    }
    std::fs::write(signals.join("client-closed"), b"").expect("signal");

    let status = browser.wait_exit(T).expect("the browser script finishes");
    let stdout = browser.stdout();
    println!("{stdout}");
    assert!(
        status.success(),
        "console.spec.mjs failed ({status}):\n{stdout}\n{}",
        browser.stderr()
    );
    for step in [
        "STEP login-refused",
        "STEP extra-appeared",
        "STEP filter-extra",
        "STEP filter-agent",
        "STEP extra-gone",
        "STEP history-disconnect",
        "STEP audit-found",
        "STEP replayed",
        &format!("STEP terminated {id}"),
        "STEP logged-out",
        "STEP done",
    ] {
        assert!(stdout.contains(step), "missing {step:?} in:\n{stdout}");
    }
    let pngs = std::fs::read_dir(&shots)
        .map(|d| d.filter_map(Result::ok).count())
        .unwrap_or(0);
    assert!(pngs >= 8, "expected the screenshots in {}", shots.display());

    // The audit trail has the admin action, the close with its reason, the
    // extra agent's connect and disconnect, and the failed browser login.
    let token = novas.admin_token();
    let audit = |q: &str| -> Vec<Value> {
        let r = http::get(&addr, &format!("/api/audit?{q}"), Some(&token)).expect("audit");
        assert_eq!(r.status, 200, "{r:?}");
        serde_json::from_str(&r.body).expect("audit JSON")
    };
    let action = wait_for(Duration::from_secs(20), "the admin action", || {
        audit("kind=admin_change&user=root")
            .into_iter()
            .find(|e| e["session_id"] == id.as_str())
    });
    assert_eq!(action["event"]["action"], "terminate_session");
    let closed = wait_for(Duration::from_secs(20), "the session close", || {
        audit(&format!("kind=session_close&session={id}"))
            .into_iter()
            .next()
    });
    assert_eq!(
        closed["event"]["outcome"],
        "terminated by administrator root"
    );
    let history = json(&get(
        &addr,
        &format!("/api/tunnels/history?agent={extra_name}"),
        Some(&root),
    ));
    let types: Vec<&str> = history
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["event"]["type"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        types.contains(&"agent_connect") && types.contains(&"agent_disconnect"),
        "{history:#}"
    );
    let failures = audit("kind=login_failure&user=root");
    assert!(
        failures.iter().any(|e| e["event"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("console:"))),
        "{failures:#?}"
    );
    // An SSH session terminated through the API with the bearer token:
    // the ssh client is disconnected.
    let mut held = Proc::spawn("ssh-held", ssh.ssh(&["sleep 300"]), dir.path());
    let ssh_id = wait_for(T, "the ssh session to be active", || {
        let r = http::get(&addr, "/api/sessions", Some(&token)).expect("sessions");
        let v: Value = serde_json::from_str(&r.body).ok()?;
        v["active"].as_array()?.iter().find_map(|s| {
            (s["kind"] == "ssh" && s["state"] == "active" && s["user"] == "alice")
                .then(|| s["id"].as_str().map(str::to_string))
                .flatten()
        })
    });
    let r = http::request(
        &addr,
        "POST",
        &format!("/api/sessions/{ssh_id}/terminate"),
        &[("Authorization", &format!("Bearer {token}"))],
        None,
    )
    .expect("terminate");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(json(&r)["resource"], "web");
    let st = held
        .wait_exit(Duration::from_secs(20))
        .expect("ssh exits once its session is terminated");
    assert!(!st.success(), "ssh reports the cut session: {st}");
    let closed = wait_for(Duration::from_secs(20), "the ssh session close", || {
        audit(&format!("kind=session_close&session={ssh_id}"))
            .into_iter()
            .next()
    });
    assert_eq!(
        closed["event"]["outcome"],
        "terminated by administrator admin-token"
    );

    // No password or session secret in NOVAS's logs.
    let logs = format!("{}{}", novas.proc.stdout(), novas.proc.stderr());
    for secret in [
        ROOT_PW,
        DEV_PW,
        csrf.as_str(),
        root.split_once('=').map_or("", |(_, v)| v),
    ] {
        assert!(!logs.contains(secret), "a secret is in the NOVAS logs");
    }
}
