//! The web console served by NOVAS on the HTTP listener: a login with
//! NOVAS users, server-side sessions in the store (shared by every NOVAS on
//! it), admin pages and the JSON API behind them (docs/CONSOLE.md,
//! docs/openapi.yaml).
//!
//! - [`auth`]: session cookies, expiry, the authorisation table, the login
//!   throttle (pure).
//! - [`csrf`]: the CSRF token and Origin checks (pure).
//! - [`pages`]: login, logout and the HTML pages (a shell each; the
//!   embedded script fills it from the API).
//! - [`api`]: the JSON routes.
//! - [`history`]: past sessions and tunnel history joined from audit events.
//!
//! Every route answers through [`secure_headers`]: a CSP without inline
//! script, no framing, no caching.

pub mod api;
pub mod auth;
pub mod csrf;
pub mod history;
pub mod pages;
#[cfg(test)]
mod tests;

use std::{sync::Arc, time::Duration};

use axum::{
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Redirect, Response},
    Json, Router,
};
use tunnel_proto::{secret::token_eq, Secret};

use self::auth::{Expiry, Principal, Surface, Verdict, Via};
use crate::{audit::now_ms, web::WebState};

/// Console settings (NOVAS_CONSOLE_*).
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// A session unused this long is over (NOVAS_CONSOLE_IDLE_TIMEOUT).
    pub idle_timeout: Duration,
    /// A session is over this long after login, used or not
    /// (NOVAS_CONSOLE_SESSION_MAX).
    pub max_age: Duration,
    /// Always mark the cookie `Secure` (NOVAS_CONSOLE_SECURE_COOKIE): the
    /// console is served over TLS by a proxy in front of NOVAS. It is also
    /// set for requests that arrive with `X-Forwarded-Proto: https`.
    pub secure_cookie: bool,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30 * 60),
            max_age: Duration::from_secs(12 * 3600),
            secure_cookie: false,
        }
    }
}

/// Failed logins allowed per user name in [`THROTTLE_WINDOW`].
pub const THROTTLE_MAX_FAILURES: usize = 10;
/// Failed logins allowed per client address in [`THROTTLE_WINDOW`].
pub const THROTTLE_MAX_FAILURES_PER_ADDR: usize = 50;
pub const THROTTLE_WINDOW: Duration = Duration::from_secs(300);

/// The console's routes (pages, assets, API), merged into the HTTP router.
pub fn routes() -> Router<Arc<WebState>> {
    pages::routes().merge(api::routes())
}

/// Whether cookies set for this request get `Secure`.
pub fn secure(s: &WebState, headers: &HeaderMap) -> bool {
    s.console.secure_cookie
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// Store trouble while finding out who asks: nobody is let in.
#[derive(Debug)]
pub struct Unavailable;

/// The caller of a request: the bearer admin token, else a valid console
/// session (expired ones are deleted), else nobody. An invalid bearer
/// token counts as nobody even with a cookie: a script's mistake should
/// fail, not fall back.
pub async fn resolve(s: &WebState, headers: &HeaderMap) -> Result<Option<Principal>, Unavailable> {
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let ok = auth
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| token_eq(&Secret::new(t.trim().to_string()), &s.admin_token));
        return Ok(ok.then(Principal::token));
    }
    let Some(id) = auth::session_cookie(headers) else {
        return Ok(None);
    };
    let id_hash = auth::hash_id(&id);
    let unavailable = |e: crate::store::StoreError| {
        tracing::warn!(error = %e, "console: store unavailable");
        Unavailable
    };
    let Some(rec) = s
        .store
        .console_session(&id_hash)
        .await
        .map_err(unavailable)?
    else {
        return Ok(None);
    };
    let now = now_ms();
    match auth::check_expiry(&rec, now, s.console.idle_timeout, s.console.max_age) {
        Expiry::Idle | Expiry::Expired => {
            s.store
                .delete_console_session(&id_hash)
                .await
                .map_err(unavailable)?;
            return Ok(None);
        }
        Expiry::Valid { touch: true } => {
            s.store
                .touch_console_session(&id_hash, now)
                .await
                .map_err(unavailable)?;
        }
        Expiry::Valid { touch: false } => {}
    }
    // Roles are read now, not at login: a removed role or a disabled user
    // takes effect on the next request.
    match s.store.get_user(&rec.user).await.map_err(unavailable)? {
        Some(u) if !u.disabled => Ok(Some(Principal {
            user: u.name,
            roles: u.roles,
            via: Via::Console {
                id_hash,
                csrf: rec.csrf_token,
            },
        })),
        _ => {
            s.store
                .delete_console_session(&id_hash)
                .await
                .map_err(unavailable)?;
            Ok(None)
        }
    }
}

fn json_status(status: StatusCode, msg: &str) -> Response {
    (status, Json(serde_json::json!({ "error": msg }))).into_response()
}

/// The response for a refused request on `surface`.
pub fn refusal(v: Verdict, surface: Surface) -> Response {
    match (v, surface) {
        (Verdict::RedirectToLogin, _) => Redirect::to("/login").into_response(),
        (Verdict::Unauthorized, _) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(serde_json::json!({
                "error": "log in to the console or send the admin token (Authorization: Bearer …)"
            })),
        )
            .into_response(),
        (Verdict::Forbidden, Surface::Api) => {
            json_status(StatusCode::FORBIDDEN, "the admin role is required")
        }
        (Verdict::Forbidden, Surface::Page) => pages::forbidden(None),
        (Verdict::Allow, _) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn unavailable(surface: Surface) -> Response {
    match surface {
        Surface::Api => json_status(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable"),
        Surface::Page => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the NOVAS store is unavailable; try again later\n",
        )
            .into_response(),
    }
}

/// An admin caller, or the response that refuses the request.
pub async fn require_admin(
    s: &WebState,
    headers: &HeaderMap,
    surface: Surface,
) -> Result<Principal, Response> {
    let who = resolve(s, headers)
        .await
        .map_err(|_| unavailable(surface))?;
    match (auth::authorize(who.as_ref(), surface), surface) {
        (Verdict::Allow, _) => who.ok_or_else(|| refusal(Verdict::Unauthorized, surface)),
        // The 403 page offers a logout, which needs the session's token.
        (Verdict::Forbidden, Surface::Page) => {
            Err(pages::forbidden(who.as_ref().and_then(|p| p.csrf())))
        }
        (v, _) => Err(refusal(v, surface)),
    }
}

/// Why a state-changing request was refused by [`check_csrf`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrfRefusal {
    /// No token, or not the session's.
    Token,
    /// `Origin`/`Referer` missing or naming another host.
    Origin,
}

impl IntoResponse for CsrfRefusal {
    fn into_response(self) -> Response {
        let msg = match self {
            CsrfRefusal::Token => "missing or wrong CSRF token",
            CsrfRefusal::Origin => "cross-origin request refused (Origin does not match Host)",
        };
        json_status(StatusCode::FORBIDDEN, msg)
    }
}

/// For a state-changing request: cookie callers must show the session's
/// CSRF token (header or `form_token`) and come from this host's pages.
pub fn check_csrf(
    who: &Principal,
    headers: &HeaderMap,
    form_token: Option<&str>,
) -> Result<(), CsrfRefusal> {
    let Some(expected) = who.csrf() else {
        return Ok(()); // bearer token: not sent by browsers on their own
    };
    let given = csrf::header_token(headers).or(form_token);
    if !csrf::token_matches(expected, given) {
        return Err(CsrfRefusal::Token);
    }
    if !csrf::same_origin(headers) {
        return Err(CsrfRefusal::Origin);
    }
    Ok(())
}

/// The Content-Security-Policy of every response: scripts, styles and
/// fetches from this origin only, no inline script, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Adds the security headers to every response (a `map_response` layer).
pub async fn secure_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(h, "content-security-policy", CSP);
    set(h, "x-frame-options", "DENY");
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "same-origin");
    // API answers and pages carry live data and tokens: never cached.
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, "cache-control", "no-store");
    }
    resp
}
