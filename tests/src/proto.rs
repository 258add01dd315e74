//! Raw protocol clients built on `tunnel-proto`: what a hostile or broken
//! agent would send.

use std::{sync::Arc, time::Duration};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnel_proto::{
    control::{self, Control, RejectCode},
    io::{read_frame, write_frame},
    tls::{client_config, parse_fingerprint, ServerTrust},
    transport::{tls_mux::TlsMuxConnector, Connector, Tunnel},
    Secret, Tags, PROTO_VERSION,
};

/// TLS client config that trusts the server with this fingerprint.
pub fn pinned_tls(fingerprint: &str) -> Arc<rustls::ClientConfig> {
    let pin = parse_fingerprint(fingerprint).expect("fingerprint");
    client_config(&ServerTrust::Pinned(vec![pin])).expect("client config")
}

/// The tunnel connector agents use, pinned to `fingerprint`.
pub fn connector(fingerprint: &str) -> TlsMuxConnector {
    TlsMuxConnector {
        tls: pinned_tls(fingerprint),
        timeout: Duration::from_secs(10),
    }
}

/// What a Hello got.
#[derive(Debug)]
pub enum HelloOutcome {
    Welcome,
    Reject {
        code: RejectCode,
        message: String,
    },
    /// Another frame than Welcome/Reject.
    Unexpected(String),
    /// The connection or stream ended, or failed, without an answer.
    Closed(String),
}

/// Dials, opens the control stream, sends the preface and a Hello, and reads
/// the answer.
pub async fn hello(connector: &TlsMuxConnector, addr: &str, token: &str) -> HelloOutcome {
    let tunnel = match connector.connect(addr).await {
        Ok(t) => t,
        Err(e) => return HelloOutcome::Closed(format!("connect: {e}")),
    };
    let mut s = match tunnel.opener.open().await {
        Ok(s) => s,
        Err(e) => return HelloOutcome::Closed(format!("open: {e}")),
    };
    let hello = Control::Hello {
        proto_version: PROTO_VERSION,
        token: Secret::new(token.to_string()),
        name: "e2e-raw-client".into(),
        tags: Tags::default(),
        agent_version: "e2e".into(),
        capabilities: vec!["tcp".into()],
    };
    if let Err(e) = s.write_all(&control::preface()).await {
        return HelloOutcome::Closed(format!("write preface: {e}"));
    }
    if let Err(e) = write_frame(&mut s, &hello).await {
        return HelloOutcome::Closed(format!("write hello: {e}"));
    }
    match read_frame::<Control, _>(&mut s).await {
        Ok(Control::Welcome { .. }) => HelloOutcome::Welcome,
        Ok(Control::Reject { code, message }) => HelloOutcome::Reject { code, message },
        Ok(other) => HelloOutcome::Unexpected(format!("{other:?}")),
        Err(e) => HelloOutcome::Closed(format!("read answer: {e}")),
    }
}

/// Opens the control stream and sends the preface followed by a frame
/// header announcing `len` bytes (and nothing else).
pub async fn send_frame_header(tunnel: &Tunnel, len: u32) -> tunnel_proto::transport::TunnelStream {
    let mut s = tunnel.opener.open().await.expect("open control stream");
    s.write_all(&control::preface()).await.expect("preface");
    s.write_all(&len.to_be_bytes()).await.expect("length");
    s.flush().await.expect("flush");
    s
}

/// Reads until end of stream or error; `true` if it ended within `timeout`.
pub async fn ends_within<R: tokio::io::AsyncRead + Unpin>(r: &mut R, timeout: Duration) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(timeout, async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}
