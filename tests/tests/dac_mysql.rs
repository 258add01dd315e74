//! DAC for MySQL: the real `mysql` client and a client library (Perl
//! DBD::MariaDB, server-side prepared statements) log in to NOVAS as NOVAS
//! users with either authentication plugin; NOVAS logs in to a real MariaDB
//! (in a private network namespace, reached only through the agent) with
//! the resource's stored credentials, checks every statement against the
//! policy, and audits it.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Stdio,
    time::{Duration, Instant},
};

use bytes::BytesMut;
use nova_e2e::{
    mariadb::{Mariadb, MysqlClient, APP_DB},
    netns::Netns,
    new_token,
    procs::{clean_command, run, run_with_stdin, NovacConfig, Novas, NovasConfig, Proc, Selector},
    require_program, require_root, unique_suffix, TestDir,
};
use novas::mysql::{
    auth,
    caps::{self, Capabilities},
    decode_packet,
    handshake::{Greeting, HandshakeResponse, ServerHello},
    packet::put_packet,
    ErrPacket,
};
use serde_json::Value;

const REGISTER: Duration = Duration::from_secs(20);
const ALICE_PW: &str = "alice-Pa55word";
const BOB_PW: &str = "bob-Pa55word";
const CAROL_PW: &str = "carol-Pa55word";

const POLICIES: &str = r#"
policies:
  - name: dba-guarded
    roles: [dba]
    resources: [my]
    deny: [drop, truncate, delete_without_where]
  - name: analysts-read-only
    roles: [analyst]
    resources: [my]
    read_only: true
"#;

/// MariaDB in a namespace, NOVAS with a mysql resource, one agent.
struct Stack {
    _dir: TestDir,
    _ns: Netns,
    db: Mariadb,
    novas: Novas,
    _agent: Proc,
    port: u16,
}

impl Stack {
    fn start(label: &str) -> Self {
        require_root();
        require_program("mysql");
        let dir = TestDir::new(label);
        let ns = Netns::create();
        let db = Mariadb::start(dir.path(), Some(&ns.name));
        let vpc = format!("vpc-{}", unique_suffix());
        let res = db.app_resource(Selector::Tags(vec![("VPC".into(), vpc.clone())]));
        let port = res.listen;
        let mut cfg = NovasConfig::new(&dir, "novas", &new_token("agent"))
            .resource(res)
            .policies(POLICIES)
            .user("alice", &["dba"], ALICE_PW)
            .user("bob", &["analyst"], BOB_PW)
            .user("carol", &["dba"], CAROL_PW)
            .user("eve", &[], "eve-Pa55word");
        cfg.bind = "0.0.0.0".into();
        let novas = Novas::start(&dir, "novas", cfg);
        let name = format!("my-agent-{}", unique_suffix());
        let mut agent = NovacConfig::for_server(&novas, &name, &format!("VPC={vpc}"));
        agent.servers = vec![format!("{}:{}", ns.host_ip, novas.cfg.agent_port)];
        agent.netns = Some(ns.name.clone());
        let agent = agent.start(&dir, "novac");
        novas.wait_registered(&name, REGISTER);
        Self {
            _dir: dir,
            _ns: ns,
            db,
            novas,
            _agent: agent,
            port,
        }
    }

    fn client(&self, user: &str, password: &str) -> MysqlClient {
        MysqlClient::new(self.port, user, password, APP_DB)
    }

    fn alice(&self) -> MysqlClient {
        self.client("alice", ALICE_PW)
    }

    fn bob(&self) -> MysqlClient {
        self.client("bob", BOB_PW)
    }

    /// Audit events through the real CLI.
    fn audit(&self, args: &[&str]) -> Vec<Value> {
        self.novas.cli_audit(args)
    }

    /// Waits until the audit holds at least `n` events matching `args`.
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

    /// A Perl DBD::MariaDB script with `$dbh` connected as `user` over TLS
    /// (NOVAS's certificate verified) with server-side prepared statements;
    /// its stdout and stderr.
    fn perl(&self, user: &str, password: &str, body: &str) -> nova_e2e::procs::Output {
        let mut cmd = clean_command("perl");
        cmd.env("NOVA_PW", password);
        self.perl_with(cmd, user, "$ENV{NOVA_PW}", body)
    }

    /// [`Self::perl`] with the password given as a Perl expression.
    fn perl_with(
        &self,
        cmd: std::process::Command,
        user: &str,
        password_expr: &str,
        body: &str,
    ) -> nova_e2e::procs::Output {
        let script = format!(
            r#"use strict; use warnings; use DBI;
$| = 1;
my $dbh = DBI->connect(
    "DBI:MariaDB:database={APP_DB};host=127.0.0.1;port={port};mariadb_server_prepare=1;mariadb_ssl=1;mariadb_ssl_verify_server_cert=1;mariadb_ssl_ca_file={ca}",
    "{user}", {password_expr}, {{ RaiseError => 1, PrintError => 0, AutoCommit => 1 }});
{body}
"#,
            port = self.port,
            ca = self.novas.cfg.data_dir.join("tls/cert.pem").display(),
        );
        run_with_stdin(cmd, &script, Duration::from_secs(120))
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

fn no_tls(mut c: MysqlClient) -> MysqlClient {
    c.tls = false;
    c
}

/// Both plugins log in; wrong passwords, unknown users and users without a
/// policy get 1045; the database password never reaches the user.
#[test]
fn login_with_both_plugins_and_refusals() {
    let s = Stack::start("dac-my-login");

    // mysql_native_password, no TLS needed.
    let mut carol = no_tls(s.client("carol", CAROL_PW));
    carol.default_auth = Some("mysql_native_password".into());
    assert_eq!(carol.ok(&["select 40 + 2"]).trim(), "42");
    assert_eq!(carol.ok(&["select current_user()"]).trim(), "app@%");

    // caching_sha2_password: without a cache entry the password must go
    // over TLS once; after that the fast path works without TLS.
    let cold = no_tls(s.alice());
    let out = cold.run(&["select 1"]);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("ERROR 1045") && out.stderr.contains("TLS"),
        "{}",
        out.stderr
    );
    assert_eq!(
        s.alice().ok(&["select 'full over tls'"]).trim(),
        "full over tls"
    );
    assert_eq!(cold.ok(&["select 'fast path'"]).trim(), "fast path");
    let mut explicit = no_tls(s.alice());
    explicit.default_auth = Some("caching_sha2_password".into());
    assert_eq!(explicit.ok(&["select 7"]).trim(), "7");
    // And TLS with the native plugin.
    let mut native_tls = s.alice();
    native_tls.default_auth = Some("mysql_native_password".into());
    assert_eq!(native_tls.ok(&["select 8"]).trim(), "8");

    // Wrong password and unknown user: the same answer.
    for (user, pw) in [("alice", "not-her-password"), ("nobody", ALICE_PW)] {
        for tls in [false, true] {
            let mut c = s.client(user, pw);
            c.default_auth = Some("mysql_native_password".into());
            c.tls = tls;
            let out = c.run(&["select 1"]);
            assert!(!out.status.success());
            assert!(
                out.stderr.contains(&format!(
                    "ERROR 1045 (28000): Access denied for user '{user}' (using password: YES)"
                )),
                "{user} tls={tls}: {}",
                out.stderr
            );
        }
    }
    // A wrong password in a full caching_sha2_password authentication.
    let out = s.client("bob", "wrong").run(&["select 1"]);
    assert!(out.stderr.contains("ERROR 1045"), "{}", out.stderr);

    let out = s.client("eve", "eve-Pa55word").run(&["select 1"]);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("ERROR 1045") && out.stderr.contains("no policy grants"),
        "{}",
        out.stderr
    );
    assert!(!s.novas.proc.stderr().contains(&s.db.app_password));
    assert!(!s.novas.proc.stdout().contains(&s.db.app_password));

    let failures = s.audit_wait(&["--kind", "login_failure"], 7);
    assert!(failures.len() >= 7, "{failures:#?}");
    let opens = s.audit_wait(&["--kind", "session_open", "--user", "alice"], 4);
    assert!(opens.len() >= 4, "{opens:#?}");
    assert!(!s.novas.proc.stderr().contains("panicked"));
}

/// Correct data, several results for one COM_QUERY, COM_INIT_DB, and the
/// server-side read-only guard.
#[test]
fn queries_and_multiple_results() {
    let s = Stack::start("dac-my-query");
    let alice = s.alice();
    alice.ok(&[
        "create table items (id int primary key, v varchar(40) not null)",
        "insert into items select seq, concat('row-', seq) from seq_1_to_1000",
    ]);
    assert_eq!(alice.ok(&["select count(*) from items"]).trim(), "1000");
    assert_eq!(
        alice.ok(&["select v from items where id = 7"]).trim(),
        "row-7"
    );
    assert_eq!(
        alice
            .ok(&["select sum(id) from items where id <= 10"])
            .trim(),
        "55"
    );

    // `mysql -e` with two statements (the client sends one each).
    let mut cmd = alice.command();
    cmd.args(["-e", "select 'e-one'; select 'e-two'"]);
    let out = run(cmd, Duration::from_secs(60));
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), ["e-one", "e-two"]);

    // One COM_QUERY with three statements: three results, each audited.
    let out = run_with_stdin(
        alice.command(),
        "delimiter //\nselect 'multi-a'; select id from items where id < 3 order by id; select 'multi-c'//\n",
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["multi-a", "1", "2", "multi-c"]
    );
    let multi = s.audit_wait(&["--kind", "statement", "-q", "multi-"], 2);
    assert_eq!(multi.len(), 2, "{multi:#?}");
    // A failing statement in the middle stops the rest, as in MariaDB.
    let out = run_with_stdin(
        alice.command(),
        "delimiter //\nselect 'fail-a'; select * from missing_table; select 'fail-c'//\n",
        Duration::from_secs(60),
    );
    assert!(out.stderr.contains("ERROR 1146"), "{}", out.stderr);
    let failed = s.audit_wait(&["--kind", "statement", "-q", "missing_table"], 1);
    assert!(
        field(&failed[0], "error")
            .as_str()
            .is_some_and(|e| e.contains("1146")),
        "{failed:#?}"
    );
    let not_run = s.audit_wait(&["--kind", "statement", "-q", "fail-c"], 1);
    assert_eq!(field(&not_run[0], "error").as_str(), Some("not executed"));

    // COM_INIT_DB (the client's `use`), audited as USE.
    let out = alice.ok(&["use information_schema", "select database()"]);
    assert_eq!(out.trim(), "information_schema");
    let uses = s.audit_wait(
        &["--kind", "statement", "-q", "USE `information_schema`"],
        1,
    );
    assert_eq!(field(&uses[0], "kind").as_str(), Some("use"));

    // The read-only policy is also enforced by the server.
    assert_eq!(s.bob().ok(&["select @@tx_read_only"]).trim(), "1");
    assert_eq!(alice.ok(&["select @@tx_read_only"]).trim(), "0");
    assert_eq!(s.bob().ok(&["select count(*) from items"]).trim(), "1000");
}

/// Prepared statements through a client library: COM_STMT_PREPARE,
/// COM_STMT_EXECUTE with parameters, COM_STMT_CLOSE; a prepare the policy
/// refuses is a 1142 and the connection goes on.
#[test]
fn prepared_statements_through_a_client_library() {
    require_program("perl");
    let s = Stack::start("dac-my-prep");
    s.alice().ok(&[
        "create table items (id int primary key, v varchar(40) not null)",
        "insert into items values (1, 'one'), (2, 'two'), (3, 'three')",
    ]);
    let out = s.perl(
        "alice",
        ALICE_PW,
        r#"
my $sth = $dbh->prepare("select v from items where id = ?");
for my $id (1, 2, 3, 2, 1) { $sth->execute($id); my ($v) = $sth->fetchrow_array; print "got $v\n"; }
$sth->finish;
my $ins = $dbh->prepare("insert into items values (?, ?)");
$ins->execute(10, "ten");
$ins->execute(11, "eleven");
print "inserted ", $dbh->selectrow_array("select count(*) from items where id >= 10"), "\n";
print "cipher ", ($dbh->{mariadb_ssl_cipher} // 'none'), "\n";
"#,
    );
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
    let got: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("got "))
        .collect();
    assert_eq!(
        got,
        ["got one", "got two", "got three", "got two", "got one"]
    );
    assert!(out.stdout.contains("inserted 2"), "{}", out.stdout);
    assert!(!out.stdout.contains("cipher none"), "{}", out.stdout);

    // Read-only: the INSERT is refused at prepare time; the session goes on.
    let out = s.perl(
        "bob",
        BOB_PW,
        r#"
my $ok = eval { $dbh->prepare("insert into items values (?, ?)")->execute(20, "x"); 1 };
print "refused: ", $dbh->err, " ", $dbh->errstr, "\n" unless $ok;
my $sth = $dbh->prepare("select v from items where id = ?");
$sth->execute(3);
print "still ", ($sth->fetchrow_array)[0], "\n";
"#,
    );
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("refused: 1142") && out.stdout.contains("analysts-read-only"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("still three"), "{}", out.stdout);
    assert_eq!(s.alice().ok(&["select count(*) from items"]).trim(), "5");

    let execs = s.audit_wait(
        &[
            "--kind",
            "statement",
            "--user",
            "alice",
            "-q",
            "select v from items where id = ?",
        ],
        5,
    );
    assert_eq!(execs.len(), 5, "{execs:#?}");
    for ev in &execs {
        assert_eq!(field(ev, "rows").as_u64(), Some(1), "{ev}");
        assert_eq!(field(ev, "kind").as_str(), Some("select"), "{ev}");
    }
    let denied = s.audit_wait(&["--decision", "deny", "--user", "bob"], 1);
    assert!(!denied.is_empty());
    for ev in &denied {
        assert_eq!(
            field(ev, "policy").as_str(),
            Some("analysts-read-only"),
            "{ev}"
        );
        assert_eq!(field(ev, "kind").as_str(), Some("insert"), "{ev}");
    }
}

/// Read-only and deny-list policies refuse with 1142 naming the policy;
/// the session stays usable; every decision audited.
#[test]
fn policies_deny_with_1142_and_the_session_goes_on() {
    let s = Stack::start("dac-my-policy");
    let alice = s.alice();
    alice.ok(&[
        "create table t (id int primary key, v text)",
        "insert into t values (1, 'a'), (2, 'b')",
    ]);
    let bob = s.bob();
    assert_eq!(bob.ok(&["select count(*) from t"]).trim(), "2");
    for (client, sql, policy) in [
        (&bob, "drop table t", "analysts-read-only"),
        (&bob, "insert into t values (3, 'c')", "analysts-read-only"),
        (
            &bob,
            "update t set v = 'x' where id = 1",
            "analysts-read-only",
        ),
        (&bob, "create table u (a int)", "analysts-read-only"),
        (
            &bob,
            "set session transaction read write",
            "analysts-read-only",
        ),
        (&bob, "selekt nonsense", "analysts-read-only"),
        (&alice, "drop table t", "dba-guarded"),
        (&alice, "truncate t", "dba-guarded"),
        (&alice, "delete from t", "dba-guarded"),
    ] {
        let out = client.run(&[sql, "select 'still here'"]);
        assert!(
            out.stderr.contains("ERROR 1142 (42000)") && out.stderr.contains(policy),
            "{sql}: {}",
            out.stderr
        );
        assert_eq!(out.stdout.trim(), "still here", "{sql}: {}", out.stderr);
    }
    assert_eq!(alice.ok(&["select count(*) from t"]).trim(), "2");
    alice.ok(&[
        "delete from t where id = 2",
        "insert into t values (5, 'e')",
    ]);
    assert_eq!(
        alice
            .ok(&["select group_concat(id order by id) from t"])
            .trim(),
        "1,5"
    );

    let denied = s.audit_wait(&["--decision", "deny"], 9);
    assert_eq!(denied.len(), 9, "{denied:#?}");
    for ev in &denied {
        let policy = field(ev, "policy").as_str().unwrap_or_default();
        assert!(
            policy == "dba-guarded" || policy == "analysts-read-only",
            "{ev}"
        );
        assert!(field(ev, "error").as_str().is_some(), "{ev}");
    }
    let allowed = s.audit(&["--decision", "allow", "--user", "bob"]);
    assert!(allowed.len() >= 2);
    assert!(allowed
        .iter()
        .all(|e| field(e, "policy").as_str() == Some("analysts-read-only")));
}

/// Audit completeness: N statements in, exactly N statement events out.
#[test]
fn every_statement_is_audited_once() {
    let s = Stack::start("dac-my-count");
    let alice = s.alice();
    alice.ok(&["create table c (n int)"]);
    const N: usize = 57;
    let stmts: Vec<String> = (0..N)
        .map(|i| format!("insert into c values ({i})"))
        .collect();
    let refs: Vec<&str> = stmts.iter().map(String::as_str).collect();
    alice.ok(&refs);
    let args = [
        "--kind",
        "statement",
        "--user",
        "alice",
        "-q",
        "insert into c",
    ];
    s.audit_wait(&args, N);
    std::thread::sleep(Duration::from_millis(500));
    let events = s.audit(&args);
    assert_eq!(events.len(), N);
    for ev in &events {
        assert_eq!(field(ev, "rows").as_u64(), Some(1), "{ev}");
        assert_eq!(field(ev, "decision").as_str(), Some("allow"), "{ev}");
        assert!(field(ev, "duration_us").as_u64().is_some(), "{ev}");
    }
    assert_eq!(alice.ok(&["select count(*) from c"]).trim(), N.to_string());
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
    let s = Stack::start("dac-my-large");
    let alice = s.alice();
    alice.ok(&["select 1"]);
    let before = vm_hwm_kib(s.novas.proc.pid());
    let mut cmd = alice.command();
    cmd.args([
        "--quick",
        "-e",
        "select seq, repeat('x', 100) from seq_1_to_1000000",
    ]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("mysql");
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
    eprintln!(
        "large result: {lines} rows, {bytes} bytes in {:?}; NOVAS VmHWM {before} -> {after} KiB",
        started.elapsed()
    );
    assert!(
        after.saturating_sub(before) < 48 * 1024,
        "NOVAS peak RSS grew by {} KiB for a {bytes}-byte result",
        after - before
    );
    let ev = s.audit_wait(&["--kind", "statement", "-q", "seq_1_to_1000000"], 1);
    assert_eq!(field(&ev[0], "rows").as_u64(), Some(1_000_000), "{ev:#?}");
}

/// A raw client: reads the greeting, then sends `bytes`; returns what
/// NOVAS answered until it closed (or a 15 s timeout).
fn after_greeting(addr: &str, bytes: &[u8], close_write: bool) -> (Greeting, Vec<u8>) {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let greeting = read_greeting(&mut c);
    let _ = c.write_all(bytes);
    if close_write {
        let _ = c.shutdown(std::net::Shutdown::Write);
    }
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    (greeting, out)
}

fn read_greeting(c: &mut TcpStream) -> Greeting {
    let mut buf = BytesMut::new();
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(p) = decode_packet(&mut buf, 1 << 16).expect("greeting framing") {
            match Greeting::decode(&p.payload).expect("greeting") {
                ServerHello::Greeting(g) => return g,
                ServerHello::Error(e) => panic!("NOVAS refused: {e}"),
            }
        }
        let n = c.read(&mut tmp).expect("read greeting");
        assert!(n > 0, "closed before the greeting");
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// The ERR packet at the front of `out`, if that is what it holds.
fn err_of(out: &[u8]) -> Option<ErrPacket> {
    let mut b = BytesMut::from(out);
    let p = decode_packet(&mut b, 1 << 20).ok()??;
    ErrPacket::decode(&p.payload).ok()
}

/// Logs in natively as `user` on a raw connection; returns it after OK.
fn raw_login(addr: &str, user: &str, pw: &str) -> TcpStream {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let g = read_greeting(&mut c);
    let mut payload = BytesMut::new();
    HandshakeResponse {
        capabilities: caps::SERVER_CAPABILITIES - Capabilities::CONNECT_WITH_DB,
        max_packet: 1 << 24,
        charset: 45,
        user: user.into(),
        auth_response: auth::native_scramble(pw.as_bytes(), &g.scramble).to_vec(),
        database: None,
        auth_plugin: Some("mysql_native_password".into()),
        attrs: vec![],
        mariadb_capabilities: 0,
    }
    .encode(&mut payload);
    let mut out = BytesMut::new();
    put_packet(&mut out, 1, &payload);
    c.write_all(&out).expect("send response");
    let mut buf = BytesMut::new();
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(p) = decode_packet(&mut buf, 1 << 16).expect("framing") {
            assert_eq!(
                p.payload[0],
                0,
                "login OK expected: {:?}",
                ErrPacket::decode(&p.payload)
            );
            return c;
        }
        let n = c.read(&mut tmp).expect("read");
        assert!(n > 0, "closed during login");
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// Bad input on the front end: each gets an error or a close within a
/// deadline, nothing panics, other sessions carry on.
#[test]
fn hostile_clients() {
    require_program("perl");
    let s = Stack::start("dac-my-hostile");
    let addr = format!("127.0.0.1:{}", s.port);
    // A session busy while the rest goes on.
    let mut busy = s.alice().command();
    busy.args(["-e", "select sleep(4), 'survived'"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let busy = busy.spawn().expect("busy session");

    // Garbage instead of a handshake response.
    let (g, out) = after_greeting(&addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false);
    assert_eq!(g.auth_plugin, "caching_sha2_password");
    assert!(out.is_empty() || err_of(&out).is_some(), "{out:?}");
    // An oversized packet length.
    let (_, out) = after_greeting(&addr, &[0xff, 0xff, 0xff, 0x01, 0, 0], false);
    let err = err_of(&out).expect("an ERR packet");
    assert_eq!(err.code, 1153, "{err}");
    // A truncated packet, then the client stops sending.
    let (_, out) = after_greeting(&addr, &[40, 0, 0, 1, b'u', b's'], true);
    assert!(out.is_empty() || err_of(&out).is_some(), "{out:?}");
    // A well-framed packet that is not a handshake response.
    let (_, out) = after_greeting(&addr, &[3, 0, 0, 1, 1, 2, 3], false);
    assert_eq!(err_of(&out).map(|e| e.code), Some(1043), "{out:?}");
    // A 1 MB password in a full caching_sha2_password authentication.
    let out = s.perl_with(
        clean_command("perl"),
        "alice",
        "'p' x (1 << 20)",
        "print \"in\\n\";",
    );
    assert!(!out.status.success(), "{}", out.stdout);
    assert!(!out.stdout.contains("in"), "{}", out.stdout);
    // After login: an oversized command and an out-of-order one.
    let mut c = raw_login(&addr, "alice", ALICE_PW);
    let mut big = vec![0xff, 0xff, 0xff, 0x00, 0x03];
    big.resize(4 + 0xff_ffff, b'x');
    big.extend_from_slice(&[0xff, 0xff, 0xff, 0x01, b'x']);
    let _ = c.write_all(&big);
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    assert_eq!(err_of(&out).map(|e| e.code), Some(1153), "{out:?}");
    let mut c = raw_login(&addr, "alice", ALICE_PW);
    let _ = c.write_all(&[
        9, 0, 0, 5, 3, b's', b'e', b'l', b'e', b'c', b't', b' ', b'1',
    ]);
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    assert_eq!(err_of(&out).map(|e| e.code), Some(1156), "{out:?}");
    // A client that connects and says nothing is dropped within the deadline.
    let mut idle = TcpStream::connect(&addr).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(40)))
        .expect("timeout");
    let _ = read_greeting(&mut idle);
    let t = Instant::now();
    let mut b = [0u8; 1];
    let _ = idle.read(&mut b);
    assert!(
        t.elapsed() < Duration::from_secs(35),
        "idle client kept for {:?}",
        t.elapsed()
    );

    let done = busy.wait_with_output().expect("busy session");
    assert!(
        String::from_utf8_lossy(&done.stdout).contains("survived"),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(s.alice().ok(&["select 'alive'"]).trim(), "alive");
    assert!(!s.novas.proc.stderr().contains("panicked"));
}
