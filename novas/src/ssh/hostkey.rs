//! Host keys: NOVAS's own (generated once, kept in the data dir) and the
//! targets' (trusted on first use, pinned in the store, then required).

use std::path::{Path, PathBuf};

use russh::keys::{
    ssh_key::{private::Ed25519Keypair, LineEnding},
    HashAlg, PrivateKey, PublicKey,
};

use crate::store::{HostKeyRecord, Store, StoreError};

/// NOVAS's SSH host key, under the data dir.
pub fn host_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("ssh").join("host_ed25519_key")
}

/// Reads the host key, or generates an Ed25519 key and writes it with mode
/// 0600 on first start. Returns whether it was generated.
pub fn load_or_generate(data_dir: &Path) -> Result<(PrivateKey, bool), String> {
    let path = host_key_path(data_dir);
    let shown = path.display().to_string();
    if path.exists() {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{shown}: {e}"))?;
        let key =
            russh::keys::decode_secret_key(&text, None).map_err(|e| format!("{shown}: {e}"))?;
        return Ok((key, false));
    }
    let seed: [u8; 32] = rand::random();
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| format!("encoding the host key: {e}"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&path).map_err(|e| format!("{shown}: {e}"))?;
    std::io::Write::write_all(&mut f, pem.as_bytes()).map_err(|e| format!("{shown}: {e}"))?;
    Ok((key, true))
}

/// `SHA256:…` as OpenSSH prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// What the pinned key says about a presented one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing pinned yet: trust it and pin it.
    FirstUse,
    Matches,
    Changed {
        expected: String,
        got: String,
    },
}

/// The pure trust-on-first-use decision.
pub fn judge(pinned: Option<&HostKeyRecord>, presented: &str) -> Verdict {
    match pinned {
        None => Verdict::FirstUse,
        Some(p) if p.fingerprint == presented => Verdict::Matches,
        Some(p) => Verdict::Changed {
            expected: p.fingerprint.clone(),
            got: presented.to_string(),
        },
    }
}

/// Checks `key` for `resource`, pinning it on first use. A pin that loses a
/// race with another session (or NOVAS) is judged against the winner.
pub async fn check(
    store: &Store,
    resource: &str,
    target: &str,
    key: &PublicKey,
) -> Result<Verdict, StoreError> {
    let presented = fingerprint(key);
    let pinned = store.host_key(resource).await?;
    let verdict = judge(pinned.as_ref(), &presented);
    if verdict != Verdict::FirstUse {
        return Ok(verdict);
    }
    let rec = HostKeyRecord {
        resource: resource.to_string(),
        target: target.to_string(),
        fingerprint: presented.clone(),
        public_key: key.to_openssh().unwrap_or_default(),
        first_seen_ms: crate::audit::now_ms(),
    };
    if let Err(e) = store.pin_host_key(&rec).await {
        let now = store.host_key(resource).await?;
        if now.is_none() {
            return Err(e);
        }
        return Ok(match judge(now.as_ref(), &presented) {
            Verdict::FirstUse => Verdict::Matches,
            v => v,
        });
    }
    tracing::info!(resource, fingerprint = %presented, "target host key pinned on first use");
    Ok(Verdict::FirstUse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_key_is_generated_once_and_private() {
        let dir = tempfile::tempdir().expect("tmp");
        let (k1, made) = load_or_generate(dir.path()).expect("generate");
        assert!(made);
        let (k2, made) = load_or_generate(dir.path()).expect("load");
        assert!(!made);
        assert_eq!(fingerprint(k1.public_key()), fingerprint(k2.public_key()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(host_key_path(dir.path()))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn tofu_decisions() {
        let rec = HostKeyRecord {
            resource: "web-1".into(),
            target: "t:22".into(),
            fingerprint: "SHA256:aaa".into(),
            public_key: String::new(),
            first_seen_ms: 0,
        };
        assert_eq!(judge(None, "SHA256:aaa"), Verdict::FirstUse);
        assert_eq!(judge(Some(&rec), "SHA256:aaa"), Verdict::Matches);
        assert_eq!(
            judge(Some(&rec), "SHA256:bbb"),
            Verdict::Changed {
                expected: "SHA256:aaa".into(),
                got: "SHA256:bbb".into()
            }
        );
    }
}
