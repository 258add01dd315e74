//! The audit trail: typed events, one emit path.
//!
//! Front ends build an [`AuditEvent`] and hand it to [`Auditor::record`],
//! which queues it without blocking; a background writer stores batches.
//! Before forwarding work that must be audited, a front end asks
//! [`Auditor::is_available`] and refuses the work when it says no
//! (fail-closed, unless `NOVAS_AUDIT_FAIL_OPEN`).
//!
//! - [`event`]: the event types.
//! - [`query`]: search filters and their textual forms.
//! - [`writer`]: the [`Auditor`] and its batching writer task.
//! - [`spool`]: the file that keeps events the store could not take at
//!   shutdown, replayed at the next start.

pub mod event;
pub mod query;
pub mod spool;
pub mod writer;

pub use event::{new_id, now_ms, AuditEvent, Decision, EventKind, EventType, KubeRequest};
pub use query::{AuditQuery, ParamError, DEFAULT_LIMIT, MAX_LIMIT};
pub use writer::{AuditUnavailable, Auditor, AuditorConfig, ShutdownReport};
