//! The command phase: messages relayed both ways in one task, every SQL
//! text checked against the policy before it is forwarded, every statement
//! audited with its outcome. A denied statement is answered by NOVAS at the
//! right place in the response stream (the [`Pipeline`] knows where).

use std::{collections::HashMap, sync::Arc, time::Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{
    BackendItem, BackendScanner, Completion, ErrorResponse, FrontendItem, FrontendKind,
    FrontendMessage, FrontendScanner, Outcome, Pipeline, ProtocolError, Severity,
    TransactionStatus,
};
use crate::{
    access::{Policy, SqlDialect, StatementDecision},
    audit::{Auditor, Decision, EventKind},
    dac::End,
    dac::SessionAudit,
};

/// Largest client message NOVAS reads whole (Query, Parse, Bind); larger
/// ones are refused with a protocol error. Big COPY data passes in pieces.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024 * 1024;
/// Reads are at most this large; results stream through in such pieces.
const READ_CHUNK: usize = 64 * 1024;

/// A prepared statement as NOVAS saw it at Parse time.
struct Prepared {
    sql: Arc<str>,
    kinds: Arc<str>,
}

/// A statement forwarded or denied, waiting for its outcome.
struct Pending {
    text: Arc<str>,
    kinds: Arc<str>,
    decision: Decision,
    reason: Option<String>,
    started: Instant,
}

pub struct Relay<'a> {
    pub policy: &'a Policy,
    pub auditor: &'a Auditor,
    pub audit: &'a SessionAudit,
    /// Shared with the portals bound to them: a Bind costs no copy.
    statements: HashMap<Vec<u8>, Arc<Prepared>>,
    portals: HashMap<Vec<u8>, Option<Arc<Prepared>>>,
    pending: HashMap<u64, Pending>,
    next_tag: u64,
}

impl<'a> Relay<'a> {
    pub fn new(policy: &'a Policy, auditor: &'a Auditor, audit: &'a SessionAudit) -> Self {
        Self {
            policy,
            auditor,
            audit,
            statements: HashMap::new(),
            portals: HashMap::new(),
            pending: HashMap::new(),
            next_tag: 0,
        }
    }

    fn tag(
        &mut self,
        text: Arc<str>,
        kinds: Arc<str>,
        decision: Decision,
        reason: Option<String>,
    ) -> u64 {
        let t = self.next_tag;
        self.next_tag += 1;
        self.pending.insert(
            t,
            Pending {
                text,
                kinds,
                decision,
                reason,
                started: Instant::now(),
            },
        );
        t
    }

    /// Runs until either side closes or breaks the protocol.
    pub async fn run<C, S>(
        mut self,
        client: C,
        server: S,
        mut from_client: BytesMut,
        mut from_server: BytesMut,
        status: TransactionStatus,
    ) -> End
    where
        C: AsyncRead + AsyncWrite + Unpin,
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut cr, mut cw) = tokio::io::split(client);
        let (mut sr, mut sw) = tokio::io::split(server);
        let mut fe = FrontendScanner::new(MAX_CLIENT_MESSAGE);
        let mut be = BackendScanner::default();
        let mut pipeline = Pipeline::new(status);
        let mut to_client = BytesMut::with_capacity(READ_CHUNK);
        let mut to_server = BytesMut::with_capacity(READ_CHUNK);
        // Bytes that arrived with the login are processed first.
        let mut client_data = !from_client.is_empty();
        let mut server_data = !from_server.is_empty();
        let end = loop {
            if client_data {
                if let Err(e) =
                    self.client_items(&mut fe, &mut pipeline, &mut from_client, &mut to_server)
                {
                    // Tell the client why, the way PostgreSQL would.
                    ErrorResponse::protocol_violation(e.to_string()).encode(&mut to_client);
                    let _ = cw.write_all(&to_client).await;
                    break End::ClientError(e.to_string());
                }
                if be.at_boundary() {
                    if let Some(b) = pipeline.take_injections() {
                        to_client.extend_from_slice(&b);
                    }
                }
            }
            if server_data {
                if let Err(e) =
                    server_items(&mut be, &mut pipeline, &mut from_server, &mut to_client)
                {
                    break End::ServerError(e);
                }
            }
            self.complete(pipeline.take_completions());
            if !to_server.is_empty() {
                if let Err(e) = sw.write_all(&to_server).await {
                    break End::ServerError(e.to_string());
                }
                to_server.clear();
            }
            if !to_client.is_empty() {
                if let Err(e) = cw.write_all(&to_client).await {
                    break End::ClientError(e.to_string());
                }
                to_client.clear();
            }
            client_data = false;
            server_data = false;
            reserve(&mut from_client);
            reserve(&mut from_server);
            tokio::select! {
                r = cr.read_buf(&mut from_client) => match r {
                    Ok(0) => break End::ClientClosed,
                    Ok(_) => client_data = true,
                    Err(e) => break End::ClientError(e.to_string()),
                },
                r = sr.read_buf(&mut from_server) => match r {
                    Ok(0) => break End::ServerClosed,
                    Ok(_) => server_data = true,
                    Err(e) => break End::ServerError(e.to_string()),
                },
            }
        };
        pipeline.closed();
        self.complete(pipeline.take_completions());
        // Whatever is left was never answered.
        let left: Vec<u64> = self.pending.keys().copied().collect();
        self.complete(
            left.into_iter()
                .map(|tag| Completion {
                    tag,
                    outcome: Outcome::NotExecuted,
                })
                .collect(),
        );
        let _ = sw.shutdown().await;
        let _ = cw.shutdown().await;
        end
    }

    fn client_items(
        &mut self,
        fe: &mut FrontendScanner,
        pipeline: &mut Pipeline,
        buf: &mut BytesMut,
        to_server: &mut BytesMut,
    ) -> Result<(), ErrorResponse> {
        let violation = |e: String| ErrorResponse::protocol_violation(e);
        while let Some(item) = fe
            .next(buf)
            .map_err(|e: ProtocolError| violation(e.to_string()))?
        {
            if pipeline.should_swallow(item.msg_type()) {
                continue;
            }
            match item {
                FrontendItem::Message(m) => self.client_message(&m, pipeline, to_server)?,
                FrontendItem::Raw {
                    msg_type,
                    bytes,
                    first,
                    ..
                } => {
                    if first {
                        pipeline
                            .forwarded_raw(msg_type, &[])
                            .map_err(|e| violation(e.to_string()))?;
                    }
                    to_server.extend_from_slice(&bytes);
                }
            }
        }
        Ok(())
    }

    fn client_message(
        &mut self,
        m: &FrontendMessage,
        pipeline: &mut Pipeline,
        to_server: &mut BytesMut,
    ) -> Result<(), ErrorResponse> {
        let err = |e: super::PipelineError| ErrorResponse::protocol_violation(e.to_string());
        match m.kind() {
            FrontendKind::Query(q) => {
                let sql: Arc<str> = q.sql.to_string_lossy().into();
                let decision = self.decide(&sql);
                let tags: Vec<u64> = decision
                    .statements
                    .iter()
                    .map(|c| {
                        let text = c
                            .text
                            .as_deref()
                            .map(Arc::from)
                            .unwrap_or_else(|| sql.clone());
                        let kind: Arc<str> = c.kind.as_str().into();
                        (text, kind)
                    })
                    .collect::<Vec<_>>()
                    .into_iter()
                    .map(|(text, kind)| {
                        let d = if decision.allowed {
                            Decision::Allow
                        } else {
                            Decision::Deny
                        };
                        self.tag(text, kind, d, decision.reason.clone())
                    })
                    .collect();
                match &decision.reason {
                    None => {
                        pipeline.forwarded(m, &tags).map_err(err)?;
                        to_server.extend_from_slice(m.raw());
                    }
                    Some(reason) => {
                        pipeline
                            .denied_query(self.denial(reason), &tags)
                            .map_err(err)?;
                    }
                }
            }
            FrontendKind::Parse(p) => {
                let sql: Arc<str> = p.sql.to_string_lossy().into();
                let decision = self.decide(&sql);
                let kinds: Arc<str> = decision.kinds().into();
                match &decision.reason {
                    None => {
                        self.statements.insert(
                            p.name.as_bytes().to_vec(),
                            Arc::new(Prepared { sql, kinds }),
                        );
                        pipeline.forwarded(m, &[]).map_err(err)?;
                        to_server.extend_from_slice(m.raw());
                    }
                    Some(reason) => {
                        // The statement never exists upstream; an older one
                        // of that name must not stand in for it.
                        self.statements.remove(p.name.as_bytes());
                        let tag = self.tag(sql, kinds, Decision::Deny, Some(reason.clone()));
                        pipeline
                            .denied_extended(self.denial(reason), &[tag])
                            .map_err(err)?;
                    }
                }
            }
            FrontendKind::Bind(b) => {
                let prepared = self.statements.get(b.statement.as_bytes()).cloned();
                self.portals.insert(b.portal.as_bytes().to_vec(), prepared);
                pipeline.forwarded(m, &[]).map_err(err)?;
                to_server.extend_from_slice(m.raw());
            }
            FrontendKind::Execute(e) => {
                let (text, kinds) = match self.portals.get(e.portal.as_bytes()) {
                    Some(Some(p)) => (p.sql.clone(), p.kinds.clone()),
                    // Prepared before NOVAS could see it cannot happen; a
                    // portal the server will reject is audited as such.
                    _ => (Arc::from("<unknown portal>"), Arc::from("other")),
                };
                // A statement prepared earlier runs again: with the audit
                // store down (fail-closed) it could not be recorded, so it
                // is refused like a denied Parse; the session goes on.
                if let Err(why) = self.auditor.check() {
                    let reason = format!("statement refused: {why}");
                    let tag = self.tag(text, kinds, Decision::Deny, Some(reason.clone()));
                    pipeline
                        .denied_extended(self.denial(&reason), &[tag])
                        .map_err(err)?;
                    return Ok(());
                }
                let tag = self.tag(text, kinds, Decision::Allow, None);
                pipeline.forwarded(m, &[tag]).map_err(err)?;
                to_server.extend_from_slice(m.raw());
            }
            FrontendKind::Close(t) => {
                match t.kind {
                    super::TargetKind::Statement => {
                        self.statements.remove(t.name.as_bytes());
                    }
                    super::TargetKind::Portal => {
                        self.portals.remove(t.name.as_bytes());
                    }
                }
                pipeline.forwarded(m, &[]).map_err(err)?;
                to_server.extend_from_slice(m.raw());
            }
            _ => {
                pipeline.forwarded(m, &[]).map_err(err)?;
                to_server.extend_from_slice(m.raw());
            }
        }
        Ok(())
    }

    /// The policy's verdict; with the audit store down (fail-closed) every
    /// statement is refused, since it could not be recorded.
    fn decide(&self, sql: &str) -> StatementDecision {
        let mut d = self.policy.check(SqlDialect::Postgres, sql);
        if d.allowed {
            if let Err(e) = self.auditor.check() {
                d.allowed = false;
                d.reason = Some(format!("statement refused: {e}"));
            }
        }
        d
    }

    fn denial(&self, reason: &str) -> ErrorResponse {
        if reason.contains("audit") {
            ErrorResponse::new(Severity::Error, "58000", reason.to_string())
        } else {
            ErrorResponse::denied(reason.to_string())
        }
    }

    fn complete(&mut self, done: Vec<Completion>) {
        for c in done {
            let Some(p) = self.pending.remove(&c.tag) else {
                continue;
            };
            let error = match (&c.outcome, &p.decision) {
                (_, Decision::Deny) => p.reason.clone(),
                (Outcome::NotExecuted, _) => Some("not executed".into()),
                (Outcome::Denied, _) => p.reason.clone(),
                _ => c.error().map(|(code, msg)| format!("{code}: {msg}")),
            };
            let duration_us = match p.decision {
                Decision::Allow => Some(p.started.elapsed().as_micros() as u64),
                Decision::Deny => None,
            };
            self.audit.emit(EventKind::Statement {
                text: p.text.to_string(),
                kind: p.kinds.to_string(),
                decision: p.decision,
                policy: self.policy.name.clone(),
                duration_us,
                rows: c.rows(),
                error,
            });
        }
    }
}

fn server_items(
    be: &mut BackendScanner,
    pipeline: &mut Pipeline,
    buf: &mut BytesMut,
    to_client: &mut BytesMut,
) -> Result<(), String> {
    while let Some(item) = be.next(buf).map_err(|e| e.to_string())? {
        match item {
            BackendItem::Forward(b) => to_client.extend_from_slice(&b),
            BackendItem::Event(ev) => pipeline.on_backend(&ev).map_err(|e| e.to_string())?,
        }
        if be.at_boundary() {
            if let Some(b) = pipeline.take_injections() {
                to_client.extend_from_slice(&b);
            }
        }
    }
    Ok(())
}

fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}
