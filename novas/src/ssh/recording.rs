//! Session recordings in asciicast v2: one JSON header line (size, start
//! time, title), then one `[seconds, code, data]` line per event: `o` for
//! output, `i` for input, `r` for a resize (`COLSxROWS`). Players such as
//! `asciinema play` and `novas recordings play` read them.
//!
//! Writes are buffered and synchronous (events are small); a recording
//! stops growing at [`MAX_BYTES`] so one `cat` of a huge file cannot fill
//! the disk, and says so in a last event.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    sync::Mutex,
    time::Instant,
};

use serde::{Deserialize, Serialize};

/// Size cap of one recording.
pub const MAX_BYTES: u64 = 64 * 1024 * 1024;
/// File name suffix of recordings in the recordings directory.
pub const SUFFIX: &str = ".cast";

/// The header line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub version: u32,
    pub width: u32,
    pub height: u32,
    /// Unix seconds at the start.
    pub timestamp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

/// An open recording. Errors after creation are logged once and stop the
/// recording; they never end the session.
pub struct Recorder {
    inner: Mutex<Inner>,
    pub path: PathBuf,
}

struct Inner {
    out: Option<BufWriter<File>>,
    start: Instant,
    written: u64,
    /// Incomplete UTF-8 at the end of the last chunk, per direction.
    carry_o: Vec<u8>,
    carry_i: Vec<u8>,
}

impl Recorder {
    /// Creates `<dir>/<id>.cast` (mode 0600: it holds what was typed).
    pub fn create(dir: &Path, id: &str, header: &Header) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{id}{SUFFIX}"));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut out = BufWriter::new(opts.open(&path)?);
        let line = serde_json::to_string(header).map_err(std::io::Error::other)?;
        writeln!(out, "{line}")?;
        out.flush()?;
        Ok(Self {
            inner: Mutex::new(Inner {
                out: Some(out),
                start: Instant::now(),
                written: line.len() as u64,
                carry_o: Vec::new(),
                carry_i: Vec::new(),
            }),
            path,
        })
    }

    pub fn output(&self, data: &[u8]) {
        self.event('o', data);
    }

    pub fn input(&self, data: &[u8]) {
        self.event('i', data);
    }

    pub fn resize(&self, cols: u32, rows: u32) {
        self.event('r', format!("{cols}x{rows}").as_bytes());
    }

    fn event(&self, code: char, data: &[u8]) {
        let Ok(mut g) = self.inner.lock() else { return };
        let inner = &mut *g;
        let carry = match code {
            'o' => &mut inner.carry_o,
            'i' => &mut inner.carry_i,
            _ => &mut Vec::new(),
        };
        let text = take_utf8(carry, data);
        if text.is_empty() {
            return;
        }
        let t = inner.start.elapsed().as_secs_f64();
        let line = serde_json::json!([(t * 1e6).round() / 1e6, code.to_string(), text]).to_string();
        let Some(out) = inner.out.as_mut() else {
            return;
        };
        let over = inner.written + line.len() as u64 > MAX_BYTES;
        let result = if over {
            let note = serde_json::json!([t, "o", "\r\n[novas: recording size limit reached]\r\n"]);
            writeln!(out, "{note}").and_then(|_| out.flush())
        } else {
            writeln!(out, "{line}")
        };
        inner.written += line.len() as u64 + 1;
        if let Err(e) = &result {
            tracing::warn!(error = %e, "recording write failed; recording stopped");
        }
        if over || result.is_err() {
            inner.out = None;
        }
    }

    /// Flushes what is buffered (at the end of the channel).
    pub fn finish(&self) {
        if let Ok(mut g) = self.inner.lock() {
            if let Some(out) = g.out.as_mut() {
                if let Err(e) = out.flush() {
                    tracing::warn!(error = %e, "recording flush failed");
                }
            }
        }
    }
}

/// `carry + data` as text, keeping an incomplete UTF-8 sequence at the end
/// for the next chunk; invalid bytes become U+FFFD.
fn take_utf8(carry: &mut Vec<u8>, data: &[u8]) -> String {
    carry.extend_from_slice(data);
    let valid_up_to = match std::str::from_utf8(carry) {
        Ok(_) => carry.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => carry.len(),
    };
    let rest = carry.split_off(valid_up_to);
    let text = String::from_utf8_lossy(carry).into_owned();
    *carry = rest;
    text
}

/// A recording in the recordings directory, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The file name without [`SUFFIX`]: `<session id>-<channel number>`.
    pub id: String,
    /// The session the recording belongs to.
    pub session_id: String,
    /// Unix seconds at the start.
    pub timestamp: i64,
    pub title: Option<String>,
    pub command: Option<String>,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
}

/// Whether `id` can name a recording file (no path tricks).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The recordings in `dir`, oldest first; a missing directory is empty.
/// Files without a readable header are left out.
pub fn list(dir: &Path) -> std::io::Result<Vec<Summary>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut rows = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(id) = name.strip_suffix(SUFFIX).filter(|id| valid_id(id)) else {
            continue;
        };
        let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
        let Some(h) = read_header(&entry.path()) else {
            continue;
        };
        let session_id = id.rsplit_once('-').map_or(id, |(s, _)| s).to_string();
        rows.push(Summary {
            id: id.to_string(),
            session_id,
            timestamp: h.timestamp,
            title: h.title,
            command: h.command,
            width: h.width,
            height: h.height,
            bytes,
        });
    }
    rows.sort_by(|a, b| (a.timestamp, &a.id).cmp(&(b.timestamp, &b.id)));
    Ok(rows)
}

/// The header line of a recording file, reading only that line.
fn read_header(path: &Path) -> Option<Header> {
    use std::io::{BufRead, Read};
    let mut first = String::new();
    std::io::BufReader::new(File::open(path).ok()?.take(64 * 1024))
        .read_line(&mut first)
        .ok()?;
    serde_json::from_str(&first).ok()
}

/// The path of recording `id` in `dir`, if the id is valid.
pub fn path_of(dir: &Path, id: &str) -> Option<PathBuf> {
    valid_id(id).then(|| dir.join(format!("{id}{SUFFIX}")))
}

/// One parsed event of a recording.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub time: f64,
    pub code: String,
    pub data: String,
}

/// Parses a recording; lines that are not events are skipped.
pub fn parse(text: &str) -> Result<(Header, Vec<Event>), String> {
    let mut lines = text.lines();
    let header: Header = serde_json::from_str(lines.next().unwrap_or_default())
        .map_err(|e| format!("not an asciicast v2 file: {e}"))?;
    let events = lines
        .filter_map(|l| serde_json::from_str::<(f64, String, String)>(l).ok())
        .map(|(time, code, data)| Event { time, code, data })
        .collect();
    Ok((header, events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_chunks_is_kept_whole() {
        let mut carry = Vec::new();
        let bytes = "é".as_bytes();
        assert_eq!(take_utf8(&mut carry, &bytes[..1]), "");
        assert_eq!(take_utf8(&mut carry, &bytes[1..]), "é");
        assert_eq!(take_utf8(&mut carry, b"a\xffb"), "a\u{FFFD}b");
        assert!(carry.is_empty());
    }

    #[test]
    fn writes_a_parsable_cast() {
        let dir = tempfile::tempdir().expect("tmp");
        let h = Header {
            version: 2,
            width: 80,
            height: 24,
            timestamp: 1,
            title: Some("alice@web-1".into()),
            command: None,
        };
        let r = Recorder::create(dir.path(), "s1", &h).expect("create");
        r.input(b"ls\r");
        r.output(b"file\r\n");
        r.resize(100, 30);
        r.finish();
        let text = std::fs::read_to_string(&r.path).expect("read");
        let (h2, ev) = parse(&text).expect("parse");
        assert_eq!(h2, h);
        let codes: Vec<(&str, &str)> = ev
            .iter()
            .map(|e| (e.code.as_str(), e.data.as_str()))
            .collect();
        assert_eq!(codes, [("i", "ls\r"), ("o", "file\r\n"), ("r", "100x30")]);
        assert!(
            Recorder::create(dir.path(), "s1", &h).is_err(),
            "never overwrites"
        );
        std::fs::write(dir.path().join("junk.cast"), "not json\n").expect("write");
        let listed = list(dir.path()).expect("list");
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!((listed[0].id.as_str(), listed[0].width), ("s1", 80));
        assert!(list(&dir.path().join("missing")).expect("list").is_empty());
        assert!(path_of(dir.path(), "../etc/passwd").is_none());
        assert!(path_of(dir.path(), "a-1").is_some());
    }
}
