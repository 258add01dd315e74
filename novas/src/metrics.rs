//! Prometheus metrics (text exposition format 0.0.4), served at `/metrics`.
//!
//! Two sources feed a scrape:
//! - counters and gauges that hot paths bump without a lock: the
//!   process-wide [`METRICS`] (sessions per kind via [`SessionGuard`],
//!   tunnel streams and bytes via `route::Metered`, refused agent
//!   handshakes via [`AuthFailure`]);
//! - state read at scrape time: the registry (agents, tags) and the
//!   auditor (queue depth, written events, write latency [`Histogram`]).
//!
//! A small hand-written registry instead of a metrics crate: the set is
//! fixed, every value is an atomic, and the text format is a few lines.
//! Counters of agents that have gone are kept in [`METRICS`] rather than in
//! the agents' own stats, so `_total` series never go backwards.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use tunnel_proto::StreamKind;

use crate::registry::AgentView;

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every session kind, in label order; the index of a kind in the
/// per-kind arrays.
pub const KINDS: [StreamKind; 5] = [
    StreamKind::Tcp,
    StreamKind::Postgres,
    StreamKind::Mysql,
    StreamKind::Ssh,
    StreamKind::Kubernetes,
];

fn kind_index(kind: StreamKind) -> usize {
    match kind {
        StreamKind::Tcp => 0,
        StreamKind::Postgres => 1,
        StreamKind::Mysql => 2,
        StreamKind::Ssh => 3,
        StreamKind::Kubernetes => 4,
    }
}

/// Why an agent connection was refused before it registered
/// (`novas_agent_auth_failures_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// Wrong enrollment token.
    BadToken,
    /// Protocol version this server does not speak.
    Version,
    /// Malformed Hello, invalid name or tags.
    BadRequest,
    /// Not a NOVA agent (bad preface).
    NotNova,
    /// TLS or yamux set-up failed.
    Tls,
    /// Control stream missing or broken during the handshake.
    Protocol,
    /// The handshake deadline passed.
    Timeout,
    /// Too many connections in their handshake; dropped on accept.
    Overload,
}

impl AuthFailure {
    pub const ALL: [AuthFailure; 8] = [
        Self::BadToken,
        Self::Version,
        Self::BadRequest,
        Self::NotNova,
        Self::Tls,
        Self::Protocol,
        Self::Timeout,
        Self::Overload,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadToken => "bad_token",
            Self::Version => "version",
            Self::BadRequest => "bad_request",
            Self::NotNova => "not_nova",
            Self::Tls => "tls",
            Self::Protocol => "protocol",
            Self::Timeout => "timeout",
            Self::Overload => "overload",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The lock-free counters the hot paths update.
pub struct Metrics {
    sessions_total: [AtomicU64; KINDS.len()],
    sessions_active: [AtomicU64; KINDS.len()],
    pub(crate) streams_total: AtomicU64,
    pub(crate) streams_active: AtomicU64,
    /// Bytes from users towards agents (and on to targets).
    pub(crate) bytes_to_agents: AtomicU64,
    /// Bytes from agents back towards users.
    pub(crate) bytes_from_agents: AtomicU64,
    auth_failures: [AtomicU64; AuthFailure::ALL.len()],
}

/// The process's metrics. One NOVAS per process; tests that need fresh
/// values build their own [`Metrics::new`].
pub static METRICS: Metrics = Metrics::new();

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub const fn new() -> Self {
        Self {
            sessions_total: [const { AtomicU64::new(0) }; KINDS.len()],
            sessions_active: [const { AtomicU64::new(0) }; KINDS.len()],
            streams_total: AtomicU64::new(0),
            streams_active: AtomicU64::new(0),
            bytes_to_agents: AtomicU64::new(0),
            bytes_from_agents: AtomicU64::new(0),
            auth_failures: [const { AtomicU64::new(0) }; AuthFailure::ALL.len()],
        }
    }

    pub fn auth_failure(&self, reason: AuthFailure) {
        self.auth_failures[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn sessions_active(&self, kind: StreamKind) -> u64 {
        self.sessions_active[kind_index(kind)].load(Ordering::Relaxed)
    }

    pub fn sessions_total(&self, kind: StreamKind) -> u64 {
        self.sessions_total[kind_index(kind)].load(Ordering::Relaxed)
    }
}

/// Counts one user session of a kind as active while it lives, and in the
/// kind's total from the start. Every front end's accept loop holds one per
/// connection (`frontend::serve` does it for the per-resource listeners).
pub struct SessionGuard {
    metrics: &'static Metrics,
    kind: usize,
}

impl SessionGuard {
    pub fn new(kind: StreamKind) -> Self {
        Self::on(&METRICS, kind)
    }

    pub fn on(metrics: &'static Metrics, kind: StreamKind) -> Self {
        let kind = kind_index(kind);
        metrics.sessions_total[kind].fetch_add(1, Ordering::Relaxed);
        metrics.sessions_active[kind].fetch_add(1, Ordering::Relaxed);
        Self { metrics, kind }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.metrics.sessions_active[self.kind].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Upper bounds (seconds) of the audit write latency buckets: a local
/// SQLite batch takes about a millisecond, a remote store tens.
pub const WRITE_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A fixed-bucket latency histogram of atomics.
pub struct Histogram {
    /// Per bucket (not cumulative); the last slot is +Inf.
    buckets: [AtomicU64; WRITE_BUCKETS.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// A consistent-enough copy of a [`Histogram`] for rendering.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// Cumulative counts, one per [`WRITE_BUCKETS`] bound.
    pub cumulative: Vec<u64>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; WRITE_BUCKETS.len() + 1],
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = WRITE_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(WRITE_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut acc = 0;
        let cumulative = self.buckets[..WRITE_BUCKETS.len()]
            .iter()
            .map(|b| {
                acc += b.load(Ordering::Relaxed);
                acc
            })
            .collect();
        let inf = self.buckets[WRITE_BUCKETS.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            cumulative,
            sum_seconds: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            // The +Inf bucket must equal the count: derive both from the
            // buckets rather than racing a separate counter.
            count: acc + inf,
        }
    }
}

/// What the auditor reports at scrape time.
#[derive(Debug, Clone, Default)]
pub struct AuditStats {
    pub queue_depth: u64,
    pub written: u64,
    pub dropped: u64,
    pub write_errors: u64,
    pub store_up: bool,
    pub write_seconds: HistogramSnapshot,
}

/// Everything one scrape shows besides [`Metrics`].
pub struct ScrapeInput<'a> {
    pub node: &'a str,
    pub agents: &'a [AgentView],
    pub audit: AuditStats,
}

/// Renders the exposition text.
pub fn render(m: &Metrics, input: &ScrapeInput<'_>) -> String {
    let mut out = Text::default();
    out.family(
        "novas_build_info",
        "gauge",
        "Always 1; labels name this NOVAS node and its version.",
    );
    out.sample(
        "novas_build_info",
        &[("node", input.node), ("version", env!("CARGO_PKG_VERSION"))],
        1,
    );

    out.family(
        "novas_agents_connected_total",
        "gauge",
        "Agents registered with this node now.",
    );
    out.sample("novas_agents_connected_total", &[], input.agents.len());
    out.family(
        "novas_agents_connected",
        "gauge",
        "Agents registered with this node now, per tag (key and value).",
    );
    let mut by_tag: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for a in input.agents {
        for (k, v) in &a.tags {
            *by_tag.entry((k, v)).or_default() += 1;
        }
    }
    for ((k, v), n) in by_tag {
        out.sample(
            "novas_agents_connected",
            &[("tag_key", k), ("tag_value", v)],
            n,
        );
    }
    out.family(
        "novas_agent_info",
        "gauge",
        "1 per agent registered with this node (agent name, node).",
    );
    for a in input.agents {
        out.sample(
            "novas_agent_info",
            &[("agent", &a.name), ("node", &a.node)],
            1,
        );
    }
    out.family(
        "novas_agent_streams_active",
        "gauge",
        "Open session streams per registered agent.",
    );
    for a in input.agents {
        out.sample(
            "novas_agent_streams_active",
            &[("agent", &a.name)],
            a.active_streams,
        );
    }

    out.family(
        "novas_streams_active",
        "gauge",
        "Session streams open through agents now.",
    );
    out.sample(
        "novas_streams_active",
        &[],
        m.streams_active.load(Ordering::Relaxed),
    );
    out.family(
        "novas_streams_total",
        "counter",
        "Session streams opened through agents since start.",
    );
    out.sample(
        "novas_streams_total",
        &[],
        m.streams_total.load(Ordering::Relaxed),
    );
    out.family(
        "novas_tunnel_bytes_total",
        "counter",
        "Session bytes through agent tunnels: to_agent (from users), from_agent (to users).",
    );
    out.sample(
        "novas_tunnel_bytes_total",
        &[("direction", "to_agent")],
        m.bytes_to_agents.load(Ordering::Relaxed),
    );
    out.sample(
        "novas_tunnel_bytes_total",
        &[("direction", "from_agent")],
        m.bytes_from_agents.load(Ordering::Relaxed),
    );

    out.family(
        "novas_sessions_total",
        "counter",
        "User connections accepted since start, per front-end kind.",
    );
    for k in KINDS {
        out.sample(
            "novas_sessions_total",
            &[("kind", k.as_str())],
            m.sessions_total(k),
        );
    }
    out.family(
        "novas_sessions_active",
        "gauge",
        "User connections open now, per front-end kind.",
    );
    for k in KINDS {
        out.sample(
            "novas_sessions_active",
            &[("kind", k.as_str())],
            m.sessions_active(k),
        );
    }

    out.family(
        "novas_agent_auth_failures_total",
        "counter",
        "Agent connections refused before registration, per reason.",
    );
    for r in AuthFailure::ALL {
        out.sample(
            "novas_agent_auth_failures_total",
            &[("reason", r.as_str())],
            m.auth_failures[r.index()].load(Ordering::Relaxed),
        );
    }

    let a = &input.audit;
    out.family(
        "novas_audit_queue_depth",
        "gauge",
        "Audit events accepted and not yet stored.",
    );
    out.sample("novas_audit_queue_depth", &[], a.queue_depth);
    out.family(
        "novas_audit_events_written_total",
        "counter",
        "Audit events written to the store since start.",
    );
    out.sample("novas_audit_events_written_total", &[], a.written);
    out.family(
        "novas_audit_events_dropped_total",
        "counter",
        "Audit events dropped on a full queue (fail-open only).",
    );
    out.sample("novas_audit_events_dropped_total", &[], a.dropped);
    out.family(
        "novas_audit_write_errors_total",
        "counter",
        "Failed audit batch writes (each retry counts).",
    );
    out.sample("novas_audit_write_errors_total", &[], a.write_errors);
    out.family(
        "novas_audit_store_up",
        "gauge",
        "1 while the audit store takes writes, 0 while it fails.",
    );
    out.sample("novas_audit_store_up", &[], u64::from(a.store_up));
    out.histogram(
        "novas_audit_write_seconds",
        "Time to write one batch of audit events to the store.",
        &a.write_seconds,
    );
    out.0
}

/// The exposition text being written.
#[derive(Default)]
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape_label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn histogram(&mut self, name: &str, help: &str, h: &HistogramSnapshot) {
        self.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (bound, n) in WRITE_BUCKETS.iter().zip(&h.cumulative) {
            self.sample(&bucket, &[("le", &bound.to_string())], n);
        }
        self.sample(&bucket, &[("le", "+Inf")], h.count);
        self.sample(&format!("{name}_sum"), &[], h.sum_seconds);
        self.sample(&format!("{name}_count"), &[], h.count);
    }
}

/// Label values come from agents (names, tags): escape what the format
/// requires so no value can break a line or forge another series.
fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str, tags: &[(&str, &str)]) -> AgentView {
        AgentView {
            name: name.into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            remote_addr: "127.0.0.1:1".into(),
            node: "n1".into(),
            agent_version: "0".into(),
            capabilities: vec![],
            connected_since: String::new(),
            last_heartbeat: String::new(),
            rtt_ms: 0.0,
            active_streams: 2,
            streams_total: 3,
            bytes_in: 0,
            bytes_out: 0,
            group: String::new(),
        }
    }

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in\n{text}"))
    }

    #[test]
    fn renders_counts_by_tag_kind_and_reason() {
        static M: Metrics = Metrics::new();
        let agents = [
            agent("a", &[("VPC", "dev"), ("Env", "prod")]),
            agent("b", &[("VPC", "dev")]),
        ];
        let g = SessionGuard::on(&M, StreamKind::Postgres);
        drop(SessionGuard::on(&M, StreamKind::Postgres));
        M.auth_failure(AuthFailure::BadToken);
        let h = Histogram::new();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(30));
        let text = render(
            &M,
            &ScrapeInput {
                node: "n1",
                agents: &agents,
                audit: AuditStats {
                    queue_depth: 7,
                    store_up: true,
                    write_seconds: h.snapshot(),
                    ..Default::default()
                },
            },
        );
        assert_eq!(
            line(&text, "novas_agents_connected_total "),
            "novas_agents_connected_total 2"
        );
        assert!(text.contains("novas_agents_connected{tag_key=\"VPC\",tag_value=\"dev\"} 2\n"));
        assert!(text.contains("novas_agents_connected{tag_key=\"Env\",tag_value=\"prod\"} 1\n"));
        assert!(text.contains("novas_sessions_total{kind=\"postgres\"} 2\n"));
        assert!(text.contains("novas_sessions_active{kind=\"postgres\"} 1\n"));
        assert!(text.contains("novas_sessions_active{kind=\"ssh\"} 0\n"));
        assert!(text.contains("novas_agent_auth_failures_total{reason=\"bad_token\"} 1\n"));
        assert!(text.contains("novas_audit_queue_depth 7\n"));
        assert!(text.contains("novas_audit_write_seconds_bucket{le=\"0.0025\"} 0\n"));
        assert!(text.contains("novas_audit_write_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("novas_audit_write_seconds_bucket{le=\"10\"} 1\n"));
        assert!(text.contains("novas_audit_write_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("novas_audit_write_seconds_count 2\n"));
        drop(g);
        assert_eq!(M.sessions_active(StreamKind::Postgres), 0);
    }

    #[test]
    fn label_values_cannot_break_the_format() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
