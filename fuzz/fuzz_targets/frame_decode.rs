#![no_main]
//! Every decoder that reads bytes from a peer: control frames, stream
//! headers and replies, the preface, tags and targets.

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tunnel_proto::{control, frame, stream, Control, StreamOpen, StreamReply, Tags};

fuzz_target!(|data: &[u8]| {
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
