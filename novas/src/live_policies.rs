//! The policies in force on this node, kept equal to the newest policy
//! document in the store, so every NOVAS on a shared store enforces the
//! same rules and a change needs no restart.
//!
//! At start, a `NOVAS_POLICIES` file (if set) is validated and becomes the
//! current version unless the store already holds that exact text; without
//! the file, the store's current version is used. Afterwards each node
//! polls `MAX(version)` every `NOVAS_POLICY_REFRESH` and swaps in a newer,
//! valid document; an invalid one is refused in the log and the rules in
//! force stay. A change applies to sessions that start after it: running
//! sessions keep the policy they were admitted under (terminate them to
//! apply it at once).

use std::{
    path::Path,
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc, RwLock,
    },
    time::Duration,
};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::{
    access::{Denied, Identity, Permit, Policies},
    audit::{AuditEvent, Auditor, EventKind},
    resources::{check_policies, Resource},
    store::{PolicyDoc, Store},
};

/// The current policies; read on every session start.
pub struct LivePolicies {
    current: RwLock<Arc<Policies>>,
    /// The store version in force; 0 before any document was stored.
    version: AtomicI64,
}

impl LivePolicies {
    pub fn new(policies: Policies, version: i64) -> Self {
        Self {
            current: RwLock::new(Arc::new(policies)),
            version: AtomicI64::new(version),
        }
    }

    /// A snapshot: decisions made from it are consistent even if a new
    /// version arrives meanwhile.
    pub fn current(&self) -> Arc<Policies> {
        // A poisoned lock still holds a whole Arc (it is only ever
        // replaced), so it is safe to keep using it.
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn version(&self) -> i64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn authorize(&self, who: &Identity, resource: &str) -> Result<Permit, Denied> {
        self.current().authorize(who, resource)
    }

    fn replace(&self, policies: Policies, version: i64) {
        let new = Arc::new(policies);
        match self.current.write() {
            Ok(mut g) => *g = new,
            Err(p) => *p.into_inner() = new,
        }
        self.version.store(version, Ordering::Release);
    }
}

/// Parses a stored document and checks it against this node's resources.
fn validate(doc: &PolicyDoc, resources: &[Resource]) -> Result<Policies, String> {
    let label = format!("store policy version {}", doc.version);
    let p = Policies::parse(&doc.document, &label).map_err(|e| e.to_string())?;
    check_policies(resources, &p).map_err(|m| format!("{label}: {m}"))?;
    Ok(p)
}

/// The policies to start with (see the module doc); fails the start on a
/// file or stored document that does not validate.
pub async fn load_at_start(
    file: Option<&Path>,
    store: &Store,
    resources: &[Resource],
    node: &str,
    auditor: &Auditor,
) -> anyhow::Result<LivePolicies> {
    let Some(path) = file else {
        let doc = store
            .current_policy_doc()
            .await
            .context("NOVAS_STORE_URL: reading the policies")?;
        return match doc {
            None => Ok(LivePolicies::new(Policies::default(), 0)),
            Some(doc) => {
                let p = validate(&doc, resources).map_err(|m| anyhow::anyhow!(m))?;
                tracing::info!(
                    policy.version = doc.version,
                    policy.source = %doc.source,
                    "policies from the store"
                );
                Ok(LivePolicies::new(p, doc.version))
            }
        };
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("NOVAS_POLICIES: reading {}", path.display()))?;
    let policies = Policies::parse(&text, &path.display().to_string())
        .map_err(|e| anyhow::anyhow!("NOVAS_POLICIES: {e}"))?;
    check_policies(resources, &policies).map_err(|m| anyhow::anyhow!("NOVAS_POLICIES: {m}"))?;
    let source = format!("NOVAS_POLICIES {}", path.display());
    let (version, new) = store
        .put_policy_doc(&text, &source, node)
        .await
        .context("NOVAS_STORE_URL: storing the policies")?;
    if new {
        tracing::info!(policy.version = version, policy.source = %source, "policies stored as a new version");
        let event = AuditEvent::new(EventKind::AdminChange {
            action: "policy_import".into(),
            object: format!("policies v{version}"),
            detail: format!("{source} on node {node}"),
        });
        if let Err(e) = auditor.record(event) {
            tracing::warn!(error = %e, policy.version = version, "the policy import is not audited");
        }
    } else {
        tracing::info!(
            policy.version = version,
            "policies: the file is the store's current version"
        );
    }
    Ok(LivePolicies::new(policies, version))
}

/// Follows the store until `shutdown`: swaps in each newer valid version.
pub async fn follow(
    live: Arc<LivePolicies>,
    store: Store,
    resources: Vec<Resource>,
    every: Duration,
    shutdown: CancellationToken,
) {
    // The last version refused, so an invalid document is reported once,
    // not at every poll.
    let mut refused = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let latest = match store.latest_policy_version().await {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "policy refresh: store unavailable");
                continue;
            }
        };
        if latest <= live.version() || latest == refused {
            continue;
        }
        let doc = match store.policy_doc(latest).await {
            Ok(Some(doc)) => doc,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "policy refresh: store unavailable");
                continue;
            }
        };
        match validate(&doc, &resources) {
            Ok(p) => {
                let was = live.version();
                live.replace(p, doc.version);
                tracing::info!(
                    policy.version = doc.version,
                    policy.previous = was,
                    policy.source = %doc.source,
                    policy.by = %doc.created_by,
                    "policies updated"
                );
            }
            Err(msg) => {
                refused = latest;
                tracing::error!(
                    policy.version = latest,
                    policy.in_force = live.version(),
                    error = %msg,
                    "new policy version refused; the rules in force stay"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{audit::AuditorConfig, store::test_util::sqlite_store};

    const ALICE: &str = "policies: [{name: alice-web, users: [alice], resources: [web]}]\n";
    const BOB: &str = "policies: [{name: bob-web, users: [bob], resources: [web]}]\n";

    fn who(name: &str) -> Identity {
        Identity {
            user: name.into(),
            roles: vec![],
        }
    }

    #[tokio::test]
    async fn file_is_stored_then_followed_and_bad_versions_are_refused() {
        let (store, dir) = sqlite_store().await;
        let auditor = Auditor::start(store.clone(), AuditorConfig::new("n1", dir.path())).await;
        let file = dir.path().join("p.yaml");
        std::fs::write(&file, ALICE).expect("write");

        let live = load_at_start(Some(&file), &store, &[], "n1", &auditor)
            .await
            .expect("start");
        assert_eq!(live.version(), 1);
        assert!(live.authorize(&who("alice"), "web").is_ok());
        // A second node starting with the same file adds no version.
        let again = load_at_start(Some(&file), &store, &[], "n2", &auditor)
            .await
            .expect("start");
        assert_eq!(again.version(), 1);
        // A node without the file takes the store's.
        let plain = load_at_start(None, &store, &[], "n3", &auditor)
            .await
            .expect("start");
        assert_eq!(plain.version(), 1);
        assert!(plain.authorize(&who("alice"), "web").is_ok());

        let live = Arc::new(live);
        let stop = CancellationToken::new();
        let task = tokio::spawn(follow(
            live.clone(),
            store.clone(),
            vec![],
            Duration::from_millis(20),
            stop.clone(),
        ));
        store.put_policy_doc(BOB, "cli", "test").await.expect("put");
        let wait = |v: i64| {
            let live = live.clone();
            async move {
                for _ in 0..200 {
                    if live.version() == v {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("version {v} never applied (at {})", live.version());
            }
        };
        wait(2).await;
        assert!(live.authorize(&who("alice"), "web").is_err());
        assert!(live.authorize(&who("bob"), "web").is_ok());

        // An invalid version is refused; bob keeps access.
        store
            .put_policy_doc("policies: [{name: x}]\n", "cli", "test")
            .await
            .expect("put");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(live.version(), 2);
        assert!(live.authorize(&who("bob"), "web").is_ok());
        // A later valid one applies.
        store
            .put_policy_doc(ALICE, "cli", "test")
            .await
            .expect("put");
        wait(4).await;
        assert!(live.authorize(&who("alice"), "web").is_ok());
        stop.cancel();
        task.await.expect("follow ends");
        auditor.shutdown(Duration::from_secs(5)).await;
        let events = store
            .query_events(&crate::audit::AuditQuery {
                kind: Some(crate::audit::EventType::AdminChange),
                ..Default::default()
            })
            .await
            .expect("query");
        assert_eq!(events.len(), 1, "one import audited: {events:?}");
    }

    #[tokio::test]
    async fn an_invalid_stored_version_fails_the_start() {
        let (store, dir) = sqlite_store().await;
        let auditor = Auditor::start(store.clone(), AuditorConfig::new("n1", dir.path())).await;
        store
            .put_policy_doc("policies: [{name: x}]\n", "cli", "t")
            .await
            .expect("put");
        let e = load_at_start(None, &store, &[], "n1", &auditor)
            .await
            .err()
            .expect("refused");
        assert!(e.to_string().contains("store policy version 1"), "{e}");
        auditor.shutdown(Duration::from_secs(5)).await;
    }
}
