//! Free TCP ports, unique across tests running at the same time.
//!
//! Ports come from a range below the kernel's ephemeral range (so outgoing
//! connections never take them), each claimed with a lock file held for the
//! life of the test process, and checked bindable before use.

use std::{
    net::{Ipv4Addr, TcpListener},
    sync::Mutex,
};

use crate::locks::{try_claim, Claim};

/// Range for ordinary test ports (ephemeral ports start at 32768).
const RANGE: (u16, u16) = (20_000, 32_000);

static HELD: Mutex<Vec<Claim>> = Mutex::new(Vec::new());

/// A free port from the default range.
pub fn free_port() -> u16 {
    free_port_in(RANGE.0, RANGE.1)
}

/// A free port in `lo..=hi`, bindable on every address right now and
/// reserved for this process against other tests.
pub fn free_port_in(lo: u16, hi: u16) -> u16 {
    let span = u32::from(hi - lo) + 1;
    let start = rand::random::<u32>() % span;
    for i in 0..span {
        let port = lo + ((start + i) % span) as u16;
        let Some(claim) = try_claim(&format!("port-{port}")) else {
            continue;
        };
        if TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_err() {
            continue;
        }
        HELD.lock().unwrap_or_else(|e| e.into_inner()).push(claim);
        return port;
    }
    panic!("no free port in {lo}-{hi}");
}
