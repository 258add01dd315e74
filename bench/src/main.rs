//! nova-bench: throughput, latency, connection rate and memory of the NOVA
//! tunnel (novas + novac, release builds) against a direct TCP connection to
//! the same in-process targets, in the same run. A benchmark, not a test:
//!
//! ```text
//! cargo build --release --bins && cargo run --release -p nova-bench -- [--quick] [--json PATH]
//! ```
//!
//! Modules: [`args`] flags, [`bins`] locating the binaries, [`procs`] the
//! child processes and /proc readings, [`targets`] the sink/source/echo
//! servers, [`load`] the clients, [`agents`] in-process idle agents for the
//! memory test, [`http`] the API client, [`stats`] percentiles, [`report`]
//! the table and JSON, [`run`] the phases.

/// A progress line on stderr, with the seconds since the start.
macro_rules! say {
    ($($arg:tt)*) => {
        eprintln!(
            "[nova-bench {:>6.1}s] {}",
            $crate::started().elapsed().as_secs_f64(),
            format_args!($($arg)*)
        )
    };
}

mod agents;
mod args;
mod bins;
mod http;
mod load;
mod procs;
mod report;
mod run;
mod stats;
mod targets;

use std::{process::ExitCode, sync::OnceLock, time::Instant};

static STARTED: OnceLock<Instant> = OnceLock::new();

/// When the benchmark started.
pub fn started() -> Instant {
    *STARTED.get_or_init(Instant::now)
}

/// The load generator is single-threaded, like a client tool (iperf3, wrk -t1);
/// the targets run on a thread of their own (see [`targets`]).
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    started();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let params = match args::Params::parse(&argv) {
        Ok(Some(p)) => p,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    match run::all(params).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
