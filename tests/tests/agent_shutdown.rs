//! SIGTERM on the agent: it stops taking new sessions at once, lets the
//! active ones finish within NOVAC_SHUTDOWN_GRACE, then exits cleanly.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use nova_e2e::{
    echo::{EchoClient, EchoServer},
    new_token,
    ports::free_port,
    procs::{NovacConfig, Novas, NovasConfig, Resource, Selector},
    unique_suffix, TestDir,
};

const IO: Duration = Duration::from_secs(10);

#[test]
fn sigterm_drains_active_sessions_then_exits() {
    let dir = TestDir::new("drain");
    let target = EchoServer::start(
        SocketAddr::from((Ipv4Addr::LOCALHOST, free_port())),
        "drain",
    );
    let name = format!("drain-{}", unique_suffix());
    let res = Resource::tcp(
        "echo",
        &target.addr.to_string(),
        Selector::Name(name.clone()),
    );
    let cfg = NovasConfig::new(&dir, "novas", &new_token("drain")).resource(res.clone());
    let novas = Novas::start(&dir, "novas", cfg);
    let mut agent = NovacConfig::for_server(&novas, &name, "Role=drain")
        .env("NOVAC_SHUTDOWN_GRACE", "20s")
        .start(&dir, "novac");
    novas.wait_registered(&name, Duration::from_secs(20));

    let mut session = EchoClient::connect(&res.addr(), IO).expect("session through the tunnel");
    session.echo("before").expect("echo before SIGTERM");

    let status = std::process::Command::new("kill")
        .args(["-TERM", &agent.pid().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(status.success());

    // The agent leaves the registry promptly: no new sessions go to it.
    novas.wait_unregistered(&name, Duration::from_secs(10));
    // The active session keeps working during the grace period.
    session
        .echo("during drain")
        .expect("active session survives SIGTERM");
    assert!(
        agent.is_running(),
        "agent exited while a session was active"
    );

    // When the last session ends, the agent exits without waiting out the grace.
    drop(session);
    let exit = agent
        .wait_exit(Duration::from_secs(15))
        .expect("agent exits once its sessions are done");
    assert!(exit.success(), "agent exit status after SIGTERM: {exit:?}");
    assert!(
        agent.stderr().contains("letting sessions finish"),
        "{}",
        agent.stderr_tail(20)
    );
}
