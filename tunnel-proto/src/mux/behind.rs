//! Write-behind: the small frames one worker thread writes during a
//! scheduler pass leave together, in one TLS record and one `writev`, when
//! the thread is about to park.
//!
//! Why: on loopback a `writev` costs several microseconds, most of it the
//! receiver's TCP processing and wake-up, which run inside the sender's
//! syscall. Under load a worker wakes with several sockets ready (about five
//! per `epoll_wait` in the DAC benchmark) and each of their tasks writes one
//! small frame to the same tunnel. Written at once, that is one syscall and
//! one record per frame; written behind, one for all of them.
//!
//! A runtime opts in by calling [`flush_behind`] from its
//! `on_thread_park` hook: the hook's first call turns write-behind on for
//! that thread. Every other thread (tests, blocking threads, runtimes
//! without the hook) writes at once, as before. An idle connection with a
//! single writer gains nothing and loses nothing: its task returns, the
//! thread has nothing else to run, and the frame leaves at the park.
//!
//! Bounds, for a thread that stays busy and does not park: a connection
//! writes its queue inline once it holds [`MAX_BYTES`], and a thread writes
//! out everything after [`MAX_OPS`] frames written behind or tunnel reads.
//! A frame larger than [`MAX_FRAME`] is written at once (bulk gains nothing
//! from waiting).

use std::{cell::RefCell, sync::Weak};

use super::conn::Conn;

/// Frames up to this size may wait for the end of the pass.
pub(crate) const MAX_FRAME: usize = 8 * 1024;
/// A connection writes its queue inline once it holds this much.
pub(crate) const MAX_BYTES: usize = 32 * 1024;
/// A busy thread writes everything out after this many operations.
const MAX_OPS: u32 = 32;

struct Behind {
    /// Set by the park hook: this thread will come back to flush.
    on: bool,
    /// Connections with frames written behind on this thread.
    conns: Vec<Weak<Conn>>,
    /// Operations since the oldest of them.
    ops: u32,
}

impl Drop for Behind {
    fn drop(&mut self) {
        // The thread is ending: hand whatever is queued to the drivers.
        for c in self.conns.drain(..).filter_map(|c| c.upgrade()) {
            c.hand_behind_to_driver();
        }
    }
}

thread_local! {
    static BEHIND: RefCell<Behind> = const {
        RefCell::new(Behind { on: false, conns: Vec::new(), ops: 0 })
    };
}

/// Writes out every frame this thread wrote behind, and turns write-behind
/// on for the thread. Call it from the runtime's `on_thread_park` hook:
///
/// ```no_run
/// let rt = tokio::runtime::Builder::new_multi_thread()
///     .enable_all()
///     .on_thread_park(tunnel_proto::mux::flush_behind)
///     .build();
/// ```
pub fn flush_behind() {
    let conns = BEHIND
        .try_with(|b| {
            let mut b = b.borrow_mut();
            b.on = true;
            b.ops = 0;
            std::mem::take(&mut b.conns)
        })
        .unwrap_or_default();
    write_all(conns);
}

fn write_all(conns: Vec<Weak<Conn>>) {
    for c in conns.into_iter().filter_map(|c| c.upgrade()) {
        c.write_behind();
    }
}

/// Whether this thread may write frames behind.
pub(crate) fn enabled() -> bool {
    BEHIND.try_with(|b| b.borrow().on).unwrap_or(false)
}

/// `conn` holds frames written behind on this thread.
pub(crate) fn register(conn: &Weak<Conn>) {
    let due = BEHIND.try_with(|b| {
        let mut b = b.borrow_mut();
        if !b.conns.iter().any(|c| c.ptr_eq(conn)) {
            b.conns.push(conn.clone());
        }
        count(&mut b)
    });
    if let Ok(Some(conns)) = due {
        write_all(conns);
    }
}

/// One more operation on this thread (a tunnel read, a frame queued).
pub(crate) fn tick() {
    let due = BEHIND.try_with(|b| {
        let mut b = b.borrow_mut();
        if b.conns.is_empty() {
            return None;
        }
        count(&mut b)
    });
    if let Ok(Some(conns)) = due {
        write_all(conns);
    }
}

fn count(b: &mut Behind) -> Option<Vec<Weak<Conn>>> {
    b.ops += 1;
    if b.ops < MAX_OPS {
        return None;
    }
    b.ops = 0;
    Some(std::mem::take(&mut b.conns))
}
