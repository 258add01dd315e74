//! The SSH client NOVAS runs towards the target, over a tunnel stream
//! through the agent: verifies the target's host key against the pin in
//! the store (trust on first use), and logs in with the resource account's
//! key or password, which never leave NOVAS.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use russh::{
    client,
    keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate},
};

use super::{hostkey, SshError};
use crate::{
    registry::Agent,
    resources::{Account, Resource},
    route,
    store::Store,
};

/// Bound on the SSH handshake and login with the target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Bytes of one SSH session towards and from the target.
pub type Counters = route::SessionBytes;

/// A logged-in connection to the target.
pub struct Upstream {
    pub handle: client::Handle<TargetKey>,
    pub agent: Arc<Agent>,
    pub counters: Arc<Counters>,
}

/// The client handler: only the host key check matters.
pub struct TargetKey {
    store: Store,
    resource: String,
    target: String,
    /// Why the key was refused, for the user's message.
    refusal: Arc<Mutex<Option<SshError>>>,
}

impl client::Handler for TargetKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(c) => c.public_key().clone().into(),
        };
        let refuse = |e: SshError| {
            if let Ok(mut slot) = self.refusal.lock() {
                *slot = Some(e);
            }
            Ok(false)
        };
        match hostkey::check(&self.store, &self.resource, &self.target, &key).await {
            Ok(hostkey::Verdict::FirstUse | hostkey::Verdict::Matches) => Ok(true),
            Ok(hostkey::Verdict::Changed { expected, got }) => refuse(SshError::HostKeyChanged {
                resource: self.resource.clone(),
                expected,
                got,
            }),
            Err(e) => refuse(SshError::Store(e.to_string())),
        }
    }
}

/// Routes to an agent and logs in to the target as `account`.
pub async fn connect(
    session_id: &str,
    res: &Resource,
    account: &Account,
    registry: &crate::registry::Registry,
    store: &Store,
    counters: Arc<Counters>,
) -> Result<Upstream, SshError> {
    let (agent, stream) = route::route(session_id, res, registry).await.map_err(|e| {
        route::log_route_error(&e);
        SshError::Route(e)
    })?;
    let stream = route::Metered::with_bytes(stream, agent.clone(), counters.clone());
    let refusal = Arc::new(Mutex::new(None));
    let handler = TargetKey {
        store: store.clone(),
        resource: res.name.clone(),
        target: res.target.clone(),
        refusal: refusal.clone(),
    };
    let config = Arc::new(client::Config {
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        nodelay: true,
        ..Default::default()
    });
    let login = async {
        let mut handle = client::connect_stream(config, stream, handler)
            .await
            .map_err(|e| {
                let refused = refusal.lock().ok().and_then(|mut s| s.take());
                refused.unwrap_or_else(|| SshError::TargetHandshake(e.to_string()))
            })?;
        let result = match &account.key {
            Some(pem) => {
                let key = russh::keys::decode_secret_key(pem.expose(), None)
                    .map_err(|e| SshError::TargetLogin(format!("account key: {e}")))?;
                let hash = handle
                    .best_supported_rsa_hash()
                    .await
                    .ok()
                    .flatten()
                    .flatten();
                let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
                handle
                    .authenticate_publickey(account.username.clone(), key)
                    .await
            }
            None => {
                handle
                    .authenticate_password(account.username.clone(), account.password.expose())
                    .await
            }
        }
        .map_err(|e| SshError::TargetLogin(e.to_string()))?;
        if !result.success() {
            return Err(SshError::TargetLogin(format!(
                "the target refused login {:?} with the stored credentials",
                account.username
            )));
        }
        Ok(handle)
    };
    let handle = tokio::time::timeout(CONNECT_TIMEOUT, login)
        .await
        .map_err(|_| SshError::TargetHandshake(format!("no login within {CONNECT_TIMEOUT:?}")))??;
    Ok(Upstream {
        handle,
        agent,
        counters,
    })
}
