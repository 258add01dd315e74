#![no_main]
//! Every PostgreSQL decoder NOVAS runs on peer bytes: the startup packet,
//! login messages, the relay scanners and the pipeline, SCRAM.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    novas::postgres::robustness::decode_everything(data);
});
