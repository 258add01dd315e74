//! Audit search filters, shared by the store, `GET /api/audit` and
//! `novas audit`, with the parsing of their textual forms.

use std::time::{Duration, UNIX_EPOCH};

use super::event::{Decision, EventType};

/// Rows returned when no limit is given.
pub const DEFAULT_LIMIT: u32 = 100;
/// Most rows one query returns; larger limits are lowered to this.
pub const MAX_LIMIT: u32 = 1000;

/// Filters on audit events; every set field must match. Results come newest
/// first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub user: Option<String>,
    pub resource: Option<String>,
    pub kind: Option<EventType>,
    pub decision: Option<Decision>,
    /// Inclusive lower bound, unix ms.
    pub since_ms: Option<i64>,
    /// Exclusive upper bound, unix ms.
    pub until_ms: Option<i64>,
    pub session_id: Option<String>,
    /// Statement text contains this, ignoring ASCII case.
    pub text: Option<String>,
    /// Default [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`].
    pub limit: Option<u32>,
}

impl AuditQuery {
    pub fn effective_limit(&self) -> u32 {
        self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }
}

/// A query parameter that could not be used; `param` names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {msg}")]
pub struct ParamError {
    pub param: String,
    pub msg: String,
}

fn bad(param: &str, msg: impl Into<String>) -> ParamError {
    ParamError {
        param: param.to_string(),
        msg: msg.into(),
    }
}

/// Builds a query from `name=value` pairs (the API's query string). Empty
/// values are ignored; unknown or repeated names are errors, so a typo does
/// not silently widen a search.
pub fn from_params(pairs: &[(String, String)], now_ms: i64) -> Result<AuditQuery, ParamError> {
    let mut q = AuditQuery::default();
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in pairs {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        if seen.contains(&name.as_str()) {
            return Err(bad(name, "given more than once"));
        }
        seen.push(name);
        let text = || Some(value.to_string());
        match name.as_str() {
            "user" => q.user = text(),
            "resource" => q.resource = text(),
            "session" => q.session_id = text(),
            "q" => q.text = text(),
            "kind" => q.kind = Some(value.parse().map_err(|m: String| bad(name, m))?),
            "decision" => q.decision = Some(value.parse().map_err(|m: String| bad(name, m))?),
            "since" => q.since_ms = Some(parse_time(value, now_ms).map_err(|m| bad(name, m))?),
            "until" => q.until_ms = Some(parse_time(value, now_ms).map_err(|m| bad(name, m))?),
            "limit" => {
                let n: u32 = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad(name, format!("{value:?} is not a positive number")))?;
                q.limit = Some(n);
            }
            _ => {
                return Err(bad(
                    name,
                    "unknown parameter (user, resource, kind, decision, since, until, session, q, limit)",
                ))
            }
        }
    }
    if let (Some(s), Some(u)) = (q.since_ms, q.until_ms) {
        if s >= u {
            return Err(bad("until", "must be later than since"));
        }
    }
    Ok(q)
}

/// Parses a point in time as unix milliseconds (all digits), RFC 3339
/// (`2026-01-02T03:04:05Z`, `…+02:00`, fractional seconds allowed) or a
/// duration before `now_ms` (`90s`, `1h`, `2days`).
pub fn parse_time(s: &str, now_ms: i64) -> Result<i64, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<i64>()
            .map_err(|_| format!("{s:?} is too large for unix milliseconds"));
    }
    if s.contains('T') || (s.contains('-') && s.contains(':')) {
        return parse_rfc3339(s);
    }
    match humantime::parse_duration(s) {
        Ok(d) => Ok(now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))),
        Err(_) => Err(format!(
            "{s:?} is not RFC 3339 (2026-01-02T03:04:05Z), unix milliseconds or a duration ago (1h)"
        )),
    }
}

fn parse_rfc3339(s: &str) -> Result<i64, String> {
    let err = || format!("{s:?} is not an RFC 3339 time like 2026-01-02T03:04:05Z");
    // humantime reads UTC (`Z`) only, so a numeric offset is split off and
    // applied here.
    let (utc, offset_s) = match s
        .len()
        .checked_sub(6)
        .and_then(|i| s.get(i..).map(|t| (i, t)))
    {
        Some((i, tail))
            if (tail.starts_with('+') || tail.starts_with('-'))
                && tail.as_bytes().get(3) == Some(&b':') =>
        {
            let h: i64 = tail
                .get(1..3)
                .and_then(|h| h.parse().ok())
                .ok_or_else(err)?;
            let m: i64 = tail
                .get(4..6)
                .and_then(|m| m.parse().ok())
                .ok_or_else(err)?;
            let sign = if tail.starts_with('-') { -1 } else { 1 };
            (format!("{}Z", &s[..i]), sign * (h * 3600 + m * 60))
        }
        _ => (s.to_string(), 0),
    };
    let t = humantime::parse_rfc3339_weak(&utc).map_err(|_| err())?;
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("{s:?} is before 1970"))?
        .as_millis();
    Ok(i64::try_from(ms).map_err(|_| err())? - offset_s * 1000)
}

/// `2026-01-02T03:04:05.678Z` for a unix-ms time.
pub fn format_time(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("2026-01-01T00:00:00Z", NOW), Ok(NOW));
        assert_eq!(parse_time("2026-01-01T00:00:00.250Z", NOW), Ok(NOW + 250));
        assert_eq!(parse_time("2026-01-01T02:00:00+02:00", NOW), Ok(NOW));
        assert_eq!(parse_time("2025-12-31T23:30:00-00:30", NOW), Ok(NOW));
        assert_eq!(parse_time("1767225600000", NOW), Ok(NOW));
        assert_eq!(parse_time("1h", NOW), Ok(NOW - 3_600_000));
        assert_eq!(parse_time("90s", NOW), Ok(NOW - 90_000));
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-01-01T00:00:00+2:00",
        ] {
            assert!(parse_time(bad, NOW).is_err(), "{bad}");
        }
        assert_eq!(format_time(NOW + 5), "2026-01-01T00:00:00.005Z");
    }

    #[test]
    fn params() {
        let q = from_params(
            &pairs(&[
                ("user", "alice"),
                ("resource", "db"),
                ("kind", "statement"),
                ("decision", "deny"),
                ("since", "1h"),
                ("until", "1767225600000"),
                ("session", "s1"),
                ("q", "drop"),
                ("limit", "5000"),
                ("ignored-when-empty", ""),
            ]),
            NOW,
        )
        .expect("valid");
        assert_eq!(q.user.as_deref(), Some("alice"));
        assert_eq!(q.kind, Some(EventType::Statement));
        assert_eq!(q.decision, Some(Decision::Deny));
        assert_eq!(q.since_ms, Some(NOW - 3_600_000));
        assert_eq!(q.until_ms, Some(NOW));
        assert_eq!(q.effective_limit(), MAX_LIMIT);
        assert_eq!(AuditQuery::default().effective_limit(), DEFAULT_LIMIT);
    }

    #[test]
    fn bad_params_are_named() {
        for (p, name) in [
            (vec![("decision", "maybe")], "decision"),
            (vec![("kind", "query")], "kind"),
            (vec![("since", "soon")], "since"),
            (vec![("limit", "0")], "limit"),
            (vec![("limit", "x")], "limit"),
            (vec![("usr", "a")], "usr"),
            (vec![("user", "a"), ("user", "b")], "user"),
            (vec![("since", "1767225600000"), ("until", "1h")], "until"),
        ] {
            let e = from_params(&pairs(&p), NOW).expect_err(name);
            assert_eq!(e.param, name, "{e}");
        }
    }
}
