//! Subcommands other than `serve`: `tunnels`, `audit`, `user`, `policy`,
//! `ssh-hostkey`, `recordings`, `fingerprint`, `kubeconfig`.

pub mod audit;
pub mod kube;
pub mod policy;
pub mod ssh;
pub mod tunnels;
pub mod user;

use std::{future::Future, path::PathBuf};

use tunnel_proto::tls::ServerIdentity;

use crate::{
    config::{default_store_url, env_var},
    store::Store,
};

/// The store a subcommand works on: the flag, else `NOVAS_STORE_URL`, else
/// the SQLite file in the data dir (flag, `NOVAS_DATA_DIR`, `./novas-data`).
pub fn store_url(flag: Option<String>, data_dir: Option<String>) -> String {
    flag.or_else(|| env_var("NOVAS_STORE_URL"))
        .unwrap_or_else(|| {
            let dir = data_dir
                .or_else(|| env_var("NOVAS_DATA_DIR"))
                .unwrap_or_else(|| "novas-data".into());
            default_store_url(&PathBuf::from(dir))
        })
}

/// Opens the store at `url`, runs `f` on it in a one-thread runtime and
/// closes it (so SQLite's WAL is checkpointed before the process exits).
pub fn with_store<T, F, Fut>(url: &str, f: F) -> anyhow::Result<T>
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store = Store::open(url).await?;
        let r = f(store.clone()).await;
        store.close().await;
        r
    })
}

/// `novas fingerprint`: the pin agents put in NOVAC_SERVER_FINGERPRINT.
pub fn fingerprint(data_dir: Option<String>, cert: Option<String>) -> anyhow::Result<String> {
    let path = match cert {
        Some(c) => PathBuf::from(c),
        None => PathBuf::from(data_dir.unwrap_or_else(|| "novas-data".into())).join("tls/cert.pem"),
    };
    let pem = rustls_pem_first(&path)?;
    Ok(tunnel_proto::tls::fingerprint(&pem))
}

fn rustls_pem_first(path: &std::path::Path) -> anyhow::Result<tunnel_proto::tls::CertDer<'static>> {
    use anyhow::Context;
    let id = ServerIdentity::chain_from_pem_file(path).with_context(|| {
        format!(
            "{} (start `novas serve` once to generate it)",
            path.display()
        )
    })?;
    id.into_iter()
        .next()
        .with_context(|| format!("{}: no certificate", path.display()))
}
