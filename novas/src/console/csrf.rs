//! CSRF defences for state-changing requests made with the session cookie:
//! the session's token in a header (`X-CSRF-Token`, the console's fetches)
//! or a form field (`csrf`, the logout form), compared in constant time,
//! and an `Origin` (or, without one, `Referer`) naming this very host.
//! `SameSite=Strict` on the cookie is a third layer, not the only one.

use axum::http::{header, HeaderMap};
use subtle::ConstantTimeEq;

/// The header the console's scripts send the token in.
pub const HEADER: &str = "x-csrf-token";

/// Whether `given` is the session's token.
pub fn token_matches(expected: &str, given: Option<&str>) -> bool {
    match given {
        Some(g) if !expected.is_empty() => bool::from(expected.as_bytes().ct_eq(g.as_bytes())),
        _ => false,
    }
}

/// The token from the request header, if any.
pub fn header_token(headers: &HeaderMap) -> Option<&str> {
    headers.get(HEADER).and_then(|v| v.to_str().ok())
}

/// `host[:port]` of an `http(s)://host[:port][/…]` URL.
fn authority(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&rest[..end]).filter(|a| !a.is_empty())
}

/// Whether the request comes from a page of this host: its `Origin` (or
/// `Referer` when a browser sent no `Origin`) has the authority of the
/// `Host` header. Neither header, or `Origin: null`, is refused: every
/// browser that runs the console sends one of them on a POST.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let get = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok());
    let Some(host) = get(header::HOST) else {
        return false;
    };
    let source = get(header::ORIGIN).or_else(|| get(header::REFERER));
    source
        .and_then(authority)
        .is_some_and(|a| a.eq_ignore_ascii_case(host.trim()))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn tokens() {
        assert!(token_matches("abc", Some("abc")));
        assert!(!token_matches("abc", Some("abd")));
        assert!(!token_matches("abc", Some("ab")));
        assert!(!token_matches("abc", None));
        assert!(!token_matches("", Some("")), "an empty token never matches");
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_static("t1"));
        assert_eq!(header_token(&h), Some("t1"));
    }

    #[test]
    fn origins() {
        use header::{HOST, ORIGIN, REFERER};
        let ok = [
            headers(&[(HOST, "novas:8080"), (ORIGIN, "http://novas:8080")]),
            headers(&[(HOST, "novas:8080"), (ORIGIN, "https://NOVAS:8080")]),
            headers(&[(HOST, "novas"), (REFERER, "http://novas/sessions?x=1")]),
        ];
        for h in &ok {
            assert!(same_origin(h), "{h:?}");
        }
        let refused = [
            headers(&[(HOST, "novas:8080")]),
            headers(&[(HOST, "novas:8080"), (ORIGIN, "null")]),
            headers(&[(HOST, "novas:8080"), (ORIGIN, "http://evil:8080")]),
            headers(&[(HOST, "novas:8080"), (ORIGIN, "http://novas:8080.evil")]),
            headers(&[(HOST, "novas"), (ORIGIN, "http://novas.evil")]),
            headers(&[(ORIGIN, "http://novas")]),
            // A matching Referer does not rescue a foreign Origin.
            headers(&[
                (HOST, "novas"),
                (ORIGIN, "http://evil"),
                (REFERER, "http://novas/"),
            ]),
        ];
        for h in &refused {
            assert!(!same_origin(h), "{h:?}");
        }
    }
}
