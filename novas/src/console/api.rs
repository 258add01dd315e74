//! The JSON API behind the console pages (docs/openapi.yaml). Every route
//! takes the bearer admin token or an admin's console session; the one
//! state-changing route also wants the session's CSRF token.

use std::sync::Arc;

use axum::{
    extract::{Path, Query, State},
    http::{header, Extensions, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::Serialize;
use tunnel_proto::Tags;

use super::{auth::Surface, check_csrf, history, require_admin};
use crate::{
    audit::{self, AuditEvent, AuditQuery, EventKind, EventType},
    sessions::TerminateError,
    ssh::recording,
    web::{client_addr, WebState},
};

/// Events read for the past-sessions and tunnel-history views.
const HISTORY_LIMIT: u32 = 200;

pub fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/api/me", get(me))
        .route("/api/tunnels", get(tunnels))
        .route("/api/tunnels/history", get(tunnel_history))
        .route("/api/audit", get(audit_events))
        .route("/api/sessions", get(sessions))
        .route("/api/sessions/{id}/terminate", post(terminate))
        .route("/api/recordings", get(recordings))
        .route("/api/recordings/{id}", get(recording_file))
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": msg.into() }))).into_response()
}

fn store_down(what: &str, e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "{what}: store query failed");
    error(StatusCode::SERVICE_UNAVAILABLE, "audit store unavailable")
}

/// `GET /api/me`: who the console session (or token) is. Any logged-in
/// user may ask; the pages use it for the user name and the CSRF token.
async fn me(State(s): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    match super::resolve(&s, &headers).await {
        Ok(Some(p)) => Json(serde_json::json!({
            "user": p.user,
            "roles": p.roles,
            "admin": p.is_admin(),
            "csrf_token": p.csrf(),
            "node": s.registry.node(),
        }))
        .into_response(),
        Ok(None) => super::refusal(super::auth::Verdict::Unauthorized, Surface::Api),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable"),
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TunnelFilter {
    /// `K=V;K=V`: agents having every one of these tags.
    tag: Option<String>,
}

/// `GET /api/tunnels[?tag=K=V;K=V]`: the agents connected to this node.
async fn tunnels(
    State(s): State<Arc<WebState>>,
    headers: HeaderMap,
    filter: Result<Query<TunnelFilter>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(r) = require_admin(&s, &headers, Surface::Api).await {
        return r;
    }
    let Ok(Query(filter)) = filter else {
        return error(StatusCode::BAD_REQUEST, "unknown query parameter (tag)");
    };
    let mut agents = s.registry.snapshot();
    if let Some(t) = filter.tag.as_deref().filter(|t| !t.trim().is_empty()) {
        let wanted: Tags = match t.parse() {
            Ok(w) => w,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("tag: {e} (expected Key=Value;Key=Value)"),
                )
            }
        };
        agents.retain(|a| wanted.0.iter().all(|(k, v)| a.tags.get(k) == Some(v)));
    }
    Json(agents).into_response()
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryFilter {
    agent: Option<String>,
}

/// `GET /api/tunnels/history[?agent=NAME]`: agent connects and
/// disconnects seen by every node on the store, newest first.
async fn tunnel_history(
    State(s): State<Arc<WebState>>,
    headers: HeaderMap,
    filter: Result<Query<HistoryFilter>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(r) = require_admin(&s, &headers, Surface::Api).await {
        return r;
    }
    let Ok(Query(filter)) = filter else {
        return error(StatusCode::BAD_REQUEST, "unknown query parameter (agent)");
    };
    let mut lists = Vec::new();
    for kind in [EventType::AgentConnect, EventType::AgentDisconnect] {
        let q = AuditQuery {
            kind: Some(kind),
            limit: Some(HISTORY_LIMIT),
            ..Default::default()
        };
        match s.store.query_events(&q).await {
            Ok(v) => lists.push(v),
            Err(e) => return store_down("GET /api/tunnels/history", e),
        }
    }
    let mut events = history::merge_newest_first(lists, HISTORY_LIMIT as usize);
    if let Some(name) = filter.agent.as_deref().filter(|n| !n.is_empty()) {
        events.retain(|e| match &e.event {
            EventKind::AgentConnect { agent, .. } | EventKind::AgentDisconnect { agent, .. } => {
                agent == name
            }
            _ => false,
        });
    }
    Json(events).into_response()
}

/// `GET /api/audit?user=&resource=&kind=&decision=&since=&until=&session=&q=&limit=`:
/// matching events, newest first.
async fn audit_events(
    State(s): State<Arc<WebState>>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    if let Err(r) = require_admin(&s, &headers, Surface::Api).await {
        return r;
    }
    let q = match audit::query::from_params(&params, audit::now_ms()) {
        Ok(q) => q,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({"error": e.to_string(), "param": e.param})),
            )
                .into_response()
        }
    };
    match s.store.query_events(&q).await {
        Ok(events) => Json(events).into_response(),
        Err(e) => store_down("GET /api/audit", e),
    }
}

#[derive(Serialize)]
struct SessionsView {
    /// Live sessions on this node.
    active: Vec<crate::sessions::LiveView>,
    /// Ended sessions on every node (from the audit trail), newest first.
    past: Vec<history::PastSession>,
}

/// `GET /api/sessions`: live sessions of this node and recent past ones.
async fn sessions(State(s): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    if let Err(r) = require_admin(&s, &headers, Surface::Api).await {
        return r;
    }
    let read = |kind| {
        let q = AuditQuery {
            kind: Some(kind),
            limit: Some(HISTORY_LIMIT),
            ..Default::default()
        };
        let store = s.store.clone();
        async move { store.query_events(&q).await }
    };
    let (opens, closes) = match (
        read(EventType::SessionOpen).await,
        read(EventType::SessionClose).await,
    ) {
        (Ok(o), Ok(c)) => (o, c),
        (Err(e), _) | (_, Err(e)) => return store_down("GET /api/sessions", e),
    };
    Json(SessionsView {
        active: s.sessions.list(),
        past: history::past_sessions(&opens, &closes),
    })
    .into_response()
}

/// `POST /api/sessions/{id}/terminate`: ends a live session of this node.
/// Audited as an `admin_change` with the administrator as its user.
async fn terminate(
    State(s): State<Arc<WebState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ext: Extensions,
) -> Response {
    let who = match require_admin(&s, &headers, Surface::Api).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    if let Err(r) = check_csrf(&who, &headers, None) {
        return r.into_response();
    }
    match s.sessions.terminate(&id, &who.user) {
        Ok(view) => {
            let mut ev = AuditEvent::new(EventKind::AdminChange {
                action: "terminate_session".into(),
                object: format!("session {id}"),
                detail: format!("from {}", client_addr(&ext)),
            })
            .user(&who.user)
            .session(&id);
            if let Some(r) = &view.resource {
                ev = ev.resource(r, &view.kind);
            }
            if let Err(e) = s.auditor.record(ev) {
                tracing::error!(error = %e, "audit event not recorded");
            }
            Json(view).into_response()
        }
        Err(e @ TerminateError::NotFound(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
    }
}

/// `GET /api/recordings`: this node's SSH recordings, newest first.
async fn recordings(State(s): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    if let Err(r) = require_admin(&s, &headers, Surface::Api).await {
        return r;
    }
    let dir = s.recordings.clone();
    match tokio::task::spawn_blocking(move || recording::list(&dir)).await {
        Ok(Ok(mut rows)) => {
            rows.reverse();
            Json(rows).into_response()
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot list recordings");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the recordings directory",
            )
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "listing failed"),
    }
}

/// `GET /api/recordings/{id}`: one recording, asciicast v2 as stored.
async fn recording_file(
    State(s): State<Arc<WebState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = require_admin(&s, &headers, Surface::Api).await {
        return r;
    }
    let Some(path) = recording::path_of(&s.recordings, &id) else {
        return error(StatusCode::BAD_REQUEST, "not a recording id");
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => (
            [(
                header::CONTENT_TYPE,
                "application/x-asciicast; charset=utf-8",
            )],
            bytes,
        )
            .into_response(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            error(StatusCode::NOT_FOUND, "no such recording")
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a recording");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the recording",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    /// docs/openapi.yaml documents exactly the routes served here and in
    /// pages.rs (login, logout).
    #[test]
    fn openapi_lists_every_route() {
        let doc: serde_yaml::Value =
            serde_yaml::from_str(include_str!("../../../docs/openapi.yaml")).expect("yaml");
        let mut documented: Vec<String> = doc["paths"]
            .as_mapping()
            .expect("paths")
            .keys()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect();
        documented.sort();
        let mut served = vec![
            "/api/me",
            "/api/tunnels",
            "/api/tunnels/history",
            "/api/audit",
            "/api/sessions",
            "/api/sessions/{id}/terminate",
            "/api/recordings",
            "/api/recordings/{id}",
            "/login",
            "/logout",
        ];
        served.sort();
        assert_eq!(documented, served);
        // The router really has the API ones (a 404 would be a typo).
        let source = include_str!("api.rs");
        for p in served.iter().filter(|p| p.starts_with("/api/")) {
            assert!(
                source.contains(&format!(".route(\"{p}\"")),
                "{p} not routed"
            );
        }
    }
}
