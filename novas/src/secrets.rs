//! Generated secrets kept in the data directory (mode 0600).

use std::{fs, io::Write, path::Path};

use rand::Rng;
use tunnel_proto::Secret;

pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// A fresh random token: 32 bytes, hex.
pub fn generate_token() -> String {
    hex::encode(rand::rng().random::<[u8; 32]>())
}

/// Reads `dir/name`, creating it with a fresh token when absent.
pub fn load_or_create(dir: &Path, name: &str) -> std::io::Result<Secret> {
    let path = dir.join(name);
    match fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(Secret::new(s.trim().to_string())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    fs::create_dir_all(dir)?;
    let token = generate_token();
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(&path)?.write_all(token.as_bytes())?;
    Ok(Secret::new(token))
}

/// Reads `dir/name` if present.
pub fn read(dir: &Path, name: &str) -> Option<Secret> {
    fs::read_to_string(dir.join(name))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .map(Secret::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = load_or_create(dir.path(), "t").expect("create");
        let b = load_or_create(dir.path(), "t").expect("reuse");
        assert_eq!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 64);
        assert_ne!(generate_token(), generate_token());
    }
}
