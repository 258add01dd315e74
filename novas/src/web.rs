//! HTTP: health, readiness and the JSON API (bearer admin token).

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use tunnel_proto::{secret::token_eq, Secret};

use crate::registry::Registry;

pub struct WebState {
    pub registry: Arc<Registry>,
    pub admin_token: Secret,
    /// Set once every listener is bound.
    pub ready: AtomicBool,
}

pub fn router(state: Arc<WebState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/tunnels", get(tunnels))
        .with_state(state)
}

async fn readyz(State(s): State<Arc<WebState>>) -> Response {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
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
