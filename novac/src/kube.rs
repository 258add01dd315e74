//! KAC, the agent side: serves kubernetes streams against this agent's API
//! server.
//!
//! NOVAS has already authenticated and authorised every request; the
//! stream header says who to impersonate. This side only adds its own
//! credentials (service-account token, kubeconfig token or client
//! certificate) and `Impersonate-User` / `Impersonate-Group`, after
//! removing any `Authorization` or `Impersonate-*` header the request
//! carries (NOVAS strips them too; this is the second line).
//!
//! Where the API server is comes from the `kube` crate's [`::kube::Config`]:
//! in-cluster (service-account token, CA and `KUBERNETES_SERVICE_HOST`) or a
//! kubeconfig (`NOVAC_KUBECONFIG`). The requests themselves go through hyper
//! directly, one HTTP/1.1 connection per stream, so that watches and
//! `logs -f` stream as produced and protocol upgrades (exec, port-forward)
//! pass through as raw bytes after the `101`.

use std::{path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tunnel_proto::{transport::TunnelStream, KubeStream};

/// Bound on TCP connect plus TLS handshake to the API server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// hyper's read buffer on a stream: above NOVAS's own 64 KiB limit on
/// request heads plus what it adds, so whatever NOVAS passes is read.
const MAX_BUF_BYTES: usize = 128 * 1024;

/// Where KAC requests go, set once at start.
#[derive(Debug, Clone)]
pub struct KubeSource {
    /// The cluster name announced to NOVAS (`NOVAC_KUBE_CLUSTER`).
    pub cluster: String,
    /// `NOVAC_KUBECONFIG`; `None` means the in-cluster configuration.
    pub kubeconfig: Option<PathBuf>,
}

/// Why the Kubernetes configuration cannot be used. Checked at start.
#[derive(Debug, thiserror::Error)]
pub enum KubeConfigError {
    #[error("NOVAC_KUBECONFIG: {0}")]
    Kubeconfig(String),
    #[error("in-cluster configuration (is NOVAC running in a pod with a service account?): {0}")]
    InCluster(String),
    #[error("API server URL {0:?}: {1}")]
    Url(String, String),
    #[error("TLS to the API server: {0}")]
    Tls(String),
    #[error("credentials: {0}")]
    Credentials(String),
}

/// How this agent authenticates to its API server.
#[derive(Clone)]
enum Credential {
    None,
    Token(tunnel_proto::Secret),
    /// Re-read for every request: projected service-account tokens rotate
    /// (kubelet rewrites the file), and reading a small local file is far
    /// cheaper than the request it authorises.
    TokenFile(PathBuf),
}

/// The API server this agent reaches, with its credentials.
pub struct KubeTarget {
    pub cluster: String,
    /// `https://host:port` (for logs; never carries credentials).
    pub url: String,
    host: String,
    port: u16,
    /// Path prefix of the API server URL (`""` for most clusters).
    prefix: String,
    authority: HeaderValue,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    credential: Credential,
}

impl std::fmt::Debug for KubeTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeTarget")
            .field("cluster", &self.cluster)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl KubeTarget {
    /// Loads the configuration the source names and checks it can be used.
    pub async fn load(src: &KubeSource) -> Result<Self, KubeConfigError> {
        let config = match &src.kubeconfig {
            Some(path) => {
                let kc = ::kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| KubeConfigError::Kubeconfig(format!("{}: {e}", path.display())))?;
                ::kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .map_err(|e| KubeConfigError::Kubeconfig(format!("{}: {e}", path.display())))?
            }
            None => ::kube::Config::incluster()
                .map_err(|e| KubeConfigError::InCluster(e.to_string()))?,
        };
        Self::from_config(&src.cluster, &config)
    }

    fn from_config(cluster: &str, c: &::kube::Config) -> Result<Self, KubeConfigError> {
        let url = c.cluster_url.to_string();
        let bad = |m: &str| KubeConfigError::Url(url.clone(), m.to_string());
        let https = match c.cluster_url.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("scheme must be https or http")),
        };
        let host = c
            .cluster_url
            .host()
            .ok_or_else(|| bad("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = c
            .cluster_url
            .port_u16()
            .unwrap_or(if https { 443 } else { 80 });
        let prefix = c.cluster_url.path().trim_end_matches('/').to_string();
        let authority = c
            .cluster_url
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .ok_or_else(|| bad("no authority"))?;
        if c.accept_invalid_certs {
            return Err(KubeConfigError::Tls(
                "insecure-skip-tls-verify is not supported: give the cluster's CA".into(),
            ));
        }
        let a = &c.auth_info;
        if a.exec.is_some() || a.auth_provider.is_some() {
            return Err(KubeConfigError::Credentials(
                "exec and auth-provider credentials are not supported; use a token, tokenFile or a client certificate".into(),
            ));
        }
        let credential = match (&a.token, &a.token_file) {
            (Some(t), _) => Credential::Token(tunnel_proto::Secret::new(
                secrecy::ExposeSecret::expose_secret(t).to_string(),
            )),
            (None, Some(f)) => {
                let path = PathBuf::from(f);
                read_token(&path).map_err(KubeConfigError::Credentials)?;
                Credential::TokenFile(path)
            }
            (None, None) => Credential::None,
        };
        let tls = if https {
            let server_name = c.tls_server_name.clone().unwrap_or_else(|| host.clone());
            let name = ServerName::try_from(server_name.clone())
                .map_err(|e| KubeConfigError::Tls(format!("server name {server_name:?}: {e}")))?;
            Some((tls_connector(c)?, name))
        } else {
            None
        };
        Ok(Self {
            cluster: cluster.to_string(),
            url: format!(
                "{}://{}{}",
                if https { "https" } else { "http" },
                authority.to_str().unwrap_or("?"),
                prefix
            ),
            host,
            port,
            prefix,
            authority,
            tls,
            credential,
        })
    }

    /// The `Authorization` value for the next request, if any.
    fn authorization(&self) -> Result<Option<HeaderValue>, String> {
        let token = match &self.credential {
            Credential::None => return Ok(None),
            Credential::Token(t) => t.expose().to_string(),
            Credential::TokenFile(p) => read_token(p)?,
        };
        let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the token is not a valid header value".to_string())?;
        v.set_sensitive(true);
        Ok(Some(v))
    }

    async fn connect(&self) -> Result<Box<dyn Io>, String> {
        let addr = (self.host.as_str(), self.port);
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to {} timed out", self.url))?
            .map_err(|e| format!("cannot connect to {}: {e}", self.url))?;
        tunnel_proto::transport::tls_mux::tune_socket(&tcp);
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some((connector, name)) => {
                let tls =
                    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp))
                        .await
                        .map_err(|_| format!("TLS handshake with {} timed out", self.url))?
                        .map_err(|e| format!("TLS handshake with {}: {e}", self.url))?;
                Ok(Box::new(tls))
            }
        }
    }
}

fn read_token(path: &std::path::Path) -> Result<String, String> {
    let t = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
    let t = t.trim().to_string();
    if t.is_empty() {
        return Err(format!("token file {} is empty", path.display()));
    }
    Ok(t)
}

fn tls_connector(c: &::kube::Config) -> Result<tokio_rustls::TlsConnector, KubeConfigError> {
    let tls = |m: String| KubeConfigError::Tls(m);
    let mut roots = rustls::RootCertStore::empty();
    let ders = c.root_cert.clone().unwrap_or_default();
    if ders.is_empty() {
        return Err(tls(
            "no CA for the API server (certificate-authority[-data] in the kubeconfig)".into(),
        ));
    }
    for der in ders {
        roots
            .add(CertificateDer::from(der))
            .map_err(|e| tls(format!("bad CA certificate: {e}")))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(tunnel_proto::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(e.to_string()))?
        .with_root_certificates(roots);
    let mut cfg = match client_identity(&c.auth_info)? {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| tls(format!("client certificate: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    // HTTP/1.1 only: upgrades (exec, port-forward) do not exist in HTTP/2.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The kubeconfig's client certificate and key, if it has them.
fn client_identity(a: &::kube::config::AuthInfo) -> Result<Option<Identity>, KubeConfigError> {
    use base64::Engine;
    let cred = |m: String| KubeConfigError::Credentials(m);
    let load = |data: Option<String>,
                file: &Option<String>,
                what: &str|
     -> Result<Option<Vec<u8>>, KubeConfigError> {
        match (data, file) {
            (Some(d), _) => base64::engine::general_purpose::STANDARD
                .decode(d.trim())
                .map(Some)
                .map_err(|e| cred(format!("{what}-data is not base64: {e}"))),
            (None, Some(f)) => std::fs::read(f)
                .map(Some)
                .map_err(|e| cred(format!("cannot read {what} {f}: {e}"))),
            (None, None) => Ok(None),
        }
    };
    let cert = load(
        a.client_certificate_data.clone(),
        &a.client_certificate,
        "client-certificate",
    )?;
    let key = load(
        a.client_key_data
            .as_ref()
            .map(|k| secrecy::ExposeSecret::expose_secret(k).to_string()),
        &a.client_key,
        "client-key",
    )?;
    let (cert, key) = match (cert, key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        _ => {
            return Err(cred(
                "a client certificate needs both the certificate and the key".into(),
            ))
        }
    };
    use rustls_pki_types::pem::PemObject;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<_, _>>()
        .map_err(|e| cred(format!("client certificate PEM: {e}")))?;
    let key =
        PrivateKeyDer::from_pem_slice(&key).map_err(|e| cred(format!("client key PEM: {e}")))?;
    Ok(Some((chain, key)))
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Body = BoxBody<Bytes, hyper::Error>;

/// Checks a kubernetes stream header; the error is the refusal message.
pub fn check_header(kube: Option<&KubeStream>) -> Result<(), String> {
    let k = kube.ok_or("kubernetes stream without an identity to impersonate")?;
    if k.v != tunnel_proto::stream::KUBE_STREAM_VERSION {
        return Err(format!(
            "kubernetes stream header version {} is not supported (this agent speaks {})",
            k.v,
            tunnel_proto::stream::KUBE_STREAM_VERSION
        ));
    }
    if k.user.is_empty() {
        return Err("kubernetes stream with an empty user to impersonate".into());
    }
    for v in std::iter::once(&k.user).chain(&k.groups) {
        if HeaderValue::from_str(v).is_err() {
            return Err(format!(
                "impersonation value {v:?} is not a valid header value"
            ));
        }
    }
    Ok(())
}

/// Serves the HTTP/1.1 requests NOVAS sends on one stream (after `ok`).
pub async fn serve(stream: TunnelStream, target: Arc<KubeTarget>, who: KubeStream) {
    let who = Arc::new(who);
    let service = hyper::service::service_fn(move |req| {
        let (target, who) = (target.clone(), who.clone());
        async move { Ok::<_, std::convert::Infallible>(forward(req, &target, &who).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(MAX_BUF_BYTES)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "kubernetes stream ended with an error");
    }
}

/// Headers never passed from NOVAS to the API server: credentials and
/// impersonation are this agent's to set.
pub fn is_stripped(name: &HeaderName) -> bool {
    let n = name.as_str();
    name == header::AUTHORIZATION
        || name == header::HOST
        || name == header::PROXY_AUTHORIZATION
        || n.starts_with("impersonate-")
}

/// The request as the API server gets it.
fn outgoing_headers(
    incoming: &HeaderMap,
    target: &KubeTarget,
    who: &KubeStream,
) -> Result<HeaderMap, String> {
    let mut h = HeaderMap::with_capacity(incoming.len() + 4);
    for (k, v) in incoming {
        if !is_stripped(k) {
            h.append(k.clone(), v.clone());
        }
    }
    h.insert(header::HOST, target.authority.clone());
    if let Some(auth) = target.authorization()? {
        h.insert(header::AUTHORIZATION, auth);
    }
    let value = |s: &str| HeaderValue::from_str(s).map_err(|_| format!("bad value {s:?}"));
    h.insert("impersonate-user", value(&who.user)?);
    for g in &who.groups {
        h.append("impersonate-group", value(g)?);
    }
    Ok(h)
}

async fn forward(
    mut req: Request<Incoming>,
    target: &KubeTarget,
    who: &KubeStream,
) -> Response<Body> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let headers = match outgoing_headers(req.headers(), target, who) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "cannot build the API request");
            return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &e);
        }
    };
    let uri: Uri = match format!("{}{path}", target.prefix).parse() {
        Ok(u) => u,
        Err(e) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("bad path: {e}"),
            )
        }
    };
    let from_novas = hyper::upgrade::on(&mut req);
    let (parts, body) = req.into_parts();
    let mut out = Request::new(body);
    *out.method_mut() = parts.method.clone();
    *out.uri_mut() = uri;
    *out.headers_mut() = headers;
    let unreachable = |e: String| {
        tracing::warn!(api = %target.url, error = %e, "API server unreachable");
        status(
            StatusCode::BAD_GATEWAY,
            "ServiceUnavailable",
            &format!(
                "NOVAC cannot reach the API server of cluster {}: {e}",
                target.cluster
            ),
        )
    };
    let io = match target.connect().await {
        Ok(io) => io,
        Err(e) => return unreachable(e),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(io)).await {
        Ok(x) => x,
        Err(e) => return unreachable(e.to_string()),
    };
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "API connection ended with an error");
        }
    });
    let mut resp = match sender.send_request(out).await {
        Ok(r) => r,
        Err(e) => return unreachable(e.to_string()),
    };
    tracing::debug!(method = %parts.method, path = %path, status = resp.status().as_u16(), "API request");
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let from_api = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::try_join!(from_novas, from_api) {
                Ok((a, b)) => {
                    let (mut a, mut b) = (TokioIo::new(a), TokioIo::new(b));
                    if let Err(e) = tokio::io::copy_bidirectional(&mut a, &mut b).await {
                        tracing::debug!(error = %e, "upgraded stream ended with an error");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "upgrade failed"),
            }
        });
    }
    resp.map(|b| b.boxed())
}

/// A Kubernetes `Status` response, so kubectl prints the message.
fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    let mut r = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(token: Option<&str>) -> KubeTarget {
        KubeTarget {
            cluster: "c".into(),
            url: "http://api:8080".into(),
            host: "api".into(),
            port: 8080,
            prefix: String::new(),
            authority: HeaderValue::from_static("api:8080"),
            tls: None,
            credential: match token {
                Some(t) => Credential::Token(tunnel_proto::Secret::new(t.into())),
                None => Credential::None,
            },
        }
    }

    #[test]
    fn client_credentials_and_impersonation_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_static("Bearer user-token"),
        );
        h.insert("impersonate-user", HeaderValue::from_static("system:admin"));
        h.append(
            "impersonate-group",
            HeaderValue::from_static("system:masters"),
        );
        h.insert("impersonate-extra-scopes", HeaderValue::from_static("x"));
        h.insert("impersonate-uid", HeaderValue::from_static("0"));
        h.insert("host", HeaderValue::from_static("novas:6443"));
        h.insert("accept", HeaderValue::from_static("application/json"));
        let who = KubeStream {
            v: 1,
            user: "nova-dev".into(),
            groups: vec!["nova:dev".into(), "nova:all".into()],
        };
        let out = outgoing_headers(&h, &target(Some("sa-token")), &who).expect("headers");
        assert_eq!(out["authorization"], "Bearer sa-token");
        assert_eq!(out["host"], "api:8080");
        assert_eq!(out["accept"], "application/json");
        assert_eq!(out.get_all("impersonate-user").iter().count(), 1);
        assert_eq!(out["impersonate-user"], "nova-dev");
        let groups: Vec<_> = out.get_all("impersonate-group").iter().collect();
        assert_eq!(groups, ["nova:dev", "nova:all"]);
        assert!(out.get("impersonate-extra-scopes").is_none());
        assert!(out.get("impersonate-uid").is_none());
        // Without credentials of its own the agent sends none of the user's.
        let out = outgoing_headers(&h, &target(None), &who).expect("headers");
        assert!(out.get("authorization").is_none());
    }

    #[test]
    fn api_server_urls() {
        let cfg = |url: &str| {
            let mut c = ::kube::Config::new(url.parse().expect("uri"));
            c.root_cert = Some(vec![]);
            c
        };
        let t = KubeTarget::from_config("c", &cfg("http://10.0.0.1:8080/k8s/clusters/x/"))
            .expect("http");
        assert_eq!(
            (t.host.as_str(), t.port, t.prefix.as_str()),
            ("10.0.0.1", 8080, "/k8s/clusters/x")
        );
        assert_eq!(t.authority, "10.0.0.1:8080");
        let t = KubeTarget::from_config("c", &cfg("http://api")).expect("default port");
        assert_eq!((t.port, t.prefix.as_str()), (80, ""));
        // https needs a CA; insecure-skip-tls-verify is refused.
        let e = KubeTarget::from_config("c", &cfg("https://api:6443")).expect_err("no CA");
        assert!(e.to_string().contains("no CA"), "{e}");
        let mut c = cfg("https://api:6443");
        c.accept_invalid_certs = true;
        let e = KubeTarget::from_config("c", &c).expect_err("insecure");
        assert!(e.to_string().contains("insecure-skip-tls-verify"), "{e}");
        assert!(KubeTarget::from_config("c", &cfg("ftp://api")).is_err());
    }

    #[test]
    fn headers_are_checked() {
        let k = |v, user: &str, groups: &[&str]| KubeStream {
            v,
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        assert!(check_header(Some(&k(1, "dev", &["g"]))).is_ok());
        assert!(check_header(None).is_err());
        assert!(check_header(Some(&k(2, "dev", &[])))
            .expect_err("v2")
            .contains("version 2"));
        assert!(check_header(Some(&k(1, "", &[]))).is_err());
        assert!(check_header(Some(&k(1, "a\nb", &[]))).is_err());
        assert!(check_header(Some(&k(1, "a", &["x\r\ny: z"]))).is_err());
    }

    #[test]
    fn token_files_are_read_each_time() {
        let dir = std::env::temp_dir().join(format!("novac-kube-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("token");
        std::fs::write(&path, "first\n").expect("write");
        let mut t = target(None);
        t.credential = Credential::TokenFile(path.clone());
        assert_eq!(
            t.authorization().expect("auth").expect("some"),
            "Bearer first"
        );
        std::fs::write(&path, "rotated").expect("write");
        assert_eq!(
            t.authorization().expect("auth").expect("some"),
            "Bearer rotated"
        );
        std::fs::write(&path, "").expect("write");
        assert!(t.authorization().expect_err("empty").contains("empty"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
