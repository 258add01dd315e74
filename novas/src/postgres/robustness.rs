//! Every decoder fed random and mutated bytes: errors are fine, panics and
//! unbounded buffering are not. `fuzz/fuzz_targets/pg_decode.rs` runs the
//! same entry point under libFuzzer.

use bytes::{Bytes, BytesMut};

use super::*;

/// Runs every decoder over `data`; shared with the fuzz target.
pub fn decode_everything(data: &[u8]) {
    let _ = StartupRequest::decode(&mut BytesMut::from(data));
    let mut b = BytesMut::from(data);
    while let Ok(Some(_)) = LoginMessage::decode(&mut b) {}
    let mut b = BytesMut::from(data);
    while let Ok(Some(_)) = AuthReply::decode(&mut b) {}
    let body = Bytes::copy_from_slice(data);
    let _ = PasswordMessage::parse(data);
    let _ = SaslInitialResponse::parse(&body);
    let _ = ErrorResponse::parse(data, Peer::Server, b'E');

    let mut fe = FrontendScanner::new(1024);
    let mut b = BytesMut::from(data);
    while let Ok(Some(_)) = fe.next(&mut b) {}

    let mut be = BackendScanner::new(64);
    let mut pipeline = Pipeline::new(TransactionStatus::Idle);
    let mut b = BytesMut::from(data);
    while let Ok(Some(item)) = be.next(&mut b) {
        if let BackendItem::Event(ev) = item {
            let _ = pipeline.on_backend(&ev);
        }
    }

    let mut server = ScramServer::new(ScramVerifier::new("pw", b"salt", 1));
    let init = SaslInitialResponse {
        mechanism: SCRAM_SHA_256.into(),
        data: Some(body.clone()),
    };
    if server.client_first(&init).is_ok() {
        let _ = server.client_final(data);
    }
    let mut server = ScramServer::new(ScramVerifier::new("pw", b"salt", 1));
    let init = SaslInitialResponse {
        mechanism: SCRAM_SHA_256.into(),
        data: Some(Bytes::from_static(b"n,,n=,r=abc")),
    };
    if server.client_first(&init).is_ok() {
        let _ = server.client_final(data);
    }
    let mut client = ScramClient::new("pw");
    client.initial_response();
    let _ = client.server_first(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = s.parse::<ScramVerifier>();
    }
}

#[cfg(test)]
#[test]
fn random_bytes_never_panic() {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    let mut rng = StdRng::seed_from_u64(7);
    // Valid traffic to mutate, so the decoders get past the first check.
    let mut seed = BytesMut::new();
    frontend::encode::parse(&mut seed, "s", "select $1", &[23]);
    frontend::encode::bind(&mut seed, "", "s", &[Some(b"1")]);
    frontend::encode::execute(&mut seed, "", 0);
    backend::encode::row_description(&mut seed, &["a"]);
    backend::encode::command_complete(&mut seed, "SELECT 1");
    ErrorResponse::denied("x").encode(&mut seed);
    StartupMessage::new("u").encode(&mut seed);
    LoginMessage::from(Authentication::Sasl {
        mechanisms: vec![SCRAM_SHA_256.into()],
    })
    .encode(&mut seed);
    seed.extend_from_slice(b"r=abcdef,s=c2FsdA==,i=1");
    for _ in 0..3000 {
        let data: Vec<u8> = if rng.random_bool(0.5) {
            (0..rng.random_range(0..200))
                .map(|_| rng.random())
                .collect()
        } else {
            let mut d = seed.to_vec();
            for _ in 0..rng.random_range(1..6) {
                let i = rng.random_range(0..d.len());
                d[i] = rng.random();
            }
            let start = rng.random_range(0..d.len());
            d[start..].to_vec()
        };
        decode_everything(&data);
    }
}
