//! Benchmark (not a test): how many statement events a second the audit
//! path sustains into the embedded SQLite store, and the CPU it spends on
//! each, from `Auditor::record` to the row on disk.
//!
//!     cargo bench -p novas --bench audit_store [-- EVENTS [SESSIONS]]
//!
//! Events look like pgbench -S statements (text, kind, decision, policy,
//! duration, rows) spread over SESSIONS sessions, recorded by one task as fast
//! as the store takes them. The figure that matters for the DAC is the CPU per
//! event: on a proxy host the writer thread shares the CPU with the relay.

use std::time::{Duration, Instant};

use novas::{
    audit::{AuditEvent, Auditor, AuditorConfig, Decision, EventKind},
    store::Store,
};

/// User + system CPU each thread of this process has used, by thread name
/// (from /proc/self/task/*/stat; CLK_TCK is 100 on every Linux this runs on).
fn cpu_by_thread() -> std::collections::BTreeMap<String, Duration> {
    let mut by_name = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return by_name;
    };
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        // utime and stime are fields 14 and 15 of the line, 12 and 13
        // after the command name.
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&i| f.get(i).and_then(|v| v.parse::<u64>().ok()))
            .sum();
        *by_name.entry(name).or_insert(Duration::ZERO) += Duration::from_millis(ticks * 10);
    }
    by_name
}

fn statement(i: u64) -> EventKind {
    EventKind::Statement {
        text: format!(
            "SELECT abalance FROM pgbench_accounts WHERE aid = {};",
            i % 1_000_000
        ),
        kind: "select".into(),
        decision: Decision::Allow,
        policy: "bench-read-only".into(),
        duration_us: Some(180 + i % 50),
        rows: Some(1),
        error: None,
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let events: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(200_000);
    let sessions: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(16);
    anyhow::ensure!(
        events > 0 && sessions > 0,
        "EVENTS and SESSIONS must be at least 1"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}", dir.path().join("novas.db").display());
        let store = Store::open(&url).await?;
        let mut cfg = AuditorConfig::new("bench", dir.path());
        // BENCH_BATCH_MAX compares batch sizes.
        if let Some(n) = std::env::var("BENCH_BATCH_MAX")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            cfg.batch_max = n;
        }
        let auditor = Auditor::start(store, cfg).await;
        let session_ids: Vec<String> = (0..sessions).map(|_| novas::audit::new_id()).collect();

        let cpu0 = cpu_by_thread();
        let t0 = Instant::now();
        for i in 0..events {
            let ev = AuditEvent::new(statement(i))
                .session(&session_ids[(i % sessions) as usize])
                .resource("pg", "postgres")
                .user("bench");
            auditor
                .record(ev)
                .map_err(|e| anyhow::anyhow!("record: {e}"))?;
            // Let the writer run now and then, as a relay's awaits would,
            // and hold back while the queue is deep: the store sets the pace.
            if i % 64 == 63 {
                tokio::task::yield_now().await;
                while auditor.queue_depth() > 20_000 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
        let queued = t0.elapsed();
        while auditor.written() < events {
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(300),
                "the store took only {} of {events} events in 5 minutes",
                auditor.written()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let wall = t0.elapsed();
        let cpu1 = cpu_by_thread();
        let used: Vec<(String, Duration)> = cpu1
            .iter()
            .map(|(name, t)| {
                (
                    name.clone(),
                    t.saturating_sub(cpu0.get(name).copied().unwrap_or_default()),
                )
            })
            .filter(|(_, t)| !t.is_zero())
            .collect();
        let cpu: Duration = used.iter().map(|(_, t)| *t).sum();
        let report = auditor.shutdown(Duration::from_secs(10)).await;
        anyhow::ensure!(
            report.lost == 0 && report.spooled == 0,
            "events not stored: {report:?}"
        );
        let rows = auditor
            .store()
            .query_events(&novas::audit::AuditQuery {
                limit: Some(1),
                ..Default::default()
            })
            .await?;
        anyhow::ensure!(!rows.is_empty(), "no event stored");
        println!(
            "audit store (SQLite): {events} statement events over {sessions} sessions\n  \
             recorded in {:.2} s, all stored after {:.2} s: {:.0} events/s sustained\n  \
             CPU {:.2} s: {:.2} us per event (record + batch + SQLite, all threads)",
            queued.as_secs_f64(),
            wall.as_secs_f64(),
            events as f64 / wall.as_secs_f64(),
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / events as f64,
        );
        for (name, t) in &used {
            println!(
                "    {name}: {:.2} us per event",
                t.as_secs_f64() * 1e6 / events as f64
            );
        }
        Ok(())
    })
}
