//! Refusals and hostile input: wrong token, wrong server identity, CA trust,
//! garbage on the agent port, and the agent's allowlist.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    sync::Arc,
    time::{Duration, Instant},
};

use nova_e2e::{
    certs,
    echo::{round_trip, EchoServer},
    new_token,
    ports::{free_port, free_port_in},
    procs::{NovacConfig, Novas, NovasConfig, Proc, Resource, Selector, Trust},
    proto::{self, HelloOutcome},
    random_hex, unique_suffix, wait_for, TestDir,
};
use tunnel_proto::{control::RejectCode, transport::Connector};

const REGISTER: Duration = Duration::from_secs(20);
const IO: Duration = Duration::from_secs(10);

fn echo_on_loopback(port: u16, banner: &str) -> EchoServer {
    EchoServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), banner)
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// A wrong token is refused with `bad_token`, logged on both sides, never
/// registered, retried, and no token is ever written to a log.
#[test]
fn wrong_token_is_rejected_and_never_logged() {
    let dir = TestDir::new("badtoken");
    let right = format!("right-token-{}", random_hex(16));
    let wrong = format!("wrong-token-{}", random_hex(16));
    let novas = Novas::start(&dir, "novas", NovasConfig::new(&dir, "novas", &right));
    let mut cfg = NovacConfig::for_server(&novas, &format!("bt-{}", unique_suffix()), "VPC=x");
    cfg.token = wrong.clone();
    let mut agent = cfg.start(&dir, "novac");

    agent.wait_stderr_all(&["rejected by server", "bad_token"], REGISTER);
    // It keeps retrying, with a backoff of at most 1 s here.
    wait_for(Duration::from_secs(15), "a second rejection", || {
        (count(&agent.stderr(), "rejected by server") >= 2).then_some(())
    });
    assert!(agent.is_running(), "novac gave up after a rejection");
    assert!(novas.tunnels().is_empty(), "a rejected agent is registered");

    let server_log = wait_for(
        Duration::from_secs(10),
        "a rejection line in novas's log",
        || {
            let log = novas.proc.stderr();
            let lower = log.to_lowercase();
            (lower.contains("reject") || lower.contains("bad_token") || lower.contains("bad token"))
                .then_some(log)
        },
    );
    for (label, text) in [
        ("novas stderr", server_log),
        ("novas stdout", novas.proc.stdout()),
        ("novac stderr", agent.stderr()),
        ("novac stdout", agent.stdout()),
    ] {
        for (which, tok) in [("right", &right), ("wrong", &wrong)] {
            assert!(
                !text.contains(tok.as_str()),
                "{label} contains the {which} token"
            );
        }
    }
}

/// A server whose certificate is not the pinned one is never trusted.
#[test]
fn wrong_pinned_fingerprint_never_registers() {
    let dir = TestDir::new("badfp");
    let novas = Novas::start(
        &dir,
        "novas",
        NovasConfig::new(&dir, "novas", &new_token("fp")),
    );
    let mut cfg = NovacConfig::for_server(&novas, &format!("fp-{}", unique_suffix()), "");
    let pinned = random_hex(32);
    assert_ne!(pinned, novas.fingerprint);
    cfg.trust = Trust::Fingerprint(pinned);
    let agent = cfg.start(&dir, "novac");
    let mut agent = agent;
    agent.wait_stderr_all(&["does not match the pinned fingerprint"], REGISTER);
    // Give it a few more attempts: still nothing registered.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        novas.tunnels().is_empty(),
        "agent registered despite the pin"
    );
}

/// NOVAS with a CA-signed certificate from files; NOVAC trusting the CA.
#[test]
fn ca_file_trust_registers() {
    let dir = TestDir::new("ca");
    let files = certs::generate(dir.path(), &["127.0.0.1", "localhost"]);
    let cfg = NovasConfig::new(&dir, "novas", &new_token("ca"))
        .env("NOVAS_TLS_CERT", &files.server_cert.to_string_lossy())
        .env("NOVAS_TLS_KEY", &files.server_key.to_string_lossy());
    let novas = Novas::start(&dir, "novas", cfg);
    assert_eq!(
        novas.fingerprint, files.server_fingerprint,
        "printed fingerprint is not that of NOVAS_TLS_CERT"
    );
    assert!(
        !novas.cfg.data_dir.join("tls").join("cert.pem").exists(),
        "a certificate was generated although NOVAS_TLS_CERT is set"
    );

    // By IP address (IP SAN) and by name (DNS SAN).
    let mut agents: Vec<Proc> = Vec::new();
    for (label, host) in [("novac-ip", "127.0.0.1"), ("novac-dns", "localhost")] {
        let name = format!("{label}-{}", unique_suffix());
        let mut cfg = NovacConfig::for_server(&novas, &name, "VPC=ca");
        cfg.servers = vec![format!("{host}:{}", novas.cfg.agent_port)];
        cfg.trust = Trust::CaFile(files.ca_cert.clone());
        agents.push(cfg.start(&dir, label));
        novas.wait_registered(&name, REGISTER);
    }
}

/// Garbage, idle TLS, an oversized frame and a flood of wrong tokens leave
/// the server alive and serving.
#[test]
fn hostile_input_on_agent_port() {
    let dir = TestDir::new("hostile");
    let echo = echo_on_loopback(free_port(), "hostile-target");
    let token = new_token("hostile");
    let name = format!("steady-{}", unique_suffix());
    let res = Resource::tcp("echo", &echo.addr.to_string(), Selector::Name(name.clone()));
    let cfg = NovasConfig::new(&dir, "novas", &token)
        .env("NOVAS_HANDSHAKE_TIMEOUT", "2s")
        .resource(res.clone());
    let mut novas = Novas::start(&dir, "novas", cfg);
    let _agent = NovacConfig::for_server(&novas, &name, "VPC=steady").start(&dir, "novac");
    novas.wait_registered(&name, REGISTER);
    assert_eq!(
        round_trip(&res.addr(), IO).expect("resource before"),
        "hostile-target"
    );
    let agent_addr = novas.agent_addr();

    // (a) Garbage on raw TCP.
    for garbage in [
        (0..4096).map(|_| rand::random::<u8>()).collect::<Vec<u8>>(),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
    ] {
        let mut s = TcpStream::connect(&agent_addr).expect("connect");
        let _ = s.write_all(&garbage);
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        let closed = loop {
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break true,
            }
            if start.elapsed() > Duration::from_secs(6) {
                break false;
            }
        };
        assert!(closed, "garbage connection still open after 6 s");
    }

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let fp = novas.fingerprint.clone();
    rt.block_on(async {
        // (b) TLS completed, then silence: closed by the handshake deadline.
        let tcp = tokio::net::TcpStream::connect(&agent_addr)
            .await
            .expect("connect");
        let server_name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let mut tls = tokio_rustls::TlsConnector::from(proto::pinned_tls(&fp))
            .connect(server_name, tcp)
            .await
            .expect("TLS handshake with novas");
        assert!(
            proto::ends_within(&mut tls, Duration::from_secs(6)).await,
            "idle TLS connection not closed within 6 s (handshake timeout 2 s)"
        );

        // (c) Valid preface, then a frame length of 0xFFFFFFFF.
        let connector = proto::connector(&fp);
        let tunnel = connector.connect(&agent_addr).await.expect("tunnel");
        let mut s = proto::send_frame_header(&tunnel, u32::MAX).await;
        assert!(
            proto::ends_within(&mut s, Duration::from_secs(6)).await,
            "control stream with an oversized frame not closed within 6 s"
        );
        tokio::time::timeout(Duration::from_secs(6), tunnel.opener.closed())
            .await
            .expect("connection with an oversized frame not closed within 6 s");

        // (d) A thousand wrong tokens, twenty at a time.
        let first = proto::hello(&connector, &agent_addr, "wrong-token-first").await;
        assert!(
            matches!(
                &first,
                HelloOutcome::Reject {
                    code: RejectCode::BadToken,
                    ..
                }
            ),
            "a wrong token got {first:?}, not a bad_token reject"
        );
        let connector = Arc::new(connector);
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..20 {
            let connector = connector.clone();
            let addr = agent_addr.clone();
            tasks.spawn(async move {
                let mut outcomes = Vec::new();
                for i in 0..50 {
                    let tok = format!("wrong-{w}-{i}-{}", random_hex(8));
                    let o = tokio::time::timeout(
                        Duration::from_secs(15),
                        proto::hello(&connector, &addr, &tok),
                    )
                    .await;
                    outcomes.push(match o {
                        Ok(o) => o,
                        Err(_) => HelloOutcome::Unexpected("no answer within 15 s".into()),
                    });
                }
                outcomes
            });
        }
        let (mut rejected, mut closed) = (0, 0);
        while let Some(r) = tasks.join_next().await {
            for o in r.expect("worker") {
                match o {
                    HelloOutcome::Reject { .. } => rejected += 1,
                    HelloOutcome::Closed(_) => closed += 1,
                    other => panic!("wrong-token attempt got {other:?}"),
                }
            }
        }
        assert_eq!(rejected + closed, 1000);
        eprintln!("wrong-token flood: {rejected} rejected, {closed} closed");
    });

    assert!(novas.proc.is_running(), "novas exited under hostile input");
    assert_eq!(
        round_trip(&res.addr(), IO).expect("resource after the hostile input"),
        "hostile-target"
    );
    assert!(novas.tunnel_names().contains(&name));
    rt.block_on(async {
        let connector = proto::connector(&fp);
        let o = proto::hello(&connector, &agent_addr, &token).await;
        assert!(
            matches!(o, HelloOutcome::Welcome),
            "a right token after the flood got {o:?}"
        );
    });
    let log = novas.proc.stderr();
    assert!(!log.contains("panicked"), "novas panicked:\n{log}");
}

/// NOVAC_ALLOW refuses targets outside it: the user's connection closes
/// and NOVAS logs why; a target inside works.
#[test]
fn allowlist_refuses_outside_targets() {
    let dir = TestDir::new("allow");
    let inside = echo_on_loopback(free_port_in(600, 999), "inside");
    let outside = echo_on_loopback(free_port(), "outside");
    let name = format!("allow-{}", unique_suffix());
    let sel = Selector::Name(name.clone());
    let ok_res = Resource::tcp("inside", &inside.addr.to_string(), sel.clone());
    let bad_res = Resource::tcp("outside", &outside.addr.to_string(), sel);
    let cfg = NovasConfig::new(&dir, "novas", &new_token("allow"))
        .resource(ok_res.clone())
        .resource(bad_res.clone());
    let mut novas = Novas::start(&dir, "novas", cfg);
    let _agent = NovacConfig::for_server(&novas, &name, "VPC=allow")
        .env("NOVAC_ALLOW", "127.0.0.1/32:1-1000")
        .start(&dir, "novac");
    novas.wait_registered(&name, REGISTER);

    let mut s = TcpStream::connect(bad_res.addr()).expect("connect to the resource port");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = s.write_all(b"hello\n");
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!(
            "refused target answered: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "connection to a refused target still open after 5 s"
        ),
    }
    let line = wait_for(
        Duration::from_secs(10),
        "`agent refused stream` in novas's log",
        || {
            novas
                .proc
                .stderr()
                .lines()
                .find(|l| l.contains("agent refused stream"))
                .map(str::to_string)
        },
    );
    assert!(
        line.contains("allowlist"),
        "refusal line lacks the reason: {line}"
    );

    assert_eq!(
        round_trip(&ok_res.addr(), IO).expect("allowed target"),
        "inside"
    );
    assert!(novas.proc.is_running());
}
