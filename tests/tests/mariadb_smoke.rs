//! The throwaway MariaDB works (real `mysql` client, in a namespace), and
//! NOVAS's MySQL protocol layer speaks to real peers: to MariaDB as a
//! client, and to the real `mysql` client (libmariadb) as a server, through
//! a small blocking proxy built on `novas::mysql` the way the glue uses it.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::{Buf, BytesMut};
use nova_e2e::{
    mariadb::{mysql, Mariadb, APP_DB, APP_USER},
    netns::Netns,
    procs::{clean_command, run},
    require_root, TestDir,
};
use novas::mysql::{
    auth::{self, AuthPlugin},
    caps::{self, Capabilities},
    command::com,
    decode_packet,
    handshake::{self, MAX_HANDSHAKE_PACKET},
    packet::{put_packet, DEFAULT_MAX_PACKET},
    ClientAction, CommandPhase, ErrPacket, LoginStep, Packet, ServerAction, ServerConfig,
    ServerHandshake, ServerStep, Summary, Turn, Upstream, UpstreamConfig, UpstreamLogin, Verifiers,
};
use tunnel_proto::Secret;

#[test]
fn mariadb_in_a_namespace_with_the_mysql_client() {
    require_root();
    let dir = TestDir::new("mariadb-ns");
    let ns = Netns::create();
    let db = Mariadb::start(dir.path(), Some(&ns.name));

    let v = db.mysql_local(&["select 40 + 2"]).expect("admin query");
    assert_eq!(v.trim(), "42");
    let anon = db
        .mysql_local(&["select count(*) from mysql.global_priv where User=''"])
        .expect("count anonymous users");
    assert_eq!(anon.trim(), "0");

    let out = mysql(
        Some(&ns.name),
        "127.0.0.1",
        db.port,
        APP_USER,
        &db.app_password,
        Some(APP_DB),
        &[
            "create table t (id int primary key, v text)",
            "insert into t values (1, 'a'), (2, 'b')",
            "select count(*) from t",
        ],
    )
    .expect("app user");
    assert_eq!(out.trim(), "2");
    let wrong = mysql(
        Some(&ns.name),
        "127.0.0.1",
        db.port,
        APP_USER,
        "wrong",
        None,
        &["select 1"],
    );
    assert!(wrong.expect_err("wrong password").contains("1045"));

    // Only reachable inside its network.
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), db.port);
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err());
}

/// A blocking packet reader for the connection phase.
struct Conn {
    s: TcpStream,
    buf: BytesMut,
}

impl Conn {
    fn new(s: TcpStream) -> Self {
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        Self {
            s,
            buf: BytesMut::new(),
        }
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let mut tmp = vec![0u8; 64 * 1024];
        let n = self.s.read(&mut tmp)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(())
    }

    fn packet(&mut self) -> std::io::Result<Packet> {
        loop {
            if let Some(p) = decode_packet(&mut self.buf, MAX_HANDSHAKE_PACKET)
                .map_err(|e| std::io::Error::other(e.to_string()))?
            {
                return Ok(p);
            }
            self.fill()?;
        }
    }
}

/// Logs in to MariaDB as the app user with `client_caps` as if a client
/// had negotiated them with NOVAS.
fn login(db: &Mariadb, client_caps: Capabilities) -> (Conn, Upstream) {
    let mut c = Conn::new(db.connect());
    let mut login = UpstreamLogin::new(UpstreamConfig {
        user: APP_USER.into(),
        password: Secret::new(db.app_password.clone()),
        database: Some(APP_DB.into()),
        tls: false,
        client_capabilities: client_caps,
        charset: handshake::DEFAULT_CHARSET,
        max_packet: 64 << 20,
        attrs: vec![("program_name".into(), "nova-e2e".into())],
    });
    loop {
        let p = c.packet().expect("upstream packet");
        match login.on_packet(&p).expect("login step") {
            LoginStep::Read => {}
            LoginStep::Send(b) => c.s.write_all(&b).expect("write"),
            LoginStep::StartTls(_) => panic!("no TLS asked"),
            LoginStep::Done(up) => return (c, *up),
        }
    }
}

/// Runs one command through a [`CommandPhase`] as the glue would, with
/// `infile` as the client's LOCAL INFILE packets; returns the summary and
/// the number of bytes relayed back.
fn exchange(
    c: &mut Conn,
    phase: &mut CommandPhase,
    payload: &[u8],
    infile: &[u8],
) -> (Summary, usize) {
    let mut cmd = BytesMut::new();
    put_packet(&mut cmd, 0, payload);
    let ClientAction::Command { len, .. } = phase.client_bytes(&cmd).expect("command") else {
        panic!("not a command");
    };
    phase.allow().expect("allow");
    c.s.write_all(&cmd[..len]).expect("write");
    cmd.advance(len);
    let mut infile = BytesMut::from(infile);
    let mut relayed = 0;
    loop {
        match phase.turn() {
            Turn::Client if !cmd.is_empty() => match phase.client_bytes(&cmd).expect("rest") {
                ClientAction::Forward(n) => {
                    c.s.write_all(&cmd[..n]).expect("write");
                    cmd.advance(n);
                }
                other => panic!("unexpected {other:?}"),
            },
            Turn::Client => match phase.client_bytes(&infile).expect("infile") {
                ClientAction::Forward(n) => {
                    c.s.write_all(&infile[..n]).expect("write");
                    infile.advance(n);
                }
                other => panic!("unexpected {other:?}"),
            },
            Turn::Server => match phase.server_bytes(&c.buf).expect("server bytes") {
                ServerAction::NeedMore => c.fill().expect("read upstream"),
                ServerAction::Forward(n) => {
                    relayed += n;
                    c.buf.advance(n);
                }
                ServerAction::Done { forward, summary } => {
                    c.buf.advance(forward);
                    return (summary, relayed + forward);
                }
            },
            other => panic!("unexpected turn {other:?}"),
        }
    }
}

fn q(sql: &str) -> Vec<u8> {
    let mut p = vec![com::QUERY];
    p.extend_from_slice(sql.as_bytes());
    p
}

/// Every answer shape, with and without CLIENT_DEPRECATE_EOF, against the
/// real server: the summaries must match what the server did.
#[test]
fn protocol_layer_against_mariadb() {
    require_root();
    let dir = TestDir::new("mariadb-proto");
    let db = Mariadb::start(dir.path(), None);
    for deprecate in [true, false] {
        let mut client = caps::SERVER_CAPABILITIES;
        if !deprecate {
            client = client - Capabilities::DEPRECATE_EOF;
        }
        let (mut c, up) = login(&db, client);
        assert_eq!(
            up.capabilities.contains(Capabilities::DEPRECATE_EOF),
            deprecate
        );
        assert!(up.greeting.server_version.contains("MariaDB"));
        let mut phase = CommandPhase::new(up.capabilities, DEFAULT_MAX_PACKET);
        let t = if deprecate { "t1" } else { "t2" };
        let mut run = |payload: &[u8]| exchange(&mut c, &mut phase, payload, &[]).0;

        let s = run(&q(&format!(
            "create table {t} (id int auto_increment primary key, v longtext)"
        )));
        assert_eq!((s.results, s.error), (1, None));
        let s = run(&q(&format!(
            "insert into {t} (v) values ('a'), ('b'), ('c')"
        )));
        assert_eq!((s.affected_rows, s.last_insert_id), (3, 1));
        let s = run(&q(&format!("select * from {t}")));
        assert_eq!((s.result_sets, s.rows), (1, 3));
        let s = run(&q(&format!("select * from {t} where id > 100")));
        assert_eq!((s.result_sets, s.rows), (1, 0));

        let s = run(&q(&format!(
            "select 1; select id, v from {t}; update {t} set v = 'z' where id = 1; select * from missing_table"
        )));
        assert_eq!(
            (s.results, s.result_sets, s.rows, s.affected_rows),
            (3, 2, 4, 1)
        );
        assert_eq!(s.error.as_ref().map(|e| e.code), Some(1146));

        // Prepared statements: prepare, execute (binary rows), cursor +
        // fetch, close.
        let mut prep = vec![com::STMT_PREPARE];
        prep.extend_from_slice(format!("select id, v from {t} where id >= ?").as_bytes());
        let s = run(&prep);
        let p = s.prepared.expect("prepared");
        assert_eq!((p.params, p.columns), (1, 2));
        let id = p.stmt_id.to_le_bytes();
        // flags 0, iterations 1, null bitmap, new-params-bound, type LONG, value 2
        let mut exec = vec![com::STMT_EXECUTE];
        exec.extend_from_slice(&id);
        exec.extend_from_slice(&[0, 1, 0, 0, 0, 0, 1, 3, 0, 2, 0, 0, 0]);
        let s = run(&exec);
        assert_eq!((s.result_sets, s.rows, s.error), (1, 2, None));
        let mut cursor = exec.clone();
        cursor[5] = 1; // CURSOR_TYPE_READ_ONLY
        let s = run(&cursor);
        assert_eq!(s.rows, 0);
        assert_ne!(s.status & caps::status::CURSOR_EXISTS, 0);
        let mut fetch = vec![com::STMT_FETCH];
        fetch.extend_from_slice(&id);
        fetch.extend_from_slice(&10u32.to_le_bytes());
        let s = run(&fetch);
        assert_eq!(s.rows, 2);
        let mut reset = vec![com::STMT_RESET];
        reset.extend_from_slice(&id);
        assert_eq!(run(&reset).error, None);
        let mut close = vec![com::STMT_CLOSE];
        close.extend_from_slice(&id);
        let mut pkt = BytesMut::new();
        put_packet(&mut pkt, 0, &close);
        assert!(matches!(
            phase.client_bytes(&pkt).expect("close"),
            ClientAction::Command { .. }
        ));
        phase.allow().expect("allow close");
        c.s.write_all(&pkt).expect("write close");
        let mut run = |payload: &[u8]| exchange(&mut c, &mut phase, payload, &[]).0;
        let mut bad = prep.clone();
        bad.extend_from_slice(b" and nonsense(");
        assert_eq!(run(&bad).error.map(|e| e.code), Some(1064));

        // Simple commands.
        assert_eq!(run(&[com::PING]).results, 1);
        let mut init = vec![com::INIT_DB];
        init.extend_from_slice(APP_DB.as_bytes());
        assert_eq!(run(&init).error, None);
        let mut init_bad = vec![com::INIT_DB];
        init_bad.extend_from_slice(b"no_such_db");
        assert_eq!(run(&init_bad).error.map(|e| e.code), Some(1044));
        let mut fields = vec![com::FIELD_LIST];
        fields.extend_from_slice(t.as_bytes());
        fields.push(0);
        assert_eq!(run(&fields).error, None);
        assert_eq!(run(&[com::STATISTICS]).error, None);
        assert_eq!(run(&[com::SET_OPTION, 0, 0]).error, None);
        assert_eq!(run(&[com::RESET_CONNECTION]).error, None);

        // A 20 MiB value: one row over two fragments, starting with 0xFE.
        let s = run(&q(&format!(
            "insert into {t} (id, v) values (100, repeat('x', 20 * 1024 * 1024))"
        )));
        assert_eq!(s.affected_rows, 1);
        let (s, bytes) = exchange(
            &mut c,
            &mut phase,
            &q(&format!("select v from {t} where id = 100")),
            &[],
        );
        assert_eq!((s.rows, s.error), (1, None));
        assert!(bytes > 20 * 1024 * 1024, "relayed {bytes} bytes");

        // LOAD DATA LOCAL INFILE: the client's turn in the middle.
        let mut data = BytesMut::new();
        let next = put_packet(&mut data, 2, b"200\tfrom-file\n201\tline two\n");
        put_packet(&mut data, next, b"");
        let (s, _) = exchange(
            &mut c,
            &mut phase,
            &q(&format!("load data local infile 'rows.tsv' into table {t}")),
            &data,
        );
        assert_eq!(s.local_infile.as_deref(), Some("rows.tsv"));
        assert_eq!((s.affected_rows, s.error), (2, None));
        let s = exchange(&mut c, &mut phase, &q(&format!("select * from {t}")), &[]).0;
        assert_eq!(s.rows, 6);
    }
}

/// A blocking stand-in for the glue: the `mysql` client logs in to it as
/// a NOVAS user, it logs in to MariaDB with the stored credentials, and it
/// relays commands, refusing any whose SQL mentions `forbidden`.
struct Proxy {
    port: u16,
    log: Arc<Mutex<Vec<(String, Summary)>>>,
}

const NOVA_USER: &str = "alice";
const NOVA_PW: &str = "nova-pw";

impl Proxy {
    fn start(db: &Mariadb, plugin: AuthPlugin, cached: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (upstream, app_pw, l) = (db.socket_addr(), db.app_password.clone(), log.clone());
        std::thread::spawn(move || {
            for (id, client) in listener.incoming().enumerate() {
                let Ok(client) = client else { return };
                let (app_pw, l) = (app_pw.clone(), l.clone());
                std::thread::spawn(move || {
                    let cfg = (id as u32 + 1, plugin, cached);
                    if let Err(e) = serve(client, upstream, &app_pw, cfg, &l) {
                        eprintln!("proxy session: {e}");
                    }
                });
            }
        });
        Self { port, log }
    }
}

fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    app_pw: &str,
    (conn_id, plugin, cached): (u32, AuthPlugin, bool),
    log: &Mutex<Vec<(String, Summary)>>,
) -> anyhow::Result<()> {
    let mut c = Conn::new(client);
    let (mut hs, greeting) = ServerHandshake::new(ServerConfig {
        server_version: handshake::DEFAULT_SERVER_VERSION.into(),
        connection_id: conn_id,
        plugin,
        tls_available: false,
        require_tls: false,
    });
    c.s.write_all(&greeting)?;
    loop {
        let p = c.packet()?;
        let mut step = hs.on_packet(&p);
        loop {
            step = match step {
                ServerStep::Read => break,
                ServerStep::StartTls => anyhow::bail!("no TLS in this test"),
                ServerStep::LookUp { user } => hs.credentials(if user == NOVA_USER {
                    Verifiers {
                        native: Some(auth::native_verifier(NOVA_PW)),
                        sha2_cached: cached.then(|| auth::sha2_verifier(NOVA_PW)),
                    }
                } else {
                    Verifiers::default()
                }),
                ServerStep::Send(b) => {
                    c.s.write_all(&b)?;
                    break;
                }
                ServerStep::CheckPassword { password, .. } => {
                    hs.password_checked(password.expose() == NOVA_PW)
                }
                ServerStep::Failed { packet, error } => {
                    c.s.write_all(&packet)?;
                    anyhow::bail!("login failed: {error}");
                }
                ServerStep::Authenticated => {
                    return relay(c, hs, upstream, app_pw, log);
                }
            }
        }
    }
}

fn relay(
    mut c: Conn,
    mut hs: ServerHandshake,
    upstream: SocketAddr,
    app_pw: &str,
    log: &Mutex<Vec<(String, Summary)>>,
) -> anyhow::Result<()> {
    let resp = hs.response().cloned().expect("response");
    let mut u = Conn::new(TcpStream::connect(upstream)?);
    let mut login = UpstreamLogin::new(UpstreamConfig {
        user: APP_USER.into(),
        password: Secret::new(app_pw.into()),
        database: resp.database.clone(),
        tls: false,
        client_capabilities: hs.capabilities(),
        charset: resp.charset,
        max_packet: resp.max_packet,
        attrs: resp.attrs.clone(),
    });
    let up = loop {
        let p = u.packet()?;
        match login.on_packet(&p) {
            Ok(LoginStep::Read) => {}
            Ok(LoginStep::Send(b)) => u.s.write_all(&b)?,
            Ok(LoginStep::StartTls(_)) => anyhow::bail!("no TLS"),
            Ok(LoginStep::Done(up)) => break up,
            Err(e) => {
                c.s.write_all(&hs.reject(&ErrPacket::upstream_failed(&e.to_string())))?;
                anyhow::bail!("upstream login: {e}");
            }
        }
    };
    c.s.write_all(&hs.accept(up.ok.status))?;
    let mut phase = CommandPhase::new(hs.capabilities(), DEFAULT_MAX_PACKET);
    let mut current = String::new();
    loop {
        match phase.turn() {
            Turn::Closed => return Ok(()),
            Turn::Decide => unreachable!("decided right away"),
            Turn::Client => match phase.client_bytes(&c.buf)? {
                ClientAction::NeedMore => c.fill()?,
                ClientAction::Command { command, len, .. } => {
                    current = command.sql().unwrap_or(command.name()).to_string();
                    let refusal = command.refusal().or_else(|| {
                        current
                            .contains("forbidden")
                            .then(|| ErrPacket::denied_by_policy("SELECT command", "no-forbidden"))
                    });
                    match refusal {
                        Some(err) => phase.refuse(err)?,
                        None => {
                            phase.allow()?;
                            u.s.write_all(&c.buf[..len])?;
                        }
                    }
                    c.buf.advance(len);
                }
                ClientAction::Forward(n) => {
                    u.s.write_all(&c.buf[..n])?;
                    c.buf.advance(n);
                }
                ClientAction::Discard(n) => c.buf.advance(n),
                ClientAction::Reply(b) => c.s.write_all(&b)?,
            },
            Turn::Server => match phase.server_bytes(&u.buf)? {
                ServerAction::NeedMore => u.fill()?,
                ServerAction::Forward(n) => {
                    c.s.write_all(&u.buf[..n])?;
                    u.buf.advance(n);
                }
                ServerAction::Done { forward, summary } => {
                    c.s.write_all(&u.buf[..forward])?;
                    u.buf.advance(forward);
                    log.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((current.clone(), summary));
                }
            },
        }
    }
}

/// `mysql --force` through the proxy: errors do not stop the script
/// (`-e` alone stops at the first error; a sourced file goes on).
fn mysql_via(
    dir: &TestDir,
    port: u16,
    user: &str,
    pw: &str,
    default_auth: Option<&str>,
    script: &str,
) -> (String, String, bool) {
    let mut cmd = clean_command("mysql");
    cmd.env("MYSQL_PWD", pw)
        .arg("--no-defaults")
        .args(["--protocol=TCP", "-h", "127.0.0.1", "-P", &port.to_string()])
        .args([
            "-u",
            user,
            "--connect-timeout=10",
            "--batch",
            "--skip-column-names",
        ])
        .args(["--force", "--ssl=0"]);
    if let Some(p) = default_auth {
        cmd.arg(format!("--default-auth={p}"));
    }
    let file = dir.join(&format!("script-{}.sql", nova_e2e::random_hex(4)));
    std::fs::write(&file, script).expect("write script");
    cmd.arg(APP_DB)
        .arg("-e")
        .arg(format!("source {}", file.display()));
    let out = run(cmd, Duration::from_secs(60));
    (out.stdout, out.stderr, out.status.success())
}

#[test]
fn mysql_client_through_the_protocol_layer() {
    require_root();
    let dir = TestDir::new("mariadb-proxy");
    let db = Mariadb::start(dir.path(), None);
    db.mysql_local(&[
        &format!("create table {APP_DB}.items (id int primary key, v varchar(20))"),
        &format!("insert into {APP_DB}.items values (1, 'one'), (2, 'two'), (3, 'three')"),
    ])
    .expect("seed");

    // mysql_native_password, the client answering for it directly.
    let proxy = Proxy::start(&db, AuthPlugin::Native, false);
    let (out, err, _) = mysql_via(
        &dir,
        proxy.port,
        NOVA_USER,
        NOVA_PW,
        None,
        "select count(*) from items; select 'forbidden'; select v from items where id = 2; \
         prepare s from 'select v from items where id = ?'; set @i = 3; execute s using @i",
    );
    assert!(err.contains("ERROR 1142 (42000)"), "stderr: {err}");
    assert!(err.contains("no-forbidden"), "stderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["3", "two", "three"], "stdout: {out}\nstderr: {err}");
    {
        let log = proxy.log.lock().expect("log");
        let count = log
            .iter()
            .find(|(sql, _)| sql.starts_with("select count(*)"))
            .expect("audited");
        assert_eq!((count.1.rows, count.1.result_sets), (1, 1));
        assert!(log.iter().all(|(sql, _)| !sql.contains("forbidden")));
    }

    // Wrong password and unknown user: access denied, as from a server.
    let (_, err, ok) = mysql_via(&dir, proxy.port, NOVA_USER, "nope", None, "select 1");
    assert!(!ok && err.contains("ERROR 1045 (28000)"), "stderr: {err}");
    let (_, err, ok) = mysql_via(&dir, proxy.port, "mallory", NOVA_PW, None, "select 1");
    assert!(!ok && err.contains("ERROR 1045"), "stderr: {err}");

    // The client answers for caching_sha2_password first: auth switch.
    let (out, err, ok) = mysql_via(
        &dir,
        proxy.port,
        NOVA_USER,
        NOVA_PW,
        Some("caching_sha2_password"),
        "select 7",
    );
    assert!(ok, "stderr: {err}");
    assert_eq!(out.trim(), "7");

    // caching_sha2_password fast path (cache entry present), no TLS.
    let sha2 = Proxy::start(&db, AuthPlugin::CachingSha2, true);
    let (out, err, ok) = mysql_via(&dir, sha2.port, NOVA_USER, NOVA_PW, None, "select 8");
    assert!(ok, "stderr: {err}");
    assert_eq!(out.trim(), "8");
    // Without a cache entry the password is needed in full: over TLS only.
    let cold = Proxy::start(&db, AuthPlugin::CachingSha2, false);
    let (_, err, ok) = mysql_via(&dir, cold.port, NOVA_USER, NOVA_PW, None, "select 9");
    assert!(!ok && err.contains("TLS"), "stderr: {err}");
}
