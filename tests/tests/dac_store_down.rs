//! Fail-closed auditing, end to end, with a real client library:
//! tokio-postgres (extended protocol: Parse once, Bind/Execute many) works
//! through NOVAS on a PostgreSQL in a private namespace, and NOVAS's store is
//! a throwaway MariaDB that dies in the middle of the session.
//!
//! - While the store is down, running again a statement prepared before is
//!   refused with SQLSTATE 58000 naming the audit, and so is a new query;
//!   the session stays open.
//! - NOVAS stopped cleanly spools what it accepted and could not store.
//! - With the store back, the next start writes the spool: the store then
//!   holds exactly one event per Execute the client sent, allowed or
//!   refused.

use std::time::{Duration, Instant};

use nova_e2e::{
    mariadb::{Mariadb, ADMIN_USER},
    netns::Netns,
    new_token,
    postgres::Postgres,
    procs::{Account, NovacConfig, Novas, NovasConfig, Resource, Selector},
    random_hex, require_program, require_root, unique_suffix, wait_for, TestDir,
};
use serde_json::Value;
use tokio_postgres::{error::SqlState, NoTls};

const DB: &str = "appdb";
const ALICE_PW: &str = "alice-Store-Pa55";
const STORE_DB: &str = "novas_store";

const POLICIES: &str = r#"
policies:
  - name: owners
    users: [alice]
    resources: [pg]
"#;

#[test]
fn store_failure_refuses_prepared_statements_keeps_the_session_and_loses_no_event() {
    require_root();
    require_program("psql");
    let dir = TestDir::new("dac-store-down");
    let ns = Netns::create();
    let pg = Postgres::start(dir.path(), Some(&ns.name));
    let app_password = format!("app-{}", random_hex(8));
    pg.psql_local(&[&format!("create role app login password '{app_password}'")])
        .expect("create role");
    pg.psql_local(&[&format!("create database {DB} owner app")])
        .expect("create database");
    let mut store = Mariadb::start(dir.path(), None);
    store
        .mysql_local(&[&format!("CREATE DATABASE {STORE_DB}")])
        .expect("create the store database");
    let store_url = format!(
        "mysql://{ADMIN_USER}:{}@127.0.0.1:{}/{STORE_DB}",
        store.admin_password, store.port
    );

    let vpc = format!("vpc-{}", unique_suffix());
    let mut res = Resource::database(
        "postgres",
        "pg",
        &format!("127.0.0.1:{}", pg.port),
        Selector::Tags(vec![("VPC".into(), vpc.clone())]),
        Account {
            name: "app".into(),
            username: "app".into(),
            password_env: "PG_APP_PASSWORD".into(),
            password: app_password,
        },
    );
    res.database = Some(DB.into());
    let port = res.listen;
    let mut cfg = NovasConfig::new(&dir, "novas", &new_token("agent"))
        .resource(res)
        .policies(POLICIES)
        .user("alice", &[], ALICE_PW)
        .env("NOVAS_STORE_URL", &store_url);
    cfg.bind = "0.0.0.0".into();
    let mut novas = Novas::start(&dir, "novas", cfg);
    let name = format!("store-agent-{}", unique_suffix());
    let mut agent = NovacConfig::for_server(&novas, &name, &format!("VPC={vpc}"));
    agent.servers = vec![format!("{}:{}", ns.host_ip, novas.cfg.agent_port)];
    agent.netns = Some(ns.name.clone());
    let _agent = agent.start(&dir, "novac");
    novas.wait_registered(&name, Duration::from_secs(20));

    let marker = format!("m_{}", random_hex(6));
    let sql = format!("select $1::int + 1 as {marker}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let executes = rt.block_on(async {
        let conn_str =
            format!("host=127.0.0.1 port={port} user=alice password={ALICE_PW} dbname={DB}");
        let (client, conn) = tokio_postgres::connect(&conn_str, NoTls)
            .await
            .expect("tokio-postgres logs in to NOVAS");
        let conn = tokio::spawn(conn);
        let stmt = client.prepare(&sql).await.expect("prepare");
        let row = client.query_one(&stmt, &[&41i32]).await.expect("execute");
        assert_eq!(row.get::<_, i32>(0), 42);
        let mut executes = 1;

        store.stop();
        // Until NOVAS notices (its next write fails), executions still
        // pass and their events wait in its queue.
        let deadline = Instant::now() + Duration::from_secs(60);
        let refusal = loop {
            executes += 1;
            match client.query_one(&stmt, &[&1i32]).await {
                Ok(row) => assert_eq!(row.get::<_, i32>(0), 2),
                Err(e) => break e,
            }
            assert!(
                Instant::now() < deadline,
                "NOVAS kept running statements 60 s after its store died"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let db = refusal.as_db_error().unwrap_or_else(|| {
            panic!("the refusal is an ErrorResponse, not a broken session: {refusal:?}")
        });
        assert_eq!(db.code(), &SqlState::from_code("58000"), "{db:?}");
        assert!(db.message().contains("audit"), "{}", db.message());
        assert!(!client.is_closed(), "the session survives the refusal");

        // Again, and a new query: refused too, the session still open.
        executes += 1;
        let again = client
            .query_one(&stmt, &[&2i32])
            .await
            .expect_err("refused");
        assert_eq!(again.code(), Some(&SqlState::from_code("58000")));
        let simple = client.simple_query("select 1").await.expect_err("refused");
        assert_eq!(simple.code(), Some(&SqlState::from_code("58000")));
        assert!(!client.is_closed(), "the session survives every refusal");
        drop(client);
        let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
        executes
    });

    // A clean stop spools what the store did not take.
    let st = std::process::Command::new("kill")
        .args(["-TERM", &novas.proc.pid().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(st.success());
    let exit = novas
        .proc
        .wait_exit(Duration::from_secs(30))
        .expect("novas exits after SIGTERM");
    assert!(exit.success(), "novas exit: {exit}");
    let spool = novas.cfg.data_dir.join("audit-spool.jsonl");
    let spooled =
        std::fs::read_to_string(&spool).unwrap_or_else(|e| panic!("{}: {e}", spool.display()));
    assert!(spooled.contains(&marker), "the spool holds the refusals");

    // The store comes back; the next start writes the spool.
    store.restart();
    let mut cfg = novas.cfg.clone();
    cfg.users.clear();
    let novas = Novas::start(&dir, "novas-again", cfg);
    let events = wait_for(Duration::from_secs(30), "the spool in the store", || {
        let ev = novas.api_audit(&format!("kind=statement&q={marker}&limit=1000"));
        (ev.len() >= executes).then_some(ev)
    });
    assert_eq!(
        events.len(),
        executes,
        "one event per Execute sent: {events:#?}"
    );
    let denied = events.iter().filter(|e| e["event"]["decision"] == "deny");
    let denied: Vec<&Value> = denied.collect();
    assert_eq!(denied.len(), 2, "two Executes were refused: {events:#?}");
    for d in &denied {
        let err = d["event"]["error"].as_str().unwrap_or_default();
        assert!(err.contains("audit"), "{d}");
    }
    assert!(
        !spool.exists(),
        "the spool is removed once it is in the store"
    );
}
