#![no_main]
//! Every MySQL decoder NOVAS runs on bytes from a client or a server, and
//! the relay state machine driven by them as either side.

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use novas::mysql::{
    caps::SERVER_CAPABILITIES,
    decode_packet,
    handshake::{AuthSwitchRequest, ClientHello, Greeting},
    reply::Terminator,
    ClientAction, Command, CommandPhase, ErrPacket, Expect, OkPacket, Response, ServerAction,
    Turn,
};

fuzz_target!(|data: &[u8]| {
    let caps = SERVER_CAPABILITIES;
    let _ = Greeting::decode(data);
    let _ = ClientHello::decode(data);
    let _ = AuthSwitchRequest::decode(data);
    let _ = OkPacket::decode(data, caps);
    let _ = ErrPacket::decode(data);
    let _ = Terminator::decode(data, caps);
    let _ = Command::decode(data);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = decode_packet(&mut buf, 1 << 16) {}

    let mut r = Response::new(Expect::Results, caps);
    for chunk in data.chunks(5) {
        if r.on_server_packet(chunk, chunk.len()).is_err() {
            break;
        }
        let _ = r.on_client_packet(chunk.len());
    }

    let mut phase = CommandPhase::new(caps, 1 << 16);
    let mut at = 0;
    for _ in 0..64 {
        let n = match phase.turn() {
            Turn::Client => match phase.client_bytes(&data[at..]) {
                Ok(ClientAction::Forward(n) | ClientAction::Discard(n)) => n,
                Ok(ClientAction::Command { len, .. }) => {
                    if phase.allow().is_err() {
                        let _ = phase.refuse(ErrPacket::packet_too_large());
                    }
                    len
                }
                Ok(ClientAction::Reply(_)) => 0,
                _ => break,
            },
            Turn::Server => match phase.server_bytes(&data[at..]) {
                Ok(ServerAction::Forward(n)) => n,
                Ok(ServerAction::Done { forward, .. }) => forward,
                _ => break,
            },
            _ => break,
        };
        at += n;
    }
});
