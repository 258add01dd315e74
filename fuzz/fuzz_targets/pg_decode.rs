#![no_main]
//! Every PostgreSQL decoder NOVAS runs on peer bytes: the startup packet,
//! login messages, the relay scanners and the pipeline, SCRAM.
//!
//! Needs in fuzz/Cargo.toml: `novas = { path = "../novas" }` and a
//! `[[bin]] name = "pg_decode"` entry like frame_decode's.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    novas::postgres::robustness::decode_everything(data);
});
