//! Several NOVAS on one shared store: two `novas` processes on a throwaway
//! MariaDB (NOVAS_STORE_URL), one agent with both in NOVAC_SERVER. The
//! agent holds a tunnel to each, and each node lists it under its own
//! node name; a user added through one node's CLI logs in through the
//! other; a statement audited by one node is in the other's
//! `GET /api/audit`, and the audit metrics of the node that wrote it move;
//! a console login on one node is valid on the other. Policies are shared
//! too: node b has no policy file and enforces what
//! node a stored, and a `novas policy import` reaches both nodes without a
//! restart. Without the store, neither node is ready.

use std::time::Duration;

use nova_e2e::{
    http,
    mariadb::{Mariadb, MysqlClient, ADMIN_USER, APP_DB},
    new_token,
    procs::{run_with_stdin, NovacConfig, Novas, NovasConfig, Selector, Trust},
    prom, random_hex, require_program, require_root, unique_suffix, wait_for, TestDir,
};
use serde_json::Value;

const REGISTER: Duration = Duration::from_secs(30);
const STORE_DB: &str = "novas_shared";
const ALICE_PW: &str = "alice-Shared-Pa55";

const POLICIES: &str = r#"
policies:
  - name: dba
    roles: [dba]
    resources: [my]
"#;

/// Imported later through the CLI: the same role, read-only.
const READ_ONLY: &str = r#"
policies:
  - name: dba-read-only
    roles: [dba]
    resources: [my]
    read_only: true
"#;

/// Waits until `novas`'s API shows a statement event containing `marker`
/// recorded by node `by`; returns it.
fn wait_statement(novas: &Novas, marker: &str, by: &str) -> Value {
    let what = format!(
        "{}'s /api/audit to show {marker:?} from {by}",
        novas.proc.label
    );
    wait_for(Duration::from_secs(20), &what, || {
        novas
            .api_audit(&format!("kind=statement&q={marker}"))
            .into_iter()
            .find(|e| e["node"].as_str() == Some(by))
    })
}

fn select(client: &MysqlClient, marker: &str) {
    let out = run_with_stdin(
        client.command(),
        &format!("select '{marker}';\n"),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success() && out.stdout.contains(marker),
        "mysql through NOVAS port {}: {}{}",
        client.port,
        out.stdout,
        out.stderr
    );
}

#[test]
fn two_nodes_share_users_and_audit_and_each_holds_a_tunnel() {
    require_root();
    require_program("mysql");
    let dir = TestDir::new("multi-novas");
    // One MariaDB is both the shared store (its own database) and the
    // target the resource reaches through the agent.
    let db = Mariadb::start(dir.path(), None);
    db.mysql_local(&[&format!("CREATE DATABASE {STORE_DB}")])
        .expect("create the store database");
    let store_url = format!(
        "mysql://{ADMIN_USER}:{}@127.0.0.1:{}/{STORE_DB}",
        db.admin_password, db.port
    );

    let token = new_token("agent");
    let tag = format!("shared-{}", unique_suffix());
    let node = |label: &str| {
        let res = db.app_resource(Selector::Tags(vec![("Store".into(), tag.clone())]));
        NovasConfig::new(&dir, label, &token)
            .resource(res)
            .env("NOVAS_STORE_URL", &store_url)
            .env("NOVAS_POLICY_REFRESH", "300ms")
    };
    // One after the other: the first creates the schema and stores its
    // policy file; b has none and takes the store's.
    let a = Novas::start(&dir, "a", node("a").policies(POLICIES));
    let b = Novas::start(&dir, "b", node("b"));
    assert_ne!(
        a.fingerprint, b.fingerprint,
        "each node has its own certificate"
    );

    // One agent, a tunnel to each node.
    let name = format!("multi-agent-{}", unique_suffix());
    let mut agent = NovacConfig::for_server(&a, &name, &format!("Store={tag}"));
    agent.servers = vec![a.agent_addr(), b.agent_addr()];
    agent.trust = Trust::Fingerprint(format!("{},{}", a.fingerprint, b.fingerprint));
    let _agent = agent.start(&dir, "novac");
    for (n, label) in [(&a, "node-a"), (&b, "node-b")] {
        let t = n.wait_registered(&name, REGISTER);
        assert_eq!(t["node"], label, "{t}");
        assert_eq!(n.tunnels().len(), 1, "one tunnel per node");
    }

    // A user added through node a's CLI (it writes the shared store)...
    let mut add = a.cfg.cli();
    add.args(["user", "add", "alice", "--password-stdin", "--roles", "dba"]);
    let out = run_with_stdin(add, &format!("{ALICE_PW}\n"), Duration::from_secs(60));
    assert!(
        out.status.success(),
        "novas user add: {}{}",
        out.stdout,
        out.stderr
    );

    // ...logs in through node b, whose statement node a's API shows.
    let port = |n: &Novas| n.cfg.resources[0].listen;
    let through_b = MysqlClient::new(port(&b), "alice", ALICE_PW, APP_DB);
    let marker_b = format!("via-b-{}", random_hex(6));
    select(&through_b, &marker_b);
    let ev = wait_statement(&a, &marker_b, "node-b");
    assert_eq!(ev["user"], "alice", "{ev}");
    assert_eq!(ev["resource"], "my", "{ev}");

    // And the other way round.
    let through_a = MysqlClient::new(port(&a), "alice", ALICE_PW, APP_DB);
    let marker_a = format!("via-a-{}", random_hex(6));
    select(&through_a, &marker_a);
    wait_statement(&b, &marker_a, "node-a");

    // Each node counted its own session, and wrote audit events with a
    // measured latency.
    for n in [&a, &b] {
        let m = prom::scrape(&n.http_addr(), Some(&n.admin_token()));
        assert_eq!(m.value("novas_sessions_total", &[("kind", "mysql")]), 1.0);
        assert_eq!(m.value("novas_agents_connected_total", &[]), 1.0);
        assert!(m.value("novas_audit_events_written_total", &[]) >= 1.0);
        assert!(m.value("novas_audit_store_up", &[]) == 1.0);
        let buckets = m.histogram("novas_audit_write_seconds");
        let count = buckets.last().map(|b| b.1).unwrap_or_default();
        assert!(count >= 1.0, "no audit write measured: {buckets:?}");
        assert_eq!(
            http::get(&n.http_addr(), "/readyz", None)
                .map(|r| r.status)
                .ok(),
            Some(200)
        );
    }

    // A new policy version imported through node a's CLI reaches both
    // nodes without a restart: a write is now refused, naming the policy.
    let file = dir.path().join("read-only.yaml");
    std::fs::write(&file, READ_ONLY).expect("write policy file");
    let mut import = a.cfg.cli();
    import.arg("policy").arg("import").arg(&file);
    let out = run_with_stdin(import, "", Duration::from_secs(60));
    assert!(
        out.status.success() && out.stdout.contains("policies v2 stored"),
        "novas policy import: {}{}",
        out.stdout,
        out.stderr
    );
    for (n, client) in [(&a, &through_a), (&b, &through_b)] {
        let what = format!("{} to refuse a write under dba-read-only", n.proc.label);
        let refused = wait_for(Duration::from_secs(20), &what, || {
            // A fresh name each try: a write that passed before the new
            // version arrived must not make the next try fail for another
            // reason (the table would exist).
            let sql = format!("create table t_after_import_{} (a int);\n", random_hex(4));
            let out = run_with_stdin(client.command(), &sql, Duration::from_secs(60));
            (!out.status.success()).then_some(out.stderr)
        });
        assert!(
            refused.contains("dba-read-only") && refused.contains("1142"),
            "{}: {refused}",
            n.proc.label
        );
        // Reads still pass.
        select(client, &format!("after-import-{}", random_hex(4)));
    }
    let mut history = b.cfg.cli();
    history.args(["policy", "history"]);
    let out = run_with_stdin(history, "", Duration::from_secs(60));
    let versions: Vec<&str> = out
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(versions, ["2", "1"], "novas policy history: {}", out.stdout);
    let changes = b.api_audit("kind=admin_change");
    assert_eq!(
        changes.len(),
        2,
        "the file at start and the import: {changes:?}"
    );
    assert!(
        changes
            .iter()
            .any(|e| e["node"] == "cli" && e["event"]["object"] == "policies v2"),
        "{changes:?}"
    );
    // A console login on node a is a session on node b too (sessions are
    // in the shared store), and b's console shows both nodes' tunnel
    // history.
    let mut add = a.cfg.cli();
    add.args(["user", "add", "ops", "--password-stdin", "--roles", "admin"]);
    let out = run_with_stdin(add, &format!("{ALICE_PW}\n"), Duration::from_secs(60));
    assert!(out.status.success(), "novas user add ops: {}", out.stderr);
    let origin = format!("http://{}", a.http_addr());
    let login = http::request(
        &a.http_addr(),
        "POST",
        "/login",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", &origin),
        ],
        Some(&format!("user=ops&password={ALICE_PW}")),
    )
    .expect("POST /login on a");
    assert_eq!(login.status, 303, "{login:?}");
    let cookie = login
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("session cookie")
        .to_string();
    let on_b = |path: &str| {
        let r = http::request(&b.http_addr(), "GET", path, &[("Cookie", &cookie)], None)
            .unwrap_or_else(|e| panic!("GET {path} on b: {e}"));
        assert_eq!(r.status, 200, "GET {path} on b with a's session: {r:?}");
        serde_json::from_str::<Value>(&r.body).expect("JSON")
    };
    assert_eq!(on_b("/api/me")["user"], "ops");
    assert_eq!(on_b("/api/tunnels")[0]["node"], "node-b");
    let history = on_b(&format!("/api/tunnels/history?agent={name}"));
    let mut nodes: Vec<&str> = history
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["event"]["type"] == "agent_connect")
                .filter_map(|e| e["node"].as_str())
                .collect()
        })
        .unwrap_or_default();
    nodes.sort();
    assert_eq!(nodes, ["node-a", "node-b"], "{history:#}");

    // The shared store goes away: neither node is ready, and both say why.
    drop(db);
    for n in [&a, &b] {
        let what = format!("{} /readyz to turn 503 without its store", n.proc.label);
        wait_for(Duration::from_secs(20), &what, || {
            let r = http::get(&n.http_addr(), "/readyz", None).ok()?;
            (r.status == 503).then_some(())
        });
        let what = format!("{} novas_audit_store_up to turn 0", n.proc.label);
        wait_for(Duration::from_secs(20), &what, || {
            let m = prom::scrape(&n.http_addr(), Some(&n.admin_token()));
            (m.value("novas_audit_store_up", &[]) == 0.0).then_some(())
        });
        assert_eq!(
            http::get(&n.http_addr(), "/healthz", None)
                .map(|r| r.status)
                .ok(),
            Some(200)
        );
    }
}
