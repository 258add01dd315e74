//! The console through its router (no sockets): login, the authorisation
//! table on real routes, CSRF, logout, expiry.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    http::{header, Request, StatusCode},
    Router,
};
use tower::ServiceExt;
use tunnel_proto::Secret;

use crate::{
    access::password,
    audit::{self, AuditQuery, EventType},
    registry::Registry,
    sessions::Sessions,
    store::{test_util::sqlite_store, Store, UserRecord},
    web::{router, WebState},
};

const TOKEN: &str = "admin-token-0123456789";
const HOST: &str = "novas.test:8080";
const ORIGIN: &str = "http://novas.test:8080";

struct Fixture {
    router: Router,
    state: Arc<WebState>,
    store: Store,
    _dir: tempfile::TempDir,
}

async fn add_user(store: &Store, name: &str, roles: &[&str], pw: &str, disabled: bool) {
    store
        .upsert_user(&UserRecord {
            name: name.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            password_argon2: password::hash(pw).expect("hash"),
            scram_sha256: String::new(),
            mysql_native: String::new(),
            disabled,
            created_at_ms: 1,
            updated_at_ms: 1,
        })
        .await
        .expect("user");
}

async fn fixture() -> Fixture {
    let (store, dir) = sqlite_store().await;
    add_user(&store, "root", &["admin"], "root-pw", false).await;
    add_user(&store, "dev", &["dev"], "dev-pw", false).await;
    let auditor =
        audit::Auditor::start(store.clone(), audit::AuditorConfig::new("n1", dir.path())).await;
    let state = Arc::new(WebState::new(
        Arc::new(Registry::new("n1".into())),
        Secret::new(TOKEN.into()),
        store.clone(),
        auditor.clone(),
        Arc::new(Sessions::new("n1".into(), auditor)),
        dir.path().join("recordings"),
    ));
    Fixture {
        router: router(state.clone()),
        state,
        store,
        _dir: dir,
    }
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

async fn send(r: &Router, req: Request<Body>) -> Reply {
    let resp = r.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn get(uri: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::get(uri).header(header::HOST, HOST);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::empty()).expect("request")
}

fn login_req(user: &str, pw: &str, origin: Option<&str>) -> Request<Body> {
    let mut b = Request::post("/login")
        .header(header::HOST, HOST)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(o) = origin {
        b = b.header(header::ORIGIN, o);
    }
    b.body(Body::from(format!("user={user}&password={pw}")))
        .expect("request")
}

/// Logs in; returns the `name=value` cookie.
async fn login(r: &Router, user: &str, pw: &str) -> String {
    let reply = send(r, login_req(user, pw, Some(ORIGIN))).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let set = reply
        .headers
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("Set-Cookie")
        .to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    set.split(';').next().expect("pair").to_string()
}

/// The events of `kind` once at least `n` are stored (the auditor writes
/// in the background).
async fn wait_events(store: &Store, kind: EventType, n: usize) -> Vec<audit::AuditEvent> {
    let q = AuditQuery {
        kind: Some(kind),
        ..Default::default()
    };
    for _ in 0..100 {
        let got = store.query_events(&q).await.expect("query");
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("fewer than {n} {kind} events were stored");
}

async fn csrf_of(r: &Router, cookie: &str) -> String {
    let me = send(r, get("/api/me", Some(cookie))).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    let v: serde_json::Value = serde_json::from_str(&me.body).expect("json");
    v["csrf_token"].as_str().expect("token").to_string()
}

#[tokio::test]
async fn authorisation_table_on_real_routes() {
    let f = fixture().await;
    let admin = login(&f.router, "root", "root-pw").await;
    let dev = login(&f.router, "dev", "dev-pw").await;
    let pages = ["/tunnels", "/sessions", "/audit", "/recordings"];
    let apis = [
        "/api/tunnels",
        "/api/tunnels/history",
        "/api/audit",
        "/api/sessions",
        "/api/recordings",
    ];
    for p in pages {
        let anon = send(&f.router, get(p, None)).await;
        assert_eq!(anon.status, StatusCode::SEE_OTHER, "{p}");
        assert_eq!(
            anon.headers
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok()),
            Some("/login")
        );
        let d = send(&f.router, get(p, Some(&dev))).await;
        assert_eq!(d.status, StatusCode::FORBIDDEN, "{p}");
        assert!(d.body.contains("admin"), "{}", d.body);
        let a = send(&f.router, get(p, Some(&admin))).await;
        assert_eq!(a.status, StatusCode::OK, "{p}");
        assert!(a.body.contains("csrf-token"), "{p}");
        let csp = a.headers.get("content-security-policy").expect("CSP");
        assert!(csp
            .to_str()
            .expect("csp")
            .contains("frame-ancestors 'none'"));
        assert_eq!(a.headers.get("x-frame-options").expect("xfo"), "DENY");
    }
    for p in apis {
        let anon = send(&f.router, get(p, None)).await;
        assert_eq!(anon.status, StatusCode::UNAUTHORIZED, "{p}");
        assert!(anon.body.contains("error"), "{p}: JSON error");
        let d = send(&f.router, get(p, Some(&dev))).await;
        assert_eq!(d.status, StatusCode::FORBIDDEN, "{p}");
        assert!(d.body.contains("admin role"), "{}", d.body);
        let a = send(&f.router, get(p, Some(&admin))).await;
        assert_eq!(a.status, StatusCode::OK, "{p}: {}", a.body);
        assert_eq!(
            a.headers.get(header::CACHE_CONTROL).expect("cc"),
            "no-store"
        );
        let mut req = get(p, None);
        req.headers_mut().insert(
            header::AUTHORIZATION,
            format!("Bearer {TOKEN}").parse().expect("header"),
        );
        assert_eq!(
            send(&f.router, req).await.status,
            StatusCode::OK,
            "{p} with token"
        );
        let mut bad = get(p, Some(&admin));
        bad.headers_mut().insert(
            header::AUTHORIZATION,
            "Bearer wrong-token-000000".parse().expect("header"),
        );
        assert_eq!(
            send(&f.router, bad).await.status,
            StatusCode::UNAUTHORIZED,
            "{p}: a wrong token does not fall back to the cookie"
        );
    }
    // Health stays open.
    assert_eq!(
        send(&f.router, get("/healthz", None)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn login_failures_look_alike_are_audited_and_throttled() {
    let f = fixture().await;
    let wrong = send(&f.router, login_req("root", "nope", Some(ORIGIN))).await;
    let unknown = send(&f.router, login_req("ghost", "nope", Some(ORIGIN))).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.headers.get(header::SET_COOKIE).is_none());
    let msg = |b: &str| {
        b.split("login-error")
            .nth(1)
            .and_then(|t| t.split("</p>").next())
            .map(str::to_string)
    };
    assert!(msg(&wrong.body).is_some(), "{}", wrong.body);
    assert_eq!(msg(&wrong.body), msg(&unknown.body), "same words for both");
    let cross = send(
        &f.router,
        login_req("root", "root-pw", Some("http://evil.test")),
    )
    .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN, "login CSRF");
    let none = send(&f.router, login_req("root", "root-pw", None)).await;
    assert_eq!(none.status, StatusCode::FORBIDDEN, "no Origin");

    let failures = wait_events(&f.store, EventType::LoginFailure, 2).await;
    let users: Vec<_> = failures.iter().filter_map(|e| e.user.clone()).collect();
    assert!(
        users.contains(&"root".to_string()) && users.contains(&"ghost".to_string()),
        "{users:?}"
    );

    for _ in 0..crate::console::THROTTLE_MAX_FAILURES {
        send(&f.router, login_req("dev", "bad", Some(ORIGIN))).await;
    }
    let throttled = send(&f.router, login_req("dev", "dev-pw", Some(ORIGIN))).await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn state_changes_need_the_csrf_token_and_origin() {
    let f = fixture().await;
    let admin = login(&f.router, "root", "root-pw").await;
    let token = csrf_of(&f.router, &admin).await;
    let reg = f.state.sessions.open(
        "sess-1",
        "tcp",
        Some("echo"),
        "10.0.0.1:1".parse().expect("addr"),
    );
    let post = |csrf: Option<&str>, origin: Option<&str>| {
        let mut b = Request::post("/api/sessions/sess-1/terminate")
            .header(header::HOST, HOST)
            .header(header::COOKIE, &admin);
        if let Some(t) = csrf {
            b = b.header("x-csrf-token", t);
        }
        if let Some(o) = origin {
            b = b.header(header::ORIGIN, o);
        }
        b.body(Body::empty()).expect("request")
    };
    for (csrf, origin) in [
        (None, Some(ORIGIN)),
        (Some("0".repeat(64).as_str()), Some(ORIGIN)),
        (Some(token.as_str()), None),
        (Some(token.as_str()), Some("http://evil.test")),
    ] {
        let r = send(&f.router, post(csrf, origin)).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{csrf:?} {origin:?}: {}",
            r.body
        );
        assert_eq!(
            f.state.sessions.get("sess-1").map(|v| v.state),
            Some("login".to_string()),
            "not terminated"
        );
    }
    let ok = send(&f.router, post(Some(&token), Some(ORIGIN))).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(
        f.state.sessions.get("sess-1").map(|v| v.state),
        Some("terminating".to_string())
    );
    drop(reg);
    let gone = send(&f.router, post(Some(&token), Some(ORIGIN))).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);

    // Bearer-token callers are not browsers: no CSRF token needed.
    let _reg2 = f
        .state
        .sessions
        .open("sess-2", "tcp", None, "10.0.0.1:2".parse().expect("addr"));
    let req = Request::post("/api/sessions/sess-2/terminate")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .expect("request");
    assert_eq!(send(&f.router, req).await.status, StatusCode::OK);

    let actions = wait_events(&f.store, EventType::AdminChange, 2).await;
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert!(actions
        .iter()
        .any(|e| e.user.as_deref() == Some("root") && e.session_id.as_deref() == Some("sess-1")));

    // Logout needs the token too, then the cookie is worthless.
    let logout = |csrf: &str| {
        Request::post("/logout")
            .header(header::HOST, HOST)
            .header(header::ORIGIN, ORIGIN)
            .header(header::COOKIE, &admin)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("csrf={csrf}")))
            .expect("request")
    };
    assert_eq!(
        send(&f.router, logout("wrong")).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&f.router, get("/api/sessions", Some(&admin)))
            .await
            .status,
        StatusCode::OK
    );
    let out = send(&f.router, logout(&token)).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(out
        .headers
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("Max-Age=0")));
    assert_eq!(
        send(&f.router, get("/api/sessions", Some(&admin)))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn sessions_expire_and_follow_the_user_record() {
    let f = fixture().await;
    let admin = login(&f.router, "root", "root-pw").await;
    assert_eq!(
        send(&f.router, get("/api/me", Some(&admin))).await.status,
        StatusCode::OK
    );
    // Disabling the user ends the session at the next request.
    add_user(&f.store, "root", &["admin"], "root-pw", true).await;
    assert_eq!(
        send(&f.router, get("/api/me", Some(&admin))).await.status,
        StatusCode::UNAUTHORIZED
    );
    // An idle session is refused (and removed).
    add_user(&f.store, "root", &["admin"], "root-pw", false).await;
    let again = login(&f.router, "root", "root-pw").await;
    let id = again.split_once('=').map(|(_, v)| v).expect("value");
    let hash = crate::console::auth::hash_id(id);
    let idle_ms = f.state.console.idle_timeout.as_millis() as i64;
    f.store
        .touch_console_session(&hash, audit::now_ms() - idle_ms - 1_000)
        .await
        .expect("age the session");
    assert_eq!(
        send(&f.router, get("/api/me", Some(&again))).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(f.store.console_session(&hash).await.expect("get").is_none());
}
