//! The store on a real, throwaway PostgreSQL: several NOVAS opening one
//! shared database at once, audit events of every kind with filters, users,
//! and the auditor writing through to it.

use std::{path::Path, time::Duration};

use nova_e2e::{
    mariadb::{Mariadb, ADMIN_USER, APP_DB},
    postgres::Postgres,
    TestDir,
};
use novas::{
    audit::{AuditEvent, AuditQuery, Auditor, AuditorConfig, Decision, EventKind, EventType},
    store::{HostKeyRecord, Store, StoreError, UserKeyRecord, UserRecord},
};

fn events(t: i64) -> Vec<AuditEvent> {
    let kinds = [
        EventKind::SessionOpen {
            agent: Some("novac-1".into()),
            client_addr: "10.0.0.9:51000".into(),
            account: Some("app_ro".into()),
        },
        EventKind::Statement {
            text: "SELECT * FROM t WHERE note LIKE '100%'".into(),
            kind: "select".into(),
            decision: Decision::Allow,
            policy: "dev-read".into(),
            duration_us: Some(812),
            rows: Some(3),
            error: None,
        },
        EventKind::Statement {
            text: "DROP TABLE t".into(),
            kind: "ddl".into(),
            decision: Decision::Deny,
            policy: "no-ddl".into(),
            duration_us: None,
            rows: None,
            error: Some("denied by policy no-ddl".into()),
        },
        EventKind::SessionClose {
            outcome: "client closed".into(),
            bytes_up: 10,
            bytes_down: u64::MAX,
            duration_ms: 1500,
            exit_status: Some(3),
        },
        EventKind::Command {
            channel: "exec".into(),
            text: "uptime".into(),
            decision: Decision::Allow,
            policy: "ops".into(),
            error: None,
        },
        EventKind::AccessDenied {
            client_addr: "10.0.0.7:50000".into(),
            reason: "host key of web changed".into(),
        },
        EventKind::LoginFailure {
            client_addr: "10.0.0.66:40000".into(),
            reason: "bad password".into(),
        },
    ];
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, k)| {
            let mut ev = AuditEvent::new(k)
                .session("s-1")
                .user("alice")
                .resource("pg", "postgres");
            ev.time_ms = t + i as i64;
            ev.node = "n1".into();
            ev
        })
        .collect()
}

fn user(name: &str, t: i64) -> UserRecord {
    UserRecord {
        name: name.into(),
        roles: vec!["dba".into()],
        password_argon2: "$argon2id$opaque".into(),
        scram_sha256: "SCRAM-SHA-256$opaque".into(),
        mysql_native: "*OPAQUE".into(),
        disabled: false,
        created_at_ms: t,
        updated_at_ms: t,
    }
}

#[test]
fn postgres_store() {
    let dir = TestDir::new("store-pg");
    let pg = Postgres::start(dir.path(), None);
    let url = format!(
        "postgres://postgres:{}@127.0.0.1:{}/postgres",
        pg.password, pg.port
    );
    let wrong = format!(
        "postgres://postgres:wrong-{}@127.0.0.1:{}/postgres",
        pg.password, pg.port
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(exercise(&url, &wrong, "postgres", &pg.password, dir.path()));
}

/// The shared store on MariaDB (what a multi-NOVAS deployment on EC2 uses).
#[test]
fn mariadb_store() {
    let dir = TestDir::new("store-mariadb");
    let db = Mariadb::start(dir.path(), None);
    let url = format!(
        "mysql://{ADMIN_USER}:{}@127.0.0.1:{}/{APP_DB}",
        db.admin_password, db.port
    );
    let wrong = format!(
        "mysql://{ADMIN_USER}:wrong-{}@127.0.0.1:{}/{APP_DB}",
        db.admin_password, db.port
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(exercise(
        &url,
        &wrong,
        "mysql",
        &db.admin_password,
        dir.path(),
    ));
}

/// Everything the store promises, against the database at `url`; `wrong`
/// is the same URL with a wrong password.
async fn exercise(url: &str, wrong: &str, backend: &str, password: &str, dir: &Path) {
    // Several NOVAS starting at once on one fresh database.
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.to_string();
            tokio::spawn(async move { Store::open(&url).await })
        })
        .collect();
    let mut stores = Vec::new();
    for o in opens {
        stores.push(o.await.expect("task").expect("concurrent open"));
    }
    let store = stores.swap_remove(0);
    store.ping().await.expect("ping");
    assert_eq!(store.dialect().name(), backend);
    assert!(!store.url().contains(password));

    let evs = events(1_000);
    store.insert_events(&evs).await.expect("insert");
    store
        .insert_events(&evs)
        .await
        .expect("insert again (ignored)");
    let all = store
        .query_events(&AuditQuery::default())
        .await
        .expect("query");
    let mut newest_first = evs.clone();
    newest_first.reverse();
    assert_eq!(all, newest_first, "every kind round-trips");

    let denied = store
        .query_events(&AuditQuery {
            decision: Some(Decision::Deny),
            user: Some("alice".into()),
            ..Default::default()
        })
        .await
        .expect("query");
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].event.text(), Some("DROP TABLE t"));
    let q = |q: AuditQuery| {
        let store = store.clone();
        async move { store.query_events(&q).await.expect("query").len() }
    };
    assert_eq!(
        q(AuditQuery {
            kind: Some(EventType::Statement),
            since_ms: Some(1_001),
            until_ms: Some(1_002),
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        q(AuditQuery {
            text: Some("like '100%".into()),
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        q(AuditQuery {
            resource: Some("pg".into()),
            session_id: Some("s-1".into()),
            limit: Some(2),
            ..Default::default()
        })
        .await,
        2
    );

    // Users.
    store
        .upsert_user(&user("alice", 5))
        .await
        .expect("insert user");
    let mut changed = user("alice", 9);
    changed.disabled = true;
    store.upsert_user(&changed).await.expect("update user");
    let got = store.get_user("alice").await.expect("get").expect("exists");
    assert!(got.disabled);
    assert_eq!((got.created_at_ms, got.updated_at_ms), (5, 9));
    store.upsert_user(&user("bob", 1)).await.expect("bob");
    assert_eq!(store.list_users().await.expect("list").len(), 2);
    assert!(store.delete_user("bob").await.expect("delete"));
    assert!(!store.delete_user("bob").await.expect("delete twice"));

    // SSH user keys and pinned host keys (schema version 2).
    let key = UserKeyRecord {
        user: "alice".into(),
        fingerprint: "SHA256:k1".into(),
        public_key: "ssh-ed25519 AAAA alice".into(),
        added_at_ms: 3,
    };
    store.add_user_key(&key).await.expect("add key");
    assert!(store.add_user_key(&key).await.is_err(), "same key twice");
    assert_eq!(store.user_keys("alice").await.expect("keys"), vec![key]);
    assert!(store.user_keys("ALICE").await.expect("keys").is_empty());
    assert!(store
        .remove_user_key("alice", "SHA256:k1")
        .await
        .expect("remove"));
    let pin = HostKeyRecord {
        resource: "web".into(),
        target: "10.0.2.7:22".into(),
        fingerprint: "SHA256:h1".into(),
        public_key: "ssh-ed25519 BBBB".into(),
        first_seen_ms: 4,
    };
    store.pin_host_key(&pin).await.expect("pin");
    assert!(store.pin_host_key(&pin).await.is_err(), "pinned once");
    assert_eq!(store.host_key("web").await.expect("get"), Some(pin));
    assert!(store.forget_host_key("web").await.expect("forget"));
    assert_eq!(store.host_keys().await.expect("list"), vec![]);

    // The auditor writes through to PostgreSQL.
    let auditor = Auditor::start(store.clone(), AuditorConfig::new("n2", dir.join("spool"))).await;
    for i in 0..1_000 {
        let mut ev = events(10_000 + i * 10).swap_remove(1);
        ev.node.clear();
        auditor.record(ev).expect("accepted");
    }
    let report = auditor.shutdown(Duration::from_secs(30)).await;
    assert_eq!((report.written, report.spooled, report.lost), (1_000, 0, 0));
    let by_n2 = store
        .query_events(&AuditQuery {
            since_ms: Some(10_000),
            limit: Some(1_000),
            ..Default::default()
        })
        .await
        .expect("query");
    assert_eq!(by_n2.len(), 1_000);
    assert!(by_n2.iter().all(|e| e.node == "n2"));

    // A wrong password fails clearly, without echoing it.
    let e = Store::open(wrong).await.expect_err("wrong password");
    let msg = e.to_string();
    assert!(matches!(e, StoreError::Connect { .. }), "{msg}");
    assert!(!msg.contains(password), "{msg}");
    store.close().await;
}
