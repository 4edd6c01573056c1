//! The command's output and exit status, run as a user runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A crate written below the system temp dir, removed on drop.
struct TempCrate(PathBuf);

impl TempCrate {
    fn new(name: &str, files: &[(&str, &str)]) -> Self {
        let dir =
            std::env::temp_dir().join(format!("module-graph-cli-{}-{name}", std::process::id()));
        for (path, text) in files {
            let path = dir.join("src").join(path);
            std::fs::create_dir_all(path.parent().expect("below src/")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        Self(dir)
    }
}

impl Drop for TempCrate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&Path]) -> (Option<i32>, String) {
    let Output { status, stdout, .. } = Command::new(env!("CARGO_BIN_EXE_module-graph"))
        .args(args)
        .output()
        .expect("the command runs");
    (status.code(), String::from_utf8_lossy(&stdout).into_owned())
}

#[test]
fn a_cycle_is_printed_with_its_sites_and_exits_1() {
    let tangled = TempCrate::new(
        "tangled",
        &[
            ("lib.rs", "mod a;\nmod b;"),
            ("a.rs", "use crate::b::B;\npub struct A;"),
            ("b.rs", "pub struct B;\n\nfn f(_: crate::a::A) {}"),
        ],
    );
    let clean = TempCrate::new(
        "clean",
        &[
            ("lib.rs", "mod a; mod b;"),
            ("a.rs", ""),
            ("b.rs", "use crate::a;"),
        ],
    );
    let (code, out) = run(&[&clean.0, &tangled.0]);
    assert_eq!(code, Some(1), "{out}");
    let a = tangled.0.join("src/a.rs");
    let b = tangled.0.join("src/b.rs");
    assert!(
        out.contains(&format!(
            "{} (lib): no cycle (2 modules)",
            clean.0.display()
        )),
        "{out}"
    );
    assert!(out.contains("  a -> b -> a\n"), "{out}");
    assert!(
        out.contains(&format!("    a -> b  {}:1\n", a.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("    b -> a  {}:3\n", b.display())),
        "{out}"
    );
}

#[test]
fn no_cycle_exits_0() {
    let clean = TempCrate::new(
        "only-clean",
        &[
            ("lib.rs", "mod a; mod b;"),
            ("a.rs", ""),
            ("b.rs", "use crate::a;"),
        ],
    );
    let (code, out) = run(&[&clean.0]);
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn an_unreadable_crate_exits_2() {
    let broken = TempCrate::new("broken", &[("lib.rs", "mod gone;")]);
    let (code, _) = run(&[&broken.0]);
    assert_eq!(code, Some(2));
    let (code, _) = run(&[]);
    assert_eq!(code, Some(2));
}
