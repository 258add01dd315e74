//! Command-line parameters of the benchmark (hand-parsed: a handful of flags).

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context};

pub const USAGE: &str = "\
nova-bench: NOVA tunnel vs a direct TCP connection, on loopback (a benchmark, not a test)

usage: cargo run --release -p nova-bench -- [options]

  --quick          short smoke run (1 s transfers, 1 repetition, fewer round trips,
                   connections and agents)
  --json PATH      also write every figure as JSON to PATH
  --duration SECS  seconds per throughput measurement (default 4; quick 1)
  --repeat N       interleaved repetitions, medians reported (default 3; quick 1)
  --rtts N         64-byte round trips for the latency test (default 5000; quick 1000)
  --conns N        fresh connections for the connection-rate test (default 5000; quick 1000)
  --agents N       idle agents registered for the memory test (default 1000; quick 100)
  --tests LIST     comma list of up1,down1,up8,rtt,conn (default: all)
  --skip-agents    skip the many-agents memory phase
  --tunnel-workers N
                   worker threads of novas and novac (NOVAS_/NOVAC_WORKER_THREADS;
                   default: their own defaults, one per CPU and 1)
  -h, --help       this text

Binaries: target/release/novas and target/release/novac next to this executable's
profile dir (override with NOVAS_BIN / NOVAC_BIN); build them with
`cargo build --release --bins`.";

/// The direct-vs-tunnel measurements, in the order they run.
pub const TESTS: [&str; 5] = ["up1", "down1", "up8", "rtt", "conn"];

#[derive(Debug, Clone)]
pub struct Params {
    pub quick: bool,
    pub json: Option<PathBuf>,
    pub duration: Duration,
    pub repeat: usize,
    pub rtts: usize,
    pub warmup_rtts: usize,
    pub conns: usize,
    /// Upper bound on one connection-rate run.
    pub conns_cap: Duration,
    pub conn_workers: usize,
    pub streams: usize,
    pub agents: usize,
    pub skip_agents: bool,
    /// Which direct-vs-tunnel measurements run (see [`TESTS`]).
    pub tests: Vec<String>,
    /// NOVAS_WORKER_THREADS and NOVAC_WORKER_THREADS.
    pub tunnel_workers: Option<usize>,
}

impl Params {
    pub fn runs(&self, test: &str) -> bool {
        self.tests.iter().any(|t| t == test)
    }

    fn defaults(quick: bool) -> Self {
        Self {
            quick,
            json: None,
            duration: Duration::from_secs(if quick { 1 } else { 4 }),
            repeat: if quick { 1 } else { 3 },
            rtts: if quick { 1000 } else { 5000 },
            warmup_rtts: if quick { 100 } else { 500 },
            conns: if quick { 1000 } else { 5000 },
            conns_cap: Duration::from_secs(if quick { 5 } else { 15 }),
            conn_workers: 8,
            streams: 8,
            agents: if quick { 100 } else { 1000 },
            skip_agents: false,
            tests: TESTS.iter().map(|t| t.to_string()).collect(),
            tunnel_workers: None,
        }
    }

    /// Parses `args` (without the program name). `Ok(None)` means help was printed.
    pub fn parse(args: &[String]) -> anyhow::Result<Option<Self>> {
        let quick = args.iter().any(|a| a == "--quick");
        let mut p = Self::defaults(quick);
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .with_context(|| format!("{name} needs a value"))
            };
            match a.as_str() {
                "--quick" => {}
                "-h" | "--help" => {
                    println!("{USAGE}");
                    return Ok(None);
                }
                "--json" => p.json = Some(PathBuf::from(value("--json")?)),
                "--duration" => {
                    let s: f64 = num(&value("--duration")?, "--duration")?;
                    if !(0.2..=30.0).contains(&s) {
                        bail!("--duration must be between 0.2 and 30 seconds");
                    }
                    p.duration = Duration::from_secs_f64(s);
                }
                "--repeat" => p.repeat = bounded(&value("--repeat")?, "--repeat", 1, 10)?,
                "--rtts" => p.rtts = bounded(&value("--rtts")?, "--rtts", 10, 200_000)?,
                "--conns" => p.conns = bounded(&value("--conns")?, "--conns", 10, 20_000)?,
                "--agents" => p.agents = bounded(&value("--agents")?, "--agents", 2, 5_000)?,
                "--skip-agents" => p.skip_agents = true,
                "--tests" => {
                    let list = value("--tests")?;
                    p.tests = list.split(',').map(|t| t.trim().to_string()).collect();
                    if let Some(bad) = p.tests.iter().find(|t| !TESTS.contains(&t.as_str())) {
                        bail!("--tests: unknown test {bad:?} (known: {})", TESTS.join(","));
                    }
                }
                "--tunnel-workers" => {
                    p.tunnel_workers = Some(bounded(
                        &value("--tunnel-workers")?,
                        "--tunnel-workers",
                        1,
                        64,
                    )?)
                }
                other => bail!("unknown argument {other:?} (see --help)"),
            }
        }
        Ok(Some(p))
    }
}

fn num<T: std::str::FromStr>(s: &str, name: &str) -> anyhow::Result<T> {
    s.trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{name}: {s:?} is not a number"))
}

fn bounded(s: &str, name: &str, lo: usize, hi: usize) -> anyhow::Result<usize> {
    let v: usize = num(s, name)?;
    if !(lo..=hi).contains(&v) {
        bail!("{name} must be between {lo} and {hi}");
    }
    Ok(v)
}
