//! Locating the release binaries under test.

use std::path::{Path, PathBuf};

use anyhow::bail;

pub struct Bins {
    pub novas: PathBuf,
    pub novac: PathBuf,
}

/// The `target/release` dir: this executable's own dir when it is a release
/// build, else `<workspace>/target/release` (or `$CARGO_TARGET_DIR/release`).
fn release_dir() -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            if dir.file_name().is_some_and(|n| n == "release") {
                return dir.to_path_buf();
            }
        }
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t).join("release");
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("release")
}

fn one(name: &str, env: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os(env) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => dir.join(name),
    };
    if !path.is_file() {
        bail!(
            "{name} not found at {}: run `cargo build --release --bins` first \
             (or set {env})",
            path.display()
        );
    }
    Ok(path)
}

pub fn locate() -> anyhow::Result<Bins> {
    let dir = release_dir();
    Ok(Bins {
        novas: one("novas", "NOVAS_BIN", &dir)?,
        novac: one("novac", "NOVAC_BIN", &dir)?,
    })
}
