//! `nova-e2e-echo LISTEN_ADDR BANNER`: the tests' banner + echo server as a
//! process, so it can run inside a network namespace (`ip netns exec`).
//! Prints `ready` once listening; runs until killed.

use std::{
    net::TcpListener,
    sync::{atomic::AtomicBool, Arc},
};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(banner)) = (args.next(), args.next()) else {
        eprintln!("usage: nova-e2e-echo LISTEN_ADDR BANNER");
        std::process::exit(2);
    };
    let listener = match TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("ready");
    nova_e2e::echo::serve(listener, banner, Arc::new(AtomicBool::new(false)));
}
