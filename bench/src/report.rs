//! The printed table (direct vs tunnel, ratios, goals from
//! shared/bench/ANCHORS.md) and the JSON document.

use std::{collections::BTreeMap, fmt::Write};

use serde_json::{json, Value};

use crate::{args::Params, stats::median};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    Direct,
    Tunnel,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Tunnel => "tunnel",
        }
    }
}

/// Every value of every metric, one per repetition.
#[derive(Debug, Default, Clone)]
pub struct Samples(pub BTreeMap<&'static str, Vec<f64>>);

impl Samples {
    pub fn push(&mut self, key: &'static str, v: f64) {
        self.0.entry(key).or_default().push(v);
    }

    pub fn median(&self, key: &str) -> f64 {
        self.0.get(key).map_or(f64::NAN, |v| median(v))
    }
}

/// Resident memory figures, KiB.
#[derive(Debug, Default, Clone)]
pub struct Memory {
    pub novas_idle_1agent_kib: u64,
    pub novac_idle_kib: u64,
    pub novas_after_load_kib: u64,
    pub novac_after_load_kib: u64,
    pub novas_peak_kib: u64,
    pub novac_peak_kib: u64,
    /// The many-agents novas: no agent, one agent, all agents.
    pub agents_novas_0_kib: u64,
    pub agents_novas_1_kib: u64,
    pub agents_novas_n_kib: u64,
    pub agents_novas_peak_kib: u64,
    pub agents: usize,
    pub agents_listed: usize,
    pub agents_register_s: f64,
    pub agents_register_cpu_s: f64,
}

impl Memory {
    pub fn per_agent_kib(&self) -> f64 {
        if self.agents < 2 {
            return f64::NAN;
        }
        (self.agents_novas_n_kib as f64 - self.agents_novas_1_kib as f64) / (self.agents - 1) as f64
    }
}

pub struct Report {
    pub params: Params,
    pub samples: BTreeMap<Mode, Samples>,
    pub memory: Memory,
    /// Share of the machine's CPU time used by other processes during the
    /// direct-vs-tunnel measurements (0..1).
    pub other_load: f64,
    pub wall_s: f64,
}

impl Report {
    fn m(&self, mode: Mode, key: &str) -> f64 {
        self.samples.get(&mode).map_or(f64::NAN, |s| s.median(key))
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISSED"
    }
}

fn fmt_num(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    if decimals == 0 && v.abs() >= 1_000.0 {
        // 12,345
        let s = format!("{v:.0}");
        let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        return format!("{sign}{out}");
    }
    format!("{v:.decimals$}")
}

struct Row {
    what: String,
    direct: String,
    tunnel: String,
    ratio: String,
    goal: String,
}

pub fn table(r: &Report) -> String {
    use Mode::{Direct, Tunnel};
    let p = &r.params;
    let mut rows: Vec<Row> = Vec::new();
    let mut bulk = |what: &str, key: &str, goal: Option<f64>| {
        let (d, t) = (r.m(Direct, key), r.m(Tunnel, key));
        let ratio = t / d;
        rows.push(Row {
            what: what.into(),
            direct: fmt_num(d, 2),
            tunnel: fmt_num(t, 2),
            ratio: format!("{}x", fmt_num(ratio, 2)),
            goal: goal.map_or(String::new(), |g| {
                format!(">= {g:.2}x direct  {}", verdict(ratio >= g))
            }),
        });
    };
    bulk(
        "throughput 1 stream user->target, Gbit/s",
        "up1_gbps",
        Some(0.40),
    );
    bulk(
        "throughput 1 stream target->user, Gbit/s",
        "down1_gbps",
        None,
    );
    bulk(
        &format!("throughput {} streams user->target, Gbit/s", p.streams),
        "up8_gbps",
        None,
    );
    for (what, key, goal) in [
        ("RTT 64 B p50, us", "rtt_p50_us", Some(60.0)),
        ("RTT 64 B p99, us", "rtt_p99_us", None),
        ("RTT 64 B mean, us", "rtt_mean_us", None),
    ] {
        let (d, t) = (r.m(Direct, key), r.m(Tunnel, key));
        rows.push(Row {
            what: what.into(),
            direct: fmt_num(d, 0),
            tunnel: fmt_num(t, 0),
            ratio: format!("{}x (+{})", fmt_num(t / d, 2), fmt_num(t - d, 0)),
            goal: goal.map_or(String::new(), |g| {
                format!("<= +{g:.0} us  {}", verdict(t - d <= g))
            }),
        });
    }
    let (d, t) = (r.m(Direct, "conns_per_s"), r.m(Tunnel, "conns_per_s"));
    rows.push(Row {
        what: format!("new connections/s ({} in flight)", p.conn_workers),
        direct: fmt_num(d, 0),
        tunnel: fmt_num(t, 0),
        ratio: format!("{}x", fmt_num(t / d, 2)),
        goal: format!(">= 7,000/s  {}", verdict(t >= 7000.0)),
    });
    for (what, key) in [
        ("  connect+RTT+close p50, us", "conn_p50_us"),
        ("  connect+RTT+close p99, us", "conn_p99_us"),
    ] {
        let (d, t) = (r.m(Direct, key), r.m(Tunnel, key));
        rows.push(Row {
            what: what.into(),
            direct: fmt_num(d, 0),
            tunnel: fmt_num(t, 0),
            ratio: format!("{}x", fmt_num(t / d, 2)),
            goal: String::new(),
        });
    }
    let failed = r.m(Tunnel, "conns_failed") + r.m(Direct, "conns_failed");
    if failed > 0.0 {
        rows.push(Row {
            what: "  failed connections (median per run)".into(),
            direct: fmt_num(r.m(Direct, "conns_failed"), 0),
            tunnel: fmt_num(r.m(Tunnel, "conns_failed"), 0),
            ratio: String::new(),
            goal: "0  MISSED".into(),
        });
    }
    let cpu = r.m(Tunnel, "cpu_s_per_gb");
    let split = |key: &str, d: usize| {
        format!(
            "novas {} + novac {}",
            fmt_num(r.m(Tunnel, &format!("{key}_novas")), d),
            fmt_num(r.m(Tunnel, &format!("{key}_novac")), d)
        )
    };
    rows.push(Row {
        what: "tunnel CPU s/GB, 1 stream user->target".into(),
        direct: "-".into(),
        tunnel: fmt_num(cpu, 2),
        ratio: split("cpu_s_per_gb", 2),
        goal: format!("<= 1.50  {}", verdict(cpu <= 1.5)),
    });
    for (what, key, d) in [
        (
            "tunnel CPU s/GB, 1 stream target->user",
            "cpu_s_per_gb_down",
            2,
        ),
        ("tunnel CPU us per 64 B round trip", "cpu_us_per_rtt", 0),
        ("tunnel CPU us per new connection", "cpu_us_per_conn", 0),
    ] {
        rows.push(Row {
            what: what.into(),
            direct: "-".into(),
            tunnel: fmt_num(r.m(Tunnel, key), d),
            ratio: split(key, d),
            goal: String::new(),
        });
    }

    // Rows of measurements that did not run.
    rows.retain(|x| !(x.direct == "-" && x.tunnel == "-"));
    let w = [
        rows.iter().map(|x| x.what.len()).max().unwrap_or(0).max(10),
        rows.iter()
            .map(|x| x.direct.len())
            .max()
            .unwrap_or(0)
            .max(8),
        rows.iter()
            .map(|x| x.tunnel.len())
            .max()
            .unwrap_or(0)
            .max(8),
        rows.iter()
            .map(|x| x.ratio.len())
            .max()
            .unwrap_or(0)
            .max(13),
    ];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nNOVA tunnel vs direct TCP, loopback, {} CPUs ({}); {} s per transfer, {} round trips, \
         {} fresh connections; medians of {} interleaved run(s)\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        crate::procs::idle_polling(),
        fmt_num(p.duration.as_secs_f64(), 1),
        p.rtts,
        p.conns,
        p.repeat
    );
    let _ = writeln!(
        out,
        "other processes used {}% of the CPUs during these measurements{}\n",
        fmt_num(r.other_load * 100.0, 0),
        if r.other_load > 0.10 {
            " -- DISTURBED, rerun on a quiet machine"
        } else {
            ""
        }
    );
    if let Some(n) = p.tunnel_workers {
        let _ = writeln!(
            out,
            "novas and novac with NOVAS_/NOVAC_WORKER_THREADS={n}\n"
        );
    }
    let _ = writeln!(
        out,
        "{:<w0$}  {:>w1$}  {:>w2$}  {:<w3$}  goal (ANCHORS.md)",
        "measure",
        "direct",
        "tunnel",
        "tunnel/direct",
        w0 = w[0],
        w1 = w[1],
        w2 = w[2],
        w3 = w[3]
    );
    let _ = writeln!(out, "{}", "-".repeat(w.iter().sum::<usize>() + 8 + 26));
    for x in &rows {
        let _ = writeln!(
            out,
            "{:<w0$}  {:>w1$}  {:>w2$}  {:<w3$}  {}",
            x.what,
            x.direct,
            x.tunnel,
            x.ratio,
            x.goal,
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        );
    }

    let m = &r.memory;
    let _ = writeln!(out, "\nResident memory (VmRSS)");
    let _ = writeln!(
        out,
        "  novas idle, 1 agent:         {:>7.1} MiB   goal <= 8 MiB  {}",
        mib(m.novas_idle_1agent_kib),
        verdict(m.novas_idle_1agent_kib <= 8 * 1024)
    );
    let _ = writeln!(
        out,
        "  novac idle:                  {:>7.1} MiB   goal <= 8 MiB  {}",
        mib(m.novac_idle_kib),
        verdict(m.novac_idle_kib <= 8 * 1024)
    );
    let _ = writeln!(
        out,
        "  after the load: novas {:.1} MiB (peak {:.1}), novac {:.1} MiB (peak {:.1})",
        mib(m.novas_after_load_kib),
        mib(m.novas_peak_kib),
        mib(m.novac_after_load_kib),
        mib(m.novac_peak_kib)
    );
    if m.agents > 0 {
        let per = m.per_agent_kib();
        let _ = writeln!(
            out,
            "  novas with idle agents (separate instance, 2 s heartbeats): 0 agents {:.1} MiB, \
             1 agent {:.1} MiB, {} agents {:.1} MiB (peak {:.1}); /api/tunnels lists {}",
            mib(m.agents_novas_0_kib),
            mib(m.agents_novas_1_kib),
            m.agents,
            mib(m.agents_novas_n_kib),
            mib(m.agents_novas_peak_kib),
            m.agents_listed
        );
        let _ = writeln!(
            out,
            "  per additional idle agent:   {:>7.1} KiB   goal <= 32 KiB  {}",
            per,
            verdict(per <= 32.0)
        );
        let _ = writeln!(
            out,
            "  registering {} agents (32 handshakes in flight): {:.2} s, {:.0} agents/s, \
             novas CPU {:.2} s",
            m.agents - 1,
            m.agents_register_s,
            (m.agents - 1) as f64 / m.agents_register_s,
            m.agents_register_cpu_s
        );
    }
    let _ = writeln!(out, "\nwall time {:.0} s", r.wall_s);
    out
}

pub fn json(r: &Report) -> Value {
    let p = &r.params;
    let mut modes = serde_json::Map::new();
    let mut ratios = serde_json::Map::new();
    for (mode, s) in &r.samples {
        let mut med = serde_json::Map::new();
        let mut all = serde_json::Map::new();
        for (k, v) in &s.0 {
            med.insert((*k).into(), num(median(v)));
            all.insert((*k).into(), json!(v));
        }
        modes.insert(mode.name().into(), json!({"median": med, "runs": all}));
    }
    if let (Some(d), Some(t)) = (r.samples.get(&Mode::Direct), r.samples.get(&Mode::Tunnel)) {
        for k in d.0.keys() {
            ratios.insert((*k).into(), num(t.median(k) / d.median(k)));
        }
    }
    let m = &r.memory;
    json!({
        "params": {
            "quick": p.quick,
            "duration_s": p.duration.as_secs_f64(),
            "repeat": p.repeat,
            "rtts": p.rtts,
            "warmup_rtts": p.warmup_rtts,
            "message_bytes": 64,
            "conns": p.conns,
            "conn_workers": p.conn_workers,
            "streams": p.streams,
            "agents": p.agents,
            "tests": p.tests,
            "tunnel_workers": p.tunnel_workers,
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "idle_polling": crate::procs::idle_polling(),
        },
        "modes": modes,
        "ratio_tunnel_to_direct": ratios,
        "added_rtt_p50_us": num(r.m(Mode::Tunnel, "rtt_p50_us") - r.m(Mode::Direct, "rtt_p50_us")),
        "memory_kib": {
            "novas_idle_1agent": m.novas_idle_1agent_kib,
            "novac_idle": m.novac_idle_kib,
            "novas_after_load": m.novas_after_load_kib,
            "novac_after_load": m.novac_after_load_kib,
            "novas_peak": m.novas_peak_kib,
            "novac_peak": m.novac_peak_kib,
            "agents": m.agents,
            "agents_listed": m.agents_listed,
            "agents_novas_0": m.agents_novas_0_kib,
            "agents_novas_1": m.agents_novas_1_kib,
            "agents_novas_n": m.agents_novas_n_kib,
            "agents_novas_peak": m.agents_novas_peak_kib,
            "per_agent": num(m.per_agent_kib()),
            "agents_register_s": m.agents_register_s,
            "agents_register_novas_cpu_s": m.agents_register_cpu_s,
        },
        "other_load": num(r.other_load),
        "wall_s": r.wall_s,
    })
}

/// JSON number, or null for NaN/inf.
fn num(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        Value::Null
    }
}
