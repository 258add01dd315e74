//! NOVAC's health endpoint (NOVAC_HEALTH_PORT): `/healthz` answers while
//! the process runs, `/readyz` only while a tunnel is registered — before
//! its NOVAS is up, while it is, and after it is gone.

use std::time::Duration;

use nova_e2e::{
    http, new_token, ports,
    procs::{run, NovacConfig, Novas, NovasConfig},
    unique_suffix, wait_for, TestDir,
};

const SETTLE: Duration = Duration::from_secs(20);

fn status(addr: &str, path: &str) -> Option<u16> {
    http::get(addr, path, None).ok().map(|r| r.status)
}

fn wait_status(addr: &str, path: &str, want: u16, what: &str) {
    wait_for(
        SETTLE,
        &format!("{path} on {addr} to answer {want} {what}"),
        || (status(addr, path) == Some(want)).then_some(()),
    );
}

#[test]
fn readyz_follows_the_tunnel() {
    let dir = TestDir::new("novac-health");
    let token = new_token("agent");
    let cfg = NovasConfig::new(&dir, "novas", &token);
    // Start NOVAS once for its certificate (and pin), then stop it: the
    // agent first dials a port where nothing listens.
    let mut novas = Novas::start(&dir, "novas", cfg.clone());
    novas.proc.kill();

    let health_port = ports::free_port();
    let health = format!("127.0.0.1:{health_port}");
    let name = format!("health-agent-{}", unique_suffix());
    let mut agent = NovacConfig::for_server(&novas, &name, "App=health")
        .env("NOVAC_HEALTH_PORT", &health_port.to_string())
        .start(&dir, "novac");

    wait_status(&health, "/healthz", 200, "once novac runs");
    assert_eq!(
        status(&health, "/readyz"),
        Some(503),
        "ready without a tunnel"
    );
    // Still not ready after several reconnect attempts.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(status(&health, "/readyz"), Some(503));
    assert!(
        agent.is_running(),
        "novac exited: {}",
        agent.stderr_tail(20)
    );
    assert_eq!(status(&health, "/nope"), Some(404));

    // NOVAS comes up on that port (same data dir, same certificate).
    let novas = Novas::start(&dir, "novas2", cfg);
    novas.wait_registered(&name, SETTLE);
    wait_status(&health, "/readyz", 200, "once registered");
    let body = http::get(&health, "/readyz", None)
        .expect("GET /readyz")
        .body;
    assert!(body.contains("1 tunnel"), "{body:?}");

    // NOVAS goes away: not ready, still alive.
    drop(novas);
    wait_status(&health, "/readyz", 503, "after NOVAS is killed");
    assert_eq!(status(&health, "/healthz"), Some(200));
}

#[test]
fn bad_health_port_fails_at_start_naming_the_variable() {
    let dir = TestDir::new("novac-health-bad");
    let cfg = NovacConfig {
        servers: vec!["127.0.0.1:9".into()],
        token: new_token("agent"),
        name: "bad-health".into(),
        tags: String::new(),
        trust: nova_e2e::procs::Trust::Fingerprint("ab".repeat(32)),
        netns: None,
        extra_env: vec![("NOVAC_HEALTH_PORT".into(), "http".into())],
    };
    let out = run(cfg.command(), Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let first = out.stderr.lines().next().unwrap_or_default();
    assert!(
        first.contains("NOVAC_HEALTH_PORT") && first.contains("\"http\""),
        "{first:?}"
    );
    drop(dir);
}
