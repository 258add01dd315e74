//! The SSH front end in memory: a russh client against the real handler
//! over a duplex pipe, with a SQLite store and no agent. Logins, the
//! refusal text a user reads, the audit, and garbage input.

use std::{sync::Arc, time::Duration};

use russh::{client, ChannelMsg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::{
    access::Policies,
    audit::{AuditQuery, Auditor, AuditorConfig, EventType},
    registry::Registry,
    store::test_util::sqlite_store,
    users::Users,
};

const PW: &str = "alice-Pa55word";

struct AnyKey;

impl client::Handler for AnyKey {
    type Error = russh::Error;
    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

async fn front(
    dir: &std::path::Path,
    store: crate::store::Store,
    login_timeout: Duration,
) -> Arc<SshFront> {
    let rec = crate::cli::user::credentials("alice", vec![], PW).expect("hash");
    store.upsert_user(&rec).await.expect("user");
    let y = r#"
resources:
  - name: web
    kind: ssh
    target: "10.9.9.9:22"
    agent: { name: nobody }
    accounts: [{ name: ops, username: ops, password_env: X }]
"#;
    let resources = crate::resources::parse_with(y, "r", &|_| Some("pw".into())).expect("res");
    let policies = Policies::parse(
        "policies: [{name: p, users: [alice], resources: [web]}]",
        "p",
    )
    .expect("p");
    let auditor = Auditor::start(store.clone(), AuditorConfig::new("n", dir.join("spool"))).await;
    let (key, _) = hostkey::load_or_generate(dir).expect("host key");
    Arc::new(SshFront {
        dac: Arc::new(crate::dac::Dac {
            registry: Arc::new(Registry::new("n".into())),
            users: Users::new(store.clone()),
            policies: Arc::new(crate::live_policies::LivePolicies::new(policies, 0)),
            auditor,
        }),
        store,
        resources: resources.into_iter().map(Arc::new).collect(),
        config: Arc::new(server_config(key)),
        recordings: dir.join("recordings"),
        login_timeout,
    })
}

/// One connection served by the real handler; returns the client end.
fn serve_one(front: &Arc<SshFront>) -> (tokio::io::DuplexStream, tokio::task::JoinHandle<()>) {
    let (a, b) = tokio::io::duplex(1 << 16);
    let addr = "127.0.0.1:40000".parse().expect("addr");
    let sessions = Arc::new(crate::sessions::Sessions::new(
        "n".into(),
        front.dac.auditor.clone(),
    ));
    let front = front.clone();
    let task = tokio::spawn(async move {
        let reg = sessions.open("s-1", "ssh", None, addr);
        handle(
            front,
            b,
            addr,
            "s-1".into(),
            reg.live.clone(),
            CancellationToken::new(),
        )
        .await;
    });
    (a, task)
}

#[tokio::test]
async fn password_login_and_a_refusal_the_user_can_read() {
    let (store, dir) = sqlite_store().await;
    // Generous: argon2 in a debug build is slow.
    let front = front(dir.path(), store.clone(), Duration::from_secs(60)).await;

    let (pipe, task) = serve_one(&front);
    let cfg = Arc::new(client::Config::default());
    let mut c = client::connect_stream(cfg.clone(), pipe, AnyKey)
        .await
        .expect("handshake");
    let bad = c
        .authenticate_password("alice%web", "wrong")
        .await
        .expect("auth");
    assert!(!bad.success());
    let ok = c
        .authenticate_password("alice%web", PW)
        .await
        .expect("auth");
    assert!(ok.success());
    let mut ch = c.channel_open_session().await.expect("channel");
    ch.exec(true, "uptime").await.expect("exec");
    let (stderr, status) = outcome(&mut ch).await;
    assert_eq!(status, Some(1));
    assert!(
        stderr.starts_with(
            "novas: cannot reach the target: no connected agent matches resource \"web\""
        ),
        "{stderr:?}"
    );
    drop(ch);
    drop(c);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("connection ends")
        .expect("no panic");

    front.dac.auditor.shutdown(Duration::from_secs(5)).await;
    let events = store
        .query_events(&AuditQuery::default())
        .await
        .expect("query");
    let kinds: Vec<EventType> = events.iter().map(|e| e.event.event_type()).collect();
    assert!(kinds.contains(&EventType::LoginFailure), "{kinds:?}");
    assert!(kinds.contains(&EventType::Command), "{kinds:?}");
    assert!(kinds.contains(&EventType::AccessDenied), "{kinds:?}");
}

#[tokio::test]
async fn garbage_and_stalls_end_the_connection_without_panic() {
    let (store, dir) = sqlite_store().await;
    let front = front(dir.path(), store, Duration::from_secs(2)).await;
    let inputs: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        (0..4096).map(|i| (i * 7 % 256) as u8).collect(),
        b"SSH-2.0-x\r\n\x00\x00\x00\x0c\x0a\x14garbagegarbage".to_vec(),
        b"SSH-2.0-stall\r\n".to_vec(),
        Vec::new(),
    ];
    for input in inputs {
        let (mut pipe, task) = serve_one(&front);
        let _ = pipe.write_all(&input).await;
        // Read whatever comes until the server drops the connection; the
        // login deadline (2 s here) bounds the stalled ones.
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 1024];
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
        assert!(
            drained.is_ok(),
            "not dropped: {:?}",
            String::from_utf8_lossy(&input)
        );
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("connection task ends")
            .expect("no panic");
    }
}

/// Reads what the target channel says until it closes: (stderr, status).
async fn outcome(ch: &mut russh::Channel<client::Msg>) -> (String, Option<u32>) {
    let (mut stderr, mut status) = (String::new(), None);
    while let Some(msg) = ch.wait().await {
        match msg {
            ChannelMsg::ExtendedData { data, ext: 1 } => {
                stderr.push_str(&String::from_utf8_lossy(&data))
            }
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    (stderr, status)
}

/// Fail-closed: with the audit store failing, a logged-in user's command
/// is refused before it goes anywhere, with a message saying why.
#[tokio::test]
async fn audit_down_refuses_commands() {
    let (store, dir) = sqlite_store().await;
    let front = front(dir.path(), store.clone(), Duration::from_secs(60)).await;
    let (pipe, _task) = serve_one(&front);
    let cfg = Arc::new(client::Config::default());
    let mut c = client::connect_stream(cfg, pipe, AnyKey)
        .await
        .expect("handshake");
    assert!(c
        .authenticate_password("alice%web", PW)
        .await
        .expect("auth")
        .success());

    // Break the store behind NOVAS's back; the auditor's idle ping notices.
    let side = sqlx::SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path().join("novas.db")),
    )
    .await
    .expect("side connection");
    sqlx::query("ALTER TABLE audit_events RENAME TO audit_events_hidden")
        .execute(&side)
        .await
        .expect("hide table");
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while front.dac.auditor.is_available() {
        assert!(std::time::Instant::now() < until, "auditor never noticed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ch = c.channel_open_session().await.expect("channel");
    ch.exec(true, "rm -rf /important").await.expect("exec");
    let (stderr, status) = outcome(&mut ch).await;
    assert_eq!(status, Some(1));
    assert!(
        stderr.contains("novas: auditing is unavailable, so the session is refused"),
        "{stderr:?}"
    );
}
