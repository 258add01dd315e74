//! Many idle agents in this process, for novas's per-agent memory: each is a
//! real TLS + mux tunnel that registers with Hello and answers every Ping.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{bail, Context};
use tokio::{io::AsyncWriteExt, sync::Semaphore, task::JoinHandle};
use tunnel_proto::{
    control::{preface, Control},
    io::{read_frame, write_frame},
    tls::{client_config, parse_fingerprint, ServerTrust},
    transport::{tls_mux::TlsMuxConnector, Connector, Tunnel},
    Secret, Tags, PROTO_VERSION,
};

/// One registered agent; dropping it closes its tunnel.
pub struct FakeAgent {
    _tunnel: Tunnel,
    pong: JoinHandle<()>,
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.pong.abort();
    }
}

pub struct Fleet {
    connector: Arc<TlsMuxConnector>,
    server: String,
    token: String,
}

impl Fleet {
    pub fn new(server: SocketAddr, fingerprint: &str, token: &str) -> anyhow::Result<Self> {
        let pin = parse_fingerprint(fingerprint)?;
        let tls = client_config(&ServerTrust::Pinned(vec![pin]))?;
        Ok(Self {
            connector: Arc::new(TlsMuxConnector {
                tls,
                timeout: Duration::from_secs(10),
            }),
            server: server.to_string(),
            token: token.to_string(),
        })
    }

    /// Registers one agent named `name`.
    pub async fn register(&self, name: &str) -> anyhow::Result<FakeAgent> {
        let tunnel = self.connector.connect(&self.server).await?;
        let mut control = tunnel.opener.open().await?;
        control.write_all(&preface()).await?;
        let mut tags = BTreeMap::new();
        tags.insert("Role".to_string(), "bench-idle".to_string());
        let hello = Control::Hello {
            proto_version: PROTO_VERSION,
            token: Secret::new(self.token.clone()),
            name: name.to_string(),
            tags: Tags(tags),
            agent_version: "nova-bench".to_string(),
            capabilities: vec!["tcp".to_string()],
        };
        write_frame(&mut control, &hello).await?;
        let answer: Control =
            tokio::time::timeout(Duration::from_secs(10), read_frame(&mut control))
                .await
                .context("no Welcome within 10 s")??;
        match answer {
            Control::Welcome { .. } => {}
            other => bail!("agent {name}: expected Welcome, got {other:?}"),
        }
        let pong = tokio::spawn(async move {
            while let Ok(msg) = read_frame::<Control, _>(&mut control).await {
                if let Control::Ping { seq } = msg {
                    if write_frame(&mut control, &Control::Pong { seq })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        });
        Ok(FakeAgent {
            _tunnel: tunnel,
            pong,
        })
    }

    /// Registers `names`, `parallel` handshakes at a time.
    pub async fn register_all(
        self: &Arc<Self>,
        names: Vec<String>,
        parallel: usize,
    ) -> anyhow::Result<Vec<FakeAgent>> {
        let sem = Arc::new(Semaphore::new(parallel));
        let mut handles = Vec::with_capacity(names.len());
        for name in names {
            let permit = sem.clone().acquire_owned().await?;
            let fleet = self.clone();
            handles.push(tokio::spawn(async move {
                let r = fleet.register(&name).await;
                drop(permit);
                r.with_context(|| format!("register {name}"))
            }));
        }
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            out.push(h.await??);
        }
        Ok(out)
    }
}
