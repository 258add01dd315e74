//! Who is asking: the console's login sessions (cookie, expiry) and the
//! authorisation table for pages and the API. Pure functions here; the
//! store look-ups are in [`super::resolve`].

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::http::{header, HeaderMap};
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::store::ConsoleSessionRecord;

/// The session cookie's name.
pub const COOKIE: &str = "novas_session";
/// The role that may use the console's admin pages and API.
pub const ADMIN_ROLE: &str = "admin";
/// Last-seen times are written at most this often per session (a page
/// polls every 1.5 s; a write each time would be wasted).
pub const TOUCH_EVERY: Duration = Duration::from_secs(30);

/// A fresh 256-bit random secret, hex (session ids, CSRF tokens).
pub fn new_secret() -> String {
    hex::encode(rand::rng().random::<[u8; 32]>())
}

/// What the store keeps instead of the session id.
pub fn hash_id(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// The session id from the request's `Cookie` headers, if it looks like one
/// of ours (64 hex digits): anything else is not worth a store look-up.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `Set-Cookie` for a new session. No `Max-Age`: a browser session cookie;
/// the server enforces the lifetimes.
pub fn set_cookie(id: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/{secure}")
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}")
}

/// Whether a stored session may still be used at `now_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Valid; `touch` says the last-seen time is due for a write.
    Valid { touch: bool },
    /// Idle longer than the idle timeout.
    Idle,
    /// Older than the absolute lifetime.
    Expired,
}

pub fn check_expiry(
    r: &ConsoleSessionRecord,
    now_ms: i64,
    idle: Duration,
    max: Duration,
) -> Expiry {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    if now_ms.saturating_sub(r.created_ms) >= ms(max) {
        Expiry::Expired
    } else if now_ms.saturating_sub(r.last_seen_ms) >= ms(idle) {
        Expiry::Idle
    } else {
        Expiry::Valid {
            touch: now_ms.saturating_sub(r.last_seen_ms) >= ms(TOUCH_EVERY),
        }
    }
}

/// How the caller proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// `Authorization: Bearer <admin token>` (CLI, scripts): not an ambient
    /// credential, so no CSRF check.
    Token,
    /// The console's session cookie, with the session's CSRF token.
    Console { id_hash: String, csrf: String },
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    pub roles: Vec<String>,
    pub via: Via,
}

impl Principal {
    pub fn token() -> Self {
        Self {
            user: "admin-token".into(),
            roles: vec![ADMIN_ROLE.into()],
            via: Via::Token,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == ADMIN_ROLE)
    }

    pub fn csrf(&self) -> Option<&str> {
        match &self.via {
            Via::Console { csrf, .. } => Some(csrf),
            Via::Token => None,
        }
    }
}

/// What is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// An HTML page.
    Page,
    /// A JSON API route.
    Api,
}

/// The answer to one request, before the handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Pages, anonymous: to the login page.
    RedirectToLogin,
    /// API, anonymous: 401.
    Unauthorized,
    /// Authenticated without the admin role: 403.
    Forbidden,
}

/// The admin pages' and admin API's authorisation table.
pub fn authorize(who: Option<&Principal>, surface: Surface) -> Verdict {
    match (who, surface) {
        (None, Surface::Page) => Verdict::RedirectToLogin,
        (None, Surface::Api) => Verdict::Unauthorized,
        (Some(p), _) if p.is_admin() => Verdict::Allow,
        (Some(_), _) => Verdict::Forbidden,
    }
}

/// Failed console logins, per client address and per user name, in a
/// sliding window: past a limit, logins are refused before any password
/// check (argon2 makes each check cost time anyway). In memory, per node.
/// The address limit is the higher one: behind a proxy every browser has
/// the proxy's address.
pub struct LoginThrottle {
    window: Duration,
    max_per_user: usize,
    max_per_addr: usize,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

/// Keys kept at most; a flood of distinct keys evicts the oldest windows
/// rather than growing without bound.
const THROTTLE_MAX_KEYS: usize = 10_000;

impl LoginThrottle {
    pub fn new(window: Duration, max_per_user: usize, max_per_addr: usize) -> Self {
        Self {
            window,
            max_per_user,
            max_per_addr,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn keys(client_ip: &str, user: &str) -> [String; 2] {
        [format!("ip:{client_ip}"), format!("user:{user}")]
    }

    /// Whether a login from `client_ip` as `user` may be tried at `now`.
    pub fn allowed(&self, client_ip: &str, user: &str, now: Instant) -> bool {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let [addr_key, user_key] = Self::keys(client_ip, user);
        [(addr_key, self.max_per_addr), (user_key, self.max_per_user)]
            .iter()
            .all(|(k, max)| {
                map.get_mut(k).is_none_or(|q| {
                    while q
                        .front()
                        .is_some_and(|t| now.duration_since(*t) >= self.window)
                    {
                        q.pop_front();
                    }
                    q.len() < *max
                })
            })
    }

    pub fn failed(&self, client_ip: &str, user: &str, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= THROTTLE_MAX_KEYS {
            let window = self.window;
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
            if map.len() >= THROTTLE_MAX_KEYS {
                map.clear();
            }
        }
        for k in Self::keys(client_ip, user) {
            map.entry(k).or_default().push_back(now);
        }
    }

    /// A successful login clears the user's failures (not the address's).
    pub fn succeeded(&self, user: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&format!("user:{user}"));
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn principal(roles: &[&str]) -> Principal {
        Principal {
            user: "u".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            via: Via::Console {
                id_hash: "h".into(),
                csrf: "c".into(),
            },
        }
    }

    #[test]
    fn authorization_table() {
        let admin = principal(&["dev", "admin"]);
        let dev = principal(&["dev"]);
        let token = Principal::token();
        let cases = [
            (None, Surface::Page, Verdict::RedirectToLogin),
            (None, Surface::Api, Verdict::Unauthorized),
            (Some(&dev), Surface::Page, Verdict::Forbidden),
            (Some(&dev), Surface::Api, Verdict::Forbidden),
            (Some(&admin), Surface::Page, Verdict::Allow),
            (Some(&admin), Surface::Api, Verdict::Allow),
            (Some(&token), Surface::Api, Verdict::Allow),
        ];
        for (who, surface, want) in cases {
            assert_eq!(authorize(who, surface), want, "{who:?} {surface:?}");
        }
        // The role name is exact.
        assert_eq!(
            authorize(Some(&principal(&["Admin", "administrator"])), Surface::Api),
            Verdict::Forbidden
        );
    }

    #[test]
    fn cookies() {
        let id = new_secret();
        assert_eq!(id.len(), 64);
        assert_ne!(id, new_secret());
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; other=2"));
        assert_eq!(session_cookie(&h), None);
        h.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=y; {COOKIE}={id}")).expect("header"),
        );
        assert_eq!(session_cookie(&h), Some(id.clone()));
        let mut bad = HeaderMap::new();
        bad.insert(
            header::COOKIE,
            HeaderValue::from_static("novas_session=../../etc/passwd"),
        );
        assert_eq!(session_cookie(&bad), None);
        let c = set_cookie(&id, false);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Path=/"));
        assert!(!c.contains("Secure"));
        assert!(set_cookie(&id, true).ends_with("; Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
        assert_eq!(hash_id("abc").len(), 64);
        assert_ne!(hash_id("abc"), "abc");
    }

    #[test]
    fn expiry() {
        let idle = Duration::from_secs(600);
        let max = Duration::from_secs(3600);
        let r = ConsoleSessionRecord {
            id_hash: "h".into(),
            user: "u".into(),
            csrf_token: "c".into(),
            created_ms: 1_000_000,
            last_seen_ms: 1_000_000,
        };
        let at = |s: i64| check_expiry(&r, 1_000_000 + s * 1000, idle, max);
        assert_eq!(at(1), Expiry::Valid { touch: false });
        assert_eq!(at(31), Expiry::Valid { touch: true });
        assert_eq!(at(600), Expiry::Idle);
        let busy = ConsoleSessionRecord {
            last_seen_ms: 1_000_000 + 3_599_000,
            ..r.clone()
        };
        assert_eq!(
            check_expiry(&busy, 1_000_000 + 3_599_500, idle, max),
            Expiry::Valid { touch: false }
        );
        assert_eq!(
            check_expiry(&busy, 1_000_000 + 3_600_000, idle, max),
            Expiry::Expired,
            "activity does not extend the absolute lifetime"
        );
    }

    #[test]
    fn throttle() {
        let t = LoginThrottle::new(Duration::from_secs(60), 3, 5);
        let now = Instant::now();
        for _ in 0..3 {
            assert!(t.allowed("1.2.3.4", "root", now));
            t.failed("1.2.3.4", "root", now);
        }
        assert!(!t.allowed("1.2.3.4", "root", now));
        assert!(!t.allowed("5.6.7.8", "root", now), "per user name");
        assert!(t.allowed("1.2.3.4", "other", now), "the address has room");
        t.failed("1.2.3.4", "other", now);
        t.failed("1.2.3.4", "other", now);
        assert!(!t.allowed("1.2.3.4", "third", now), "per address");
        assert!(t.allowed("5.6.7.8", "other", now));
        assert!(t.allowed("1.2.3.4", "root", now + Duration::from_secs(61)));
        t.succeeded("root");
        assert!(t.allowed("5.6.7.8", "root", now));
    }
}
