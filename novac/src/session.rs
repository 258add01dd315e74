//! One session stream from NOVAS: read the header, check the allowlist, dial
//! the target with a timeout, answer ok/error, then splice bytes.

use std::{net::SocketAddr, time::Duration};

use tokio::net::TcpStream;
use tracing::Instrument;
use tunnel_proto::{
    io::{read_frame, write_frame},
    stream::split_target,
    transport::{tls_mux::tune_socket, TunnelStream},
    StreamErrorCode, StreamKind, StreamOpen, StreamReply,
};

use std::sync::Arc;

use crate::{allowlist::Allowlist, kube::KubeTarget};

/// Bound on receiving the header of a new stream.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

pub struct SessionCtx {
    pub allow: Allowlist,
    pub dial_timeout: Duration,
    /// The API server kubernetes streams go to; `None`: not served.
    pub kube: Option<Arc<KubeTarget>>,
}

impl SessionCtx {
    /// What this agent announces in `Hello`.
    pub fn capabilities(&self) -> Vec<String> {
        let mut caps: Vec<String> = ["tcp", "postgres", "mysql", "ssh"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(k) = &self.kube {
            caps.push(tunnel_proto::stream::KUBERNETES_CAPABILITY.into());
            caps.push(format!(
                "{}{}",
                tunnel_proto::stream::KUBERNETES_CLUSTER_CAPABILITY,
                k.cluster
            ));
        }
        caps
    }
}

/// Serves one inbound stream to completion.
pub async fn serve(mut stream: TunnelStream, ctx: &SessionCtx) {
    let open: StreamOpen = match tokio::time::timeout(HEADER_TIMEOUT, read_frame(&mut stream)).await
    {
        Ok(Ok(open)) => open,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "bad stream header from server");
            return;
        }
        Err(_) => {
            tracing::warn!("no stream header from server in time");
            return;
        }
    };
    let span = tracing::info_span!("session", session.id = %open.session_id, target = %open.target, kind = open.kind.as_str());
    async move {
        if open.kind == StreamKind::Kubernetes {
            return serve_kube(stream, open, ctx).await;
        }
        let target = match dial(&open, ctx).await {
            Ok(t) => t,
            Err((code, message)) => {
                tracing::warn!(?code, %message, "refusing stream");
                let _ = write_frame(&mut stream, &StreamReply::Error { code, message }).await;
                return;
            }
        };
        if let Err(e) = write_frame(&mut stream, &StreamReply::Ok).await {
            tracing::debug!(error = %e, "server went away before the reply");
            return;
        }
        let mut target = target;
        match tunnel_proto::splice::splice(&mut stream, &mut target).await {
            Ok((up, down)) => tracing::debug!(
                bytes.to_target = up,
                bytes.from_target = down,
                "session ended"
            ),
            Err(e) => tracing::debug!(error = %e, "session ended with an error"),
        }
    }
    .instrument(span)
    .await
}

/// A kubernetes stream: check the header, answer, then serve HTTP on it.
async fn serve_kube(mut stream: TunnelStream, open: StreamOpen, ctx: &SessionCtx) {
    let checked = match &ctx.kube {
        None => Err(
            "this agent does not serve kubernetes streams (NOVAC_KUBE_CLUSTER is unset)"
                .to_string(),
        ),
        Some(t) => crate::kube::check_header(open.kube.as_ref()).map(|()| t.clone()),
    };
    let target = match checked {
        Ok(t) => t,
        Err(message) => {
            tracing::warn!(%message, "refusing kubernetes stream");
            let code = StreamErrorCode::BadRequest;
            let _ = write_frame(&mut stream, &StreamReply::Error { code, message }).await;
            return;
        }
    };
    if let Err(e) = write_frame(&mut stream, &StreamReply::Ok).await {
        tracing::debug!(error = %e, "server went away before the reply");
        return;
    }
    let Some(who) = open.kube else { return };
    tracing::debug!(kube.user = %who.user, kube.groups = ?who.groups, api = %target.url, "kubernetes stream");
    crate::kube::serve(stream, target, who).await;
}

async fn dial(open: &StreamOpen, ctx: &SessionCtx) -> Result<TcpStream, (StreamErrorCode, String)> {
    let (host, port) = split_target(&open.target).map_err(|m| (StreamErrorCode::BadRequest, m))?;
    let addrs: Vec<SocketAddr> =
        tokio::time::timeout(ctx.dial_timeout, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| {
                (
                    StreamErrorCode::Timeout,
                    format!("resolving {host} timed out"),
                )
            })?
            .map_err(|e| {
                (
                    StreamErrorCode::ResolveFailed,
                    format!("cannot resolve {host}: {e}"),
                )
            })?
            .collect();
    let allowed: Vec<SocketAddr> = addrs
        .iter()
        .copied()
        .filter(|a| ctx.allow.allows(a.ip(), a.port()))
        .collect();
    if allowed.is_empty() {
        let shown: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        return Err((
            StreamErrorCode::NotAllowed,
            format!(
                "target {} ({}) is outside this agent's allowlist (NOVAC_ALLOW)",
                open.target,
                shown.join(", ")
            ),
        ));
    }
    let mut last = String::new();
    for addr in allowed {
        match tokio::time::timeout(ctx.dial_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => {
                tune_socket(&tcp);
                return Ok(tcp);
            }
            Ok(Err(e)) => last = format!("cannot connect to {addr}: {e}"),
            Err(_) => {
                return Err((
                    StreamErrorCode::Timeout,
                    format!(
                        "connecting to {addr} timed out after {:?}",
                        ctx.dial_timeout
                    ),
                ))
            }
        }
    }
    Err((StreamErrorCode::ConnectFailed, last))
}
