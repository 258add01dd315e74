//! Availability: a server restart, and two agent replicas behind one
//! resource with one of them killed under traffic.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use nova_e2e::{
    bins,
    echo::{round_trip, EchoClient, EchoServer},
    netns::Netns,
    new_token,
    ports::free_port,
    procs::{NovacConfig, Novas, NovasConfig, Proc, Resource, Selector},
    require_root, unique_suffix, TestDir,
};

const REGISTER: Duration = Duration::from_secs(20);
const IO: Duration = Duration::from_secs(10);

/// NOVAS killed with SIGKILL and started again on the same ports and data
/// dir: same identity, and the agent comes back by itself.
#[test]
fn agent_reregisters_after_server_restart() {
    let dir = TestDir::new("restart");
    let echo = EchoServer::start(
        SocketAddr::from((Ipv4Addr::LOCALHOST, free_port())),
        "restart-target",
    );
    let name = format!("rs-{}", unique_suffix());
    let res = Resource::tcp("echo", &echo.addr.to_string(), Selector::Name(name.clone()));
    let cfg = NovasConfig::new(&dir, "novas-1", &new_token("ha")).resource(res.clone());
    let mut first = Novas::start(&dir, "novas-1", cfg.clone());
    let mut agent = NovacConfig::for_server(&first, &name, "VPC=restart").start(&dir, "novac");
    first.wait_registered(&name, REGISTER);
    assert_eq!(
        round_trip(&res.addr(), IO).expect("before"),
        "restart-target"
    );
    let agent_pid = agent.pid();

    first.proc.kill();
    let fingerprint = first.fingerprint.clone();
    drop(first);

    let second = Novas::start(&dir, "novas-2", cfg);
    assert_eq!(
        second.fingerprint, fingerprint,
        "identity changed across restart"
    );
    second.wait_registered(&name, Duration::from_secs(15));
    assert!(agent.is_running(), "novac exited when its server died");
    assert_eq!(agent.pid(), agent_pid);
    assert_eq!(
        round_trip(&res.addr(), IO).expect("after"),
        "restart-target"
    );
}

/// An agent replica in its own namespace with its own echo server (at the
/// same 127.0.0.1:port as the other replica's), answering with its banner.
struct Replica {
    name: String,
    banner: String,
    agent: Proc,
    _echo: Proc,
    _ns: Netns,
}

fn replica(dir: &TestDir, novas: &Novas, label: &str, tags: &str, echo_port: u16) -> Replica {
    let ns = Netns::create();
    let banner = format!("banner-{label}");
    let mut echo = Proc::spawn(
        &format!("echo-{label}"),
        {
            let mut c = ns.command(&bins::echo_server());
            c.arg(format!("127.0.0.1:{echo_port}")).arg(&banner);
            c
        },
        dir.path(),
    );
    echo.wait_stdout_line("ready", Duration::from_secs(10));
    let name = format!("ha-{label}-{}", unique_suffix());
    let mut cfg = NovacConfig::for_server(novas, &name, tags);
    cfg.servers = vec![format!("{}:{}", ns.host_ip, novas.cfg.agent_port)];
    cfg.netns = Some(ns.name.clone());
    let agent = cfg.start(dir, &format!("novac-{label}"));
    Replica {
        name,
        banner,
        agent,
        _echo: echo,
        _ns: ns,
    }
}

struct Attempt {
    start: Instant,
    result: Result<String, String>,
}

/// Two replicas with the same tags share the connections; killing one under
/// traffic fails at most the sessions in flight on it.
#[test]
fn two_replicas_share_load_and_survive_a_kill() {
    require_root();
    let dir = TestDir::new("ha");
    let tags = format!("VPC=ha-{}", unique_suffix());
    let vpc = tags["VPC=".len()..].to_string();
    let echo_port = free_port();
    let res = Resource::tcp(
        "echo",
        &format!("127.0.0.1:{echo_port}"),
        Selector::Tags(vec![("VPC".into(), vpc)]),
    );
    let mut cfg = NovasConfig::new(&dir, "novas", &new_token("ha")).resource(res.clone());
    cfg.bind = "0.0.0.0".into();
    let novas = Novas::start(&dir, "novas", cfg);
    let mut a = replica(&dir, &novas, "a", &tags, echo_port);
    let b = replica(&dir, &novas, "b", &tags, echo_port);
    novas.wait_registered(&a.name, REGISTER);
    novas.wait_registered(&b.name, REGISTER);

    // Twenty sessions held open at once: both replicas serve some.
    let held: Vec<EchoClient> = (0..20)
        .map(|i| {
            EchoClient::connect(&res.addr(), IO).unwrap_or_else(|e| panic!("session {i}: {e}"))
        })
        .collect();
    let seen: std::collections::BTreeSet<&str> = held.iter().map(|c| c.banner.as_str()).collect();
    assert!(
        seen.contains(a.banner.as_str()) && seen.contains(b.banner.as_str()),
        "20 sessions did not spread over both replicas: {seen:?}"
    );
    for (i, mut c) in held.into_iter().enumerate() {
        c.echo(&format!("held-{i}"))
            .expect("echo on a held session");
    }

    // Traffic from four workers; kill replica a in the middle.
    const WORKERS: usize = 4;
    let stop = Arc::new(AtomicBool::new(false));
    let log: Arc<Mutex<Vec<Attempt>>> = Arc::default();
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (stop, log, addr) = (stop.clone(), log.clone(), res.addr());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let start = Instant::now();
                    let result = round_trip(&addr, IO).map_err(|e| e.to_string());
                    log.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Attempt { start, result });
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    a.agent.kill();
    let killed = Instant::now();
    std::thread::sleep(Duration::from_secs(6));
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().expect("worker");
    }

    let log = log.lock().unwrap_or_else(|e| e.into_inner());
    let (before, after): (Vec<&Attempt>, Vec<&Attempt>) =
        log.iter().partition(|at| at.start < killed);
    eprintln!(
        "sessions: {} started before the kill, {} after",
        before.len(),
        after.len()
    );
    let failed_before: Vec<&String> = before
        .iter()
        .filter_map(|at| at.result.as_ref().err())
        .collect();
    assert!(
        failed_before.len() <= WORKERS,
        "{} sessions failed around the kill (at most {WORKERS} were in flight): {failed_before:?}",
        failed_before.len()
    );
    assert!(
        after.len() >= 10,
        "only {} sessions after the kill",
        after.len()
    );
    let failed_after: Vec<&String> = after
        .iter()
        .filter_map(|at| at.result.as_ref().err())
        .collect();
    assert!(
        failed_after.is_empty(),
        "{} of {} sessions started after replica a was dead failed: {failed_after:?}",
        failed_after.len(),
        after.len()
    );
    for at in &after {
        assert_eq!(at.result.as_deref(), Ok(b.banner.as_str()));
    }
    novas.wait_unregistered(&a.name, Duration::from_secs(15));
    assert!(novas.tunnel_names().contains(&b.name));
}
