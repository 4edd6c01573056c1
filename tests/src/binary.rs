//! The `sessionwatch` binary, for tests that run the command itself: this package cannot name
//! another's binary (`CARGO_BIN_EXE_` is only set for the binary's own package), so cargo is
//! asked to build it and say where it is, once per test binary.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// The path of the built `sessionwatch` binary.
pub fn sessionwatch_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(build).clone()
}

fn build() -> PathBuf {
    let mut cargo = Command::new(env!("CARGO"));
    // What `cargo test` set for this test process (the package's own variables, the library
    // path) would make the inner build differ from an ordinary one, and each rebuild the other.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || name.starts_with("CARGO_CRATE_")
            || name.starts_with("CARGO_BIN_")
            || name.starts_with("CARGO_PRIMARY_")
            || name == "CARGO_TARGET_TMPDIR"
            || name == "LD_LIBRARY_PATH"
            || name == "OUT_DIR"
        {
            cargo.env_remove(&*name);
        }
    }
    let out = cargo
        .args([
            "build",
            "--quiet",
            "-p",
            "sessionwatch",
            "--bin",
            "sessionwatch",
            "--message-format=json",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo to build the sessionwatch binary");
    assert!(
        out.status.success(),
        "cargo build -p sessionwatch failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo named no sessionwatch executable")
}
