//! The main path: a private network reached through the tunnel, the
//! registry over HTTP and the CLI, several servers, and configuration errors.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    time::Duration,
};

use nova_e2e::{
    http,
    netns::Netns,
    new_token,
    postgres::{psql, Postgres},
    procs::{novas_cli, NovacConfig, Novas, NovasConfig, Proc, Resource, Selector},
    random_hex, require_root, unique_suffix, wait_for, TestDir,
};
use sha2::{Digest, Sha256};

const REGISTER: Duration = Duration::from_secs(20);

fn token() -> String {
    new_token("agent-token")
}

/// PostgreSQL listens on 127.0.0.1 of a private namespace; the agent runs
/// beside it and dials out; real `psql` sessions go through NOVAS.
#[test]
fn private_vpc_postgres() {
    require_root();
    let dir = TestDir::new("pg");
    let ns = Netns::create();
    let pg = Postgres::start(dir.path(), Some(&ns.name));

    // The database works inside its network...
    assert_eq!(
        pg.psql_local(&["select 1"])
            .expect("psql inside the namespace"),
        "1\n"
    );
    // ...and is unreachable from the host, by the namespace's address and
    // by the host's own loopback.
    for ip in [IpAddr::V4(ns.ns_ip), IpAddr::V4(Ipv4Addr::LOCALHOST)] {
        let addr = SocketAddr::new(ip, pg.port);
        let r = TcpStream::connect_timeout(&addr, Duration::from_secs(3));
        assert!(r.is_err(), "the host reached PostgreSQL at {addr} directly");
    }

    let vpc = format!("vpc-{}", unique_suffix());
    let res = Resource::tcp(
        "pg",
        &format!("127.0.0.1:{}", pg.port),
        Selector::Tags(vec![("VPC".into(), vpc.clone())]),
    );
    let mut cfg = NovasConfig::new(&dir, "novas", &token()).resource(res.clone());
    cfg.bind = "0.0.0.0".into();
    let novas = Novas::start(&dir, "novas", cfg);

    let name = format!("pg-agent-{}", unique_suffix());
    let mut agent = NovacConfig::for_server(&novas, &name, &format!("VPC={vpc};env=e2e"));
    agent.servers = vec![format!("{}:{}", ns.host_ip, novas.cfg.agent_port)];
    agent.netns = Some(ns.name.clone());
    let _agent = agent.start(&dir, "novac");
    novas.wait_registered(&name, REGISTER);

    let through = |stmts: &[&str]| {
        psql(None, "127.0.0.1", res.listen, &pg.password, stmts)
            .unwrap_or_else(|e| panic!("psql through the tunnel {stmts:?}: {e}"))
    };
    const ROWS: usize = 5000;
    through(&[
        "create table items (id int primary key, v text not null)",
        &format!("insert into items select i, 'row-' || i from generate_series(1, {ROWS}) i"),
    ]);
    assert_eq!(
        through(&["select count(*) from items"]).trim(),
        ROWS.to_string()
    );

    let checksum_sql =
        "select encode(sha256(convert_to(string_agg(v, ',' order by id), 'UTF8')), 'hex') from items";
    let expected: Vec<String> = (1..=ROWS).map(|i| format!("row-{i}")).collect();
    let expected = hex::encode(Sha256::digest(expected.join(",").as_bytes()));
    assert_eq!(through(&[checksum_sql]).trim(), expected);
    // The same data, seen directly inside the namespace.
    assert_eq!(
        pg.psql_local(&[checksum_sql]).expect("direct").trim(),
        expected
    );

    // A larger result (about 2 MB) comes back intact.
    let big = through(&["select string_agg(repeat(v, 40), '' order by id) from items"]);
    let want: usize = (1..=ROWS).map(|i| format!("row-{i}").len() * 40).sum();
    assert_eq!(big.trim_end().len(), want);

    // Concurrent sessions.
    std::thread::scope(|s| {
        through(&["create table par (worker int, n int)"]);
        let handles: Vec<_> = (0..4)
            .map(|w| {
                s.spawn(move || {
                    through(&[&format!(
                        "insert into par select {w}, n from generate_series(1, 250) n"
                    )])
                })
            })
            .collect();
        for h in handles {
            h.join().expect("worker");
        }
    });
    assert_eq!(through(&["select count(*) from par"]).trim(), "1000");

    // The registry counted the sessions.
    wait_for(Duration::from_secs(10), "stream counters to move", || {
        let t = novas.wait_registered(&name, REGISTER);
        let streams = t["streams_total"].as_u64().unwrap_or(0);
        let bytes = t["bytes_in"].as_u64().unwrap_or(0) + t["bytes_out"].as_u64().unwrap_or(0);
        (streams >= 1 && bytes > 0).then_some(())
    });
}

const TUNNEL_FIELDS: [&str; 12] = [
    "name",
    "tags",
    "remote_addr",
    "node",
    "agent_version",
    "connected_since",
    "last_heartbeat",
    "rtt_ms",
    "active_streams",
    "streams_total",
    "bytes_in",
    "bytes_out",
];

/// A registered agent shows in `/api/tunnels` and `novas tunnels`; the API
/// needs the admin token; health endpoints answer.
#[test]
fn registration_shows_in_api_and_cli() {
    let dir = TestDir::new("reg");
    let mut cfg = NovasConfig::new(&dir, "novas", &token());
    cfg.admin_token = None; // generated into DATA/admin-token
    let novas = Novas::start(&dir, "novas", cfg);
    let http_addr = novas.http_addr();

    for path in ["/healthz", "/readyz"] {
        let r = http::get(&http_addr, path, None).expect(path);
        assert_eq!(r.status, 200, "{path}: {r:?}");
    }
    assert_eq!(
        http::get(&http_addr, "/healthz", None)
            .expect("healthz")
            .body
            .trim(),
        "ok"
    );
    let admin = novas.admin_token();
    assert!(!admin.is_empty(), "generated admin token is empty");
    let r = http::get(&http_addr, "/api/tunnels", None).expect("no token");
    assert_eq!(r.status, 401, "/api/tunnels without a token: {r:?}");
    let r = http::get(&http_addr, "/api/tunnels", Some("not-the-admin-token")).expect("bad");
    assert_eq!(r.status, 401, "/api/tunnels with a wrong token: {r:?}");
    assert!(novas.tunnels().is_empty());

    let team = format!("team-{}", unique_suffix());
    let name = format!("reg-agent-{}", unique_suffix());
    let _agent = NovacConfig::for_server(&novas, &name, &format!("VPC=dev_infra;team={team}"))
        .start(&dir, "novac");
    let t = novas.wait_registered(&name, REGISTER);
    for f in TUNNEL_FIELDS {
        assert!(t.get(f).is_some(), "/api/tunnels entry lacks {f:?}: {t}");
    }
    assert_eq!(t["tags"]["VPC"], "dev_infra", "{t}");
    assert_eq!(t["tags"]["team"], team.as_str(), "{t}");
    assert_eq!(t["node"], novas.cfg.node_name.as_str(), "{t}");
    assert!(
        t["remote_addr"]
            .as_str()
            .is_some_and(|a| a.contains("127.0.0.1")),
        "{t}"
    );
    assert!(
        t["agent_version"].as_str().is_some_and(|v| !v.is_empty()),
        "{t}"
    );

    // Table, with the token from the data dir.
    let url = format!("http://{http_addr}");
    let data_dir = novas.cfg.data_dir.to_string_lossy().to_string();
    let out = novas_cli(&["tunnels", "--url", &url, "--data-dir", &data_dir], &[]);
    assert!(out.status.success(), "novas tunnels: {out:?}");
    let header = out.stdout.lines().next().unwrap_or_default();
    for col in [
        "NAME",
        "TAGS",
        "REMOTE",
        "NODE",
        "VERSION",
        "CONNECTED",
        "LAST-HEARTBEAT",
        "STREAMS",
        "BYTES-IN",
        "BYTES-OUT",
    ] {
        assert!(header.contains(col), "header {header:?} lacks {col}");
    }
    let row = out
        .stdout
        .lines()
        .find(|l| l.contains(&name))
        .unwrap_or_else(|| panic!("no row for {name} in:\n{}", out.stdout));
    for want in ["VPC", "dev_infra", &team, &novas.cfg.node_name] {
        assert!(row.contains(want), "row {row:?} lacks {want:?}");
    }

    // JSON, with the token as a flag.
    let out = novas_cli(
        &["tunnels", "--url", &url, "--token", &admin, "--json"],
        &[],
    );
    assert!(out.status.success(), "novas tunnels --json: {out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("--json output is not JSON ({e}): {}", out.stdout));
    let entry = v
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == name.as_str()))
        .unwrap_or_else(|| panic!("--json lacks {name}: {v}"));
    assert_eq!(entry["tags"]["team"], team.as_str());

    // Environment variables.
    let out = novas_cli(
        &["tunnels"],
        &[("NOVAS_URL", &url), ("NOVAS_ADMIN_TOKEN", &admin)],
    );
    assert!(
        out.status.success() && out.stdout.contains(&name),
        "novas tunnels via env: {out:?}"
    );

    // A wrong token is an error, not an empty table.
    let out = novas_cli(&["tunnels", "--url", &url, "--token", "wrong"], &[]);
    assert!(
        !out.status.success(),
        "novas tunnels with a wrong token succeeded: {out:?}"
    );
}

/// One agent, two servers: registered with both.
#[test]
fn agent_registers_with_every_server() {
    let dir = TestDir::new("multi");
    let tok = token();
    let a = Novas::start(&dir, "novas-a", NovasConfig::new(&dir, "novas-a", &tok));
    let b = Novas::start(&dir, "novas-b", NovasConfig::new(&dir, "novas-b", &tok));
    assert_ne!(
        a.fingerprint, b.fingerprint,
        "two data dirs, two certificates"
    );

    let name = format!("multi-{}", unique_suffix());
    let mut cfg = NovacConfig::for_server(&a, &name, "VPC=multi");
    cfg.servers = vec![a.agent_addr(), b.agent_addr()];
    cfg.trust = nova_e2e::procs::Trust::Fingerprint(format!("{},{}", a.fingerprint, b.fingerprint));
    let _agent = cfg.start(&dir, "novac");
    let ta = a.wait_registered(&name, REGISTER);
    let tb = b.wait_registered(&name, REGISTER);
    assert_eq!(ta["node"], a.cfg.node_name.as_str());
    assert_eq!(tb["node"], b.cfg.node_name.as_str());
}

fn assert_exits_naming(mut p: Proc, var: &str) {
    let st = p
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("{} kept running with a bad {var}", p.label));
    assert!(!st.success(), "{} exited 0 with a bad {var}", p.label);
    let err = p.stderr();
    assert!(err.contains(var), "stderr does not name {var}:\n{err}");
}

#[test]
fn novac_rejects_bad_tags() {
    let dir = TestDir::new("badtags");
    let cfg = NovacConfig {
        servers: vec!["127.0.0.1:9".into()],
        token: token(),
        name: "bad-tags".into(),
        tags: "VPC".into(),
        trust: nova_e2e::procs::Trust::Fingerprint(random_hex(32)),
        netns: None,
        extra_env: vec![],
    };
    assert_exits_naming(cfg.start(&dir, "novac"), "NOVAC_TAGS");
}

#[test]
fn novas_requires_agent_token() {
    let dir = TestDir::new("notoken");
    let mut cfg = NovasConfig::new(&dir, "novas", "unused");
    cfg.agent_token = None;
    let p = Proc::spawn("novas", cfg.command(dir.path(), "novas"), dir.path());
    assert_exits_naming(p, "NOVAS_AGENT_TOKEN");
}
