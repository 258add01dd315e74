//! HTTP: health, readiness, metrics, and the web console with its JSON API
//! ([`crate::console`]).

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, State},
    http::{header, Extensions, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use tunnel_proto::{secret::token_eq, Secret};

use crate::{
    audit,
    console::{auth::LoginThrottle, ConsoleConfig},
    metrics,
    registry::Registry,
    sessions::Sessions,
    store::Store,
    users::Users,
};

/// Bound on the store check behind `/readyz`.
const READY_PING_TIMEOUT: Duration = Duration::from_secs(2);

pub struct WebState {
    pub registry: Arc<Registry>,
    pub admin_token: Secret,
    /// Set once every listener is bound.
    pub ready: AtomicBool,
    pub store: Store,
    pub auditor: audit::Auditor,
    /// `/metrics` without the admin token (NOVAS_METRICS_PUBLIC).
    pub metrics_public: bool,
    /// Live sessions of this node (the console's Sessions page).
    pub sessions: Arc<Sessions>,
    /// Console logins.
    pub users: Users,
    /// SSH recordings (`<data dir>/recordings`).
    pub recordings: std::path::PathBuf,
    pub console: ConsoleConfig,
    pub login_throttle: LoginThrottle,
}

impl WebState {
    /// The state for `run()` and tests: what is not given is the default.
    pub fn new(
        registry: Arc<Registry>,
        admin_token: Secret,
        store: Store,
        auditor: audit::Auditor,
        sessions: Arc<Sessions>,
        recordings: std::path::PathBuf,
    ) -> Self {
        Self {
            registry,
            admin_token,
            ready: AtomicBool::new(false),
            users: Users::new(store.clone()),
            store,
            auditor,
            metrics_public: false,
            sessions,
            recordings,
            console: ConsoleConfig::default(),
            login_throttle: LoginThrottle::new(
                crate::console::THROTTLE_WINDOW,
                crate::console::THROTTLE_MAX_FAILURES,
                crate::console::THROTTLE_MAX_FAILURES_PER_ADDR,
            ),
        }
    }
}

/// The client's `ip:port`, when the server recorded it (`-` otherwise).
pub fn client_addr(ext: &Extensions) -> String {
    ext.get::<ConnectInfo<std::net::SocketAddr>>()
        .map_or_else(|| "-".to_string(), |c| c.0.to_string())
}

pub fn router(state: Arc<WebState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .merge(crate::console::routes())
        .layer(axum::middleware::map_response(
            crate::console::secure_headers,
        ))
        .with_state(state)
}

async fn readyz(State(s): State<Arc<WebState>>) -> Response {
    if !s.ready.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response();
    }
    match tokio::time::timeout(READY_PING_TIMEOUT, s.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "readyz: store unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response(),
    }
}

fn authorized(s: &WebState, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| token_eq(&Secret::new(t.trim().to_string()), &s.admin_token))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(serde_json::json!({"error": "missing or invalid admin token (Authorization: Bearer …)"})),
    )
        .into_response()
}

/// `GET /metrics`: Prometheus text format. Behind the admin token unless
/// NOVAS_METRICS_PUBLIC, since agent names and tags map the private
/// networks behind them.
async fn metrics_text(State(s): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    if !s.metrics_public && !authorized(&s, &headers) {
        return unauthorized();
    }
    let agents = s.registry.snapshot();
    let text = metrics::render(
        &metrics::METRICS,
        &metrics::ScrapeInput {
            node: s.registry.node(),
            agents: &agents,
            audit: s.auditor.stats(),
        },
    );
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt;

    use super::*;
    use crate::store::test_util::{sample_events, sqlite_store};

    const TOKEN: &str = "admin-token-0123456789";

    async fn call(
        router: Router,
        uri: &str,
        token: Option<&str>,
    ) -> (StatusCode, serde_json::Value) {
        let mut req = axum::http::Request::get(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let resp = router
            .oneshot(req.body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    #[tokio::test]
    async fn audit_api_filters_and_errors() {
        let (store, dir) = sqlite_store().await;
        store
            .insert_events(&sample_events(audit::now_ms() - 1_000))
            .await
            .expect("insert");
        let auditor =
            audit::Auditor::start(store.clone(), audit::AuditorConfig::new("n1", dir.path())).await;
        let state = WebState::new(
            Arc::new(Registry::new("n1".into())),
            Secret::new(TOKEN.into()),
            store.clone(),
            auditor.clone(),
            Arc::new(Sessions::new("n1".into(), auditor.clone())),
            dir.path().join("recordings"),
        );
        state.ready.store(true, Ordering::Relaxed);
        let state = Arc::new(state);
        let r = router(state);

        let (st, _) = call(r.clone(), "/api/audit", None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        let (st, all) = call(r.clone(), "/api/audit", Some(TOKEN)).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(all.as_array().map(Vec::len), Some(5));
        let (st, denied) = call(
            r.clone(),
            "/api/audit?decision=deny&user=alice&since=1h&kind=statement&q=drop%20table",
            Some(TOKEN),
        )
        .await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(denied.as_array().map(Vec::len), Some(1));
        assert_eq!(denied[0]["event"]["type"], "statement");
        assert_eq!(denied[0]["event"]["policy"], "no-ddl");
        let (st, err) = call(r.clone(), "/api/audit?since=tomorrowish", Some(TOKEN)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert_eq!(err["param"], "since");
        let (st, _) = call(r.clone(), "/readyz", None).await;
        assert_eq!(st, StatusCode::OK);
        let (st, _) = call(r.clone(), "/metrics", None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "/metrics needs the token");
        let (st, _) = call(r.clone(), "/metrics", Some(TOKEN)).await;
        assert_eq!(st, StatusCode::OK);

        store.close().await;
        let (st, _) = call(r.clone(), "/readyz", None).await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
        let (st, err) = call(r, "/api/audit", Some(TOKEN)).await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err["error"], "audit store unavailable");
        auditor.shutdown(Duration::from_secs(1)).await;
    }
}
