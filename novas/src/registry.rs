//! The agent registry: who is connected, with which tags, and how busy.
//!
//! A registration under a name already present replaces the stale entry
//! (and closes its tunnel). Selection spreads new sessions round-robin over
//! the healthy agents that match a resource's selector.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Instant, SystemTime},
};

use serde::Serialize;
use tunnel_proto::{
    transport::{CloseHandle, Opener},
    Tags,
};

/// Live counters of one agent, updated by its sessions without a lock.
#[derive(Debug, Default)]
pub struct AgentStats {
    pub active_streams: AtomicU64,
    pub streams_total: AtomicU64,
    /// Bytes from users towards the agent.
    pub bytes_in: AtomicU64,
    /// Bytes from the agent towards users.
    pub bytes_out: AtomicU64,
    /// Last heartbeat, as milliseconds since the registry's epoch.
    pub last_heartbeat_ms: AtomicU64,
    pub rtt_us: AtomicU64,
}

/// One connected agent.
pub struct Agent {
    /// Unique per connection: tells a replaced entry from its replacement.
    pub conn_id: u64,
    pub name: String,
    pub tags: Tags,
    pub remote_addr: SocketAddr,
    pub agent_version: String,
    pub capabilities: Vec<String>,
    pub connected_since: SystemTime,
    pub opener: Opener,
    pub close: CloseHandle,
    pub stats: AgentStats,
}

/// How a resource chooses its agents.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl Selector {
    pub fn matches(&self, agent: &Agent) -> bool {
        self.name.as_ref().is_none_or(|n| *n == agent.name) && agent.tags.contains_all(&self.tags)
    }
}

/// JSON view of an agent, as `/api/tunnels` serves it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct AgentView {
    pub name: String,
    pub tags: BTreeMap<String, String>,
    pub remote_addr: String,
    pub node: String,
    pub agent_version: String,
    pub capabilities: Vec<String>,
    pub connected_since: String,
    pub last_heartbeat: String,
    pub rtt_ms: f64,
    pub active_streams: u64,
    pub streams_total: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The agent's tags as `K=V;K=V` (sorted). Agents with the same tags
    /// are replicas of one group (e.g. an HA Deployment's pods, named
    /// after the pods): a tag selector spreads sessions across all of
    /// them, and a console lists them together under this key.
    #[serde(default)]
    pub group: String,
}

pub struct Registry {
    node: String,
    agents: Mutex<HashMap<String, Arc<Agent>>>,
    next_conn: AtomicU64,
    rr: AtomicUsize,
    epoch: Instant,
    epoch_wall: SystemTime,
}

impl Registry {
    pub fn new(node: String) -> Self {
        Self {
            node,
            agents: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            rr: AtomicUsize::new(0),
            epoch: Instant::now(),
            epoch_wall: SystemTime::now(),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Agent>>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every update is a single insert/remove), so poisoning is ignored.
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Milliseconds since the registry started; the clock of heartbeats.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Adds an agent, replacing and closing a stale one of the same name.
    pub fn register(&self, agent: Arc<Agent>) -> Option<Arc<Agent>> {
        agent
            .stats
            .last_heartbeat_ms
            .store(self.now_ms(), Ordering::Relaxed);
        let old = self.lock().insert(agent.name.clone(), agent);
        if let Some(old) = &old {
            old.close.close();
        }
        old
    }

    /// Removes the agent if the entry is still this connection's.
    pub fn unregister(&self, name: &str, conn_id: u64) -> bool {
        let mut map = self.lock();
        if map.get(name).is_some_and(|a| a.conn_id == conn_id) {
            map.remove(name);
            true
        } else {
            false
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Healthy agents matching `sel`, rotated so that consecutive calls
    /// start at different agents (round-robin spreading).
    pub fn candidates(&self, sel: &Selector) -> Vec<Arc<Agent>> {
        let mut list: Vec<Arc<Agent>> = self
            .lock()
            .values()
            .filter(|a| !a.opener.is_closed() && sel.matches(a))
            .cloned()
            .collect();
        if list.len() > 1 {
            list.sort_by(|a, b| a.name.cmp(&b.name));
            let start = self.rr.fetch_add(1, Ordering::Relaxed) % list.len();
            list.rotate_left(start);
        }
        list
    }

    pub fn snapshot(&self) -> Vec<AgentView> {
        let mut list: Vec<AgentView> = self.lock().values().map(|a| self.view(a)).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    fn view(&self, a: &Agent) -> AgentView {
        let hb = self.epoch_wall
            + std::time::Duration::from_millis(a.stats.last_heartbeat_ms.load(Ordering::Relaxed));
        AgentView {
            name: a.name.clone(),
            tags: a.tags.0.clone(),
            remote_addr: a.remote_addr.to_string(),
            node: self.node.clone(),
            agent_version: a.agent_version.clone(),
            capabilities: a.capabilities.clone(),
            connected_since: humantime::format_rfc3339_millis(a.connected_since).to_string(),
            last_heartbeat: humantime::format_rfc3339_millis(hb).to_string(),
            rtt_ms: a.stats.rtt_us.load(Ordering::Relaxed) as f64 / 1000.0,
            active_streams: a.stats.active_streams.load(Ordering::Relaxed),
            streams_total: a.stats.streams_total.load(Ordering::Relaxed),
            bytes_in: a.stats.bytes_in.load(Ordering::Relaxed),
            bytes_out: a.stats.bytes_out.load(Ordering::Relaxed),
            group: a.tags.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tunnel_proto::{
        mux::Role,
        transport::{tls_mux::spawn_driver, Tunnel},
    };

    /// An agent entry backed by a real in-memory tunnel; the returned
    /// tunnels keep both ends alive.
    fn agent(reg: &Registry, name: &str, tags: &str) -> (Arc<Agent>, Tunnel, Tunnel) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let server = spawn_driver(a, Role::Server, addr);
        let client = spawn_driver(b, Role::Client, addr);
        let agent = Arc::new(Agent {
            conn_id: reg.next_conn_id(),
            name: name.into(),
            tags: tags.parse().expect("tags"),
            remote_addr: addr,
            agent_version: "t".into(),
            capabilities: vec![],
            connected_since: SystemTime::now(),
            opener: server.opener.clone(),
            close: server.close_handle(),
            stats: AgentStats::default(),
        });
        (agent, server, client)
    }

    fn sel(name: Option<&str>, tags: &str) -> Selector {
        Selector {
            name: name.map(String::from),
            tags: tags.parse::<Tags>().expect("tags").0,
        }
    }

    #[tokio::test]
    async fn selectors_match_by_name_and_tags() {
        let reg = Registry::new("n".into());
        let (a, _s1, _c1) = agent(&reg, "a", "VPC=dev;Env=prod");
        let (b, _s2, _c2) = agent(&reg, "b", "VPC=dev");
        reg.register(a);
        reg.register(b);
        let names = |s: &Selector| -> Vec<String> {
            let mut v: Vec<String> = reg.candidates(s).iter().map(|a| a.name.clone()).collect();
            v.sort();
            v
        };
        assert_eq!(names(&sel(None, "VPC=dev")), ["a", "b"]);
        assert_eq!(names(&sel(None, "VPC=dev;Env=prod")), ["a"]);
        assert_eq!(names(&sel(Some("b"), "")), ["b"]);
        assert_eq!(names(&sel(Some("b"), "Env=prod")), Vec::<String>::new());
        assert!(names(&sel(None, "VPC=other")).is_empty());
    }

    #[tokio::test]
    async fn candidates_rotate_across_replicas() {
        let reg = Registry::new("n".into());
        let (a, _s1, _c1) = agent(&reg, "r1", "App=x");
        let (b, _s2, _c2) = agent(&reg, "r2", "App=x");
        reg.register(a);
        reg.register(b);
        let firsts: Vec<String> = (0..4)
            .map(|_| reg.candidates(&sel(None, "App=x"))[0].name.clone())
            .collect();
        assert_eq!(firsts, ["r1", "r2", "r1", "r2"]);
        let groups: Vec<String> = reg.snapshot().into_iter().map(|v| v.group).collect();
        assert_eq!(groups, ["App=x", "App=x"], "replicas are one group");
    }

    #[tokio::test]
    async fn same_name_replaces_and_closes_the_stale_entry() {
        let reg = Registry::new("n".into());
        let (old, _s1, _c1) = agent(&reg, "a", "");
        let (new, _s2, _c2) = agent(&reg, "a", "");
        let (old_id, new_id) = (old.conn_id, new.conn_id);
        let old_opener = old.opener.clone();
        assert!(reg.register(old).is_none());
        assert!(reg.register(new).is_some());
        assert_eq!(reg.len(), 1);
        tokio::time::timeout(std::time::Duration::from_secs(5), old_opener.closed())
            .await
            .expect("stale tunnel closed");
        // The stale connection's cleanup must not remove its replacement.
        assert!(!reg.unregister("a", old_id));
        assert_eq!(reg.len(), 1);
        assert!(reg.unregister("a", new_id));
        assert!(reg.is_empty());
    }

    #[tokio::test]
    async fn closed_agents_are_not_candidates() {
        let reg = Registry::new("n".into());
        let (a, server, client) = agent(&reg, "a", "App=x");
        reg.register(a.clone());
        drop(client);
        drop(server);
        tokio::time::timeout(std::time::Duration::from_secs(5), a.opener.closed())
            .await
            .expect("closed");
        assert!(reg.candidates(&sel(None, "App=x")).is_empty());
        assert_eq!(reg.snapshot().len(), 1, "still listed until unregistered");
    }
}
