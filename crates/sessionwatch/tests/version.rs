//! What the binary says of itself: `--version` names the commit it was built from, and asking
//! for help in any of the usual ways succeeds.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sessionwatch");

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_names_the_commit_the_binary_was_built_from() {
    let (code, stdout, stderr) = run(&["--version"]);
    assert_eq!(code, Some(0), "{stderr}");
    let line = stdout.trim();
    let version = env!("CARGO_PKG_VERSION");
    let commit = line
        .strip_prefix(&format!("sessionwatch {version} (commit "))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{line}"));
    // The test runs from a checkout: the commit is the checkout's HEAD.
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("git, to read the checkout's HEAD");
    assert!(head.status.success(), "the tests run from a git checkout");
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    assert_eq!(commit, head, "{line}");
}

#[test]
fn help_in_every_spelling_exits_0() {
    for args in [
        &["--help"][..],
        &["-h"],
        &["help"],
        &["help", "--help"],
        &["help", "-h"],
        &["help", "serve"],
        &["serve", "--help"],
    ] {
        let (code, stdout, stderr) = run(args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(stdout.contains("Usage: sessionwatch"), "{args:?}: {stdout}");
    }
}
