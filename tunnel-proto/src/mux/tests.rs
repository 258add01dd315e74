//! The mux over an in-memory pipe: both ends in one test, no sockets.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::{frame::Header, frame::Kind, *};

struct End {
    conn: std::sync::Arc<Conn>,
    incoming: tokio::sync::mpsc::Receiver<MuxStream>,
    _stop: tokio_util::sync::DropGuard,
}

fn end(io: impl AsyncRead + AsyncWrite + Send + 'static, role: Role) -> End {
    let (rd, wr) = tokio::io::split(io);
    let stop = CancellationToken::new();
    let (conn, incoming) = spawn(Box::new(rd), Box::new(wr), role, stop.clone());
    End {
        conn,
        incoming,
        _stop: stop.drop_guard(),
    }
}

fn pair(pipe: usize) -> (End, End) {
    let (a, b) = tokio::io::duplex(pipe);
    (end(a, Role::Client), end(b, Role::Server))
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("timed out")
}

/// A stream opened by `client` and accepted by `server`, both announced
/// (the peer learns of a stream with its first frame: one byte here).
async fn open_pair(client: &End, server: &mut End) -> (MuxStream, MuxStream) {
    let mut s = client.conn.open().expect("open");
    s.write_all(b"h").await.expect("hello");
    let mut inb = within(server.incoming.recv()).await.expect("inbound");
    let mut h = [0u8; 1];
    within(inb.read_exact(&mut h)).await.expect("hello read");
    (s, inb)
}

/// Writes `out` then Fin on `io` while reading it to its end; returns what
/// was read.
async fn exchange<S: AsyncRead + AsyncWrite + Send + 'static>(io: S, out: Vec<u8>) -> Vec<u8> {
    let (mut r, mut w) = tokio::io::split(io);
    let writer = tokio::spawn(async move {
        w.write_all(&out).await.expect("write");
        w.shutdown().await.expect("fin");
    });
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.expect("read");
    writer.await.expect("join writer");
    got
}

#[tokio::test]
async fn opens_both_ways_and_echoes() {
    let (client, mut server) = pair(64 * 1024);
    let mut s = client.conn.open().expect("open");
    assert_eq!(s.id(), 1);
    s.write_all(b"ping").await.expect("write");
    let mut inb = within(server.incoming.recv()).await.expect("inbound");
    let mut buf = [0u8; 4];
    within(inb.read_exact(&mut buf)).await.expect("read");
    assert_eq!(&buf, b"ping");
    inb.write_all(b"pong").await.expect("write back");
    within(s.read_exact(&mut buf)).await.expect("read back");
    assert_eq!(&buf, b"pong");

    let mut client = client;
    let mut back = server.conn.open().expect("server opens");
    assert_eq!(back.id(), 2);
    back.write_all(b"x").await.expect("write");
    let mut got = within(client.incoming.recv()).await.expect("inbound 2");
    let mut one = [0u8; 1];
    within(got.read_exact(&mut one)).await.expect("read");
    assert_eq!(&one, b"x");
}

#[tokio::test]
async fn bulk_both_directions_with_a_small_pipe_is_intact() {
    // A 16 KiB pipe keeps the socket full, so frames queue and the window
    // runs out many times over.
    let (client, mut server) = pair(16 * 1024);
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    let (s, inb) = open_pair(&client, &mut server).await;
    let (got_down, got_up) = tokio::join!(exchange(s, data.clone()), exchange(inb, data.clone()));
    assert!(got_up == data, "upload corrupted");
    assert!(got_down == data, "download corrupted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_interleave() {
    let (client, mut server) = pair(32 * 1024);
    let client = std::sync::Arc::new(client);
    let echo = tokio::spawn(async move {
        while let Some(s) = server.incoming.recv().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(s);
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    let mut tasks = Vec::new();
    for i in 0..64u32 {
        // Opened from many tasks at once: Open frames must still leave in
        // id order.
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let s = client.conn.open().expect("open");
            let msg: Vec<u8> = (0..100_000u32).map(|j| ((i + j) % 256) as u8).collect();
            let got = exchange(s, msg.clone()).await;
            assert!(got == msg, "stream {i} corrupted");
        }));
    }
    for t in tasks {
        within(t).await.expect("stream task");
    }
    echo.abort();
}

#[tokio::test]
async fn drop_resets_and_peer_sees_it() {
    let (client, mut server) = pair(64 * 1024);
    let mut s = client.conn.open().expect("open");
    s.write_all(b"x").await.expect("first frame");
    let mut inb = within(server.incoming.recv()).await.expect("inbound");
    let mut buf = [0u8; 1];
    within(inb.read_exact(&mut buf)).await.expect("first byte");
    drop(s);
    let err = within(inb.read(&mut buf)).await.expect_err("reset");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    // Writing to a reset stream fails too, and the connection lives on.
    assert!(inb.write_all(b"late").await.is_err());
    let mut s2 = client.conn.open().expect("open after reset");
    s2.write_all(b"ok").await.expect("write");
    let mut inb2 = within(server.incoming.recv()).await.expect("inbound 2");
    let mut two = [0u8; 2];
    within(inb2.read_exact(&mut two)).await.expect("read");
    assert_eq!(&two, b"ok");
}

#[tokio::test]
async fn fin_delivers_everything_then_eof() {
    let (client, mut server) = pair(64 * 1024);
    let mut s = client.conn.open().expect("open");
    s.write_all(b"last words").await.expect("write");
    s.shutdown().await.expect("fin");
    let mut inb = within(server.incoming.recv()).await.expect("inbound");
    let mut got = String::new();
    within(inb.read_to_string(&mut got)).await.expect("read");
    assert_eq!(got, "last words");
    // Half-close: the other direction still works.
    inb.write_all(b"reply").await.expect("write back");
    let mut back = [0u8; 5];
    within(s.read_exact(&mut back)).await.expect("read back");
    assert_eq!(&back, b"reply");
}

#[tokio::test]
async fn peer_gone_ends_streams_and_opener() {
    let (client, server) = pair(64 * 1024);
    let mut s = client.conn.open().expect("open");
    drop(server);
    within(client.conn.closed.cancelled()).await;
    let mut buf = [0u8; 1];
    assert!(within(s.read(&mut buf)).await.is_err());
    assert!(matches!(client.conn.open(), Err(OpenError::Closed)));
}

/// Raw frames written by a hostile peer.
async fn hostile(bytes: Vec<u8>) -> End {
    let (a, mut b) = tokio::io::duplex(1 << 20);
    let server = end(a, Role::Server);
    b.write_all(&bytes).await.expect("write raw");
    // Keep `b` open: the server must end the connection on its own.
    within(server.conn.closed.cancelled()).await;
    drop(b);
    server
}

#[tokio::test]
async fn garbage_and_violations_end_the_connection() {
    // Not a frame at all.
    hostile(b"GET / HTTP/1.1\r\n\r\n".to_vec()).await;
    // Oversized data frame.
    hostile(Header::new(Kind::Data, 1, u32::MAX).encode().to_vec()).await;
    // A stream id of the wrong parity (a client opens odd ids).
    hostile(Header::new(Kind::Open, 2, 0).encode().to_vec()).await;
    // Overrunning the window.
    let mut v = Header::new(Kind::Open, 1, 0).encode().to_vec();
    for _ in 0..3 {
        v.extend_from_slice(&Header::new(Kind::Data, 1, frame::MAX_DATA).encode());
        v.extend(std::iter::repeat_n(0u8, frame::MAX_DATA as usize));
    }
    hostile(v).await;
}

#[tokio::test]
async fn random_bytes_never_panic() {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..200 {
        let mut v = Vec::new();
        // Start from a valid open so some inputs get deeper.
        v.extend_from_slice(&Header::new(Kind::Open, 1, 0).encode());
        for _ in 0..(x % 64) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.push((x % 7) as u8);
            v.extend_from_slice(&x.to_be_bytes()[..(x % 9) as usize]);
        }
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let server = end(a, Role::Server);
        let _ = b.write_all(&v).await;
        drop(b); // EOF: the connection must end either way
        within(server.conn.closed.cancelled()).await;
    }
}

#[tokio::test]
async fn opens_travel_with_first_frames_in_id_order() {
    let (client, mut server) = pair(64 * 1024);
    let mut a = client.conn.open().expect("open a");
    let mut b = client.conn.open().expect("open b");
    let c = client.conn.open().expect("open c");
    assert_eq!((a.id(), b.id(), c.id()), (1, 3, 5));

    // b writes first: its Open goes out with a's before it, in order.
    b.write_all(b"b").await.expect("write b");
    let mut in_a = within(server.incoming.recv()).await.expect("inbound a");
    let mut in_b = within(server.incoming.recv()).await.expect("inbound b");
    assert_eq!((in_a.id(), in_b.id()), (1, 3));
    let mut one = [0u8; 1];
    within(in_b.read_exact(&mut one)).await.expect("read b");
    assert_eq!(&one, b"b");

    // c is dropped before it wrote: the peer never hears of it.
    drop(c);
    let mut d = client.conn.open().expect("open d");
    d.write_all(b"d").await.expect("write d");
    let mut in_d = within(server.incoming.recv()).await.expect("inbound d");
    assert_eq!(in_d.id(), 7, "no stream 5 was announced");
    within(in_d.read_exact(&mut one)).await.expect("read d");
    assert_eq!(&one, b"d");

    // a was announced by b: its data and its Fin arrive on its stream.
    a.write_all(b"a").await.expect("write a");
    a.shutdown().await.expect("fin a");
    let mut rest = Vec::new();
    within(in_a.read_to_end(&mut rest)).await.expect("read a");
    assert_eq!(rest, b"a");

    // A stream whose first frame is its Fin: Open and Fin together.
    let mut e = client.conn.open().expect("open e");
    e.shutdown().await.expect("fin e");
    let mut in_e = within(server.incoming.recv()).await.expect("inbound e");
    assert_eq!(in_e.id(), 9);
    let mut nothing = Vec::new();
    within(in_e.read_to_end(&mut nothing))
        .await
        .expect("read e");
    assert!(nothing.is_empty());
}

/// A runtime whose worker writes small frames behind, as the binaries'.
fn behind_runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .on_thread_park(flush_behind)
        .build()
        .expect("runtime")
}

/// A client end whose socket writes are counted, and a plain server end.
fn counted_pair() -> (End, End, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let (rd, wr) = tokio::io::split(a);
    let (wr, writes) = crate::test_io::Counting::new(wr);
    let stop = CancellationToken::new();
    let (conn, incoming) = spawn(Box::new(rd), Box::new(wr), Role::Client, stop.clone());
    let client = End {
        conn,
        incoming,
        _stop: stop.drop_guard(),
    };
    (client, end(b, Role::Server), writes)
}

#[test]
fn frames_of_one_pass_leave_in_one_write() {
    use std::sync::atomic::Ordering::Relaxed;
    behind_runtime(1).block_on(async {
        tokio::spawn(async {
            let (client, mut server, writes) = counted_pair();
            // The first park turns write-behind on for the worker.
            tokio::time::sleep(Duration::from_millis(5)).await;
            let mut streams: Vec<MuxStream> =
                (0..10).map(|_| client.conn.open().expect("open")).collect();
            for (i, s) in streams.iter_mut().enumerate() {
                // Ready at once: the frame waits in the connection.
                s.write_all(&[b'a' + i as u8]).await.expect("write");
            }
            assert_eq!(writes.load(Relaxed), 0, "nothing written before the park");
            for i in 0..10u8 {
                let mut inb = within(server.incoming.recv()).await.expect("inbound");
                let mut one = [0u8; 1];
                within(inb.read_exact(&mut one)).await.expect("read");
                assert_eq!(one[0], b'a' + i, "stream order and data kept");
            }
            assert_eq!(writes.load(Relaxed), 1, "ten frames, one write");

            // A thread that keeps writing without parking still writes out.
            let s = &mut streams[0];
            for _ in 0..100 {
                s.write_all(b"z").await.expect("write");
            }
            assert!(
                writes.load(Relaxed) >= 3,
                "busy writer flushes every few frames"
            );
            // Larger frames are not held back.
            let before = writes.load(Relaxed);
            s.write_all(&vec![7u8; 20_000]).await.expect("big write");
            assert!(writes.load(Relaxed) > before, "a large frame goes at once");
        })
        .await
        .expect("test task");
    });
}

#[test]
fn many_streams_ping_pong_with_write_behind() {
    for workers in [1, 2] {
        behind_runtime(workers).block_on(async {
            let (client, mut server) = pair(64 * 1024);
            let echo = tokio::spawn(async move {
                while let Some(mut s) = server.incoming.recv().await {
                    tokio::spawn(async move {
                        let mut buf = [0u8; 64];
                        loop {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => s.write_all(&buf[..n]).await.expect("echo"),
                            }
                        }
                        let _ = s.shutdown().await;
                    });
                }
            });
            let mut tasks = Vec::new();
            for k in 0..64u32 {
                let mut s = client.conn.open().expect("open");
                tasks.push(tokio::spawn(async move {
                    for round in 0..200u32 {
                        let msg = (k * 1000 + round).to_be_bytes();
                        s.write_all(&msg).await.expect("send");
                        let mut back = [0u8; 4];
                        within(s.read_exact(&mut back)).await.expect("reply");
                        assert_eq!(back, msg);
                    }
                    s.shutdown().await.expect("fin");
                }));
            }
            for t in tasks {
                within(t).await.expect("client task");
            }
            echo.abort();
        });
    }
}

#[tokio::test]
async fn splice_between_a_mux_stream_and_a_socket_is_intact_both_ways() {
    // What NOVAC does for every session, over a real mux: small pipes on
    // both sides keep the writes partial and the window running out.
    let (client, mut server) = pair(32 * 1024);
    let (user, mut relay_end) = tokio::io::duplex(8 * 1024);
    let (s, mut inb) = open_pair(&client, &mut server).await;
    let relay = tokio::spawn(async move { crate::splice::splice(&mut inb, &mut relay_end).await });

    let up: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let down: Vec<u8> = (0..2_000_000u32).map(|i| (i % 241) as u8).collect();
    let tunnel_side = tokio::spawn(exchange(s, up.clone()));
    let user_side = tokio::spawn(exchange(user, down.clone()));
    let at_user = within(user_side).await.expect("join user");
    let at_tunnel = within(tunnel_side).await.expect("join tunnel");
    let (n_in, n_out) = within(relay).await.expect("join relay").expect("splice");
    assert!(at_user == up, "tunnel → socket intact");
    assert!(at_tunnel == down, "socket → tunnel intact");
    assert_eq!((n_in, n_out), (up.len() as u64, down.len() as u64));
}
