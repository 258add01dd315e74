//! Exec and attach sessions recorded like SSH sessions (asciicast v2): the
//! upgraded bytes are spliced as they are, and a copy of each direction is
//! decoded as WebSocket frames of the Kubernetes channel protocol
//! (`v4.channel.k8s.io`, `v5.channel.k8s.io`: one channel byte, then data;
//! 0 stdin, 1 stdout, 2 stderr, 3 status, 4 resize) into the recording.
//!
//! The decoder is I/O-free and never influences the splice: a stream it
//! cannot read (SPDY, another subprotocol, a frame over the cap) is still
//! relayed, only no longer recorded.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::ssh::recording::Recorder;

/// Largest WebSocket message the recorder follows (kubectl sends small ones).
const MAX_MESSAGE: usize = 4 * 1024 * 1024;
const SPLICE_BUF: usize = 64 * 1024;

/// The Kubernetes channel subprotocols the recorder reads.
pub fn recordable(subprotocol: &str) -> bool {
    matches!(subprotocol, "v4.channel.k8s.io" | "v5.channel.k8s.io")
}

/// One complete binary message: its channel and data.
#[derive(Debug, PartialEq, Eq)]
pub struct Message {
    pub channel: u8,
    pub data: Vec<u8>,
}

/// Why the decoder gave up (the splice goes on).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    #[error("WebSocket message over {MAX_MESSAGE} bytes")]
    TooLarge,
    #[error("reserved WebSocket bits or opcode {0}")]
    Invalid(u8),
}

/// Incremental WebSocket frame decoder (either direction: client frames
/// are masked, server frames are not).
#[derive(Default)]
pub struct Decoder {
    buf: BytesMut,
    /// A fragmented message being collected.
    partial: Option<Vec<u8>>,
    failed: bool,
}

impl Decoder {
    /// Adds bytes; returns the binary messages they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Message>, WsError> {
        if self.failed {
            return Ok(Vec::new());
        }
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            match self.next_frame() {
                Ok(Some((fin, opcode, payload))) => {
                    let whole = match (opcode, self.partial.take()) {
                        (0x0, Some(mut p)) => {
                            p.extend_from_slice(&payload);
                            p
                        }
                        (0x1 | 0x2, _) => payload,
                        // Control frames (close, ping, pong) and a stray
                        // continuation: nothing to record.
                        _ => continue,
                    };
                    if whole.len() > MAX_MESSAGE {
                        return self.fail(WsError::TooLarge);
                    }
                    if !fin {
                        self.partial = Some(whole);
                        continue;
                    }
                    if let Some((&channel, data)) = whole.split_first() {
                        out.push(Message {
                            channel,
                            data: data.to_vec(),
                        });
                    }
                }
                Ok(None) => return Ok(out),
                Err(e) => return self.fail(e),
            }
        }
    }

    fn fail(&mut self, e: WsError) -> Result<Vec<Message>, WsError> {
        self.failed = true;
        self.buf.clear();
        Err(e)
    }

    /// One frame (fin, opcode, unmasked payload), or `None` if incomplete.
    fn next_frame(&mut self) -> Result<Option<(bool, u8, Vec<u8>)>, WsError> {
        let b = &self.buf[..];
        if b.len() < 2 {
            return Ok(None);
        }
        let (fin, rsv, opcode) = (b[0] & 0x80 != 0, b[0] & 0x70, b[0] & 0x0f);
        if rsv != 0 || matches!(opcode, 0x3..=0x7 | 0xb..=0xf) {
            return Err(WsError::Invalid(b[0]));
        }
        let masked = b[1] & 0x80 != 0;
        let (len, mut at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as u64, 4),
            127 if b.len() >= 10 => {
                let mut l = [0u8; 8];
                l.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(l), 10)
            }
            126 | 127 => return Ok(None),
            n => (n as u64, 2),
        };
        if len > MAX_MESSAGE as u64 {
            return Err(WsError::TooLarge);
        }
        let len = len as usize;
        let mask = if masked {
            if b.len() < at + 4 {
                return Ok(None);
            }
            let m = [b[at], b[at + 1], b[at + 2], b[at + 3]];
            at += 4;
            Some(m)
        } else {
            None
        };
        if b.len() < at + len {
            return Ok(None);
        }
        let mut payload = b[at..at + len].to_vec();
        if let Some(m) = mask {
            for (i, x) in payload.iter_mut().enumerate() {
                *x ^= m[i % 4];
            }
        }
        self.buf.advance(at + len);
        Ok(Some((fin, opcode, payload)))
    }
}

/// Which way bytes flow.
#[derive(Clone, Copy)]
enum Dir {
    /// kubectl → cluster: stdin (0) and resize (4).
    Up,
    /// cluster → kubectl: stdout (1), stderr (2).
    Down,
}

fn record(rec: &Recorder, dir: Dir, m: &Message) {
    match (dir, m.channel) {
        (Dir::Up, 0) => rec.input(&m.data),
        (Dir::Down, 1 | 2) => rec.output(&m.data),
        (Dir::Up, 4) => {
            // {"Width":120,"Height":40}
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m.data) {
                if let (Some(w), Some(h)) = (v["Width"].as_u64(), v["Height"].as_u64()) {
                    rec.resize(w as u32, h as u32);
                }
            }
        }
        _ => {}
    }
}

/// Copies `r` to `w`, feeding a copy to the recorder; shuts `w` down at
/// the end of `r`.
async fn pump<R, W>(
    mut r: R,
    mut w: W,
    rec: Option<Arc<Recorder>>,
    dir: Dir,
) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut dec = Decoder::default();
    let mut buf = vec![0u8; SPLICE_BUF];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            w.shutdown().await?;
            return Ok(total);
        }
        w.write_all(&buf[..n]).await?;
        w.flush().await?;
        total += n as u64;
        if let Some(rec) = &rec {
            match dec.feed(&buf[..n]) {
                Ok(msgs) => msgs.iter().for_each(|m| record(rec, dir, m)),
                Err(e) => tracing::info!(error = %e, "exec recording stopped"),
            }
        }
    }
}

/// Splices an upgraded exec connection both ways, recording it if `rec`.
pub async fn splice<C, A>(client: C, agent: A, rec: Option<Arc<Recorder>>) -> std::io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    A: AsyncRead + AsyncWrite + Unpin,
{
    let (cr, cw) = tokio::io::split(client);
    let (ar, aw) = tokio::io::split(agent);
    let up = pump(cr, aw, rec.clone(), Dir::Up);
    let down = pump(ar, cw, rec.clone(), Dir::Down);
    let r = tokio::try_join!(up, down).map(drop);
    if let Some(rec) = rec {
        rec.finish();
    }
    r
}

/// The command of an exec request's query (`command=echo&command=hi`), as
/// one line for the recording header.
pub fn command_of(query: &str) -> String {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "command")
        .map(|(_, v)| percent_decode(v))
        .collect::<Vec<_>>()
        .join(" ")
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(m | n as u8),
            n if n <= 0xffff => {
                f.push(m | 126);
                f.extend((n as u16).to_be_bytes());
            }
            n => {
                f.push(m | 127);
                f.extend((n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(k) => {
                f.extend(k);
                f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
            }
            None => f.extend_from_slice(payload),
        }
        f
    }

    #[test]
    fn frames_decode_across_chunks_masked_fragmented_and_large() {
        let mut d = Decoder::default();
        let mut bytes = frame(0x2, true, b"\x01hi\n", None);
        bytes.extend(frame(0x9, true, b"ping", None));
        bytes.extend(frame(0x2, true, b"\x00ls\r", Some([1, 2, 3, 4])));
        bytes.extend(frame(0x2, false, b"\x02par", None));
        bytes.extend(frame(0x0, true, b"t2", None));
        let big = [&[1u8][..], &vec![b'x'; 70_000]].concat();
        bytes.extend(frame(0x2, true, &big, None));
        // One byte at a time: nothing is lost at any split.
        let mut got = Vec::new();
        for b in &bytes {
            got.extend(d.feed(std::slice::from_ref(b)).expect("valid"));
        }
        assert_eq!(got.len(), 4);
        assert_eq!(
            got[0],
            Message {
                channel: 1,
                data: b"hi\n".to_vec()
            }
        );
        assert_eq!(
            got[1],
            Message {
                channel: 0,
                data: b"ls\r".to_vec()
            }
        );
        assert_eq!(
            got[2],
            Message {
                channel: 2,
                data: b"part2".to_vec()
            }
        );
        assert_eq!(got[3].data.len(), 70_000);
    }

    #[test]
    fn garbage_stops_recording_only() {
        let mut d = Decoder::default();
        assert_eq!(d.feed(b"\x43\x00"), Err(WsError::Invalid(0x43)));
        assert_eq!(d.feed(&frame(0x2, true, b"\x01x", None)), Ok(vec![]));
        let mut d = Decoder::default();
        let mut huge = vec![0x82, 127];
        huge.extend((u64::MAX).to_be_bytes());
        assert_eq!(d.feed(&huge), Err(WsError::TooLarge));
    }

    #[test]
    fn exec_command_from_the_query() {
        assert_eq!(
            command_of("command=echo&command=hi%20there&container=app&stdout=true"),
            "echo hi there"
        );
        assert_eq!(
            command_of("command=sh&command=-c&command=ls+-l"),
            "sh -c ls -l"
        );
        assert_eq!(command_of("stdout=true"), "");
        assert_eq!(command_of("command=bad%zz%"), "bad%zz%");
    }

    #[tokio::test]
    async fn splice_records_output_and_input() {
        let dir = tempfile::tempdir().expect("tmp");
        let h = crate::ssh::recording::Header {
            version: 2,
            width: 80,
            height: 24,
            timestamp: 0,
            title: None,
            command: Some("echo hi".into()),
        };
        let rec = Arc::new(Recorder::create(dir.path(), "x", &h).expect("rec"));
        let (client, mut kubectl) = tokio::io::duplex(1024);
        let (agent, mut cluster) = tokio::io::duplex(1024);
        let task = tokio::spawn(splice(client, agent, Some(rec.clone())));
        kubectl
            .write_all(&frame(0x2, true, b"\x00in", Some([9, 9, 9, 9])))
            .await
            .expect("w");
        let mut buf = vec![0u8; 9];
        cluster
            .read_exact(&mut buf)
            .await
            .expect("relayed up unchanged");
        cluster
            .write_all(&frame(0x2, true, b"\x01out", None))
            .await
            .expect("w");
        let mut buf = vec![0u8; 6];
        kubectl.read_exact(&mut buf).await.expect("relayed down");
        drop(kubectl);
        drop(cluster);
        task.await.expect("join").expect("splice");
        let text = std::fs::read_to_string(&rec.path).expect("read");
        let (_, ev) = crate::ssh::recording::parse(&text).expect("parse");
        let got: Vec<(&str, &str)> = ev
            .iter()
            .map(|e| (e.code.as_str(), e.data.as_str()))
            .collect();
        assert_eq!(got, [("i", "in"), ("o", "out")]);
    }
}
