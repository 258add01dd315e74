//! Locating the binaries under test in the cargo target dir.

use std::path::PathBuf;

/// The cargo profile dir the test executable lives in: the test binary is
/// `target/<profile>/deps/<name>-<hash>`, binaries are in `target/<profile>/`.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test executable has a parent dir");
    deps.parent()
        .expect("test executable's dir has a parent dir")
        .to_path_buf()
}

/// Path of a workspace binary; panics with a clear message when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(
        path.is_file(),
        "binary {} not found: run `cargo build --bins` first (scripts/test does)",
        path.display()
    );
    path
}

pub fn novas() -> PathBuf {
    bin("novas")
}

pub fn novac() -> PathBuf {
    bin("novac")
}

/// The test-only banner + echo server (this package's own binary).
pub fn echo_server() -> PathBuf {
    bin("nova-e2e-echo")
}
