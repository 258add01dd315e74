//! Past sessions from the audit trail: each `session_close` joined with
//! its `session_open` (same session id). Pure, so it is tested without a
//! store.

use std::collections::HashMap;

use serde::Serialize;

use crate::audit::{query::format_time, AuditEvent, EventKind};

/// One ended session (`GET /api/sessions`, `past`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PastSession {
    pub id: String,
    pub kind: Option<String>,
    pub user: Option<String>,
    pub resource: Option<String>,
    pub agent: Option<String>,
    pub client_addr: Option<String>,
    pub node: String,
    /// From the open event; `None` when it is older than the events read.
    pub started: Option<String>,
    pub ended: String,
    pub duration_ms: u64,
    pub outcome: String,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

/// Joins closes with opens; newest close first (the order of `closes`).
pub fn past_sessions(opens: &[AuditEvent], closes: &[AuditEvent]) -> Vec<PastSession> {
    let by_id: HashMap<&str, &AuditEvent> = opens
        .iter()
        .filter_map(|e| e.session_id.as_deref().map(|id| (id, e)))
        .collect();
    closes
        .iter()
        .filter_map(|c| {
            let EventKind::SessionClose {
                outcome,
                bytes_up,
                bytes_down,
                duration_ms,
                ..
            } = &c.event
            else {
                return None;
            };
            let id = c.session_id.as_deref()?;
            let open = by_id.get(id);
            let (agent, client_addr) = match open.map(|o| &o.event) {
                Some(EventKind::SessionOpen {
                    agent, client_addr, ..
                }) => (agent.clone(), Some(client_addr.clone())),
                _ => (None, None),
            };
            Some(PastSession {
                id: id.to_string(),
                kind: c.resource_kind.clone(),
                user: c.user.clone().or_else(|| open.and_then(|o| o.user.clone())),
                resource: c.resource.clone(),
                agent,
                client_addr,
                node: c.node.clone(),
                started: open.map(|o| format_time(o.time_ms)),
                ended: format_time(c.time_ms),
                duration_ms: *duration_ms,
                outcome: outcome.clone(),
                bytes_up: *bytes_up,
                bytes_down: *bytes_down,
            })
        })
        .collect()
}

/// Merges event lists into one, newest first, at most `limit`.
pub fn merge_newest_first(mut lists: Vec<Vec<AuditEvent>>, limit: usize) -> Vec<AuditEvent> {
    let mut all: Vec<AuditEvent> = lists.drain(..).flatten().collect();
    all.sort_by(|a, b| b.time_ms.cmp(&a.time_ms).then(b.id.cmp(&a.id)));
    all.truncate(limit);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: i64, session: &str, event: EventKind) -> AuditEvent {
        let mut e = AuditEvent::new(event)
            .session(session)
            .user("alice")
            .resource("db", "postgres");
        e.time_ms = t;
        e.node = "n1".into();
        e
    }

    #[test]
    fn closes_join_their_opens() {
        let open = |t, s: &str| {
            ev(
                t,
                s,
                EventKind::SessionOpen {
                    agent: Some("a1".into()),
                    client_addr: "10.0.0.1:1".into(),
                    account: None,
                },
            )
        };
        let close = |t, s: &str| {
            ev(
                t,
                s,
                EventKind::SessionClose {
                    outcome: "closed by client".into(),
                    bytes_up: 1,
                    bytes_down: 2,
                    duration_ms: 5,
                    exit_status: None,
                },
            )
        };
        let opens = vec![open(1000, "s1"), open(2000, "s2")];
        // s3's open is older than what was read; s2 is still open.
        let closes = vec![close(4000, "s3"), close(3000, "s1")];
        let past = past_sessions(&opens, &closes);
        assert_eq!(past.len(), 2);
        assert_eq!(past[0].id, "s3");
        assert_eq!(
            (past[0].started.as_deref(), past[0].agent.as_deref()),
            (None, None)
        );
        assert_eq!(past[1].id, "s1");
        assert_eq!(past[1].agent.as_deref(), Some("a1"));
        assert_eq!(past[1].client_addr.as_deref(), Some("10.0.0.1:1"));
        assert_eq!(past[1].started.as_deref(), Some("1970-01-01T00:00:01.000Z"));
        assert_eq!((past[1].bytes_up, past[1].bytes_down), (1, 2));

        let merged = merge_newest_first(vec![opens, closes], 3);
        let times: Vec<i64> = merged.iter().map(|e| e.time_ms).collect();
        assert_eq!(times, [4000, 3000, 2000]);
    }
}
