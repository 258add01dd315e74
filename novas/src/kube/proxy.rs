//! One kubectl request: cluster from the path, token, attributes, policy,
//! then a tunnel stream to an agent of the cluster carrying the request
//! with the impersonated identity in its header. The response streams back
//! as the agent produces it (no buffering), upgrades (exec, port-forward)
//! become raw byte splices after the `101`, and one audit event per request
//! is written when its response ends.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tunnel_proto::{stream::KUBE_STREAM_VERSION, KubeStream, StreamKind, StreamOpen};

use super::{
    attrs::{self, Attrs, Request as Kind},
    auth::{self, AuthError},
    policy::{denial_message, Impersonation},
    status, Body, KubeFront,
};
use crate::{
    access::Identity,
    audit::{AuditEvent, Auditor, Decision, EventKind, KubeRequest},
    resources::Resource,
    route::{route_header, Metered, SessionBytes},
    sessions::{Registration, Sessions},
    users::{admit, Candidate},
};

/// The path prefix that selects a cluster: `/clusters/<name>/api/...`.
pub const CLUSTER_PREFIX: &str = "/clusters/";

/// One kubectl connection.
pub struct Conn {
    pub client: SocketAddr,
    pub session_id: String,
    /// The console's live-session entry: listed (and terminable) while the
    /// connection or an exec/port-forward upgraded from it runs.
    pub reg: Registration,
    pub sessions: Arc<Sessions>,
}

/// Splits `/clusters/<name>/rest` into the cluster name and `/rest`.
pub fn split_cluster(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix(CLUSTER_PREFIX)?;
    let (name, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    (!name.is_empty()).then_some((name, tail))
}

/// Whether a client header must not reach the agent: credentials (the
/// agent has its own) and impersonation (the policy decides it; a user's
/// own `--as` must never pass).
pub fn is_stripped(name: &HeaderName) -> bool {
    name == header::AUTHORIZATION
        || name == header::PROXY_AUTHORIZATION
        || name == header::HOST
        || name.as_str().starts_with("impersonate-")
}

/// Prefix of a bearer token smuggled in as a WebSocket subprotocol, which
/// kube-apiserver accepts as credentials (for browsers).
const WS_TOKEN_PROTOCOL: &str = "base64url.bearer.authorization.k8s.io.";

/// The headers forwarded to the agent.
pub fn forwarded_headers(h: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(h.len());
    for (k, v) in h {
        if is_stripped(k) {
            continue;
        }
        if k.as_str() == "sec-websocket-protocol" {
            // Credentials in a subprotocol list are credentials too.
            let kept: Vec<&str> = v
                .to_str()
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty() && !p.starts_with(WS_TOKEN_PROTOCOL))
                .collect();
            if let Ok(v) = http::HeaderValue::from_str(&kept.join(", ")) {
                if !kept.is_empty() {
                    out.append(k.clone(), v);
                }
            }
            continue;
        }
        out.append(k.clone(), v.clone());
    }
    out
}

/// The size of a request's line and headers, as sent.
pub fn head_size<B>(req: &Request<B>) -> usize {
    let line = req.method().as_str().len() + req.uri().to_string().len() + 11;
    req.headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + line
}

/// What one request's audit event says; filled in as the request goes and
/// written once, when the last holder (response body, upgrade splice)
/// drops it.
struct RequestAudit {
    auditor: Auditor,
    session_id: String,
    user: String,
    cluster: String,
    started: Instant,
    bytes: Arc<SessionBytes>,
    fields: Mutex<Fields>,
}

struct Fields {
    client_addr: String,
    text: String,
    attrs: Attrs,
    decision: Decision,
    policy: String,
    imp: Impersonation,
    status: u16,
    agent: Option<String>,
    error: Option<String>,
    recording: Option<String>,
}

impl Drop for RequestAudit {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        let f = match self.fields.get_mut() {
            Ok(f) => f,
            Err(p) => p.into_inner(),
        };
        let duration_ms = self.started.elapsed().as_millis() as u64;
        tracing::info!(
            session.id = %self.session_id,
            user = %self.user,
            kube.cluster = %self.cluster,
            kube.verb = %f.attrs.verb,
            kube.resource = %f.attrs.resource,
            kube.namespace = %f.attrs.namespace,
            status = f.status,
            duration_ms,
            decision = f.decision.as_str(),
            "kubernetes request"
        );
        let ev = AuditEvent::new(EventKind::KubeRequest(Box::new(KubeRequest {
            client_addr: std::mem::take(&mut f.client_addr),
            text: std::mem::take(&mut f.text),
            verb: std::mem::take(&mut f.attrs.verb),
            api_group: std::mem::take(&mut f.attrs.api_group),
            resource: std::mem::take(&mut f.attrs.resource),
            subresource: std::mem::take(&mut f.attrs.subresource),
            namespace: std::mem::take(&mut f.attrs.namespace),
            name: std::mem::take(&mut f.attrs.name),
            decision: f.decision,
            policy: std::mem::take(&mut f.policy),
            kube_user: std::mem::take(&mut f.imp.user),
            kube_groups: std::mem::take(&mut f.imp.groups),
            status: f.status,
            bytes_up: self.bytes.sent.load(Relaxed),
            bytes_down: self.bytes.received.load(Relaxed),
            duration_ms,
            agent: f.agent.take(),
            error: f.error.take(),
            recording: f.recording.take(),
        })))
        .session(&self.session_id)
        .user(&self.user)
        .resource(&self.cluster, StreamKind::Kubernetes.as_str());
        if let Err(e) = self.auditor.record(ev) {
            tracing::error!(error = %e, "audit event not recorded");
        }
    }
}

impl RequestAudit {
    fn set(&self, edit: impl FnOnce(&mut Fields)) {
        match self.fields.lock() {
            Ok(mut f) => edit(&mut f),
            Err(p) => edit(&mut p.into_inner()),
        }
    }
}

/// A response body that keeps the request's audit record alive until the
/// body has been sent (or the client went away).
struct Audited {
    inner: Incoming,
    _audit: Arc<RequestAudit>,
}

impl http_body::Body for Audited {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl KubeFront {
    /// Handles one request; never fails (every refusal is a `Status`).
    pub async fn handle(
        self: Arc<Self>,
        conn: Arc<Conn>,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let head = head_size(&req);
        if head > super::MAX_HEAD_BYTES {
            tracing::info!(bytes = head, "kubernetes request head too large");
            return status::response(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "RequestHeaderFieldsTooLarge",
                &format!(
                    "NOVAS: the request head is {head} bytes, over the limit of {}",
                    super::MAX_HEAD_BYTES
                ),
            );
        }
        let path = req.uri().path().to_string();
        let Some((cluster, rest)) = split_cluster(&path) else {
            return status::not_found(&format!(
                "NOVAS serves Kubernetes clusters under {CLUSTER_PREFIX}<name>/; use the kubeconfig `novas kubeconfig` prints"
            ));
        };
        let Some(res) = self.clusters.get(cluster).cloned() else {
            // Which cluster names exist is for authenticated users only.
            if let Err((e, _)) = self.authenticate(req.headers(), cluster).await {
                return status::unauthorized(&e.to_string());
            }
            return status::not_found(&format!("NOVAS has no kubernetes resource {cluster:?}"));
        };
        let rest = rest.to_string();
        let who = match self.authenticate(req.headers(), &res.name).await {
            Ok(who) => who,
            Err((e, user)) => {
                tracing::info!(
                    reason = e.audit_reason(),
                    "kubernetes request not authenticated"
                );
                let mut ev = AuditEvent::new(EventKind::LoginFailure {
                    client_addr: conn.client.to_string(),
                    reason: e.audit_reason().to_string(),
                })
                .session(&conn.session_id)
                .resource(&res.name, StreamKind::Kubernetes.as_str());
                if let Some(u) = user {
                    ev = ev.user(u);
                }
                if let Err(e) = self.dac.auditor.record(ev) {
                    tracing::error!(error = %e, "audit event not recorded");
                }
                return status::unauthorized(&e.to_string());
            }
        };
        tracing::Span::current().record("user", who.user.as_str());
        conn.reg.live.set_user(&who.user);
        conn.reg.live.set_resource(&res.name);
        self.authorized(conn, req, res, who, rest).await
    }

    /// The identity behind a request's token; on failure, the error and the
    /// user the token belongs to if it is known.
    async fn authenticate(
        &self,
        headers: &HeaderMap,
        cluster: &str,
    ) -> Result<Identity, (AuthError, Option<String>)> {
        let token = auth::bearer(headers).ok_or((AuthError::Missing, None))?;
        let rec = match self.store.kube_token(&auth::hash(token)).await {
            Ok(Some(r)) => r,
            Ok(None) => return Err((AuthError::Unknown, None)),
            Err(e) => {
                tracing::warn!(error = %e, "token store unavailable");
                return Err((AuthError::Store, None));
            }
        };
        auth::check(&rec, cluster, crate::audit::now_ms())
            .map_err(|e| (e, Some(rec.user.clone())))?;
        match self.dac.users.find(&rec.user).await {
            Ok(Candidate::Known(u)) => admit(&u).map_err(|_| {
                (
                    AuthError::Disabled(rec.user.clone()),
                    Some(rec.user.clone()),
                )
            }),
            // The user was removed after the token was issued.
            Ok(Candidate::Unknown { .. }) => Err((AuthError::Unknown, Some(rec.user.clone()))),
            Err(_) => Err((AuthError::Store, Some(rec.user.clone()))),
        }
    }

    async fn authorized(
        self: Arc<Self>,
        conn: Arc<Conn>,
        mut req: Request<Incoming>,
        res: Arc<Resource>,
        who: Identity,
        rest: String,
    ) -> Response<Body> {
        let method = req.method().as_str().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let target_path = match query.as_str() {
            "" => rest.clone(),
            q => format!("{rest}?{q}"),
        };
        // Attributes from the path as the API server will decode it; the
        // request goes on with the path as sent.
        let checked = attrs::checked_path(&rest);
        let kind = match &checked {
            Ok(decoded) => attrs::parse(&method, decoded, &query),
            Err(_) => Kind::NonResource,
        };
        let audit = Arc::new(RequestAudit {
            auditor: self.dac.auditor.clone(),
            session_id: conn.session_id.clone(),
            user: who.user.clone(),
            cluster: res.name.clone(),
            started: Instant::now(),
            bytes: Arc::default(),
            fields: Mutex::new(Fields {
                client_addr: conn.client.to_string(),
                text: format!("{method} {target_path}"),
                attrs: match &kind {
                    Kind::Resource(a) => a.clone(),
                    Kind::Discovery => Attrs {
                        verb: "discovery".into(),
                        ..Attrs::default()
                    },
                    Kind::NonResource => Attrs {
                        verb: method.to_ascii_lowercase(),
                        ..Attrs::default()
                    },
                },
                decision: Decision::Deny,
                policy: String::new(),
                imp: Impersonation {
                    user: String::new(),
                    groups: Vec::new(),
                },
                status: 0,
                agent: None,
                error: None,
                recording: None,
            }),
        });
        if let Err(msg) = checked {
            tracing::info!(reason = %msg, "kubernetes request refused");
            audit.set(|f| {
                f.status = 400;
                f.error = Some(msg.clone());
            });
            return status::response(StatusCode::BAD_REQUEST, "BadRequest", &msg);
        }
        // The decision: the first policy naming this user and cluster.
        let permit = match self.dac.policies.authorize(&who, &res.name) {
            Ok(p) => p,
            Err(e) => {
                let msg = format!("NOVAS: {e}");
                audit.set(|f| {
                    f.status = 403;
                    f.error = Some(msg.clone());
                });
                return status::forbidden(&msg);
            }
        };
        let policy = permit.policy;
        audit.set(|f| f.policy = policy.name.clone());
        let Some(rules) = &policy.kubernetes else {
            let msg = format!(
                "NOVAS: policy {:?} has no kubernetes rules for cluster {:?}",
                policy.name, res.name
            );
            audit.set(|f| {
                f.status = 403;
                f.error = Some(msg.clone());
            });
            return status::forbidden(&msg);
        };
        let allowed = match &kind {
            Kind::Discovery => Ok(()),
            Kind::NonResource => Err(format!(
                "NOVAS: the non-resource path {rest:?} is not served through NOVAS (policy {:?})",
                policy.name
            )),
            Kind::Resource(a) if rules.allows(a) => Ok(()),
            Kind::Resource(a) => Err(denial_message(&who.user, a, &policy.name)),
        };
        if let Err(msg) = allowed {
            tracing::info!(policy = %policy.name, reason = %msg, "kubernetes request denied");
            audit.set(|f| {
                f.status = 403;
                f.error = Some(msg.clone());
            });
            return status::forbidden(&msg);
        }
        // Fail closed: no audited request goes ahead while events cannot be
        // kept (unless NOVAS_AUDIT_FAIL_OPEN).
        if let Err(e) = self.dac.auditor.check() {
            let msg = format!("NOVAS: auditing is unavailable ({e}); try again later");
            audit.set(|f| {
                f.status = 503;
                f.error = Some(msg.clone());
            });
            return status::unavailable(&msg);
        }
        let imp = rules.impersonation(&who);
        audit.set(|f| {
            f.decision = Decision::Allow;
            f.imp = imp.clone();
        });

        // Through the tunnel.
        let header = StreamOpen {
            session_id: conn.session_id.clone(),
            target: res.target.clone(),
            kind: StreamKind::Kubernetes,
            kube: Some(KubeStream {
                v: KUBE_STREAM_VERSION,
                user: imp.user.clone(),
                groups: imp.groups.clone(),
            }),
        };
        let (agent, stream) = match route_header(&res, &self.dac.registry, &header).await {
            Ok(x) => x,
            Err(e) => {
                crate::route::log_route_error(&e);
                let msg = format!("NOVAS cannot reach cluster {:?}: {e}", res.name);
                audit.set(|f| {
                    f.status = 503;
                    f.error = Some(msg.clone());
                });
                return status::unavailable(&msg);
            }
        };
        tracing::Span::current().record("agent.name", agent.name.as_str());
        conn.reg.live.set_agent(&agent.name);
        audit.set(|f| f.agent = Some(agent.name.clone()));
        let tunnel = Metered::with_bytes(stream, agent.clone(), audit.bytes.clone());
        let (mut sender, upstream) =
            match hyper::client::conn::http1::handshake(TokioIo::new(tunnel)).await {
                Ok(x) => x,
                Err(e) => return self.failed(&audit, &format!("agent {}: {e}", agent.name)),
            };
        tokio::spawn(async move {
            if let Err(e) = upstream.with_upgrades().await {
                tracing::debug!(error = %e, "agent stream ended with an error");
            }
        });

        // The request as the agent gets it: no credentials, no client
        // impersonation, the path inside the cluster.
        let from_client = hyper::upgrade::on(&mut req);
        let (parts, body) = req.into_parts();
        let mut out = Request::new(body);
        *out.method_mut() = parts.method;
        *out.uri_mut() = match target_path.parse() {
            Ok(u) => u,
            Err(e) => return self.failed(&audit, &format!("bad request path: {e}")),
        };
        *out.headers_mut() = forwarded_headers(&parts.headers);
        out.headers_mut()
            .insert(header::HOST, http::HeaderValue::from_static("kubernetes"));
        let mut resp = match sender.send_request(out).await {
            Ok(r) => r,
            Err(e) => return self.failed(&audit, &format!("agent {}: {e}", agent.name)),
        };
        let code = resp.status();
        audit.set(|f| f.status = code.as_u16());
        if code == StatusCode::SWITCHING_PROTOCOLS {
            let from_agent = hyper::upgrade::on(&mut resp);
            let rec = self.exec_recorder(&kind, &query, &res.name, &conn, resp.headers());
            if let Some((id, _)) = &rec {
                audit.set(|f| f.recording = Some(id.clone()));
            }
            let held = audit.clone();
            // The upgraded stream outlives the HTTP connection's task: it
            // keeps the live session listed and is what a terminate ends.
            let conn = conn.clone();
            tokio::spawn(async move {
                let live = conn.reg.live.clone();
                let spliced = async {
                    match tokio::try_join!(from_client, from_agent) {
                        Ok((a, b)) => {
                            let r = super::exec::splice(
                                TokioIo::new(a),
                                TokioIo::new(b),
                                rec.map(|(_, r)| r),
                            );
                            if let Err(e) = r.await {
                                tracing::debug!(error = %e, "upgraded stream ended with an error");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "upgrade failed"),
                    }
                };
                live.run(&conn.sessions, spliced).await;
                drop(held);
            });
        }
        resp.map(|inner| {
            Audited {
                inner,
                _audit: audit,
            }
            .boxed()
        })
    }

    /// A recorder for an exec or attach session over a channel subprotocol
    /// it can read; `None` for anything else (port-forward, SPDY).
    fn exec_recorder(
        &self,
        kind: &Kind,
        query: &str,
        cluster: &str,
        conn: &Conn,
        headers: &HeaderMap,
    ) -> Option<(String, Arc<crate::ssh::recording::Recorder>)> {
        let Kind::Resource(a) = kind else { return None };
        if !matches!(a.subresource.as_str(), "exec" | "attach") {
            return None;
        }
        let proto = headers.get("sec-websocket-protocol")?.to_str().ok()?;
        if !super::exec::recordable(proto) {
            tracing::info!(
                subprotocol = proto,
                "exec not recorded: subprotocol not readable"
            );
            return None;
        }
        let id = format!("kube-{}", crate::audit::new_id());
        let command = super::exec::command_of(query);
        let header = crate::ssh::recording::Header {
            version: 2,
            width: 80,
            height: 24,
            timestamp: crate::audit::now_ms() / 1000,
            title: Some(format!(
                "{cluster} {}/{} ({})",
                a.namespace, a.name, conn.client
            )),
            command: (!command.is_empty()).then_some(command),
        };
        match crate::ssh::recording::Recorder::create(&self.recordings, &id, &header) {
            Ok(r) => Some((id, Arc::new(r))),
            Err(e) => {
                tracing::warn!(error = %e, "cannot create the exec recording; exec not recorded");
                None
            }
        }
    }

    /// The agent accepted the stream but the exchange broke.
    fn failed(&self, audit: &RequestAudit, msg: &str) -> Response<Body> {
        tracing::warn!(error = %msg, "kubernetes request failed at the agent");
        audit.set(|f| {
            f.status = 502;
            f.error = Some(msg.to_string());
        });
        status::response(
            StatusCode::BAD_GATEWAY,
            "InternalError",
            &format!("NOVAS: {msg}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn head_size_counts_line_and_headers() {
        let mut req = Request::new(());
        *req.uri_mut() = "/api".parse().expect("uri");
        let base = head_size(&req);
        assert!(base > 0);
        req.headers_mut()
            .insert("x-big", HeaderValue::from_static("0123456789"));
        assert_eq!(head_size(&req), base + 5 + 10 + 4);
    }

    #[test]
    fn cluster_prefix() {
        assert_eq!(
            split_cluster("/clusters/prod/api/v1/pods"),
            Some(("prod", "/api/v1/pods"))
        );
        assert_eq!(split_cluster("/clusters/prod"), Some(("prod", "/")));
        assert_eq!(split_cluster("/clusters//api"), None);
        assert_eq!(split_cluster("/api/v1/pods"), None);
        assert_eq!(split_cluster("/clustersprod/api"), None);
    }

    #[test]
    fn credentials_and_impersonation_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer novak_x"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("impersonate-user", HeaderValue::from_static("system:admin"));
        h.append(
            "impersonate-group",
            HeaderValue::from_static("system:masters"),
        );
        h.insert("impersonate-uid", HeaderValue::from_static("1"));
        h.insert("impersonate-extra-reason", HeaderValue::from_static("x"));
        h.insert("host", HeaderValue::from_static("novas:6443"));
        h.insert(
            "accept",
            HeaderValue::from_static("application/json;as=Table"),
        );
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("v5.channel.k8s.io"),
        );
        let out = forwarded_headers(&h);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept", "upgrade", "sec-websocket-protocol"]);
        // A token offered as a WebSocket subprotocol is dropped, the rest kept.
        h.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static(
                "v5.channel.k8s.io, base64url.bearer.authorization.k8s.io.dG9rZW4, v4.channel.k8s.io",
            ),
        );
        let out = forwarded_headers(&h);
        assert_eq!(
            out["sec-websocket-protocol"],
            "v5.channel.k8s.io, v4.channel.k8s.io"
        );
        h.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("base64url.bearer.authorization.k8s.io.dG9rZW4"),
        );
        assert!(forwarded_headers(&h)
            .get("sec-websocket-protocol")
            .is_none());
    }
}
