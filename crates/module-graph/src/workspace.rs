//! Which crates of the workspace have sources to check, and where each one's roots are.
//!
//! The members listed in the root `Cargo.toml` (a trailing `/*` expanded), together with every
//! directory under `crates/` that has a `Cargo.toml`, keeping those with a `src/` directory.
//! A package's roots are Cargo's defaults (`src/lib.rs`, `src/main.rs`, `src/bin/*`) and the
//! `path`s of its `[lib]` and `[[bin]]` sections. Manifests are read without a TOML parser:
//! the few keys that matter are quoted strings on lines of their own.

use std::path::{Path, PathBuf};

use crate::Error;

/// The directories, below `root`, of the workspace's crates that have a `src/`; sorted.
pub fn workspace_crates(root: &Path) -> Result<Vec<PathBuf>, Error> {
    let manifest = root.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).map_err(|source| Error::Read {
        path: manifest,
        source,
    })?;
    let mut dirs = Vec::new();
    for member in members(&text) {
        match member.strip_suffix("/*") {
            Some(parent) => dirs.extend(subdirectories(&root.join(parent))),
            None => dirs.push(root.join(member)),
        }
    }
    dirs.extend(
        subdirectories(&root.join("crates"))
            .into_iter()
            .filter(|d| d.join("Cargo.toml").is_file()),
    );
    dirs.retain(|d| d.join("src").is_dir());
    dirs.sort();
    dirs.dedup();
    Ok(dirs)
}

/// Walks up from the current directory to the first `Cargo.toml` with a `[workspace]` section;
/// returned relative (`""`, `".."`, ...) so that reported paths stay short.
pub fn find_workspace_root() -> Result<PathBuf, Error> {
    let cwd = std::env::current_dir().map_err(|source| Error::Read {
        path: PathBuf::from("."),
        source,
    })?;
    let mut relative = PathBuf::new();
    for dir in cwd.ancestors() {
        let is_workspace = std::fs::read_to_string(dir.join("Cargo.toml"))
            .is_ok_and(|text| text.lines().any(|l| l.trim() == "[workspace]"));
        if is_workspace {
            return Ok(relative);
        }
        relative.push("..");
    }
    Err(Error::NoWorkspace)
}

/// The crate roots of the package at `dir`, labelled `lib`, `bin` or `bin NAME`; each file once.
pub(crate) fn crate_roots(dir: &Path) -> Vec<(String, PathBuf)> {
    let src = dir.join("src");
    let mut roots: Vec<(String, PathBuf)> = [("lib", "lib.rs"), ("bin", "main.rs")]
        .into_iter()
        .map(|(kind, file)| (kind.to_owned(), src.join(file)))
        .collect();
    let mut bins: Vec<(String, PathBuf)> = subdirectories_and_files(&src.join("bin"))
        .into_iter()
        .filter_map(|path| {
            let name = path.file_stem()?.to_string_lossy().into_owned();
            if path.is_dir() {
                Some((format!("bin {name}"), path.join("main.rs")))
            } else {
                let is_rust = path.extension().is_some_and(|e| e == "rs");
                is_rust.then(|| (format!("bin {name}"), path))
            }
        })
        .collect();
    bins.sort();
    roots.extend(bins);
    if let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) {
        roots.extend(
            declared_targets(&manifest)
                .into_iter()
                .map(|(kind, path)| (kind, dir.join(path))),
        );
    }
    let mut seen = Vec::new();
    roots.retain(|(_, path)| {
        let fresh = path.is_file() && !seen.contains(path);
        seen.push(path.clone());
        fresh
    });
    roots
}

/// The `[lib]` and `[[bin]]` sections that give a `path`, as (label, path).
fn declared_targets(manifest: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut section: Option<(&str, Option<String>, Option<String>)> = None;
    let mut flush = |section: &mut Option<(&str, Option<String>, Option<String>)>| {
        if let Some((kind, name, Some(path))) = section.take() {
            let label = match (kind, name) {
                ("bin", Some(name)) => format!("bin {name}"),
                (kind, _) => kind.to_owned(),
            };
            out.push((label, path));
        }
    };
    for line in manifest.lines() {
        let line = without_comment(line).trim();
        if line.starts_with('[') {
            flush(&mut section);
            section = match line {
                "[lib]" => Some(("lib", None, None)),
                "[[bin]]" => Some(("bin", None, None)),
                _ => None,
            };
            continue;
        }
        let Some((_, name, path)) = section.as_mut() else {
            continue;
        };
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"').to_owned();
        match key.trim() {
            "name" => *name = Some(value),
            "path" => *path = Some(value),
            _ => {}
        }
    }
    flush(&mut section);
    out
}

fn subdirectories(dir: &Path) -> Vec<PathBuf> {
    subdirectories_and_files(dir)
        .into_iter()
        .filter(|p| p.is_dir())
        .collect()
}

fn subdirectories_and_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries.filter_map(Result::ok).map(|e| e.path()).collect()
}

/// The strings of the `members = [...]` array of the `[workspace]` section.
fn members(manifest: &str) -> Vec<String> {
    let mut in_workspace = false;
    let mut in_members = false;
    let mut out = Vec::new();
    for line in manifest.lines() {
        let line = without_comment(line).trim();
        if line.starts_with('[') && !in_members {
            in_workspace = line == "[workspace]";
            continue;
        }
        if !in_workspace {
            continue;
        }
        let mut rest = line;
        if !in_members {
            let Some(value) = line
                .strip_prefix("members")
                .map(str::trim_start)
                .and_then(|l| l.strip_prefix('='))
            else {
                continue;
            };
            rest = value.trim_start().strip_prefix('[').unwrap_or(value);
            in_members = true;
        }
        let (items, closed) = match rest.split_once(']') {
            Some((items, _)) => (items, true),
            None => (rest, false),
        };
        out.extend(
            items
                .split(',')
                .map(|s| s.trim().trim_matches('"').trim_matches('\''))
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
        if closed {
            in_members = false;
        }
    }
    out
}

/// A line without its `#` comment; member paths hold no `#`.
fn without_comment(line: &str) -> &str {
    line.split_once('#').map_or(line, |(code, _)| code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_members_array_on_one_line_or_many() {
        let manifest = "[package]\nmembers = [\"not/this\"]\n[workspace]\nresolver = \"3\"\n\
                        members = [\n    \"crates/a\", # the core\n    \"tests\",\n]\n\
                        [workspace.package]\nversion = \"1\"\n";
        assert_eq!(members(manifest), ["crates/a", "tests"]);
        assert_eq!(
            members("[workspace]\nmembers = [\"a\", \"b/*\"]\n"),
            ["a", "b/*"]
        );
    }

    #[test]
    fn reads_the_paths_of_lib_and_bin_targets() {
        let manifest = "[package]\nname = \"p\"\npath = \"no\"\n[lib]\npath = \"src/core.rs\"\n\
                        [[bin]]\nname = \"one\"\npath = \"src/main.rs\"\n[[bin]]\n\
                        name = \"soak\" # the soak driver\npath = \"src/soak/main.rs\"\n\
                        [[bin]]\nname = \"default\"\n[dependencies]\npath = \"x\"\n";
        assert_eq!(
            declared_targets(manifest),
            [
                ("lib".to_owned(), "src/core.rs".to_owned()),
                ("bin one".to_owned(), "src/main.rs".to_owned()),
                ("bin soak".to_owned(), "src/soak/main.rs".to_owned()),
            ]
        );
    }
}
