//! Subcommands other than `serve`: `tunnels`, `audit`, `user`,
//! `ssh-hostkey`, `recordings`, `fingerprint`, `kubeconfig`.

pub mod audit;
pub mod kube;
pub mod ssh;
pub mod tunnels;
pub mod user;

use std::path::PathBuf;

use tunnel_proto::tls::ServerIdentity;

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
