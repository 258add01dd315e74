//! `novas kubeconfig`: issue a KAC bearer token for a user and a cluster
//! and print a ready kubeconfig (server URL, NOVAS's CA, token). The token
//! is shown only here; the store keeps its SHA-256.

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use base64::Engine;
use clap::Args;

use crate::{
    config::{default_store_url, env_var},
    kube::{auth, proxy::CLUSTER_PREFIX},
    store::{KubeTokenRecord, Store},
};

/// Longest token lifetime `--ttl` accepts.
const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// `novas kubeconfig …`
#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// The NOVAS user the token authenticates
    #[arg(long)]
    pub user: String,
    /// The kubernetes resource (cluster) the token is for
    #[arg(long)]
    pub cluster: Option<String>,
    /// Token lifetime, e.g. 8h, 30m (at most 30 days)
    #[arg(long, default_value = "8h")]
    pub ttl: String,
    /// NOVAS_KUBE_URL: base URL users reach the KAC listener at (default https://127.0.0.1:$NOVAS_KUBE_PORT)
    #[arg(long)]
    pub server: Option<String>,
    /// PEM file of the CA kubectl trusts (default: NOVAS_TLS_CERT, or the generated certificate)
    #[arg(long)]
    pub ca_file: Option<String>,
    /// Revoke every token of the user instead of issuing one
    #[arg(long)]
    pub revoke: bool,
    /// NOVAS_STORE_URL (default: sqlite in the data dir)
    #[arg(long)]
    pub store_url: Option<String>,
    /// NOVAS_DATA_DIR (default ./novas-data)
    #[arg(long)]
    pub data_dir: Option<String>,
}

pub fn main(args: KubeconfigArgs) -> anyhow::Result<()> {
    let dir = PathBuf::from(
        args.data_dir
            .clone()
            .or_else(|| env_var("NOVAS_DATA_DIR"))
            .unwrap_or_else(|| "novas-data".into()),
    );
    let url = args
        .store_url
        .clone()
        .or_else(|| env_var("NOVAS_STORE_URL"))
        .unwrap_or_else(|| default_store_url(&dir));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store = Store::open(&url).await?;
        let r = run(&store, &args, &dir).await;
        store.close().await;
        r
    })
}

async fn run(store: &Store, args: &KubeconfigArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    if args.revoke {
        let n = store.revoke_kube_tokens(&args.user).await?;
        eprintln!("revoked {n} kubernetes token(s) of user {:?}", args.user);
        return Ok(());
    }
    let Some(cluster) = args.cluster.clone() else {
        bail!("--cluster is required (the name of a kubernetes resource)");
    };
    let user = store
        .get_user(&args.user)
        .await?
        .with_context(|| format!("no user {:?} (create it with `novas user add`)", args.user))?;
    if user.disabled {
        bail!("user {:?} is disabled", args.user);
    }
    if let Some(path) = env_var("NOVAS_RESOURCES") {
        let resources =
            crate::resources::load(std::path::Path::new(&path)).context("NOVAS_RESOURCES")?;
        if !resources
            .iter()
            .any(|r| r.name == cluster && r.kind == tunnel_proto::StreamKind::Kubernetes)
        {
            bail!("NOVAS_RESOURCES has no kubernetes resource {cluster:?}");
        }
    }
    let ttl = humantime::parse_duration(args.ttl.trim())
        .map_err(|e| anyhow::anyhow!("--ttl {:?}: {e}", args.ttl))?;
    if ttl.is_zero() || ttl > MAX_TTL {
        bail!("--ttl must be between 1s and 30 days");
    }
    let ca_path = match (&args.ca_file, env_var("NOVAS_TLS_CERT")) {
        (Some(f), _) => PathBuf::from(f),
        (None, Some(f)) => PathBuf::from(f),
        (None, None) => dir.join("tls/cert.pem"),
    };
    let ca = std::fs::read(&ca_path).with_context(|| {
        format!(
            "CA for kubectl: cannot read {} (start `novas serve` once to generate it, or give --ca-file)",
            ca_path.display()
        )
    })?;
    let base = match args.server.clone().or_else(|| env_var("NOVAS_KUBE_URL")) {
        Some(s) => s.trim_end_matches('/').to_string(),
        None => format!(
            "https://127.0.0.1:{}",
            env_var("NOVAS_KUBE_PORT").unwrap_or_else(|| "6443".into())
        ),
    };
    if !base.starts_with("https://") {
        bail!("--server {base:?} must be an https:// URL");
    }
    let (token, sha256) = auth::new_token();
    let now = crate::audit::now_ms();
    let expires = now.saturating_add(ttl.as_millis() as i64);
    store
        .add_kube_token(&KubeTokenRecord {
            token_sha256: sha256,
            user: user.name.clone(),
            cluster: cluster.clone(),
            created_at_ms: now,
            expires_at_ms: expires,
        })
        .await?;
    let _ = store.purge_expired_kube_tokens(now).await;
    print!("{}", render(&base, &cluster, &user.name, &token, &ca)?);
    eprintln!(
        "kubeconfig for user {:?} on cluster {cluster:?}; the token expires in {}",
        user.name,
        humantime::format_duration(ttl)
    );
    Ok(())
}

/// The kubeconfig text.
pub fn render(
    base: &str,
    cluster: &str,
    user: &str,
    token: &str,
    ca_pem: &[u8],
) -> anyhow::Result<String> {
    let name = format!("nova-{cluster}");
    let cfg = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": name,
            "cluster": {
                "server": format!("{base}{CLUSTER_PREFIX}{cluster}"),
                "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(ca_pem),
            },
        }],
        "users": [{
            "name": format!("{user}@{name}"),
            "user": { "token": token },
        }],
        "contexts": [{
            "name": name,
            "context": { "cluster": name, "user": format!("{user}@{name}") },
        }],
        "current-context": name,
    });
    Ok(serde_yaml::to_string(&cfg)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_shape() {
        let y = render("https://novas:6443", "prod", "alice", "novak_t", b"PEM").expect("render");
        let v: serde_yaml::Value = serde_yaml::from_str(&y).expect("yaml");
        assert_eq!(v["current-context"], "nova-prod");
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://novas:6443/clusters/prod"
        );
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"],
            "UEVN"
        );
        assert_eq!(v["users"][0]["user"]["token"], "novak_t");
    }
}
