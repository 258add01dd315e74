#![no_main]
//! What the SSH front end reads from users itself (the SSH protocol is
//! russh's): login names, menu keystrokes, and recordings read back by
//! `novas recordings play`.

use libfuzzer_sys::fuzz_target;
use novas::ssh::{login, menu, recording};

fuzz_target!(|data: &[u8]| {
    let mut line = menu::LineInput::default();
    for chunk in data.chunks(5) {
        if let menu::Typed::Line(l, _) = line.feed(chunk) {
            let _ = menu::pick(&l, &["a".to_string(), "b".to_string()]);
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = login::parse(s);
        let _ = recording::parse(s);
    }
});
