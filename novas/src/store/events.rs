//! The audit table. Filterable fields are columns; the rest of the event is
//! a JSON `details` column (statement text is stored once, in `stmt_text`).

use std::{collections::HashMap, sync::Arc};

use super::{
    dialect::{SqlValue, EVENT_COLUMNS, EVENT_COLUMN_TYPES},
    int_at, text_at, Store, StoreError,
};
use crate::audit::{AuditEvent, AuditQuery, Decision, EventKind, EventType};

/// Rows per INSERT statement, far below every backend's bind limit
/// (SQLite 32766, PostgreSQL and MySQL 65535).
const ROWS_PER_INSERT: usize = 200;

/// One `Arc<str>` per distinct value in a batch: the name-like columns
/// (node, session, user, resource, policy…) repeat across its rows.
#[derive(Default)]
struct Interner<'a> {
    seen: HashMap<&'a str, Arc<str>>,
}

impl<'a> Interner<'a> {
    fn get(&mut self, s: Option<&'a str>) -> SqlValue {
        SqlValue::Shared(s.map(|s| self.seen.entry(s).or_insert_with(|| Arc::from(s)).clone()))
    }
}

fn to_args<'a>(ev: &'a AuditEvent, names: &mut Interner<'a>, out: &mut Vec<SqlValue>) {
    let own = |s: Option<&str>| SqlValue::Shared(s.map(Arc::from));
    out.extend([
        own(Some(&ev.id)),
        SqlValue::Int(Some(ev.time_ms)),
        names.get(Some(&ev.node)),
        names.get(ev.session_id.as_deref()),
        names.get(ev.user.as_deref()),
        names.get(ev.resource.as_deref()),
        names.get(ev.resource_kind.as_deref()),
        names.get(Some(ev.event.event_type().as_str())),
        names.get(ev.event.decision().map(|d| d.as_str())),
        names.get(ev.event.policy()),
        own(ev.event.text()),
        SqlValue::Shared(Some(details_json(&ev.event).into())),
    ]);
}

/// The `details` column: the event as JSON without its statement text
/// (which has a column of its own).
fn details_json(event: &EventKind) -> String {
    // Statements are nearly every event: they are written straight from a
    // borrowed view. Naming every field (no `..`) keeps this in step with
    // the enum; `details_match_the_generic_form` checks the output.
    if let EventKind::Statement {
        text: _,
        kind,
        decision,
        policy,
        duration_us,
        rows,
        error,
    } = event
    {
        #[derive(serde::Serialize)]
        struct StatementDetails<'a> {
            r#type: &'static str,
            kind: &'a str,
            decision: Decision,
            policy: &'a str,
            duration_us: Option<u64>,
            rows: Option<u64>,
            error: Option<&'a str>,
        }
        let view = StatementDetails {
            r#type: EventType::Statement.as_str(),
            kind,
            decision: *decision,
            policy,
            duration_us: *duration_us,
            rows: *rows,
            error: error.as_deref(),
        };
        return serde_json::to_string(&view).unwrap_or_default();
    }
    generic_details(event)
}

fn generic_details(event: &EventKind) -> String {
    let mut details = serde_json::to_value(event).unwrap_or_default();
    if let Some(obj) = details.as_object_mut() {
        obj.remove("text");
    }
    details.to_string()
}

fn from_row(row: &[SqlValue]) -> Result<AuditEvent, StoreError> {
    debug_assert_eq!(row.len(), EVENT_COLUMNS.len());
    let corrupt = |msg: String| StoreError::Corrupt {
        table: "audit_events",
        msg,
    };
    let id = text_at(row, 0).ok_or_else(|| corrupt("NULL id".into()))?;
    let details = text_at(row, 11).unwrap_or_default();
    let mut value: serde_json::Value = serde_json::from_str(&details)
        .map_err(|e| corrupt(format!("event {id}: details are not JSON: {e}")))?;
    if let (Some(obj), Some(text)) = (value.as_object_mut(), text_at(row, 10)) {
        obj.insert("text".into(), serde_json::Value::String(text));
    }
    let event: EventKind = serde_json::from_value(value)
        .map_err(|e| corrupt(format!("event {id}: unknown details: {e}")))?;
    Ok(AuditEvent {
        time_ms: int_at(row, 1).unwrap_or(0),
        node: text_at(row, 2).unwrap_or_default(),
        session_id: text_at(row, 3),
        user: text_at(row, 4),
        resource: text_at(row, 5),
        resource_kind: text_at(row, 6),
        event,
        id,
    })
}

impl Store {
    /// Writes a batch in one transaction: all of it or none. Events whose id
    /// is already stored are skipped, so a batch may safely be written again.
    pub async fn insert_events(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut names = Interner::default();
        let statements: Vec<(String, Vec<SqlValue>)> = events
            .chunks(ROWS_PER_INSERT)
            .map(|chunk| {
                let sql = self.dialect.insert_events(chunk.len());
                let mut args = Vec::with_capacity(chunk.len() * EVENT_COLUMNS.len());
                for ev in chunk {
                    to_args(ev, &mut names, &mut args);
                }
                (sql, args)
            })
            .collect();
        self.execute_in_tx("insert audit events", &statements).await
    }

    /// Events matching `q`, newest first, at most `q.effective_limit()`.
    pub async fn query_events(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let (sql, args) = self.dialect.select_events(q);
        let rows = self
            .fetch("query audit events", &sql, &args, &EVENT_COLUMN_TYPES)
            .await?;
        rows.iter().map(|r| from_row(r)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_util::{sample_events, sqlite_store};

    #[tokio::test]
    async fn round_trip_and_filters() {
        let (store, _dir) = sqlite_store().await;
        let events = sample_events(1_000);
        store.insert_events(&events).await.expect("insert");
        // Writing the same batch again stores nothing twice.
        store.insert_events(&events).await.expect("insert again");

        let all = store
            .query_events(&AuditQuery::default())
            .await
            .expect("query");
        let mut expected = events.clone();
        expected.reverse();
        assert_eq!(all, expected, "every kind round-trips, newest first");

        let count = |q: AuditQuery| {
            let store = store.clone();
            async move { store.query_events(&q).await.expect("query").len() }
        };
        assert_eq!(
            count(AuditQuery {
                user: Some("alice".into()),
                ..Default::default()
            })
            .await,
            4
        );
        assert_eq!(
            count(AuditQuery {
                resource: Some("orders-db".into()),
                kind: Some(EventType::Statement),
                ..Default::default()
            })
            .await,
            2
        );
        let denied = store
            .query_events(&AuditQuery {
                decision: Some(Decision::Deny),
                ..Default::default()
            })
            .await
            .expect("query");
        assert_eq!(denied.len(), 1);
        assert_eq!(denied[0].event.text(), Some("DROP TABLE orders"));
        assert_eq!(
            count(AuditQuery {
                since_ms: Some(1_001),
                until_ms: Some(1_003),
                ..Default::default()
            })
            .await,
            2,
            "since inclusive, until exclusive"
        );
        assert_eq!(
            count(AuditQuery {
                session_id: Some("s-1".into()),
                ..Default::default()
            })
            .await,
            4
        );
        assert_eq!(
            count(AuditQuery {
                kind: Some(EventType::LoginFailure),
                ..Default::default()
            })
            .await,
            1
        );
        for (needle, n) in [("drop table", 1), ("50%_OFF", 1), ("%", 1), ("nothing", 0)] {
            let q = AuditQuery {
                text: Some(needle.into()),
                ..Default::default()
            };
            assert_eq!(count(q).await, n, "text contains {needle:?}");
        }
        assert_eq!(
            count(AuditQuery {
                limit: Some(2),
                ..Default::default()
            })
            .await,
            2
        );
    }

    #[test]
    fn details_match_the_generic_form() {
        let mut events = sample_events(0);
        events.push(AuditEvent::new(EventKind::Statement {
            text: "SELECT \"quoted\" FROM t".into(),
            kind: "select".into(),
            decision: Decision::Allow,
            policy: "p \"q\" \\ r".into(),
            duration_us: None,
            rows: Some(0),
            error: Some("42P01: relation \"t\" does not exist".into()),
        }));
        let mut statements = 0;
        for ev in &events {
            let fast: serde_json::Value =
                serde_json::from_str(&details_json(&ev.event)).expect("fast details are JSON");
            let generic: serde_json::Value =
                serde_json::from_str(&generic_details(&ev.event)).expect("generic details");
            assert_eq!(fast, generic, "{:?}", ev.event);
            assert!(fast.get("text").is_none(), "text has its own column");
            statements += usize::from(ev.event.event_type() == EventType::Statement);
        }
        assert_eq!(statements, 3, "the fast path was exercised");
    }

    #[tokio::test]
    async fn large_batches_and_limits() {
        let (store, _dir) = sqlite_store().await;
        let events: Vec<AuditEvent> = (0..2_500).flat_map(|i| sample_events(i * 10)).collect();
        store.insert_events(&events).await.expect("insert 12500");
        let q = AuditQuery {
            limit: Some(5_000),
            ..Default::default()
        };
        let got = store.query_events(&q).await.expect("query");
        assert_eq!(got.len(), crate::audit::MAX_LIMIT as usize);
        assert!(got.windows(2).all(|w| w[0].time_ms >= w[1].time_ms));
        assert_eq!(got[0].time_ms, 2_499 * 10 + 4);
    }
}
