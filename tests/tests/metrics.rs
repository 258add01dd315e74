//! `/metrics` of a real NOVAS, parsed as Prometheus text: values move as
//! agents come and go, sessions run and a wrong token knocks; the endpoint
//! is behind the admin token unless NOVAS_METRICS_PUBLIC.

use std::{net::SocketAddr, time::Duration};

use nova_e2e::{
    echo::{EchoClient, EchoServer},
    http, new_token,
    procs::{NovacConfig, Novas, NovasConfig, Resource, Selector},
    prom::{self, Metrics},
    unique_suffix, wait_for, TestDir,
};

const REGISTER: Duration = Duration::from_secs(20);
const SETTLE: Duration = Duration::from_secs(15);

fn scrape(novas: &Novas) -> Metrics {
    prom::scrape(&novas.http_addr(), Some(&novas.admin_token()))
}

/// Waits until `name{labels}` satisfies `ok`; returns the last scrape.
fn wait_metric(
    novas: &Novas,
    name: &str,
    labels: &[(&str, &str)],
    what: &str,
    ok: impl Fn(f64) -> bool,
) -> Metrics {
    wait_for(SETTLE, &format!("{name}{labels:?} {what}"), || {
        let m = scrape(novas);
        m.get(name, labels).is_some_and(&ok).then_some(m)
    })
}

#[test]
fn metrics_follow_agents_sessions_and_refusals() {
    let dir = TestDir::new("metrics");
    let echo = EchoServer::start(
        "127.0.0.1:0".parse::<SocketAddr>().expect("addr"),
        "metrics-echo",
    );
    let app = format!("metrics-{}", unique_suffix());
    let res = Resource::tcp(
        "echo",
        &echo.addr.to_string(),
        Selector::Tags(vec![("App".into(), app.clone())]),
    );
    let cfg = NovasConfig::new(&dir, "novas", &new_token("agent")).resource(res.clone());
    let novas = Novas::start(&dir, "novas", cfg);

    // Behind the admin token by default.
    let anon = http::get(&novas.http_addr(), "/metrics", None).expect("GET /metrics");
    assert_eq!(anon.status, 401, "{anon:?}");
    let bad = http::get(&novas.http_addr(), "/metrics", Some("not-the-token")).expect("GET");
    assert_eq!(bad.status, 401, "{bad:?}");

    let m = scrape(&novas);
    let types = m.types();
    for (family, kind) in [
        ("novas_agents_connected_total", "gauge"),
        ("novas_agents_connected", "gauge"),
        ("novas_streams_active", "gauge"),
        ("novas_streams_total", "counter"),
        ("novas_tunnel_bytes_total", "counter"),
        ("novas_sessions_total", "counter"),
        ("novas_sessions_active", "gauge"),
        ("novas_agent_auth_failures_total", "counter"),
        ("novas_audit_queue_depth", "gauge"),
        ("novas_audit_events_written_total", "counter"),
        ("novas_audit_write_seconds", "histogram"),
    ] {
        assert_eq!(
            types.get(family).map(String::as_str),
            Some(kind),
            "# TYPE of {family}"
        );
    }
    assert_eq!(m.value("novas_agents_connected_total", &[]), 0.0);
    assert_eq!(m.value("novas_sessions_total", &[("kind", "tcp")]), 0.0);
    assert_eq!(m.value("novas_streams_total", &[]), 0.0);
    assert_eq!(
        m.value(
            "novas_agent_auth_failures_total",
            &[("reason", "bad_token")]
        ),
        0.0
    );
    assert_eq!(
        m.value("novas_build_info", &[("node", "node-novas")]),
        1.0,
        "the node is named"
    );
    // Buckets are cumulative and end at +Inf.
    let buckets = m.histogram("novas_audit_write_seconds");
    assert!(buckets.len() >= 2, "{buckets:?}");
    assert!(buckets
        .windows(2)
        .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    assert!(buckets.last().is_some_and(|b| b.0.is_infinite()));

    // An agent registers: 0 → 1, by tag too.
    let name = format!("metrics-agent-{}", unique_suffix());
    let mut agent =
        NovacConfig::for_server(&novas, &name, &format!("App={app};Env=e2e")).start(&dir, "novac");
    let t = novas.wait_registered(&name, REGISTER);
    // Equal tags make one replica group in the API.
    assert_eq!(t["group"], format!("App={app};Env=e2e"), "{t}");
    let m = wait_metric(&novas, "novas_agents_connected_total", &[], "= 1", |v| {
        v == 1.0
    });
    assert_eq!(
        m.value(
            "novas_agents_connected",
            &[("tag_key", "App"), ("tag_value", &app)]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "novas_agent_info",
            &[("agent", &name), ("node", "node-novas")]
        ),
        1.0
    );

    // A session through the resource: active while open, counted after.
    let mut client =
        EchoClient::connect(&res.addr(), Duration::from_secs(10)).expect("connect through NOVAS");
    assert_eq!(client.banner, "metrics-echo");
    client.echo("hello through the tunnel").expect("echo");
    let m = wait_metric(
        &novas,
        "novas_sessions_active",
        &[("kind", "tcp")],
        "= 1 while the session is open",
        |v| v == 1.0,
    );
    assert_eq!(m.value("novas_streams_active", &[]), 1.0);
    assert_eq!(
        m.value("novas_agent_streams_active", &[("agent", &name)]),
        1.0
    );
    assert_eq!(m.value("novas_sessions_total", &[("kind", "tcp")]), 1.0);
    assert_eq!(
        m.value("novas_sessions_active", &[("kind", "postgres")]),
        0.0
    );
    drop(client);
    let m = wait_metric(
        &novas,
        "novas_sessions_active",
        &[("kind", "tcp")],
        "back to 0 after the session",
        |v| v == 0.0,
    );
    assert_eq!(m.value("novas_streams_active", &[]), 0.0);
    assert_eq!(m.value("novas_streams_total", &[]), 1.0);
    assert_eq!(m.value("novas_sessions_total", &[("kind", "tcp")]), 1.0);
    let sent = "hello through the tunnel\n".len() as f64;
    let to_agent = m.value("novas_tunnel_bytes_total", &[("direction", "to_agent")]);
    let from_agent = m.value("novas_tunnel_bytes_total", &[("direction", "from_agent")]);
    assert!(to_agent >= sent, "to_agent {to_agent} < {sent}");
    assert!(
        from_agent >= sent + "metrics-echo\n".len() as f64,
        "from_agent {from_agent}"
    );

    // An HA replica (same tags, own name): counted in the tag's group, and
    // two concurrent sessions spread one per replica.
    let replica_name = format!("metrics-replica-{}", unique_suffix());
    let mut replica = NovacConfig::for_server(&novas, &replica_name, &format!("Env=e2e;App={app}"))
        .start(&dir, "replica");
    novas.wait_registered(&replica_name, REGISTER);
    let m = wait_metric(
        &novas,
        "novas_agents_connected",
        &[("tag_key", "App"), ("tag_value", &app)],
        "= 2 with the replica",
        |v| v == 2.0,
    );
    assert_eq!(m.value("novas_agents_connected_total", &[]), 2.0);
    let clients: Vec<EchoClient> = (0..2)
        .map(|_| EchoClient::connect(&res.addr(), Duration::from_secs(10)).expect("connect"))
        .collect();
    let m = wait_metric(
        &novas,
        "novas_sessions_active",
        &[("kind", "tcp")],
        "= 2 with two sessions open",
        |v| v == 2.0,
    );
    for agent_name in [&name, &replica_name] {
        assert_eq!(
            m.value("novas_agent_streams_active", &[("agent", agent_name)]),
            1.0,
            "sessions are spread over the replicas"
        );
    }
    drop(clients);
    wait_metric(
        &novas,
        "novas_sessions_active",
        &[("kind", "tcp")],
        "back to 0",
        |v| v == 0.0,
    );
    replica.kill();
    wait_metric(
        &novas,
        "novas_agents_connected_total",
        &[],
        "= 1 after the replica is killed",
        |v| v == 1.0,
    );

    // A wrong token is refused and counted by reason.
    let mut wrong = NovacConfig::for_server(&novas, "intruder", "App=x");
    wrong.token = new_token("wrong");
    let mut intruder = wrong.start(&dir, "intruder");
    wait_metric(
        &novas,
        "novas_agent_auth_failures_total",
        &[("reason", "bad_token")],
        ">= 1 after a wrong token",
        |v| v >= 1.0,
    );
    intruder.kill();
    assert!(
        !novas.tunnel_names().iter().any(|n| n == "intruder"),
        "the intruder registered"
    );

    // The agent goes: back to 0, its tag series gone, counters kept.
    agent.kill();
    let m = wait_metric(
        &novas,
        "novas_agents_connected_total",
        &[],
        "back to 0 after the agent is killed",
        |v| v == 0.0,
    );
    assert_eq!(
        m.get(
            "novas_agents_connected",
            &[("tag_key", "App"), ("tag_value", &app)]
        ),
        None
    );
    assert_eq!(m.value("novas_streams_total", &[]), 3.0);
}

#[test]
fn metrics_public_needs_no_token() {
    let dir = TestDir::new("metrics-public");
    let cfg =
        NovasConfig::new(&dir, "novas", &new_token("agent")).env("NOVAS_METRICS_PUBLIC", "true");
    let novas = Novas::start(&dir, "novas", cfg);
    let m = prom::scrape(&novas.http_addr(), None);
    assert_eq!(m.value("novas_agents_connected_total", &[]), 0.0);
    // The API stays behind the token.
    let api = http::get(&novas.http_addr(), "/api/tunnels", None).expect("GET");
    assert_eq!(api.status, 401);
}
