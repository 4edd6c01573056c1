//! The commit the binary is built from, for `--version` (and the build-info metric): the
//! `SESSIONWATCH_COMMIT` variable when the build sets it (an image built without the git
//! history), else `git rev-parse`, else `unknown`.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then_some(())?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=SESSIONWATCH_COMMIT");
    let commit = std::env::var("SESSIONWATCH_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]));
    // Built again when HEAD moves: a new commit, a checkout.
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let dir = PathBuf::from(dir);
        for f in ["HEAD", "logs/HEAD"] {
            println!("cargo:rerun-if-changed={}", dir.join(f).display());
        }
    }
    println!(
        "cargo:rustc-env=SESSIONWATCH_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
}
