//! The console's HTML: the login form, logout, and one shell per admin
//! page that the embedded script (`assets/console.js`) fills from the API.
//! Everything is rendered here or embedded with `include_str!`: no CDN, no
//! build step.

use std::{sync::Arc, time::Instant};

use tracing::Instrument;

use axum::{
    extract::{rejection::FormRejection, State},
    http::{header, Extensions, HeaderMap, StatusCode},
    response::{Html, IntoResponse, Redirect, Response},
    routing::get,
    Form, Router,
};

use super::{
    auth::{self, Principal, Surface},
    csrf, require_admin, resolve, secure,
};
use crate::{
    audit::{now_ms, AuditEvent, EventKind},
    store::ConsoleSessionRecord,
    users::LoginError,
    web::{client_addr, WebState},
};

const JS: &str = include_str!("assets/console.js");
const CSS: &str = include_str!("assets/console.css");
/// Longest user name or password accepted from the form.
const MAX_FIELD: usize = 1024;

pub fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/tunnels") }))
        .route("/login", get(login_page).post(login))
        .route("/logout", axum::routing::post(logout))
        .route("/tunnels", get(|s, h| page(s, h, Page::Tunnels)))
        .route("/sessions", get(|s, h| page(s, h, Page::Sessions)))
        .route("/audit", get(|s, h| page(s, h, Page::Audit)))
        .route("/recordings", get(|s, h| page(s, h, Page::Recordings)))
        .route(
            "/assets/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
        .route(
            "/assets/console.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
        // Browsers ask for it on their own; no icon, and no 404 noise.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Minimal HTML escaping for text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn head(title: &str, csrf: Option<&str>) -> String {
    let meta = csrf
        .map(|t| format!(r#"<meta name="csrf-token" content="{}">"#, esc(t)))
        .unwrap_or_default();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>NOVAS · {}</title>{meta}
<link rel="stylesheet" href="/assets/console.css">
<script src="/assets/console.js" defer></script>
</head>"#,
        esc(title)
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Page {
    Tunnels,
    Sessions,
    Audit,
    Recordings,
}

impl Page {
    const ALL: [Page; 4] = [Page::Tunnels, Page::Sessions, Page::Audit, Page::Recordings];

    fn name(self) -> &'static str {
        match self {
            Page::Tunnels => "tunnels",
            Page::Sessions => "sessions",
            Page::Audit => "audit",
            Page::Recordings => "recordings",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Page::Tunnels => "Reverse Tunnels",
            Page::Sessions => "Sessions",
            Page::Audit => "Audit",
            Page::Recordings => "Recordings",
        }
    }

    /// The page's static markup; the script fills the tables.
    fn body(self) -> &'static str {
        match self {
            Page::Tunnels => {
                r#"<section class="bar"><label>Filter by tag <input id="tag-filter" name="tag" placeholder="Key=Value;Key=Value" autocomplete="off"></label>
<span id="live-status" class="muted"></span></section>
<table id="tunnels"><thead><tr><th>Name</th><th>Tags</th><th>Remote address</th><th>Node</th><th>Version</th><th>Connected since</th><th>Last heartbeat</th><th>RTT</th><th>Status</th><th>Streams</th><th>Bytes in</th><th>Bytes out</th><th>Replica group</th></tr></thead><tbody></tbody></table>
<p id="tunnels-empty" class="muted" hidden>No agent connected to this node.</p>
<h2>Connect / disconnect history</h2>
<table id="history"><thead><tr><th>Time</th><th>Node</th><th>Agent</th><th>Event</th><th>Detail</th></tr></thead><tbody></tbody></table>"#
            }
            Page::Sessions => {
                r#"<h2>Active on this node</h2>
<table id="active"><thead><tr><th>Started</th><th>Kind</th><th>User</th><th>Resource</th><th>Agent</th><th>Client</th><th>Node</th><th>Duration</th><th>State</th><th>Up</th><th>Down</th><th></th></tr></thead><tbody></tbody></table>
<p id="active-empty" class="muted" hidden>No active session.</p>
<p id="session-message" role="status"></p>
<h2>Past sessions</h2>
<table id="past"><thead><tr><th>Ended</th><th>Kind</th><th>User</th><th>Resource</th><th>Agent</th><th>Client</th><th>Node</th><th>Duration</th><th>Up</th><th>Down</th><th>Outcome</th></tr></thead><tbody></tbody></table>"#
            }
            Page::Audit => {
                r#"<form id="audit-search" class="bar">
<label>User <input name="user" autocomplete="off"></label>
<label>Resource <input name="resource" autocomplete="off"></label>
<label>Kind <select name="kind"><option value="">any</option><option>statement</option><option>command</option><option>session_open</option><option>session_close</option><option>login_failure</option><option>access_denied</option><option>admin_change</option><option>agent_connect</option><option>agent_disconnect</option></select></label>
<label>Decision <select name="decision"><option value="">any</option><option>allow</option><option>deny</option></select></label>
<label>Since <input name="since" placeholder="1h or 2026-01-02T03:04:05Z" autocomplete="off"></label>
<label>Until <input name="until" autocomplete="off"></label>
<label>Text <input name="q" placeholder="statement or command contains" autocomplete="off"></label>
<button type="submit">Search</button></form>
<p id="audit-error" class="error" role="alert"></p>
<table id="audit"><thead><tr><th>Time</th><th>Node</th><th>User</th><th>Resource</th><th>Kind</th><th>Decision</th><th>Policy</th><th>Text / detail</th></tr></thead><tbody></tbody></table>"#
            }
            Page::Recordings => {
                r#"<table id="recordings"><thead><tr><th>Started</th><th>Title</th><th>Command</th><th>Size</th><th>Bytes</th><th></th></tr></thead><tbody></tbody></table>
<p id="recordings-empty" class="muted" hidden>No recording on this node.</p>
<section id="player" hidden><h2 id="player-title"></h2>
<div class="bar"><button id="player-restart" type="button">Restart</button><label>Speed <select id="player-speed"><option value="1">1×</option><option value="2">2×</option><option value="8">8×</option></select></label><span id="player-state" class="muted"></span></div>
<pre id="screen" class="screen"></pre></section>"#
            }
        }
    }
}

fn nav(current: Page, who: &Principal, csrf: &str) -> String {
    let links: String = Page::ALL
        .iter()
        .map(|p| {
            let cur = if *p == current {
                r#" aria-current="page""#
            } else {
                ""
            };
            format!(r#"<a href="/{}"{cur}>{}</a>"#, p.name(), p.title())
        })
        .collect();
    format!(
        r#"<header><strong class="brand">NOVAS</strong><nav>{links}</nav>
<span class="who">signed in as <b id="who">{}</b></span>
<form method="post" action="/logout"><input type="hidden" name="csrf" value="{}"><button type="submit" id="logout">Log out</button></form></header>"#,
        esc(&who.user),
        esc(csrf)
    )
}

async fn page(State(s): State<Arc<WebState>>, headers: HeaderMap, which: Page) -> Response {
    let who = match require_admin(&s, &headers, Surface::Page).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let csrf = who.csrf().unwrap_or_default().to_string();
    let html = format!(
        r#"{}<body data-page="{}">{}<main><h1>{}</h1>{}</main></body></html>"#,
        head(which.title(), Some(&csrf)),
        which.name(),
        nav(which, &who, &csrf),
        which.title(),
        which.body()
    );
    Html(html).into_response()
}

/// The page for a logged-in user without the admin role.
pub fn forbidden(csrf: Option<&str>) -> Response {
    let html = format!(
        r#"{}<body data-page="forbidden"><main class="narrow"><h1>Forbidden</h1>
<p id="forbidden">Your NOVAS account does not have the <code>admin</code> role, which the console requires.</p>
<form method="post" action="/logout" id="logout-form"><input type="hidden" name="csrf" value="{}"><button type="submit">Log out</button></form></main></body></html>"#,
        head("Forbidden", None),
        esc(csrf.unwrap_or_default())
    );
    (StatusCode::FORBIDDEN, Html(html)).into_response()
}

fn login_html(status: StatusCode, message: Option<&str>) -> Response {
    let msg = message
        .map(|m| {
            format!(
                r#"<p class="error" id="login-error" role="alert">{}</p>"#,
                esc(m)
            )
        })
        .unwrap_or_default();
    let html = format!(
        r#"{}<body data-page="login"><main class="narrow"><h1>NOVAS console</h1>{msg}
<form method="post" action="/login" id="login-form">
<label>User <input name="user" id="user" autocomplete="username" required autofocus></label>
<label>Password <input name="password" id="password" type="password" autocomplete="current-password" required></label>
<button type="submit" id="login-submit">Log in</button></form></main></body></html>"#,
        head("Log in", None)
    );
    (status, Html(html)).into_response()
}

async fn login_page(State(s): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    if let Ok(Some(_)) = resolve(&s, &headers).await {
        return Redirect::to("/").into_response();
    }
    login_html(StatusCode::OK, None)
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    user: String,
    password: String,
}

/// One message for unknown users, wrong passwords and disabled accounts.
const LOGIN_FAILED: &str = "Login failed: unknown user or wrong password.";

async fn login(
    State(s): State<Arc<WebState>>,
    headers: HeaderMap,
    ext: Extensions,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    // Login CSRF: a foreign page must not log the browser in as someone.
    if !csrf::same_origin(&headers) {
        return login_html(StatusCode::FORBIDDEN, Some("Cross-origin login refused."));
    }
    let Ok(Form(form)) = form else {
        return login_html(StatusCode::BAD_REQUEST, Some("Send a user and a password."));
    };
    let user = form.user.trim().to_string();
    if user.is_empty() || user.len() > MAX_FIELD || form.password.len() > MAX_FIELD {
        return login_html(StatusCode::BAD_REQUEST, Some("Send a user and a password."));
    }
    let client = client_addr(&ext);
    let client_ip = client
        .rsplit_once(':')
        .map_or(client.as_str(), |(ip, _)| ip)
        .to_string();
    let span = tracing::info_span!("console_login", user = %user, client.addr = %client);
    login_checked(&s, &headers, &user, &form.password, &client, &client_ip)
        .instrument(span)
        .await
}

async fn login_checked(
    s: &WebState,
    headers: &HeaderMap,
    user: &str,
    password: &str,
    client: &str,
    client_ip: &str,
) -> Response {
    if !s.login_throttle.allowed(client_ip, user, Instant::now()) {
        tracing::warn!("console login throttled");
        audit_failure(
            s,
            user,
            client,
            "console: too many failed logins, throttled",
        );
        return login_html(
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many failed logins; try again in a few minutes."),
        );
    }
    let identity = match s.users.check_password(user, password).await {
        Ok(i) => i,
        Err(LoginError::Store(_)) => {
            return login_html(
                StatusCode::SERVICE_UNAVAILABLE,
                Some("The NOVAS store is unavailable; try again later."),
            )
        }
        Err(e) => {
            s.login_throttle.failed(client_ip, user, Instant::now());
            tracing::info!(reason = %e.audit_reason(), "console login failed");
            audit_failure(s, user, client, &format!("console: {}", e.audit_reason()));
            return login_html(StatusCode::UNAUTHORIZED, Some(LOGIN_FAILED));
        }
    };
    s.login_throttle.succeeded(user);
    let id = auth::new_secret();
    let now = now_ms();
    let rec = ConsoleSessionRecord {
        id_hash: auth::hash_id(&id),
        user: identity.user.clone(),
        csrf_token: auth::new_secret(),
        created_ms: now,
        last_seen_ms: now,
    };
    if let Err(e) = s.store.insert_console_session(&rec).await {
        tracing::warn!(error = %e, "console session not stored");
        return login_html(
            StatusCode::SERVICE_UNAVAILABLE,
            Some("The NOVAS store is unavailable; try again later."),
        );
    }
    // Old sessions are removed now and then, at logins.
    let (idle, max) = (s.console.idle_timeout, s.console.max_age);
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    if let Err(e) = s
        .store
        .delete_stale_console_sessions(now.saturating_sub(ms(max)), now.saturating_sub(ms(idle)))
        .await
    {
        tracing::debug!(error = %e, "stale console sessions not removed");
    }
    tracing::info!(
        admin = identity.roles.iter().any(|r| r == auth::ADMIN_ROLE),
        "console login"
    );
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                auth::set_cookie(&id, secure(s, headers)),
            ),
            (header::LOCATION, "/".to_string()),
        ],
    )
        .into_response()
}

fn audit_failure(s: &WebState, user: &str, client: &str, reason: &str) {
    let ev = AuditEvent::new(EventKind::LoginFailure {
        client_addr: client.to_string(),
        reason: reason.to_string(),
    })
    .user(user);
    if let Err(e) = s.auditor.record(ev) {
        tracing::error!(error = %e, "audit event not recorded");
    }
}

#[derive(serde::Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: Option<String>,
}

/// `POST /logout`: ends the session (CSRF-checked like every state
/// change; a forged logout would be a nuisance, not harmless).
async fn logout(
    State(s): State<Arc<WebState>>,
    headers: HeaderMap,
    form: Result<Form<LogoutForm>, FormRejection>,
) -> Response {
    let clear = auth::clear_cookie(secure(&s, &headers));
    let who = match resolve(&s, &headers).await {
        Ok(Some(w)) => w,
        // Nothing to end: just drop the cookie.
        Ok(None) => {
            return (
                StatusCode::SEE_OTHER,
                [
                    (header::SET_COOKIE, clear),
                    (header::LOCATION, "/login".into()),
                ],
            )
                .into_response()
        }
        Err(_) => return (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response(),
    };
    let token = form.ok().and_then(|Form(f)| f.csrf);
    if let Err(r) = super::check_csrf(&who, &headers, token.as_deref()) {
        return r.into_response();
    }
    if let auth::Via::Console { id_hash, .. } = &who.via {
        if let Err(e) = s.store.delete_console_session(id_hash).await {
            tracing::warn!(error = %e, "console session not deleted");
            return (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response();
        }
    }
    tracing::info!(user = %who.user, "console logout");
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, clear),
            (header::LOCATION, "/login".into()),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
