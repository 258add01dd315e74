//! The spool: JSON lines in the data dir (mode 0600) holding accepted events
//! the store could not take before shutdown, written back at the next start.

use std::{
    fs,
    io::{self, BufRead, Write},
    path::Path,
};

use super::AuditEvent;
use crate::store::{Store, StoreError};

/// Events waiting to be replayed into the store.
pub const SPOOL_FILE: &str = "audit-spool.jsonl";
/// Lines that can never be stored (unreadable, or refused by the store while
/// it took the rest); kept for a person to look at, never replayed.
pub const REJECTED_FILE: &str = "audit-rejected.jsonl";

/// Failure to replay the spool; the file is left in place for next time.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The spool file could not be read or removed.
    #[error("audit spool {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    /// The store refused the spooled events.
    #[error("audit spool replay: {0}")]
    Store(#[from] StoreError),
}

fn open_append(path: &Path) -> io::Result<fs::File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let mut opts = fs::OpenOptions::new();
    opts.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)
}

/// Appends `lines` and syncs them to disk.
pub fn append_lines<'a>(path: &Path, lines: impl IntoIterator<Item = &'a str>) -> io::Result<()> {
    let mut buf = Vec::new();
    for l in lines {
        buf.extend_from_slice(l.as_bytes());
        buf.push(b'\n');
    }
    let mut f = open_append(path)?;
    f.write_all(&buf)?;
    f.sync_all()
}

/// Appends events as JSON lines and syncs them to disk.
pub fn append(path: &Path, events: &[AuditEvent]) -> io::Result<()> {
    let lines: Vec<String> = events
        .iter()
        .map(|e| serde_json::to_string(e).map_err(io::Error::other))
        .collect::<io::Result<_>>()?;
    append_lines(path, lines.iter().map(String::as_str))
}

/// Reads a spool: the events, and the lines that are not events (e.g. a
/// line cut short by a crash). A missing file is an empty spool.
pub fn read(path: &Path) -> io::Result<(Vec<AuditEvent>, Vec<String>)> {
    let f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(e),
    };
    let mut events = Vec::new();
    let mut bad = Vec::new();
    for line in io::BufReader::new(f).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(ev) => events.push(ev),
            Err(_) => bad.push(line),
        }
    }
    Ok((events, bad))
}

/// Writes the spool in `dir` into the store and removes it; returns how
/// many events it held. On a store error the file stays for the next start
/// (writing an event twice stores it once).
pub async fn replay(store: &Store, dir: &Path, batch: usize) -> Result<usize, ReplayError> {
    let path = dir.join(SPOOL_FILE);
    let io_err = |source| ReplayError::Io {
        path: path.display().to_string(),
        source,
    };
    let (events, bad) = read(&path).map_err(io_err)?;
    if events.is_empty() && bad.is_empty() {
        return match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(e)),
            _ => Ok(0),
        };
    }
    for chunk in events.chunks(batch.max(1)) {
        store.insert_events(chunk).await?;
    }
    if !bad.is_empty() {
        let rejected = dir.join(REJECTED_FILE);
        append_lines(&rejected, bad.iter().map(String::as_str)).map_err(io_err)?;
        tracing::warn!(
            lines = bad.len(),
            file = %rejected.display(),
            "audit spool had unreadable lines; moved them aside"
        );
    }
    fs::remove_file(&path).map_err(io_err)?;
    Ok(events.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_util::sqlite_store;

    #[tokio::test]
    async fn append_read_replay() {
        let (store, dir) = sqlite_store().await;
        let path = dir.path().join(SPOOL_FILE);
        let events = crate::store::test_util::sample_events(5);
        append(&path, &events[..2]).expect("append");
        append(&path, &events[2..]).expect("append more");
        append_lines(&path, ["{\"cut short"]).expect("garbage line");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("spool").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (read_back, bad) = read(&path).expect("read");
        assert_eq!(read_back, events);
        assert_eq!(bad.len(), 1);

        assert_eq!(
            replay(&store, dir.path(), 2).await.expect("replay"),
            events.len()
        );
        assert!(!path.exists());
        assert!(dir.path().join(REJECTED_FILE).exists());
        let stored = store
            .query_events(&Default::default())
            .await
            .expect("query");
        assert_eq!(stored.len(), events.len());
        assert_eq!(replay(&store, dir.path(), 2).await.expect("nothing"), 0);
    }
}
