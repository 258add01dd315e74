//! Random and mutated input to every decoder and state machine: errors are
//! fine, panics are not. (The fuzz target `mysql_decode` does the same
//! with coverage guidance.)

use bytes::BytesMut;
use rand::{Rng, RngCore};

use super::*;
use crate::mysql::{
    caps::SERVER_CAPABILITIES,
    handshake::{AuthSwitchRequest, ClientHello, Greeting},
    packet::put_packet,
    reply::{EofPacket, Terminator},
    response::Expect,
};

/// Runs every decoder over `data`.
pub(crate) fn decode_everything(data: &[u8]) {
    let caps = SERVER_CAPABILITIES;
    let _ = Greeting::decode(data);
    let _ = ClientHello::decode(data);
    let _ = AuthSwitchRequest::decode(data);
    let _ = OkPacket::decode(data, caps);
    let _ = OkPacket::decode(data, Capabilities::PROTOCOL_41);
    let _ = ErrPacket::decode(data);
    let _ = EofPacket::decode(data);
    let _ = Terminator::decode(data, caps);
    let _ = Command::decode(data);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = decode_packet(&mut buf, 1 << 16) {}

    for expect in [
        Expect::Results,
        Expect::Prepare,
        Expect::Rows,
        Expect::FieldList,
        Expect::Simple,
        Expect::Statistics,
    ] {
        let mut r = Response::new(expect, caps);
        for chunk in data.chunks(7) {
            let len = chunk.len();
            if r.on_server_packet(chunk, len).is_err() {
                break;
            }
            let _ = r.on_client_packet(len);
        }
    }

    // The byte-level relay, with data as the client and as the server.
    let mut phase = CommandPhase::new(caps, 1 << 16);
    let mut at = 0;
    for _ in 0..64 {
        let step = match phase.turn() {
            Turn::Client => match phase.client_bytes(&data[at..]) {
                Ok(ClientAction::Forward(n) | ClientAction::Discard(n)) => n,
                Ok(ClientAction::Command { len, command, .. }) => {
                    if command.refusal().is_some() {
                        let _ = phase.refuse(ErrPacket::packet_too_large());
                    } else {
                        let _ = phase.allow();
                    }
                    len
                }
                Ok(ClientAction::Reply(_)) => 0,
                Ok(ClientAction::NeedMore) | Err(_) => break,
            },
            Turn::Server => match phase.server_bytes(&data[at..]) {
                Ok(ServerAction::Forward(n)) => n,
                Ok(ServerAction::Done { forward, .. }) => forward,
                Ok(ServerAction::NeedMore) | Err(_) => break,
            },
            Turn::Decide | Turn::Closed => break,
        };
        at += step;
        assert!(at <= data.len());
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = rand::rng();
    for _ in 0..3000 {
        let len = rng.random_range(0..200);
        let mut data = vec![0u8; len];
        rng.fill_bytes(&mut data);
        decode_everything(&data);
    }
}

#[test]
fn mutated_valid_packets_never_panic() {
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    let mut g = BytesMut::new();
    Greeting::new("5.7.99-NOVA", 1, AuthPlugin::Native, true).encode(&mut g);
    seeds.push(g.to_vec());
    let mut q = BytesMut::new();
    put_packet(&mut q, 0, b"\x03select 1");
    put_packet(&mut q, 1, &[1]);
    put_packet(
        &mut q,
        2,
        b"\x03def\x00\x00\x00\x011\x00\x0c\x3f\x00\x01\x00\x00\x00\x08\x81\x00\x00\x00\x00",
    );
    put_packet(&mut q, 3, b"\x011");
    put_packet(&mut q, 4, &[0xFE, 0, 0, 2, 0, 0, 0]);
    seeds.push(q.to_vec());
    let mut e = BytesMut::new();
    put_packet(&mut e, 0, &[0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 2, 3]);
    put_packet(&mut e, 1, &[0x00, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0]);
    seeds.push(e.to_vec());
    let mut rng = rand::rng();
    for seed in &seeds {
        decode_everything(seed);
        for _ in 0..2000 {
            let mut d = seed.clone();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..d.len());
                d[i] = rng.random();
            }
            if rng.random_bool(0.3) {
                d.truncate(rng.random_range(0..d.len()));
            }
            decode_everything(&d);
        }
    }
}
