//! The [`Auditor`]: a bounded, never-blocking queue in front of the store,
//! drained by one writer task that stores batches.
//!
//! Availability follows the store: the first failed batch turns it off
//! (so fail-closed front ends refuse new work), a later successful write or
//! idle ping turns it back on. A failed batch is kept and retried with
//! backoff. At shutdown everything accepted is written, or, if the store
//! still fails when the deadline comes, appended to the spool file.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};

use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};

use super::{spool, AuditEvent};
use crate::{
    metrics::{AuditStats, Histogram},
    store::Store,
};

/// How often a lingering batch collects what has arrived.
const LINGER_STEP: Duration = Duration::from_millis(5);

/// Tuning of the [`Auditor`]; [`AuditorConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct AuditorConfig {
    /// Stamped on events that carry no node.
    pub node: String,
    /// Keep serving when the store fails: log and keep events (dropping
    /// beyond `queue_bound`) instead of refusing work.
    pub fail_open: bool,
    /// Where the spool and rejected-events files live (the data dir).
    pub spool_dir: PathBuf,
    /// Accepted but unwritten events allowed before `record` refuses.
    pub queue_bound: usize,
    /// Most events per write.
    pub batch_max: usize,
    /// How long a partial batch waits for more events.
    pub linger: Duration,
    /// Store health check when there is nothing to write.
    pub idle_ping: Duration,
    /// Bound on one write or ping.
    pub write_timeout: Duration,
    /// First and largest pause between retries of a failed batch.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl AuditorConfig {
    pub fn new(node: impl Into<String>, spool_dir: impl Into<PathBuf>) -> Self {
        Self {
            node: node.into(),
            fail_open: false,
            spool_dir: spool_dir.into(),
            queue_bound: 100_000,
            batch_max: 1000,
            linger: Duration::from_millis(50),
            idle_ping: Duration::from_secs(2),
            write_timeout: Duration::from_secs(10),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
        }
    }
}

/// Why an event was not accepted. Fail-closed front ends refuse the work
/// they were about to do and show this text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuditUnavailable {
    /// The store is failing, and NOVAS is fail-closed.
    #[error("audit store unavailable; refusing audited work (fail-closed)")]
    StoreDown,
    /// More accepted events are waiting than the queue bound allows.
    #[error("audit queue full ({0} events waiting); refusing audited work")]
    QueueFull(usize),
    /// The auditor has been shut down.
    #[error("auditor shut down")]
    ShutDown,
}

/// What [`Auditor::shutdown`] did with the events it held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Events written to the store over the auditor's life.
    pub written: u64,
    /// Events appended to the spool for the next start.
    pub spooled: usize,
    /// Events neither stored nor spooled (the spool file failed too).
    pub lost: usize,
}

/// The audit emit path. Cheap to clone; every clone feeds the same writer.
#[derive(Clone)]
pub struct Auditor {
    shared: Arc<Shared>,
}

struct Shared {
    cfg: AuditorConfig,
    store: Store,
    /// `None` once shut down: taking it closes the channel.
    intake: Mutex<Option<mpsc::UnboundedSender<AuditEvent>>>,
    /// Accepted and not yet stored or spooled (queued plus in flight).
    depth: AtomicUsize,
    store_ok: AtomicBool,
    /// Whether the queue bound is being hit (logged on change only).
    overflowing: AtomicBool,
    dropped: AtomicU64,
    written: AtomicU64,
    /// Failed write attempts (each retry counts), for `/metrics`.
    write_errors: AtomicU64,
    /// Duration of every write attempt, for `/metrics`.
    write_seconds: Histogram,
    deadline: watch::Sender<Option<Instant>>,
    writer: Mutex<Option<JoinHandle<ShutdownReport>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values stay consistent even if a holder panicked.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Auditor {
    /// Replays any spool left by an earlier run into `store`, then starts
    /// the writer task. Must be called inside a tokio runtime.
    pub async fn start(store: Store, cfg: AuditorConfig) -> Auditor {
        match spool::replay(&store, &cfg.spool_dir, cfg.batch_max).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "replayed the audit spool into the store"),
            Err(e) => {
                tracing::error!(error = %e, "audit spool not replayed; kept for the next start")
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (deadline, deadline_rx) = watch::channel(None);
        let shared = Arc::new(Shared {
            cfg,
            store,
            intake: Mutex::new(Some(tx)),
            depth: AtomicUsize::new(0),
            store_ok: AtomicBool::new(true),
            overflowing: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            write_seconds: Histogram::new(),
            deadline,
            writer: Mutex::new(None),
        });
        let handle = tokio::spawn(run_writer(shared.clone(), rx, deadline_rx));
        *lock(&shared.writer) = Some(handle);
        Auditor { shared }
    }

    /// Queues `event` for the store without waiting. Fail-closed, it refuses
    /// while the store fails or the queue is at its bound; fail-open, it
    /// keeps the event (or drops it past the bound) and returns `Ok`.
    pub fn record(&self, mut event: AuditEvent) -> Result<(), AuditUnavailable> {
        let s = &self.shared;
        let fail_open = s.cfg.fail_open;
        // A failing store does not refuse the event: it is kept (and spooled
        // at shutdown), because it records work that already happened. New
        // work is gated by `check()`.
        let depth = s.depth.load(Ordering::Acquire);
        if depth >= s.cfg.queue_bound {
            if !s.overflowing.swap(true, Ordering::AcqRel) {
                tracing::warn!(
                    queued = depth,
                    fail_open,
                    "audit queue full: {}",
                    if fail_open {
                        "dropping events (fail-open)"
                    } else {
                        "refusing audited work"
                    }
                );
            }
            if fail_open {
                s.dropped.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            return Err(AuditUnavailable::QueueFull(depth));
        }
        if event.node.is_empty() {
            event.node.clone_from(&s.cfg.node);
        }
        event.normalize();
        let intake = lock(&s.intake);
        let Some(tx) = intake.as_ref() else {
            return Err(AuditUnavailable::ShutDown);
        };
        s.depth.fetch_add(1, Ordering::AcqRel);
        if tx.send(event).is_err() {
            s.depth.fetch_sub(1, Ordering::AcqRel);
            return Err(AuditUnavailable::ShutDown);
        }
        Ok(())
    }

    /// Whether audited work may go ahead now. Always true when fail-open.
    /// The gate front ends pass before starting audited work (forwarding a
    /// statement, opening a session): fail-closed refuses while the store
    /// fails or the queue is full.
    pub fn check(&self) -> Result<(), AuditUnavailable> {
        let s = &self.shared;
        if s.cfg.fail_open {
            return Ok(());
        }
        if lock(&s.intake).is_none() {
            return Err(AuditUnavailable::ShutDown);
        }
        if !s.store_ok.load(Ordering::Acquire) {
            return Err(AuditUnavailable::StoreDown);
        }
        let depth = s.depth.load(Ordering::Acquire);
        if depth >= s.cfg.queue_bound {
            return Err(AuditUnavailable::QueueFull(depth));
        }
        Ok(())
    }

    pub fn is_available(&self) -> bool {
        let s = &self.shared;
        s.cfg.fail_open
            || (s.store_ok.load(Ordering::Acquire)
                && s.depth.load(Ordering::Acquire) < s.cfg.queue_bound
                && lock(&s.intake).is_some())
    }

    /// Events accepted and not yet stored or spooled.
    pub fn queue_depth(&self) -> usize {
        self.shared.depth.load(Ordering::Acquire)
    }

    /// Events dropped because the queue was full (fail-open only).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Events written to the store so far.
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }

    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// The figures `/metrics` shows.
    pub fn stats(&self) -> AuditStats {
        let s = &self.shared;
        AuditStats {
            queue_depth: s.depth.load(Ordering::Acquire) as u64,
            written: s.written.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            write_errors: s.write_errors.load(Ordering::Relaxed),
            store_up: s.store_ok.load(Ordering::Acquire),
            write_seconds: s.write_seconds.snapshot(),
        }
    }

    /// Stops accepting events and writes every accepted one; what the store
    /// has not taken by `timeout` goes to the spool. Later calls return an
    /// empty report.
    pub async fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        let s = &self.shared;
        drop(lock(&s.intake).take());
        s.deadline.send_replace(Some(Instant::now() + timeout));
        let handle = lock(&s.writer).take();
        let Some(handle) = handle else {
            return ShutdownReport::default();
        };
        let report = handle.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "audit writer task failed");
            ShutdownReport {
                lost: s.depth.load(Ordering::Acquire),
                ..Default::default()
            }
        });
        tracing::info!(
            written = report.written,
            spooled = report.spooled,
            lost = report.lost,
            "auditor stopped"
        );
        report
    }
}

impl Shared {
    fn set_store_ok(&self, ok: bool, error: Option<&str>) {
        if self.store_ok.swap(ok, Ordering::AcqRel) == ok {
            return;
        }
        let queued = self.depth.load(Ordering::Acquire);
        if ok {
            tracing::info!(queued, "audit store recovered; audited work accepted again");
        } else if self.cfg.fail_open {
            tracing::warn!(
                error = error.unwrap_or_default(),
                queued,
                "audit store failing; fail-open: serving on and keeping events in memory"
            );
        } else {
            tracing::error!(
                error = error.unwrap_or_default(),
                queued,
                "audit store failing; refusing audited work until it recovers (fail-closed)"
            );
        }
    }

    /// `n` events left the queue (stored, spooled or given up).
    fn settled(&self, n: usize) {
        let before = self.depth.fetch_sub(n, Ordering::AcqRel);
        if before.saturating_sub(n) < self.cfg.queue_bound / 2
            && self.overflowing.swap(false, Ordering::AcqRel)
        {
            tracing::info!(
                dropped_total = self.dropped.load(Ordering::Relaxed),
                "audit queue has room again"
            );
        }
    }

    async fn try_write(&self, batch: &[AuditEvent]) -> Result<(), String> {
        let started = std::time::Instant::now();
        let r = match tokio::time::timeout(self.cfg.write_timeout, self.store.insert_events(batch))
            .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "write timed out after {:?}",
                self.cfg.write_timeout
            )),
        };
        self.write_seconds.observe(started.elapsed());
        if r.is_err() {
            self.write_errors.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    async fn ping(&self) -> Result<(), String> {
        match tokio::time::timeout(self.cfg.write_timeout, self.store.ping()).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("ping timed out".into()),
        }
    }

    /// The batch failed although the store answers: write its events one
    /// by one. If some go in, those that do not are bad data (set aside in
    /// the rejected file, so one event cannot stall auditing for good).
    /// Returns whether the batch is settled.
    async fn isolate_bad_events(&self, batch: &mut Vec<AuditEvent>) -> bool {
        let mut failed = Vec::new();
        let mut stored = 0;
        let mut first_error = None;
        for ev in batch.drain(..) {
            match self.try_write(std::slice::from_ref(&ev)).await {
                Ok(()) => stored += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                    failed.push(ev);
                }
            }
        }
        self.written.fetch_add(stored as u64, Ordering::Relaxed);
        self.settled(stored);
        if stored == 0 || self.ping().await.is_err() {
            *batch = failed;
            return false;
        }
        let path = self.cfg.spool_dir.join(spool::REJECTED_FILE);
        match spool::append(&path, &failed) {
            Ok(()) => tracing::error!(
                events = failed.len(),
                error = first_error.unwrap_or_default(),
                file = %path.display(),
                "the audit store refused some events; set aside"
            ),
            Err(e) => tracing::error!(
                events = failed.len(),
                error = %e,
                "the audit store refused some events and they could not be set aside: lost"
            ),
        }
        self.settled(failed.len());
        self.set_store_ok(true, None);
        true
    }
}

/// Resolves once a shutdown deadline is set and has passed.
async fn deadline_passed(rx: &mut watch::Receiver<Option<Instant>>) {
    loop {
        let current = *rx.borrow_and_update();
        match current {
            Some(t) => return tokio::time::sleep_until(t).await,
            None => {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

fn is_past(rx: &watch::Receiver<Option<Instant>>) -> bool {
    rx.borrow().is_some_and(|t| Instant::now() >= t)
}

async fn run_writer(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<AuditEvent>,
    mut deadline: watch::Receiver<Option<Instant>>,
) -> ShutdownReport {
    let max = shared.cfg.batch_max.max(1);
    let mut batch: Vec<AuditEvent> = Vec::with_capacity(max);
    loop {
        if is_past(&deadline) {
            return spool_rest(&shared, batch, rx);
        }
        if batch.is_empty() {
            tokio::select! {
                n = rx.recv_many(&mut batch, max) => {
                    if n == 0 {
                        // Shut down, and everything accepted is stored.
                        return report(&shared, 0, 0);
                    }
                }
                _ = tokio::time::sleep(shared.cfg.idle_ping) => {
                    let r = shared.ping().await;
                    shared.set_store_ok(r.is_ok(), r.err().as_deref());
                    continue;
                }
            }
            linger(&shared, &mut rx, &mut batch, &deadline).await;
        }
        if !write_with_retry(&shared, &mut batch, &mut deadline).await {
            return spool_rest(&shared, batch, rx);
        }
    }
}

/// Lets a partial batch fill for up to `linger`. It sleeps in steps and
/// collects what arrived after each one, rather than waiting on the
/// channel: a waiting receiver is woken by every event, which costs a task
/// wake-up (a thread wake-up when the sender runs on another worker) per
/// audited statement.
async fn linger(
    shared: &Shared,
    rx: &mut mpsc::UnboundedReceiver<AuditEvent>,
    batch: &mut Vec<AuditEvent>,
    deadline: &watch::Receiver<Option<Instant>>,
) {
    let max = shared.cfg.batch_max.max(1);
    let until = Instant::now() + shared.cfg.linger;
    loop {
        while batch.len() < max {
            match rx.try_recv() {
                Ok(ev) => batch.push(ev),
                // Empty, or shut down: the main loop sees which.
                Err(_) => break,
            }
        }
        let now = Instant::now();
        if batch.len() >= max || now >= until || deadline.borrow().is_some() {
            return;
        }
        tokio::time::sleep_until(until.min(now + LINGER_STEP)).await;
    }
}

/// Writes `batch` until it is stored (`true`) or the shutdown deadline
/// passes (`false`, the batch still held).
async fn write_with_retry(
    shared: &Shared,
    batch: &mut Vec<AuditEvent>,
    deadline: &mut watch::Receiver<Option<Instant>>,
) -> bool {
    let mut backoff = shared.cfg.retry_min;
    let mut failures = 0u32;
    loop {
        let attempt = tokio::select! {
            r = shared.try_write(batch) => r,
            _ = deadline_passed(deadline) => return false,
        };
        match attempt {
            Ok(()) => {
                shared
                    .written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                shared.settled(batch.len());
                batch.clear();
                shared.set_store_ok(true, None);
                return true;
            }
            Err(e) => {
                failures += 1;
                shared.set_store_ok(false, Some(&e));
                if failures >= 2 && batch.len() > 1 && shared.ping().await.is_ok() {
                    let settled = tokio::select! {
                        s = shared.isolate_bad_events(batch) => s,
                        _ = deadline_passed(deadline) => return false,
                    };
                    if settled {
                        return true;
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = deadline_passed(deadline) => return false,
        }
        backoff = (backoff * 2).min(shared.cfg.retry_max);
    }
}

fn report(shared: &Shared, spooled: usize, lost: usize) -> ShutdownReport {
    ShutdownReport {
        written: shared.written.load(Ordering::Relaxed),
        spooled,
        lost,
    }
}

/// Appends the held batch and everything still queued to the spool.
fn spool_rest(
    shared: &Shared,
    mut batch: Vec<AuditEvent>,
    mut rx: mpsc::UnboundedReceiver<AuditEvent>,
) -> ShutdownReport {
    rx.close();
    while let Ok(ev) = rx.try_recv() {
        batch.push(ev);
    }
    if batch.is_empty() {
        return report(shared, 0, 0);
    }
    let path = shared.cfg.spool_dir.join(spool::SPOOL_FILE);
    let n = batch.len();
    shared.settled(n);
    match spool::append(&path, &batch) {
        Ok(()) => {
            tracing::warn!(
                events = n,
                file = %path.display(),
                "audit store did not take every event before shutdown; spooled for the next start"
            );
            report(shared, n, 0)
        }
        Err(e) => {
            tracing::error!(
                events = n,
                file = %path.display(),
                error = %e,
                "audit events could be neither stored nor spooled: lost"
            );
            report(shared, 0, n)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

    use super::*;
    use crate::{
        audit::AuditQuery,
        store::test_util::{sample_events, sqlite_store},
    };

    fn fast_config(dir: &Path) -> AuditorConfig {
        AuditorConfig {
            linger: Duration::from_millis(5),
            idle_ping: Duration::from_millis(50),
            retry_min: Duration::from_millis(10),
            retry_max: Duration::from_millis(50),
            write_timeout: Duration::from_secs(5),
            ..AuditorConfig::new("test-node", dir)
        }
    }

    /// A second, independent connection to the same SQLite file, to break
    /// and repair the store behind the auditor's back.
    async fn side_door(dir: &Path) -> SqlitePool {
        let opts = SqliteConnectOptions::new()
            .filename(dir.join("novas.db"))
            .busy_timeout(Duration::from_secs(5));
        SqlitePool::connect_with(opts)
            .await
            .expect("side connection")
    }

    async fn hide_table(side: &SqlitePool, hidden: bool) {
        let sql = if hidden {
            "ALTER TABLE audit_events RENAME TO audit_events_hidden"
        } else {
            "ALTER TABLE audit_events_hidden RENAME TO audit_events"
        };
        sqlx::query(sql).execute(side).await.expect("rename table");
    }

    async fn count(store: &Store) -> usize {
        let q = AuditQuery {
            limit: Some(crate::audit::MAX_LIMIT),
            ..Default::default()
        };
        store.query_events(&q).await.expect("query").len()
    }

    async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let until = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn one(i: i64) -> AuditEvent {
        let mut ev = sample_events(i).swap_remove(1);
        ev.id = crate::audit::new_id();
        ev.node.clear();
        ev
    }

    #[tokio::test]
    async fn batches_many_events() {
        let (store, dir) = sqlite_store().await;
        let cfg = fast_config(dir.path());
        let batch_max = cfg.batch_max as u64;
        let auditor = Auditor::start(store.clone(), cfg).await;
        for i in 0..5_000 {
            auditor.record(one(i)).expect("accepted");
        }
        wait_for("the queue to drain", || auditor.queue_depth() == 0).await;
        assert_eq!(auditor.written(), 5_000);
        let stats = auditor.stats();
        assert_eq!((stats.written, stats.queue_depth), (5_000, 0));
        assert!(stats.store_up);
        // Batches of at most batch_max: at least that many measured writes.
        assert!(stats.write_seconds.count >= 5_000 / batch_max, "{stats:?}");
        assert_eq!(stats.write_errors, 0);
        let newest = store
            .query_events(&AuditQuery {
                limit: Some(1),
                ..Default::default()
            })
            .await
            .expect("query");
        assert_eq!(newest[0].node, "test-node", "node filled in");
        let report = auditor.shutdown(Duration::from_secs(5)).await;
        assert_eq!(
            report,
            ShutdownReport {
                written: 5_000,
                spooled: 0,
                lost: 0
            }
        );
        assert_eq!(auditor.record(one(0)), Err(AuditUnavailable::ShutDown));
        assert!(!auditor.is_available());
    }

    #[tokio::test]
    async fn fail_closed_then_recovers() {
        let (store, dir) = sqlite_store().await;
        let side = side_door(dir.path()).await;
        let auditor = Auditor::start(store.clone(), fast_config(dir.path())).await;
        assert!(auditor.is_available());

        hide_table(&side, true).await;
        auditor
            .record(one(1))
            .expect("accepted before the failure is seen");
        wait_for("fail-closed", || !auditor.is_available()).await;
        // New work is refused; the record of work already done is kept.
        assert_eq!(auditor.check(), Err(AuditUnavailable::StoreDown));
        auditor
            .record(one(2))
            .expect("completion of earlier work is kept");
        assert_eq!(auditor.queue_depth(), 2, "the failed batch is kept");

        hide_table(&side, false).await;
        wait_for("recovery", || auditor.is_available()).await;
        assert_eq!(auditor.check(), Ok(()));
        wait_for("the kept batch", || auditor.queue_depth() == 0).await;
        assert_eq!(count(&store).await, 2);
        auditor.record(one(3)).expect("accepted again");
        auditor.shutdown(Duration::from_secs(5)).await;
        assert_eq!(count(&store).await, 3);
    }

    #[tokio::test]
    async fn idle_ping_notices_a_failing_store() {
        let (store, dir) = sqlite_store().await;
        let side = side_door(dir.path()).await;
        let auditor = Auditor::start(store, fast_config(dir.path())).await;
        hide_table(&side, true).await;
        wait_for("fail-closed without traffic", || !auditor.is_available()).await;
        hide_table(&side, false).await;
        wait_for("recovery", || auditor.is_available()).await;
    }

    #[tokio::test]
    async fn shutdown_spools_and_next_start_replays() {
        let (store, dir) = sqlite_store().await;
        let side = side_door(dir.path()).await;
        let auditor = Auditor::start(store.clone(), fast_config(dir.path())).await;
        hide_table(&side, true).await;
        let events: Vec<AuditEvent> = (0..20).map(one).collect();
        for ev in &events {
            // Some may be refused once the failure is seen; keep the rest.
            let _ = auditor.record(ev.clone());
        }
        let accepted = auditor.queue_depth();
        assert!(accepted > 0);
        let report = auditor.shutdown(Duration::from_millis(300)).await;
        assert_eq!(report.spooled, accepted);
        assert_eq!((report.lost, auditor.queue_depth()), (0, 0));
        let spool_path = dir.path().join(spool::SPOOL_FILE);
        let (spooled, _) = spool::read(&spool_path).expect("spool");
        assert_eq!(spooled.len(), accepted);

        hide_table(&side, false).await;
        let again = Auditor::start(store.clone(), fast_config(dir.path())).await;
        assert!(!spool_path.exists(), "replayed and removed");
        assert_eq!(count(&store).await, accepted);
        again.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn fail_open_keeps_serving() {
        let (store, dir) = sqlite_store().await;
        let side = side_door(dir.path()).await;
        let cfg = AuditorConfig {
            fail_open: true,
            queue_bound: 3,
            ..fast_config(dir.path())
        };
        let auditor = Auditor::start(store.clone(), cfg).await;
        hide_table(&side, true).await;
        for i in 0..10 {
            auditor.record(one(i)).expect("fail-open never refuses");
        }
        assert!(auditor.is_available());
        assert_eq!(auditor.queue_depth(), 3);
        assert_eq!(auditor.dropped(), 7);
        hide_table(&side, false).await;
        wait_for("kept events written", || auditor.queue_depth() == 0).await;
        assert_eq!(count(&store).await, 3);
        auditor.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn queue_bound_refuses_when_fail_closed() {
        let (store, dir) = sqlite_store().await;
        let cfg = AuditorConfig {
            queue_bound: 5,
            batch_max: 1_000,
            // The writer holds its first batch open long enough to fill up.
            linger: Duration::from_secs(30),
            ..fast_config(dir.path())
        };
        let auditor = Auditor::start(store.clone(), cfg).await;
        for i in 0..5 {
            auditor.record(one(i)).expect("under the bound");
        }
        assert_eq!(auditor.record(one(5)), Err(AuditUnavailable::QueueFull(5)));
        assert!(!auditor.is_available());
        let report = auditor.shutdown(Duration::from_secs(5)).await;
        assert_eq!((report.written, report.spooled), (5, 0));
        assert_eq!(count(&store).await, 5);
    }
}
