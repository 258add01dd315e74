//! `nova-e2e-apiserver`: a test stand-in for kube-apiserver. There is no
//! Kubernetes API server package on these machines, so the KAC tests run
//! real `kubectl` against this instead. It speaks the real wire formats
//! closely enough for kubectl 1.32: HTTPS, legacy discovery (kubectl asks
//! for aggregated discovery first and falls back when the answer is plain
//! JSON), pods list/get as `Table` or objects, watch events produced over
//! time, logs with `follow=true`, and exec over the WebSocket subprotocol
//! kubectl negotiates (`v5.channel.k8s.io`, or v4).
//!
//! Every request must carry `Authorization: Bearer <token in TOKEN_FILE>`
//! (re-read per request, so a test can rotate it) or gets 401. Every
//! request is appended to RECORD_FILE as one JSON line with its method,
//! path, query and all `Impersonate-*` headers, for the test to check.
//! Streams wait for trigger files in TRIGGER_DIR (`watch-2`, `log-2`) so a
//! test can prove an event arrives while the stream is still open.
//!
//! Usage: `nova-e2e-apiserver LISTEN CERT KEY TOKEN_FILE RECORD_FILE TRIGGER_DIR`;
//! prints `listening: ADDR` once bound.

use std::{
    convert::Infallible,
    io::Write,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::{
    body::{Frame, Incoming},
    header, Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use sha1::{Digest, Sha1};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::mpsc,
};

type Body = BoxBody<Bytes, Infallible>;

struct State {
    token_file: PathBuf,
    record: Mutex<std::fs::File>,
    triggers: PathBuf,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, cert, key, token_file, record, triggers] = args.as_slice() else {
        eprintln!("usage: nova-e2e-apiserver LISTEN CERT KEY TOKEN_FILE RECORD_FILE TRIGGER_DIR");
        std::process::exit(2);
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: runtime: {e}");
            std::process::exit(1);
        }
    };
    let record = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(record)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {record}: {e}");
            std::process::exit(1);
        }
    };
    let state = Arc::new(State {
        token_file: token_file.into(),
        record: Mutex::new(record),
        triggers: triggers.into(),
    });
    if let Err(e) = rt.block_on(serve(listen, Path::new(cert), Path::new(key), state)) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn serve(listen: &str, cert: &Path, key: &Path, state: Arc<State>) -> Result<(), String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| e.to_string())?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("bind {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening: {addr}");
    loop {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let (acceptor, state) = (acceptor.clone(), state.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                eprintln!("TLS handshake failed");
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(req, &state).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades()
                .await;
        });
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

fn json(code: StatusCode, v: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/json".parse().expect("ct"),
    );
    r
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json(
        code,
        serde_json::json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
            "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

/// A body fed from a channel: each message is sent as soon as it is produced.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// Waits for `dir/name` to exist; false if the client went away first.
async fn wait_trigger(dir: &Path, name: &str, tx: &mpsc::Sender<Bytes>) -> bool {
    let path = dir.join(name);
    while !path.exists() {
        if tx.is_closed() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

fn record(state: &State, req: &Request<Incoming>, authorized: bool) {
    let mut imp = serde_json::Map::new();
    for (k, v) in req.headers() {
        if k.as_str().starts_with("impersonate-") {
            let list = imp
                .entry(k.as_str().to_string())
                .or_insert_with(|| serde_json::Value::Array(vec![]));
            if let serde_json::Value::Array(a) = list {
                a.push(serde_json::Value::String(
                    v.to_str().unwrap_or("<binary>").to_string(),
                ));
            }
        }
    }
    let line = serde_json::json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query().unwrap_or(""),
        "authorized": authorized,
        "impersonate": imp,
    });
    if let Ok(mut f) = state.record.lock() {
        let _ = writeln!(f, "{line}");
    }
}

fn pod(name: &str, ns: &str) -> serde_json::Value {
    serde_json::json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"),
            "resourceVersion": "10", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"containers": [{"name": "app", "image": "example/app:1"}]},
        "status": {"phase": "Running"},
    })
}

fn table_columns() -> serde_json::Value {
    serde_json::json!([
        {"name":"Name","type":"string","format":"name","description":"Name of the pod","priority":0},
        {"name":"Ready","type":"string","format":"","description":"","priority":0},
        {"name":"Status","type":"string","format":"","description":"","priority":0},
    ])
}

fn table(pods: &[(&str, &str)], columns: bool) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = pods
        .iter()
        .map(|(name, ns)| {
            serde_json::json!({
                "cells": [name, "1/1", "Running"],
                "object": {"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1",
                    "metadata": {"name": name, "namespace": ns, "resourceVersion": "10",
                        "creationTimestamp": "2026-01-01T00:00:00Z"}},
            })
        })
        .collect();
    serde_json::json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": "10"},
        "columnDefinitions": if columns { table_columns() } else { serde_json::json!([]) },
        "rows": rows,
    })
}

fn wants_table(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

fn query_values(query: &str, key: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v.replace("%20", " ").replace('+', " "))
        .collect()
}

async fn handle(req: Request<Incoming>, state: &State) -> Response<Body> {
    let expected = std::fs::read_to_string(&state.token_file).unwrap_or_default();
    let got = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let authorized = !expected.trim().is_empty() && got == format!("Bearer {}", expected.trim());
    record(state, &req, authorized);
    if !authorized {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match parts.as_slice() {
        ["version"] => json(
            StatusCode::OK,
            serde_json::json!({"major":"1","minor":"32","gitVersion":"v1.32.0-nova-e2e-fake",
                "gitCommit":"0","gitTreeState":"clean","buildDate":"2026-01-01T00:00:00Z",
                "goVersion":"go1.23","compiler":"gc","platform":"linux/amd64"}),
        ),
        ["api"] => json(
            StatusCode::OK,
            serde_json::json!({"kind":"APIVersions","versions":["v1"],
                "serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress":"127.0.0.1:443"}]}),
        ),
        ["apis"] => json(
            StatusCode::OK,
            serde_json::json!({"kind":"APIGroupList","apiVersion":"v1","groups":[]}),
        ),
        ["api", "v1"] => json(
            StatusCode::OK,
            serde_json::json!({"kind":"APIResourceList","apiVersion":"v1","groupVersion":"v1","resources":[
                {"name":"pods","singularName":"pod","namespaced":true,"kind":"Pod",
                 "verbs":["create","delete","deletecollection","get","list","patch","update","watch"],"shortNames":["po"]},
                {"name":"pods/log","singularName":"","namespaced":true,"kind":"Pod","verbs":["get"]},
                {"name":"pods/exec","singularName":"","namespaced":true,"kind":"PodExecOptions","verbs":["create","get"]},
                {"name":"namespaces","singularName":"namespace","namespaced":false,"kind":"Namespace",
                 "verbs":["create","delete","get","list","patch","update","watch"],"shortNames":["ns"]},
            ]}),
        ),
        ["api", "v1", "namespaces", ns, "pods"] if req.method() == hyper::Method::GET => {
            let ns = ns.to_string();
            if query_values(&query, "watch")
                .iter()
                .any(|v| v == "true" || v == "1")
            {
                return watch(state, &req, ns).await;
            }
            if wants_table(&req) {
                json(StatusCode::OK, table(&[("web-1", &ns)], true))
            } else {
                json(
                    StatusCode::OK,
                    serde_json::json!({"kind":"PodList","apiVersion":"v1",
                        "metadata":{"resourceVersion":"10"},"items":[pod("web-1", &ns)]}),
                )
            }
        }
        ["api", "v1", "namespaces", ns, "pods", name] if req.method() == hyper::Method::GET => {
            if wants_table(&req) {
                json(StatusCode::OK, table(&[(name, ns)], true))
            } else {
                json(StatusCode::OK, pod(name, ns))
            }
        }
        ["api", "v1", "namespaces", _, "pods", name, "log"] => {
            let (tx, rx) = mpsc::channel(4);
            let name = name.to_string();
            let follow = query_values(&query, "follow").iter().any(|v| v == "true");
            let state_triggers = state.triggers.clone();
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from(format!("{name} log line 1\n"))).await;
                if !follow {
                    return;
                }
                if !wait_trigger(&state_triggers, "log-2", &tx).await {
                    return;
                }
                let _ = tx.send(Bytes::from(format!("{name} log line 2\n"))).await;
                // Open until the client goes away, like a running container.
                tx.closed().await;
            });
            let mut r = Response::new(ChannelBody(rx).boxed());
            r.headers_mut()
                .insert(header::CONTENT_TYPE, "text/plain".parse().expect("ct"));
            r
        }
        ["api", "v1", "namespaces", _, "pods", _, "exec"] => exec(req, &query),
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the fake API server has no {path}"),
        ),
    }
}

/// `kubectl get -w`: one pod at once, the second only after the trigger.
async fn watch(state: &State, req: &Request<Incoming>, ns: String) -> Response<Body> {
    let as_table = wants_table(req);
    let (tx, rx) = mpsc::channel(4);
    let triggers = state.triggers.clone();
    let event = move |name: &str, first: bool| {
        let object = if as_table {
            table(&[(name, &ns)], first)
        } else {
            pod(name, &ns)
        };
        Bytes::from(format!(
            "{}\n",
            serde_json::json!({"type": "ADDED", "object": object})
        ))
    };
    tokio::spawn(async move {
        let _ = tx.send(event("watch-a", true)).await;
        if !wait_trigger(&triggers, "watch-2", &tx).await {
            return;
        }
        let _ = tx.send(event("watch-b", false)).await;
        tx.closed().await;
    });
    let mut r = Response::new(ChannelBody(rx).boxed());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/json".parse().expect("ct"),
    );
    r
}

/// Exec over WebSocket: stdout on channel 1, the result `Status` on
/// channel 3, then a close frame. Only `echo` runs.
fn exec(mut req: Request<Incoming>, query: &str) -> Response<Body> {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let offered: Vec<String> = req
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_string()))
        .collect();
    let Some(key) = key else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the fake API server only does exec over WebSocket",
        );
    };
    let Some(proto) = ["v5.channel.k8s.io", "v4.channel.k8s.io"]
        .into_iter()
        .find(|p| offered.iter().any(|o| o == p))
    else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("no supported subprotocol in {offered:?}"),
        );
    };
    let command = query_values(query, "command");
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(h.finalize());
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(up) = upgrade.await else { return };
        let mut io = TokioIo::new(up);
        // Like a process starting in a container: client-go creates its
        // stdout/error streams only after the upgrade, and discards
        // messages that arrive before ("Unknown stream id").
        tokio::time::sleep(Duration::from_millis(300)).await;
        let success = serde_json::json!({"metadata":{},"status":"Success"});
        let mut out = Vec::new();
        match command.split_first() {
            Some((cmd, args)) if cmd == "echo" => {
                let line = format!("{}\n", args.join(" "));
                out.extend(frame(0x2, &[&[1u8][..], line.as_bytes()].concat()));
            }
            // `cat`: stdin (channel 0) back on stdout until the client
            // closes stdin (v5: channel 255 message [255, 0]) or hangs up.
            Some((cmd, _)) if cmd == "cat" => {
                let mut dec = ClientFrames::default();
                let mut buf = [0u8; 4096];
                'read: loop {
                    let n = match io.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    for (opcode, payload) in dec.feed(&buf[..n]) {
                        match (opcode, payload.split_first()) {
                            (0x2, Some((0, data))) => {
                                let f = frame(0x2, &[&[1u8][..], data].concat());
                                if io.write_all(&f).await.is_err() {
                                    return;
                                }
                            }
                            (0x2, Some((255, [0]))) | (0x8, _) => break 'read,
                            _ => {}
                        }
                    }
                }
            }
            _ => {
                let failure = serde_json::json!({"metadata":{},"status":"Failure",
                    "message":format!("cannot run {command:?}"),"reason":"NonZeroExitCode",
                    "details":{"causes":[{"reason":"ExitCode","message":"127"}]}});
                out.extend(frame(
                    0x2,
                    &[&[3u8][..], failure.to_string().as_bytes()].concat(),
                ));
            }
        }
        if out.is_empty() || command.first().is_some_and(|c| c == "echo") {
            out.extend(frame(
                0x2,
                &[&[3u8][..], success.to_string().as_bytes()].concat(),
            ));
        }
        out.extend(frame(0x8, &1000u16.to_be_bytes()));
        let _ = io.write_all(&out).await;
        let _ = io.flush().await;
        // Drain what the client sends (its close frame) until it hangs up.
        let mut buf = [0u8; 1024];
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while matches!(io.read(&mut buf).await, Ok(n) if n > 0) {}
        })
        .await;
    });
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, "websocket".parse().expect("h"));
    h.insert(header::CONNECTION, "Upgrade".parse().expect("h"));
    h.insert("sec-websocket-accept", accept.parse().expect("h"));
    h.insert("sec-websocket-protocol", proto.parse().expect("h"));
    r
}

/// Client frames (masked, unfragmented as client-go sends them), decoded
/// incrementally: (opcode, unmasked payload).
#[derive(Default)]
struct ClientFrames(Vec<u8>);

impl ClientFrames {
    fn feed(&mut self, bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        self.0.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            let b = &self.0;
            if b.len() < 2 {
                return out;
            }
            let masked = b[1] & 0x80 != 0;
            let (len, mut at) = match b[1] & 0x7f {
                126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
                127 if b.len() >= 10 => {
                    let mut l = [0u8; 8];
                    l.copy_from_slice(&b[2..10]);
                    (u64::from_be_bytes(l) as usize, 10)
                }
                126 | 127 => return out,
                n => (n as usize, 2),
            };
            let mask_at = at;
            if masked {
                at += 4;
            }
            if b.len() < at + len {
                return out;
            }
            let mut payload = b[at..at + len].to_vec();
            if masked {
                let m = [b[mask_at], b[mask_at + 1], b[mask_at + 2], b[mask_at + 3]];
                for (i, x) in payload.iter_mut().enumerate() {
                    *x ^= m[i % 4];
                }
            }
            out.push((b[0] & 0x0f, payload));
            self.0.drain(..at + len);
        }
    }
}

/// One unmasked server frame (FIN set).
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xffff => {
            f.push(126);
            f.extend((n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend((n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}
