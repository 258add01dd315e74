//! HTTP: health, readiness and the JSON API (bearer admin token).

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    extract::{Query, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use tunnel_proto::{secret::token_eq, Secret};

use crate::{audit, metrics, registry::Registry, store::Store};

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
}

pub fn router(state: Arc<WebState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/tunnels", get(tunnels))
        .route("/api/audit", get(audit_events))
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

async fn tunnels(State(s): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    Json(s.registry.snapshot()).into_response()
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

fn json_error(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

/// `GET /api/audit?user=&resource=&kind=&decision=&since=&until=&session=&q=&limit=`:
/// matching events, newest first.
async fn audit_events(
    State(s): State<Arc<WebState>>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    let q = match audit::query::from_params(&params, audit::now_ms()) {
        Ok(q) => q,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": e.to_string(), "param": e.param}),
            )
        }
    };
    match s.store.query_events(&q).await {
        Ok(events) => Json(events).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "GET /api/audit: store query failed");
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"error": "audit store unavailable"}),
            )
        }
    }
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
        let state = Arc::new(WebState {
            registry: Arc::new(Registry::new("n1".into())),
            admin_token: Secret::new(TOKEN.into()),
            ready: AtomicBool::new(true),
            store: store.clone(),
            auditor: auditor.clone(),
            metrics_public: false,
        });
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
