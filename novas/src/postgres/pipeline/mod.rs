//! What the server still owes the client, in order, so that NOVAS can
//! answer a denied statement itself at exactly the point in the response
//! stream where the server would have answered it, and report the outcome
//! of every forwarded statement for the audit.
//!
//! # How the glue drives it
//!
//! For each client message, after checking [`Pipeline::should_swallow`]:
//! - forwarded unchanged: [`Pipeline::forwarded`] (inspected messages) or
//!   [`Pipeline::forwarded_raw`] (first piece of a passed-through one);
//! - refused: [`Pipeline::denied_query`] or [`Pipeline::denied_extended`]
//!   (a Parse or an Execute) instead of forwarding.
//!
//! For each [`BackendEvent`]: [`Pipeline::on_backend`]. After any of these
//! calls, write [`Pipeline::take_injections`] to the client (only while the
//! backend scanner is at a message boundary) and record
//! [`Pipeline::take_completions`] in the audit. When the upstream closes,
//! call [`Pipeline::closed`].
//!
//! # Mirroring the server
//!
//! The rules are PostgreSQL's (`postgres.c`, protocol-flow.html):
//! - Simple Query: each statement ends in CommandComplete or
//!   EmptyQueryResponse; an ErrorResponse ends the whole string (later
//!   statements never run); ReadyForQuery ends the Query.
//! - Extended protocol: after an ErrorResponse to Parse, Bind, Describe,
//!   Execute or Close, the server discards every message up to the next
//!   Sync, so their responses (and any denial queued among them) are never
//!   sent. The Sync is answered with ReadyForQuery.
//! - COPY FROM STDIN: while the server waits for CopyDone/CopyFail it
//!   ignores Sync and Flush (libpq sends a Sync right after the Execute).
//!
//! # Swallowing after a denied Parse or Execute
//!
//! A denied Parse or Execute is never forwarded, so the server is not in
//! its skip-until-Sync state; NOVAS plays it: from [`Pipeline::denied_extended`]
//! until the client's next Sync, [`Pipeline::should_swallow`] is true for
//! every client message except Sync and Terminate — Bind, Execute,
//! Describe, Close, Flush, Parse, Query, FunctionCall and Copy messages
//! alike, which is what the server would discard. The glue drops those
//! (audit them as not executed) and forwards the Sync, whose ReadyForQuery
//! then follows our ErrorResponse.
//!
//! # Where a denial differs from a real failure
//!
//! - A denied Query inside a transaction block is answered with the
//!   status the server last reported (`T`), not `E`: the upstream
//!   transaction really is intact, and the client may go on using it.
//! - A failed Parse of the unnamed statement drops the server's previous
//!   unnamed statement; a denied one does not reach the server, so a later
//!   Bind of `""` without a new Parse runs the previous (allowed) statement
//!   instead of failing. Audit such an Execute with the statement the glue
//!   last saw parsed as `""`.
//! - COPY FROM STDIN in the extended protocol: if the server fails the COPY
//!   before reading the Sync libpq sends after Execute (only a cancel or a
//!   timeout can do that), that Sync gets a ReadyForQuery the pipeline does
//!   not expect and [`PipelineError::Unexpected`] ends the session.

#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::{
    backend::{BackendEvent, TransactionStatus},
    error_response::ErrorResponse,
    frontend::{FrontendKind, FrontendMessage, TargetKind},
};

/// What happened to a tagged statement or message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// CommandComplete: the command tag and the row count it carries.
    Complete { command: String, rows: Option<u64> },
    /// Execute stopped at its row limit (PortalSuspended) after `rows`
    /// rows; the client may Execute the portal again.
    Suspended { rows: u64 },
    /// The statement text was empty (EmptyQueryResponse).
    Empty,
    /// Parse, Bind, Describe, Close, Sync or FunctionCall succeeded.
    Accepted,
    /// The server answered with an ErrorResponse.
    Failed { sqlstate: String, message: String },
    /// The server never ran it: an earlier statement of the same Query
    /// failed, an earlier extended message failed before the Sync, or the
    /// connection closed first.
    NotExecuted,
    /// Refused by policy, and our ErrorResponse has been handed out.
    Denied,
}

/// The outcome of one tag the glue passed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub tag: u64,
    pub outcome: Outcome,
}

impl Completion {
    /// Rows from the CommandComplete tag, or rows sent before a suspension.
    pub fn rows(&self) -> Option<u64> {
        match &self.outcome {
            Outcome::Complete { rows, .. } => *rows,
            Outcome::Suspended { rows } => Some(*rows),
            _ => None,
        }
    }

    /// SQLSTATE and message of a server error.
    pub fn error(&self) -> Option<(&str, &str)> {
        match &self.outcome {
            Outcome::Failed { sqlstate, message } => Some((sqlstate, message)),
            _ => None,
        }
    }

    pub fn suspended(&self) -> bool {
        matches!(self.outcome, Outcome::Suspended { .. })
    }
}

/// The glue and the server disagree about the conversation. Fatal for the
/// session: injections could no longer be placed correctly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    /// The server sent a response that is not what it owes next.
    #[error("server sent {got} while {expecting} was owed")]
    Unexpected {
        got: &'static str,
        expecting: &'static str,
    },
    /// The glue recorded a message (forwarded or denied) while
    /// [`Pipeline::should_swallow`] said to drop it.
    #[error("client message '{}' recorded while it must be swallowed", *.0 as char)]
    MustSwallow(u8),
    /// More tags than the message has statements (only Query takes more
    /// than one; Flush and Terminate take none).
    #[error("{count} tags given for client message '{}'", *msg_type as char)]
    TooManyTags { msg_type: u8, count: usize },
}

/// One thing the server owes, or one thing we owe at that point.
#[derive(Debug)]
enum Owed {
    /// Statements' tags in order; the first is the one running.
    Query {
        tags: VecDeque<u64>,
    },
    Parse(Option<u64>),
    Bind(Option<u64>),
    Close(Option<u64>),
    Describe {
        tag: Option<u64>,
        /// Describe of a statement sends ParameterDescription first.
        statement: bool,
        params_seen: bool,
    },
    Execute {
        tag: Option<u64>,
        max_rows: u32,
    },
    /// The tag is reported at ReadyForQuery, or earlier if the implicit
    /// COMMIT at Sync fails.
    Sync(Option<u64>),
    FunctionCall(Option<u64>),
    /// Our ErrorResponse (and ReadyForQuery, for a simple Query) to write
    /// once everything before it has been answered.
    Denial {
        error: ErrorResponse,
        tags: Vec<u64>,
        ready: bool,
    },
    /// The client's CopyDone/CopyFail: owes nothing, but marks where a
    /// COPY FROM STDIN ends among the queued messages.
    CopyEnd,
}

impl Owed {
    fn name(&self) -> &'static str {
        match self {
            Self::Query { .. } => "the response to a Query",
            Self::Parse(_) => "ParseComplete",
            Self::Bind(_) => "BindComplete",
            Self::Close(_) => "CloseComplete",
            Self::Describe { .. } => "the response to a Describe",
            Self::Execute { .. } => "the response to an Execute",
            Self::Sync(_) => "ReadyForQuery",
            Self::FunctionCall(_) => "the response to a FunctionCall",
            Self::Denial { .. } => "a denial",
            Self::CopyEnd => "nothing",
        }
    }

    fn tags(self) -> Vec<u64> {
        match self {
            Self::Query { tags } => tags.into(),
            Self::Parse(t)
            | Self::Bind(t)
            | Self::Close(t)
            | Self::Describe { tag: t, .. }
            | Self::Execute { tag: t, .. }
            | Self::Sync(t)
            | Self::FunctionCall(t) => t.into_iter().collect(),
            Self::Denial { tags, .. } => tags,
            Self::CopyEnd => Vec::new(),
        }
    }
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Pipeline {
    queue: VecDeque<Owed>,
    status: TransactionStatus,
    /// The server failed an extended message and no Sync has been sent
    /// since: it discards everything until one comes.
    server_skipping: bool,
    /// A Parse was denied and the client has not sent Sync since.
    swallowing: bool,
    /// The server is in COPY FROM STDIN and the client's CopyDone/CopyFail
    /// has not been forwarded yet.
    copy_in: bool,
    injections: BytesMut,
    completions: Vec<Completion>,
}

impl Pipeline {
    /// A pipeline for a session whose login ended with ReadyForQuery
    /// `status`.
    pub fn new(status: TransactionStatus) -> Self {
        Self {
            status,
            ..Self::default()
        }
    }

    /// The server's transaction status as of its last ReadyForQuery.
    pub fn transaction_status(&self) -> TransactionStatus {
        self.status
    }

    /// True if nothing is owed: the server is idle as far as NOVAS knows.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && !self.copy_in && !self.server_skipping
    }

    /// Whether the glue must drop (not forward, not record) a client
    /// message of this type; see the module documentation.
    pub fn should_swallow(&self, msg_type: u8) -> bool {
        self.swallowing && !matches!(msg_type, b'S' | b'X')
    }

    /// Records an inspected client message forwarded unchanged. `tags`: one
    /// per statement for a Query (however many the glue's splitter found;
    /// missing ones go unreported, unanswered ones are reported
    /// [`Outcome::NotExecuted`]); at most one for other messages; none for
    /// Flush and Terminate.
    pub fn forwarded(&mut self, msg: &FrontendMessage, tags: &[u64]) -> Result<(), PipelineError> {
        let msg_type = msg.msg_type();
        if self.should_swallow(msg_type) {
            return Err(PipelineError::MustSwallow(msg_type));
        }
        let max_tags = match msg.kind() {
            FrontendKind::Query(_) => usize::MAX,
            FrontendKind::Flush | FrontendKind::Terminate => 0,
            _ => 1,
        };
        if tags.len() > max_tags {
            return Err(PipelineError::TooManyTags {
                msg_type,
                count: tags.len(),
            });
        }
        let tag = tags.first().copied();
        let owed = match msg.kind() {
            FrontendKind::Flush | FrontendKind::Terminate => return Ok(()),
            FrontendKind::Sync => {
                self.swallowing = false;
                if self.copy_in {
                    // Consumed and ignored by COPY FROM STDIN.
                    self.not_executed(tag);
                    return Ok(());
                }
                self.server_skipping = false;
                Owed::Sync(tag)
            }
            FrontendKind::Query(_) => Owed::Query {
                tags: tags.iter().copied().collect(),
            },
            FrontendKind::Parse(_) => Owed::Parse(tag),
            FrontendKind::Bind(_) => Owed::Bind(tag),
            FrontendKind::Close(_) => Owed::Close(tag),
            FrontendKind::Describe(t) => Owed::Describe {
                tag,
                statement: t.kind == TargetKind::Statement,
                params_seen: false,
            },
            FrontendKind::Execute(e) => Owed::Execute {
                tag,
                max_rows: e.max_rows,
            },
        };
        self.push(owed);
        Ok(())
    }

    /// Records the first piece of a passed-through client message
    /// (FunctionCall, CopyData, CopyDone, CopyFail, …). `tags`: at most one,
    /// for a FunctionCall.
    pub fn forwarded_raw(&mut self, msg_type: u8, tags: &[u64]) -> Result<(), PipelineError> {
        if self.should_swallow(msg_type) {
            return Err(PipelineError::MustSwallow(msg_type));
        }
        let max_tags = usize::from(msg_type == b'F');
        if tags.len() > max_tags {
            return Err(PipelineError::TooManyTags {
                msg_type,
                count: tags.len(),
            });
        }
        match msg_type {
            b'F' => self.push(Owed::FunctionCall(tags.first().copied())),
            b'c' | b'f' if self.copy_in => self.copy_in = false,
            // Outside COPY the server ignores these, and while skipping it
            // ignores everything; a marker still goes in the queue in case
            // a COPY queued before it turns out to be one.
            b'c' | b'f' if !self.server_skipping => self.queue.push_back(Owed::CopyEnd),
            // CopyData, or a type the server will reject by closing.
            _ => {}
        }
        self.advance();
        Ok(())
    }

    /// Records a simple Query refused by policy (not forwarded). Once
    /// everything before it has been answered, the client gets `error`
    /// and a ReadyForQuery with the server's current transaction status,
    /// and `tags` are reported [`Outcome::Denied`].
    pub fn denied_query(
        &mut self,
        error: ErrorResponse,
        tags: &[u64],
    ) -> Result<(), PipelineError> {
        if self.should_swallow(b'Q') {
            return Err(PipelineError::MustSwallow(b'Q'));
        }
        self.push(Owed::Denial {
            error,
            tags: tags.to_vec(),
            ready: true,
        });
        Ok(())
    }

    /// Records a Parse or an Execute refused (not forwarded): by policy, or
    /// because the audit store is down. Once everything before it has been
    /// answered, the client gets `error`; from now until the client's Sync,
    /// [`Pipeline::should_swallow`] is true.
    pub fn denied_extended(
        &mut self,
        error: ErrorResponse,
        tags: &[u64],
    ) -> Result<(), PipelineError> {
        if self.should_swallow(b'P') {
            return Err(PipelineError::MustSwallow(b'P'));
        }
        self.swallowing = true;
        self.push(Owed::Denial {
            error,
            tags: tags.to_vec(),
            ready: false,
        });
        Ok(())
    }

    /// Consumes one event from the backend scanner.
    pub fn on_backend(&mut self, ev: &BackendEvent) -> Result<(), PipelineError> {
        let result = self.apply(ev);
        self.advance();
        result
    }

    /// Bytes to write to the client now: our ErrorResponses (and
    /// ReadyForQuery) for denials whose turn has come. Write them only
    /// while the backend scanner is at a message boundary.
    pub fn take_injections(&mut self) -> Option<Bytes> {
        (!self.injections.is_empty()).then(|| self.injections.split().freeze())
    }

    /// Outcomes known since the last call, in the order they happened.
    pub fn take_completions(&mut self) -> Vec<Completion> {
        std::mem::take(&mut self.completions)
    }

    /// The upstream connection ended: whatever is still owed will never
    /// come and is reported [`Outcome::NotExecuted`]; pending injections
    /// are dropped.
    pub fn closed(&mut self) {
        while let Some(o) = self.queue.pop_front() {
            self.report_all(o.tags(), Outcome::NotExecuted);
        }
        self.injections.clear();
        self.copy_in = false;
        self.server_skipping = false;
        self.swallowing = false;
    }

    fn push(&mut self, owed: Owed) {
        if self.server_skipping || self.copy_in {
            // The server discards it (or, in COPY, rejects it as a protocol
            // violation): no response will come. A denial here is dropped
            // for the same reason: the server would not have answered.
            let tags = owed.tags();
            self.report_all(tags, Outcome::NotExecuted);
        } else {
            self.queue.push_back(owed);
        }
        self.advance();
    }

    /// Hands out every denial that has reached the front and drops stray
    /// copy markers, so the front is always something the server owes.
    fn advance(&mut self) {
        loop {
            match self.queue.front() {
                Some(Owed::CopyEnd) => {
                    self.queue.pop_front();
                }
                Some(Owed::Denial { .. }) => {
                    let Some(Owed::Denial { error, tags, ready }) = self.queue.pop_front() else {
                        continue;
                    };
                    error.encode(&mut self.injections);
                    if ready {
                        self.status.encode(&mut self.injections);
                    }
                    self.report_all(tags, Outcome::Denied);
                }
                _ => return,
            }
        }
    }

    fn report(&mut self, tag: Option<u64>, outcome: Outcome) {
        if let Some(tag) = tag {
            self.completions.push(Completion { tag, outcome });
        }
    }

    fn report_all(&mut self, tags: Vec<u64>, outcome: Outcome) {
        for tag in tags {
            self.completions.push(Completion {
                tag,
                outcome: outcome.clone(),
            });
        }
    }

    fn not_executed(&mut self, tag: Option<u64>) {
        self.report(tag, Outcome::NotExecuted);
    }

    fn apply(&mut self, ev: &BackendEvent) -> Result<(), PipelineError> {
        use BackendEvent as E;
        if let E::ParameterStatus { .. } = ev {
            return Ok(());
        }
        if matches!(ev, E::CommandComplete(_) | E::ErrorResponse(_)) {
            // The COPY is over for the server (done, or failed and what the
            // client still sends for it is ignored as stray copy messages).
            self.copy_in = false;
        }
        let Some(front) = self.queue.front_mut() else {
            return match ev {
                // FATAL at any time: admin shutdown, idle timeouts.
                E::ErrorResponse(_) => Ok(()),
                _ => Err(PipelineError::Unexpected {
                    got: ev.name(),
                    expecting: "nothing",
                }),
            };
        };
        let unexpected = PipelineError::Unexpected {
            got: ev.name(),
            expecting: front.name(),
        };
        match (front, ev) {
            (Owed::Query { tags }, E::CommandComplete(c)) => {
                let tag = tags.pop_front();
                self.report(
                    tag,
                    Outcome::Complete {
                        command: c.0.clone(),
                        rows: c.rows(),
                    },
                );
            }
            (Owed::Query { tags }, E::EmptyQueryResponse) => {
                let tag = tags.pop_front();
                self.report(tag, Outcome::Empty);
            }
            (Owed::Query { tags }, E::ErrorResponse(e)) => {
                let mut rest: Vec<u64> = tags.drain(..).collect();
                if !rest.is_empty() {
                    let first = rest.remove(0);
                    self.report(Some(first), failed(e));
                }
                self.report_all(rest, Outcome::NotExecuted);
            }
            (Owed::Query { .. }, E::RowDescription | E::CopyOutResponse | E::CopyDone) => {}
            (
                Owed::Query { .. } | Owed::Execute { .. },
                E::CopyInResponse | E::CopyBothResponse,
            ) => {
                self.copy_in_started();
            }
            (Owed::Execute { .. }, E::CopyOutResponse | E::CopyDone) => {}
            (Owed::Execute { tag, .. }, E::CommandComplete(c)) => {
                let tag = tag.take();
                self.queue.pop_front();
                self.report(
                    tag,
                    Outcome::Complete {
                        command: c.0.clone(),
                        rows: c.rows(),
                    },
                );
            }
            (Owed::Execute { tag, .. }, E::EmptyQueryResponse) => {
                let tag = tag.take();
                self.queue.pop_front();
                self.report(tag, Outcome::Empty);
            }
            (Owed::Execute { tag, max_rows }, E::PortalSuspended) => {
                let (tag, rows) = (tag.take(), u64::from(*max_rows));
                self.queue.pop_front();
                self.report(tag, Outcome::Suspended { rows });
            }
            (Owed::Parse(tag), E::ParseComplete)
            | (Owed::Bind(tag), E::BindComplete)
            | (Owed::Close(tag), E::CloseComplete) => {
                let tag = tag.take();
                self.queue.pop_front();
                self.report(tag, Outcome::Accepted);
            }
            (
                Owed::Describe {
                    statement: true,
                    params_seen,
                    ..
                },
                E::ParameterDescription,
            ) if !*params_seen => *params_seen = true,
            (
                Owed::Describe {
                    tag,
                    statement,
                    params_seen,
                },
                E::RowDescription | E::NoData,
            ) if !*statement || *params_seen => {
                let tag = tag.take();
                self.queue.pop_front();
                self.report(tag, Outcome::Accepted);
            }
            (
                Owed::Parse(_)
                | Owed::Bind(_)
                | Owed::Close(_)
                | Owed::Describe { .. }
                | Owed::Execute { .. },
                E::ErrorResponse(e),
            ) => {
                let failed_entry = self.queue.pop_front();
                let tag = failed_entry.map(Owed::tags).unwrap_or_default();
                self.report_all(tag, failed(e));
                self.skip_until_sync();
            }
            (Owed::Sync(tag) | Owed::FunctionCall(tag), E::ErrorResponse(e)) => {
                // Reported now; ReadyForQuery still follows.
                let tag = tag.take();
                self.report(tag, failed(e));
            }
            (Owed::Query { .. } | Owed::Sync(_) | Owed::FunctionCall(_), E::ReadyForQuery(s)) => {
                self.status = *s;
                let done = self.queue.pop_front();
                let accepted = matches!(
                    done,
                    Some(Owed::Sync(Some(_)) | Owed::FunctionCall(Some(_)))
                );
                let tags = done.map(Owed::tags).unwrap_or_default();
                let outcome = if accepted {
                    Outcome::Accepted
                } else {
                    Outcome::NotExecuted
                };
                self.report_all(tags, outcome);
            }
            _ => return Err(unexpected),
        }
        Ok(())
    }

    /// The server discards queued messages up to the next Sync, which it
    /// answers; with no Sync queued yet it keeps discarding new ones.
    fn skip_until_sync(&mut self) {
        while let Some(front) = self.queue.front() {
            if matches!(front, Owed::Sync(_)) {
                return;
            }
            if let Some(o) = self.queue.pop_front() {
                self.report_all(o.tags(), Outcome::NotExecuted);
            }
        }
        self.server_skipping = true;
    }

    /// COPY FROM STDIN began for the front entry: Syncs the client sent
    /// before its CopyDone/CopyFail are read and ignored by the COPY, and
    /// that CopyDone/CopyFail ends it.
    fn copy_in_started(&mut self) {
        let end = self
            .queue
            .iter()
            .skip(1)
            .position(|o| matches!(o, Owed::CopyEnd))
            .map(|i| i + 1);
        let mut ignored = Vec::new();
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for (i, o) in self.queue.drain(..).enumerate() {
            let during_copy = i >= 1 && end.is_none_or(|e| i < e);
            if during_copy && matches!(o, Owed::Sync(_)) {
                ignored.extend(o.tags());
            } else if Some(i) != end {
                kept.push_back(o);
            }
        }
        self.queue = kept;
        self.copy_in = end.is_none();
        self.report_all(ignored, Outcome::NotExecuted);
    }
}

fn failed(e: &ErrorResponse) -> Outcome {
    Outcome::Failed {
        sqlstate: e.code().to_owned(),
        message: e.message().to_owned(),
    }
}
