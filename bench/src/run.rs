//! The phases of a benchmark run: set-up, direct-vs-tunnel measurements
//! (interleaved repetitions), idle memory, then many idle agents on a
//! separate novas.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    agents::Fleet,
    args::Params,
    bins::{self, Bins},
    http, load,
    procs::{self, Novas, NovasOpts, Proc},
    report::{self, Memory, Mode, Report, Samples},
    targets,
};

const AGENT_NAME: &str = "bench-agent";
const MSG: usize = 64;

/// Where the clients connect, per mode.
#[derive(Clone, Copy)]
struct Endpoints {
    sink: SocketAddr,
    source: SocketAddr,
    echo: SocketAddr,
}

pub async fn all(p: Params) -> anyhow::Result<()> {
    let bins = bins::locate()?;
    if cfg!(debug_assertions) {
        say!(
            "warning: nova-bench is a debug build; its load generator will be slow (use --release)"
        );
    }
    let tmp = tempfile::Builder::new().prefix("nova-bench.").tempdir()?;
    say!(
        "{} and {}, work dir {}",
        bins.novas.display(),
        bins.novac.display(),
        tmp.path().display()
    );
    let token = gen_token(&bins)?;

    // Targets and the tunnel in front of them.
    let t = targets::start()?;
    let direct = Endpoints {
        sink: t.sink,
        source: t.source,
        echo: t.echo,
    };
    let ports = free_ports(3)?;
    let res_path = tmp.path().join("resources.yaml");
    std::fs::write(
        &res_path,
        resources_yaml(&[
            ("sink", ports[0], t.sink),
            ("source", ports[1], t.source),
            ("echo", ports[2], t.echo),
        ]),
    )?;
    let main_dir = tmp.path().join("main");
    std::fs::create_dir_all(&main_dir)?;
    let mut novas = procs::start_novas(
        &bins.novas,
        &main_dir,
        &NovasOpts {
            token: &token,
            resources: Some(&res_path),
            heartbeat: None,
            workers: p.tunnel_workers,
        },
    )?;
    let mut novac = procs::start_novac(
        &bins.novac,
        &main_dir,
        novas.agent_addr,
        &token,
        AGENT_NAME,
        &novas.fingerprint,
        p.tunnel_workers,
    )?;
    wait_registered(&mut novas, &mut novac, AGENT_NAME).await?;
    let lo = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let tunnel = Endpoints {
        sink: lo(ports[0]),
        source: lo(ports[1]),
        echo: lo(ports[2]),
    };
    probe_echo(tunnel.echo, &mut novas, &mut novac).await?;
    say!(
        "novas pid {} (agent {}, http {}), novac pid {} registered; tunnel ports {ports:?}",
        novas.proc.pid(),
        novas.agent_addr,
        novas.http_addr,
        novac.pid()
    );

    // Idle memory with one agent, before any load.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut mem = Memory {
        novas_idle_1agent_kib: novas.proc.rss_kib(),
        novac_idle_kib: novac.rss_kib(),
        ..Default::default()
    };

    // Direct and tunnel, interleaved. The machine's busy time minus ours
    // tells how much other processes disturbed the measurements (a few
    // percent remain on a quiet machine: ksoftirqd carrying loopback traffic).
    let load0 = (
        procs::machine_busy_ticks(),
        procs::self_cpu_s() + novas.proc.cpu_s() + novac.cpu_s(),
        Instant::now(),
    );
    let mut samples: BTreeMap<Mode, Samples> = BTreeMap::new();
    for rep in 0..p.repeat {
        let order = if rep % 2 == 0 {
            [Mode::Direct, Mode::Tunnel]
        } else {
            [Mode::Tunnel, Mode::Direct]
        };
        for mode in order {
            let ep = match mode {
                Mode::Direct => direct,
                Mode::Tunnel => tunnel,
            };
            say!("run {}/{} {}", rep + 1, p.repeat, mode.name());
            let s = samples.entry(mode).or_default();
            let cpu = TunnelCpu((mode == Mode::Tunnel).then_some((&novas.proc, &novac)));
            measure(&p, ep, cpu, s)
                .await
                .with_context(|| format!("{} run {}", mode.name(), rep + 1))?;
            novas.proc.check_alive()?;
            novac.check_alive()?;
        }
    }
    let other_load = match (load0.0, procs::machine_busy_ticks()) {
        (Some(b0), Some(b1)) => {
            let ours = procs::self_cpu_s() + novas.proc.cpu_s() + novac.cpu_s() - load0.1;
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            let other = procs::ticks_to_s(b1.saturating_sub(b0)) - ours;
            (other / (load0.2.elapsed().as_secs_f64() * cpus)).max(0.0)
        }
        _ => f64::NAN,
    };
    if other_load > 0.10 {
        say!(
            "warning: other processes kept {:.0}% of the CPUs busy during the measurements; \
             the figures are disturbed",
            other_load * 100.0
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    mem.novas_after_load_kib = novas.proc.rss_kib();
    mem.novac_after_load_kib = novac.rss_kib();
    mem.novas_peak_kib = novas.proc.hwm_kib();
    mem.novac_peak_kib = novac.hwm_kib();
    let names = http::tunnel_names(novas.http_addr, &novas.admin_token).await?;
    if names != [AGENT_NAME] {
        bail!("/api/tunnels lists {names:?} after the load, expected only {AGENT_NAME}");
    }
    drop(novac);
    drop(novas);
    drop(t);

    if !p.skip_agents {
        many_agents(&p, &bins, tmp.path(), &token, &mut mem).await?;
    }

    let rep = Report {
        params: p.clone(),
        samples,
        memory: mem,
        other_load,
        wall_s: crate::started().elapsed().as_secs_f64(),
    };
    println!("{}", report::table(&rep));
    if let Some(path) = &p.json {
        std::fs::write(path, serde_json::to_string_pretty(&report::json(&rep))?)
            .with_context(|| format!("write {}", path.display()))?;
        say!("JSON written to {}", path.display());
    }
    Ok(())
}

/// CPU seconds of the tunnel processes (novas, novac); none for direct runs.
struct TunnelCpu<'a>(Option<(&'a Proc, &'a Proc)>);

impl TunnelCpu<'_> {
    fn now(&self) -> Option<(f64, f64)> {
        self.0.map(|(a, b)| (a.cpu_s(), b.cpu_s()))
    }

    /// Records novas, novac and total CPU since `t0`, divided by `per`, as
    /// `{key}_novas`, `{key}_novac` and `{key}`.
    fn record(&self, t0: Option<(f64, f64)>, per: f64, key: [&'static str; 3], s: &mut Samples) {
        if let (Some((a0, b0)), Some((a1, b1))) = (t0, self.now()) {
            s.push(key[0], (a1 - a0 + b1 - b0) / per);
            s.push(key[1], (a1 - a0) / per);
            s.push(key[2], (b1 - b0) / per);
        }
    }
}

/// One repetition of every measurement against `ep`. With `cpu`, the tunnel
/// processes' CPU time is recorded per GB, per round trip and per connection.
async fn measure(
    p: &Params,
    ep: Endpoints,
    cpu: TunnelCpu<'_>,
    s: &mut Samples,
) -> anyhow::Result<()> {
    let pause = || tokio::time::sleep(Duration::from_millis(300));
    if p.runs("up1") {
        let c0 = cpu.now();
        let up1 = load::upload(ep.sink, 1, p.duration)
            .await
            .context("1-stream upload")?;
        cpu.record(
            c0,
            up1.bytes as f64 / 1e9,
            ["cpu_s_per_gb", "cpu_s_per_gb_novas", "cpu_s_per_gb_novac"],
            s,
        );
        s.push("up1_gbps", up1.gbps());
        pause().await;
    }
    if p.runs("down1") {
        let c0 = cpu.now();
        let down1 = load::download(ep.source, 1, p.duration)
            .await
            .context("1-stream download")?;
        cpu.record(
            c0,
            down1.bytes as f64 / 1e9,
            [
                "cpu_s_per_gb_down",
                "cpu_s_per_gb_down_novas",
                "cpu_s_per_gb_down_novac",
            ],
            s,
        );
        s.push("down1_gbps", down1.gbps());
        pause().await;
    }
    if p.runs("up8") {
        let up8 = load::upload(ep.sink, p.streams, p.duration)
            .await
            .context("8-stream upload")?;
        s.push("up8_gbps", up8.gbps());
        pause().await;
    }
    if p.runs("rtt") {
        let c0 = cpu.now();
        let rtt = load::ping_pong(ep.echo, p.rtts, p.warmup_rtts, MSG)
            .await
            .context("ping-pong")?;
        cpu.record(
            c0,
            (p.rtts + p.warmup_rtts) as f64 / 1e6,
            [
                "cpu_us_per_rtt",
                "cpu_us_per_rtt_novas",
                "cpu_us_per_rtt_novac",
            ],
            s,
        );
        s.push("rtt_p50_us", rtt.p50);
        s.push("rtt_p99_us", rtt.p99);
        s.push("rtt_mean_us", rtt.mean);
        pause().await;
    }
    if p.runs("conn") {
        let c0 = cpu.now();
        let cr = load::conn_rate(ep.echo, p.conns, p.conn_workers, p.conns_cap, MSG)
            .await
            .context("connection rate")?;
        cpu.record(
            c0,
            (cr.ok + cr.failed).max(1) as f64 / 1e6,
            [
                "cpu_us_per_conn",
                "cpu_us_per_conn_novas",
                "cpu_us_per_conn_novac",
            ],
            s,
        );
        if cr.failed > 0 {
            say!(
                "{} of {} fresh connections failed; first error: {}",
                cr.failed,
                cr.failed + cr.ok,
                cr.first_error.as_deref().unwrap_or("?")
            );
        }
        s.push("conns_per_s", cr.per_sec());
        s.push("conns_done", cr.ok as f64);
        s.push("conns_failed", cr.failed as f64);
        s.push("conn_p50_us", cr.per_conn_us.p50);
        s.push("conn_p99_us", cr.per_conn_us.p99);
        pause().await;
    }
    Ok(())
}

/// A separate novas (2 s heartbeats) with `p.agents` in-process idle agents
/// that answer pings; RSS with one agent, then with all of them.
async fn many_agents(
    p: &Params,
    bins: &Bins,
    tmp: &Path,
    token: &str,
    mem: &mut Memory,
) -> anyhow::Result<()> {
    const HEARTBEAT: Duration = Duration::from_secs(2);
    let dir = tmp.join("agents");
    std::fs::create_dir_all(&dir)?;
    let mut novas = procs::start_novas(
        &bins.novas,
        &dir,
        &NovasOpts {
            token,
            resources: None,
            heartbeat: Some("2s"),
            workers: p.tunnel_workers,
        },
    )?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    mem.agents_novas_0_kib = novas.proc.rss_kib();
    let fleet = Arc::new(Fleet::new(novas.agent_addr, &novas.fingerprint, token)?);
    let name = |i: usize| format!("idle-{i:05}");
    let mut held = vec![fleet
        .register(&name(0))
        .await
        .context("register the first idle agent")?];
    tokio::time::sleep(Duration::from_millis(1500)).await;
    mem.agents_novas_1_kib = novas.proc.rss_kib();

    say!("registering {} idle agents", p.agents);
    let t0 = Instant::now();
    let cpu0 = novas.proc.cpu_s();
    held.extend(
        fleet
            .register_all((1..p.agents).map(name).collect(), 32)
            .await?,
    );
    mem.agents_register_s = t0.elapsed().as_secs_f64();
    mem.agents_register_cpu_s = novas.proc.cpu_s() - cpu0;
    novas.proc.check_alive()?;
    // Longer than the 3 silent heartbeat intervals after which novas drops an
    // agent: every agent still listed afterwards answers its pings.
    tokio::time::sleep(HEARTBEAT * 3 + Duration::from_millis(1500)).await;
    let names = http::tunnel_names(novas.http_addr, &novas.admin_token).await?;
    mem.agents = p.agents;
    mem.agents_listed = names.len();
    mem.agents_novas_n_kib = novas.proc.rss_kib();
    mem.agents_novas_peak_kib = novas.proc.hwm_kib();
    if names.len() != p.agents {
        bail!(
            "/api/tunnels lists {} agents, {} were registered; novas log:\n{}",
            names.len(),
            p.agents,
            novas.proc.log_tail()
        );
    }
    drop(held);
    Ok(())
}

fn gen_token(bins: &Bins) -> anyhow::Result<String> {
    let out = std::process::Command::new(&bins.novas)
        .arg("gen-token")
        .output()
        .context("run novas gen-token")?;
    let t = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || t.len() < 16 {
        bail!(
            "novas gen-token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(t)
}

/// `n` distinct free ports on 127.0.0.1 for novas's resource listeners,
/// outside the kernel's ephemeral range: a port from that range, released
/// here, can be taken as the local port of any outgoing connection before
/// novas binds it.
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let (eph_lo, eph_hi) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    let (lo, hi) = if eph_lo > 12_000 {
        (10_000u16, eph_lo - 1)
    } else {
        (eph_hi.saturating_add(1), 65_535)
    };
    let span = u32::from(hi - lo) + 1;
    // A start point that differs between concurrent runs.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id().wrapping_mul(2_654_435_761);
    let mut held = Vec::new();
    for i in 0..span {
        let port = lo + ((seed.wrapping_add(i.wrapping_mul(7919))) % span) as u16;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
            if held.len() == n {
                return Ok(held
                    .iter()
                    .filter_map(|l| l.local_addr().ok())
                    .map(|a| a.port())
                    .collect());
            }
        }
    }
    bail!("no {n} free ports in {lo}-{hi}")
}

fn resources_yaml(res: &[(&str, u16, SocketAddr)]) -> String {
    let mut y = String::from("# written by nova-bench\nresources:\n");
    for (name, listen, target) in res {
        y.push_str(&format!(
            "  - name: bench-{name}\n    kind: tcp\n    target: \"{target}\"\n    listen: {listen}\n    agent: {{ name: {AGENT_NAME} }}\n"
        ));
    }
    y
}

async fn wait_registered(novas: &mut Novas, novac: &mut Proc, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        novas.proc.check_alive()?;
        novac.check_alive()?;
        let names = http::tunnel_names(novas.http_addr, &novas.admin_token).await?;
        if names.iter().any(|n| n == name) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "agent {name} not registered within 20 s; novac log:\n{}\nnovas log:\n{}",
                novac.log_tail(),
                novas.proc.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One echo round trip through the tunnel, retried for up to 15 s.
async fn probe_echo(addr: SocketAddr, novas: &mut Novas, novac: &mut Proc) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = tokio::time::timeout(Duration::from_secs(5), async {
            let mut s = TcpStream::connect(addr).await?;
            s.write_all(b"probe").await?;
            let mut b = [0u8; 5];
            s.read_exact(&mut b).await?;
            anyhow::ensure!(&b == b"probe", "echo through the tunnel returned {b:?}");
            anyhow::Ok(())
        })
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")));
        match r {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                bail!(
                    "no echo through the tunnel ({addr}): {e:#}; novas log:\n{}\nnovac log:\n{}",
                    novas.proc.log_tail(),
                    novac.log_tail()
                )
            }
            Err(_) => {
                novas.proc.check_alive()?;
                novac.check_alive()?;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
