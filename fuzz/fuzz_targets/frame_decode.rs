#![no_main]
//! Every decoder that reads bytes from a peer: mux frame headers, control
//! frames, stream headers and replies, the preface, tags and targets. (The
//! mux's reader as a whole is driven by random bytes in its unit tests.)

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tunnel_proto::{control, frame, mux, stream, Control, StreamOpen, StreamReply, Tags};

fuzz_target!(|data: &[u8]| {
    for h in data.chunks_exact(mux::frame::HEADER_LEN) {
        if let Ok(h) = <&[u8; mux::frame::HEADER_LEN]>::try_from(h) {
            let _ = mux::frame::Header::decode(h);
        }
    }
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = frame::decode::<Control>(&mut buf) {}
    let _ = frame::decode::<StreamOpen>(&mut BytesMut::from(data));
    let _ = frame::decode::<StreamReply>(&mut BytesMut::from(data));
    if let Ok(p) = <[u8; control::PREFACE_LEN]>::try_from(data.get(..control::PREFACE_LEN).unwrap_or(&[])) {
        let _ = control::check_preface(&p);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = s.parse::<Tags>();
        let _ = stream::split_target(s);
    }
});
