//! Cross-process locks that the kernel releases when their holder dies, so a
//! crashed or killed test never leaves a stale claim behind.

use std::{fs::File, path::PathBuf};

fn lock_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("nova-e2e-locks");
    std::fs::create_dir_all(&dir).expect("create lock dir");
    dir
}

/// An exclusive claim on a name, held while this value lives.
#[derive(Debug)]
pub struct Claim {
    _file: File,
    pub name: String,
}

/// Tries to claim `name` without waiting; `None` when another process (or
/// this one) holds it.
pub fn try_claim(name: &str) -> Option<Claim> {
    let path = lock_dir().join(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open lock file {}: {e}", path.display()));
    match file.try_lock() {
        Ok(()) => Some(Claim {
            _file: file,
            name: name.to_string(),
        }),
        Err(_) => None,
    }
}

/// Claims `name`, waiting for another holder to let go.
pub fn claim(name: &str) -> Claim {
    let path = lock_dir().join(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open lock file {}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
    Claim {
        _file: file,
        name: name.to_string(),
    }
}
