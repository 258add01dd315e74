//! DAC for PostgreSQL: real psql and pgbench log in to NOVAS as NOVAS users;
//! NOVAS logs in to a real PostgreSQL (in a private network namespace,
//! reached only through the agent) with the resource's stored credentials,
//! checks every statement against the policy, and audits it.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Stdio,
    time::{Duration, Instant},
};

use nova_e2e::{
    netns::Netns,
    new_token,
    postgres::{Postgres, PsqlClient},
    procs::{run, Account, NovacConfig, Novas, NovasConfig, Proc, Resource, Selector},
    require_program, require_root, unique_suffix, TestDir,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

const REGISTER: Duration = Duration::from_secs(20);
const DB: &str = "appdb";
const ALICE_PW: &str = "alice-Pa55word";
const BOB_PW: &str = "bob-Pa55word";
const OSCAR_PW: &str = "oscar-Pa55word";

const POLICIES: &str = r#"
policies:
  - name: dba-guarded
    roles: [dba]
    resources: [pg]
    deny: [drop, truncate, delete_without_where]
  - name: analysts-read-only
    roles: [analyst]
    resources: [pg]
    read_only: true
  - name: owners
    roles: [owner]
    resources: [pg]
"#;

/// PostgreSQL in a namespace, NOVAS with a postgres resource, one agent.
/// Fields drop in order: processes first, the namespace, then the dir.
struct Stack {
    _agent: Proc,
    novas: Novas,
    pg: Postgres,
    _ns: Netns,
    dir: TestDir,
    port: u16,
    app_password: String,
}

impl Stack {
    fn start(label: &str) -> Self {
        require_root();
        require_program("psql");
        let dir = TestDir::new(label);
        let ns = Netns::create();
        let pg = Postgres::start(dir.path(), Some(&ns.name));
        let app_password = format!("app-{}", nova_e2e::random_hex(8));
        pg.psql_local(&[&format!("create role app login password '{app_password}'")])
            .expect("create role");
        pg.psql_local(&[&format!("create database {DB} owner app")])
            .expect("create database");

        let vpc = format!("vpc-{}", unique_suffix());
        let mut res = Resource::database(
            "postgres",
            "pg",
            &format!("127.0.0.1:{}", pg.port),
            Selector::Tags(vec![("VPC".into(), vpc.clone())]),
            Account {
                name: "app".into(),
                username: "app".into(),
                password_env: "PG_APP_PASSWORD".into(),
                password: app_password.clone(),
            },
        );
        res.database = Some(DB.into());
        let port = res.listen;
        let mut cfg = NovasConfig::new(&dir, "novas", &new_token("agent"))
            .resource(res)
            .policies(POLICIES)
            .user("alice", &["dba"], ALICE_PW)
            .user("bob", &["analyst"], BOB_PW)
            .user("eve", &[], "eve-Pa55word")
            .user("oscar", &["owner"], OSCAR_PW);
        cfg.bind = "0.0.0.0".into();
        let novas = Novas::start(&dir, "novas", cfg);
        let name = format!("pg-agent-{}", unique_suffix());
        let mut agent = NovacConfig::for_server(&novas, &name, &format!("VPC={vpc}"));
        agent.servers = vec![format!("{}:{}", ns.host_ip, novas.cfg.agent_port)];
        agent.netns = Some(ns.name.clone());
        let agent = agent.start(&dir, "novac");
        novas.wait_registered(&name, REGISTER);
        Self {
            dir,
            _ns: ns,
            pg,
            novas,
            _agent: agent,
            port,
            app_password,
        }
    }

    fn alice(&self) -> PsqlClient {
        PsqlClient::new(self.port, "alice", ALICE_PW, DB)
    }

    fn bob(&self) -> PsqlClient {
        PsqlClient::new(self.port, "bob", BOB_PW, DB)
    }

    /// Audit events through the real CLI.
    fn audit(&self, args: &[&str]) -> Vec<Value> {
        self.novas.cli_audit(args)
    }

    /// Waits until the audit holds at least `n` events matching `args`
    /// (writes are batched).
    fn audit_wait(&self, args: &[&str], n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ev = self.audit(args);
            if ev.len() >= n || Instant::now() > deadline {
                return ev;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn field<'a>(ev: &'a Value, name: &str) -> &'a Value {
    ev.get(name)
        .or_else(|| ev.get("event").and_then(|e| e.get(name)))
        .or_else(|| {
            ev.get("event")
                .and_then(|e| e.as_object())
                .and_then(|o| o.values().next())
                .and_then(|v| v.get(name))
        })
        .unwrap_or(&Value::Null)
}

/// Login, correct data, the database password never needed by the user,
/// wrong passwords and users without a policy refused and audited.
#[test]
fn login_queries_and_refusals() {
    let s = Stack::start("dac-pg-login");
    let alice = s.alice();
    alice.ok(&[
        "create table items (id int primary key, v text not null)",
        "insert into items select i, 'row-' || i from generate_series(1, 1000) i",
    ]);
    assert_eq!(alice.ok(&["select count(*) from items"]).trim(), "1000");
    assert_eq!(alice.ok(&["select current_user"]).trim(), "app");

    // Plain connection (no TLS) works too: SCRAM never reveals the password.
    let mut plain = s.alice();
    plain.sslmode = "disable".into();
    assert_eq!(plain.ok(&["select 40 + 2"]).trim(), "42");

    let mut wrong = s.alice();
    wrong.password = "not-her-password".into();
    let out = wrong.run(&["select 1"]);
    assert!(!out.status.success());
    assert!(
        out.stderr
            .contains("password authentication failed for user \"alice\""),
        "{}",
        out.stderr
    );
    let mut ghost = s.alice();
    ghost.user = "nobody".into();
    let out = ghost.run(&["select 1"]);
    assert!(
        out.stderr
            .contains("password authentication failed for user \"nobody\""),
        "unknown users look like wrong passwords: {}",
        out.stderr
    );
    let eve = PsqlClient::new(s.port, "eve", "eve-Pa55word", DB);
    let out = eve.run(&["select 1"]);
    assert!(!out.status.success());
    assert!(out.stderr.contains("no policy grants"), "{}", out.stderr);
    // The database password is nowhere in what NOVAS printed.
    assert!(!s.novas.proc.stderr().contains(&s.app_password));
    assert!(!s.novas.proc.stdout().contains(&s.app_password));

    let failures = s.audit_wait(&["--kind", "login_failure"], 3);
    assert!(failures.len() >= 3, "{failures:?}");
    let opens = s.audit_wait(&["--kind", "session_open", "--user", "alice"], 1);
    assert!(!opens.is_empty());
    // Each close carries that session's own byte counts.
    let closes = s.audit_wait(&["--kind", "session_close", "--user", "alice"], 4);
    for ev in &closes {
        let down = field(ev, "bytes_down").as_u64().unwrap_or(0);
        assert!(down > 0 && down < 1_000_000, "{ev}");
    }
}

/// Read-only and deny-list policies, decided by the SQL parser, answered
/// with SQLSTATE 42501 naming the policy; the session stays usable; every
/// decision in the audit with the policy that made it.
#[test]
fn policies_deny_with_a_proper_error() {
    let s = Stack::start("dac-pg-policy");
    let alice = s.alice();
    alice.ok(&[
        "create table t (id int primary key, v text)",
        "insert into t values (1, 'a'), (2, 'b')",
    ]);
    let bob = s.bob();
    assert_eq!(bob.ok(&["select count(*) from t"]).trim(), "2");
    assert!(bob.ok(&["explain select * from t"]).contains("Seq Scan"));

    for (client, sql, policy) in [
        (&bob, "insert into t values (3, 'c')", "analysts-read-only"),
        (
            &bob,
            "update t set v = 'x' where id = 1",
            "analysts-read-only",
        ),
        (&bob, "create table u (a int)", "analysts-read-only"),
        (&bob, "selekt nonsense", "analysts-read-only"),
        (&alice, "drop table t", "dba-guarded"),
        (&alice, "truncate t", "dba-guarded"),
        (&alice, "delete from t", "dba-guarded"),
    ] {
        // The denied statement, then a query in the same session.
        let mut cmd = client.command("psql");
        cmd.args(["-X", "-At", "-d", DB, "-v", "VERBOSITY=verbose"])
            .args(["-c", sql, "-c", "select 'still here'"]);
        let out = run(cmd, Duration::from_secs(60));
        assert!(
            out.stderr.contains("42501") && out.stderr.contains(policy),
            "{sql}: {}",
            out.stderr
        );
        assert!(
            out.stdout.contains("still here"),
            "{sql}: session unusable: {}",
            out.stdout
        );
    }
    // Nothing denied reached the database.
    assert_eq!(alice.ok(&["select count(*) from t"]).trim(), "2");
    // The guarded DBA can still do what is not on the deny list.
    alice.ok(&[
        "delete from t where id = 2",
        "insert into t values (5, 'e')",
    ]);

    let denied = s.audit_wait(&["--decision", "deny"], 7);
    assert_eq!(denied.len(), 7, "{denied:#?}");
    for ev in &denied {
        let policy = field(ev, "policy").as_str().unwrap_or_default();
        assert!(
            policy == "dba-guarded" || policy == "analysts-read-only",
            "{ev}"
        );
    }
    let allowed = s.audit(&["--decision", "allow", "--user", "bob"]);
    assert!(allowed
        .iter()
        .all(|e| field(e, "policy").as_str() == Some("analysts-read-only")));
    assert!(allowed.len() >= 2);
}

/// Audit completeness: N statements in, exactly N statement events out.
#[test]
fn every_statement_is_audited_once() {
    let s = Stack::start("dac-pg-count");
    let alice = s.alice();
    alice.ok(&["create table c (n int)"]);
    const N: usize = 57;
    let mut script = String::new();
    for i in 0..N {
        script.push_str(&format!("insert into c values ({i});\n"));
    }
    let path = s.dir.join("count.sql");
    std::fs::write(&path, &script).expect("script");
    let mut cmd = alice.command("psql");
    cmd.args(["-X", "-q", "-d", DB, "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(&path);
    let out = run(cmd, Duration::from_secs(60));
    assert!(out.status.success(), "{}", out.stderr);
    s.audit_wait(
        &[
            "--kind",
            "statement",
            "--user",
            "alice",
            "--text",
            "insert into c",
        ],
        N,
    );
    // Give a late duplicate the chance to show up before counting.
    std::thread::sleep(Duration::from_millis(500));
    let events = s.audit(&[
        "--kind",
        "statement",
        "--user",
        "alice",
        "--text",
        "insert into c",
    ]);
    assert_eq!(events.len(), N);
    for ev in &events {
        assert_eq!(field(ev, "rows").as_u64(), Some(1), "{ev}");
    }
}

/// pgbench initialises and runs in all three query modes through NOVAS.
#[test]
fn pgbench_all_modes() {
    require_program("pgbench");
    let s = Stack::start("dac-pg-bench");
    // pgbench -i drops and truncates: an unrestricted policy.
    let alice = PsqlClient::new(s.port, "oscar", OSCAR_PW, DB);
    let mut init = alice.command("pgbench");
    init.args(["-i", "-s", "1", "-q", DB]);
    let out = run(init, Duration::from_secs(300));
    assert!(out.status.success(), "pgbench -i: {}", out.stderr);
    for mode in ["simple", "extended", "prepared"] {
        let mut cmd = alice.command("pgbench");
        cmd.args(["-M", mode, "-c", "2", "-t", "50", "-n", DB]);
        let out = run(cmd, Duration::from_secs(300));
        assert!(out.status.success(), "pgbench -M {mode}: {}", out.stderr);
        assert!(
            out.stdout
                .contains("number of transactions actually processed: 100/100"),
            "-M {mode}: {}",
            out.stdout
        );
        assert!(
            out.stdout.contains("number of failed transactions: 0 ("),
            "{}",
            out.stdout
        );
    }
}

/// COPY in and out with matching checksums.
#[test]
fn copy_in_and_out() {
    let s = Stack::start("dac-pg-copy");
    let alice = s.alice();
    alice.ok(&["create table cp (id int, v text)"]);
    let mut data = String::new();
    for i in 0..20_000 {
        data.push_str(&format!("{i}\tvalue-{i}-{}\n", "x".repeat(i % 50)));
    }
    let src = s.dir.join("in.tsv");
    std::fs::write(&src, &data).expect("write");
    let out = alice.run(&[&format!("\\copy cp from '{}'", src.display())]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(alice.ok(&["select count(*) from cp"]).trim(), "20000");
    let dst = s.dir.join("out.tsv");
    let out = alice.run(&[&format!(
        "\\copy (select * from cp order by id) to '{}'",
        dst.display()
    )]);
    assert!(out.status.success(), "{}", out.stderr);
    let back = std::fs::read(&dst).expect("read back");
    assert_eq!(
        hex::encode(Sha256::digest(&back)),
        hex::encode(Sha256::digest(data.as_bytes()))
    );
}

/// Ctrl-C in psql cancels the running query on the real server.
#[test]
fn cancel_reaches_the_server() {
    let s = Stack::start("dac-pg-cancel");
    let alice = s.alice();
    let mut cmd = alice.command("psql");
    cmd.args(["-X", "-At", "-d", DB, "-c", "select pg_sleep(60)"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("psql");
    // Wait until the query runs on the real server.
    nova_e2e::wait_for(Duration::from_secs(20), "pg_sleep to run", || {
        let n = s
            .pg
            .psql_local(&["select count(*) from pg_stat_activity where query = 'select pg_sleep(60)' and state = 'active'"])
            .ok()?;
        (n.trim() == "1").then_some(())
    });
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the cancel did not end the query"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(!status.success());
    assert!(
        err.contains("canceling statement due to user request"),
        "{err}"
    );
    // The session's connection is gone from the server, the query too.
    assert_eq!(
        s.pg.psql_local(&["select count(*) from pg_stat_activity where query = 'select pg_sleep(60)' and state = 'active'"])
            .expect("psql")
            .trim(),
        "0"
    );
}

/// An administrator terminates a psql session mid-query (the console's
/// Terminate, here through the API with the admin token): psql sees its
/// connection end, and the close is audited with who did it.
#[test]
fn an_admin_terminates_a_session() {
    let s = Stack::start("dac-pg-terminate");
    let mut cmd = s.alice().command("psql");
    cmd.args(["-X", "-At", "-d", DB, "-c", "select pg_sleep(300)"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("psql");
    // Mid-query: the statement runs on the real server.
    nova_e2e::wait_for(Duration::from_secs(20), "pg_sleep to run", || {
        let n = s
            .pg
            .psql_local(&["select count(*) from pg_stat_activity where query = 'select pg_sleep(300)' and state = 'active'"])
            .ok()?;
        (n.trim() == "1").then_some(())
    });
    let (addr, token) = (s.novas.http_addr(), s.novas.admin_token());
    let id = nova_e2e::wait_for(
        Duration::from_secs(30),
        "an active postgres session",
        || {
            let r = nova_e2e::http::get(&addr, "/api/sessions", Some(&token)).ok()?;
            let v: Value = serde_json::from_str(&r.body).ok()?;
            v["active"].as_array()?.iter().find_map(|x| {
                (x["kind"] == "postgres" && x["state"] == "active" && x["user"] == "alice")
                    .then(|| x["id"].as_str().map(str::to_string))
                    .flatten()
            })
        },
    );
    let r = nova_e2e::http::request(
        &addr,
        "POST",
        &format!("/api/sessions/{id}/terminate"),
        &[("Authorization", &format!("Bearer {token}"))],
        None,
    )
    .expect("terminate");
    assert_eq!(r.status, 200, "{r:?}");
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "psql still runs after its session was terminated"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(!status.success(), "{err}");
    // libpq's words for a connection cut under TLS.
    assert!(
        [
            "server closed the connection",
            "EOF detected",
            "connection to server was lost"
        ]
        .iter()
        .any(|m| err.contains(m)),
        "{err}"
    );
    assert!(
        !err.contains("failed: "),
        "cut mid-query, not at login: {err}"
    );
    let closes = s.audit_wait(&["--kind", "session_close", "--session", &id], 1);
    assert_eq!(
        field(&closes[0], "outcome"),
        "terminated by administrator admin-token",
        "{closes:#?}"
    );
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A million-row result streams through with NOVAS's memory bounded.
#[test]
fn large_result_is_streamed() {
    let s = Stack::start("dac-pg-large");
    let alice = s.alice();
    alice.ok(&["select 1"]);
    let before = vm_hwm_kib(s.novas.proc.pid());
    let mut cmd = alice.command("psql");
    cmd.args([
        "-X",
        "-At",
        "-d",
        DB,
        "-c",
        "select i, repeat('x', 100) from generate_series(1, 1000000) i",
    ]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = cmd.spawn().expect("psql");
    let mut lines = 0usize;
    let mut bytes = 0usize;
    if let Some(mut out) = child.stdout.take() {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    lines += buf[..n].iter().filter(|b| **b == b'\n').count();
                    bytes += n;
                }
            }
        }
    }
    assert!(child.wait().expect("wait").success());
    assert_eq!(lines, 1_000_000);
    assert!(bytes > 100_000_000);
    let after = vm_hwm_kib(s.novas.proc.pid());
    // The result is over 100 MB; NOVAS's peak grows by a small fraction.
    assert!(
        after.saturating_sub(before) < 48 * 1024,
        "NOVAS peak RSS grew by {} KiB for a {bytes}-byte result",
        after - before
    );
}

/// Bad input on the front end: each gets an error or a close within a
/// deadline, nothing panics, a normal session works afterwards.
#[test]
fn hostile_clients() {
    let s = Stack::start("dac-pg-hostile");
    let addr = format!("127.0.0.1:{}", s.port);
    let exchange = |bytes: &[u8]| -> Vec<u8> {
        let mut c = TcpStream::connect(&addr).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        let _ = c.write_all(bytes);
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        out
    };
    // Garbage instead of a startup message.
    let out = exchange(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(out.is_empty() || out[0] == b'E', "{out:?}");
    // An oversized startup length.
    let out = exchange(&[0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0]);
    assert!(out.is_empty() || out[0] == b'E', "{out:?}");
    // A truncated startup message, then the client goes away.
    let out = exchange(&[0, 0, 0, 40, 0, 3, 0, 0, b'u', b's']);
    assert!(out.is_empty() || out[0] == b'E', "{out:?}");
    // A 1 MB password: a startup message, then a SASL reply claiming 1 MB.
    let mut startup = Vec::new();
    let params = b"user\0alice\0database\0appdb\0\0";
    startup.extend_from_slice(&((8 + params.len()) as u32).to_be_bytes());
    startup.extend_from_slice(&0x0003_0000u32.to_be_bytes());
    startup.extend_from_slice(params);
    startup.push(b'p');
    startup.extend_from_slice(&((1u32 << 20) + 4).to_be_bytes());
    startup.extend(std::iter::repeat_n(b'p', 1 << 20));
    let out = exchange(&startup);
    // The SASL request comes first, then an error or a close.
    assert_eq!(out.first(), Some(&b'R'), "{:?}", &out[..out.len().min(32)]);
    assert!(
        !out.windows(9).any(|w| w == [b'R', 0, 0, 0, 8, 0, 0, 0, 0]),
        "authenticated?"
    );
    // A client that connects and says nothing is dropped within the deadline.
    let mut idle = TcpStream::connect(&addr).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(40)))
        .expect("timeout");
    let t = Instant::now();
    let mut b = [0u8; 1];
    let _ = idle.read(&mut b);
    assert!(
        t.elapsed() < Duration::from_secs(35),
        "idle client kept for {:?}",
        t.elapsed()
    );

    assert_eq!(s.alice().ok(&["select 'alive'"]).trim(), "alive");
    assert!(!s.novas.proc.stderr().contains("panicked"));
}
