//! From the paths a scan found to edges between top-level modules.
//!
//! A path is made absolute (`super::` climbs from the module it is written in, `self::` starts
//! there, a bare `use` path starts there too), and its first segment names the top-level module
//! it reaches: directly, or through a name the crate root binds with `use` (a re-export such as
//! `pub use config::Config` makes `crate::Config` reach `config`). A glob import of the root
//! reaches the modules behind the names the importing module then uses bare.

use std::collections::{BTreeMap, BTreeSet};

use crate::graph::{Graph, Site};
use crate::scan::{ModPath, PathRef, Scan};

/// The graph between `scan`'s top-level modules.
pub(crate) fn build(scan: &Scan, label: String) -> Graph {
    let exports = root_exports(scan);
    let mut graph = Graph::new(label);
    graph.modules = scan.top_level.clone();
    let site = |file: usize, line: u32| Site {
        file: scan.files.get(file).cloned().unwrap_or_default(),
        line,
    };
    let mut root_globs: BTreeSet<&ModPath> = BTreeSet::new();
    for r in &scan.refs {
        let Some(from) = r.module.first() else {
            continue;
        };
        let Some(abs) = absolute(r) else {
            continue;
        };
        let target = match abs.first() {
            None => {
                if r.glob {
                    root_globs.insert(&r.module);
                }
                continue;
            }
            Some(first) if scan.top_level.contains(first) => first,
            Some(first) => match exports.get(first) {
                Some(module) => module,
                None => continue,
            },
        };
        if target != from {
            graph
                .edges
                .entry((from.clone(), target.clone()))
                .or_insert_with(|| site(r.file, r.line));
        }
    }
    for ((module, name, before_sep), first) in &scan.idents {
        if !root_globs.contains(module) {
            continue;
        }
        let (Some(from), Some(target)) = (
            module.first(),
            glob_target(scan, &exports, name, *before_sep),
        ) else {
            continue;
        };
        if target != from {
            graph
                .edges
                .entry((from.clone(), target.clone()))
                .or_insert_with(|| site(first.file, first.line));
        }
    }
    graph
}

/// The top-level module a bare `name` reaches after a glob import of the root: a module itself
/// only when used as a path (`farm::Farm`), so a local variable called `farm` does not count.
fn glob_target<'a>(
    scan: &'a Scan,
    exports: &'a BTreeMap<String, String>,
    name: &'a String,
    before_sep: bool,
) -> Option<&'a String> {
    if scan.top_level.contains(name) {
        return before_sep.then_some(name);
    }
    exports.get(name)
}

/// The path from the crate root, or `None` for an extern crate or a `super` above the root.
/// Only `use` paths are recorded bare; like `self::` and `super::` paths, they start in the
/// module they are written in.
fn absolute(r: &PathRef) -> Option<Vec<String>> {
    let mut segments = r.segments.iter().peekable();
    let mut path = match segments.peek()?.as_str() {
        "::" => return None,
        "crate" => {
            segments.next();
            Vec::new()
        }
        "self" => {
            segments.next();
            r.module.clone()
        }
        _ => r.module.clone(),
    };
    while segments.next_if(|s| *s == "super").is_some() {
        path.pop()?;
    }
    path.extend(segments.cloned());
    Some(path)
}

/// The names the crate root binds with `use` (its re-exports and private imports, which its
/// modules can reach as `crate::Name` too), each with the top-level module it comes from.
fn root_exports(scan: &Scan) -> BTreeMap<String, String> {
    let root_uses: Vec<(&PathRef, Vec<String>)> = scan
        .refs
        .iter()
        .filter(|r| r.module.is_empty())
        .filter_map(|r| absolute(r).map(|abs| (r, abs)))
        .collect();
    let mut exports: BTreeMap<String, String> = BTreeMap::new();
    // A re-export of a re-export (`pub use Config as Settings`) needs the first one known.
    loop {
        let before = exports.len();
        for (r, abs) in &root_uses {
            let Some(first) = abs.first() else {
                continue;
            };
            let module = if scan.top_level.contains(first) {
                first.clone()
            } else if let Some(module) = exports.get(first) {
                module.clone()
            } else {
                continue;
            };
            match &r.bound {
                Some(bound) => {
                    exports.entry(bound.clone()).or_insert(module);
                }
                None if r.glob => {
                    for name in scan.defined.get(abs).into_iter().flatten() {
                        exports
                            .entry(name.clone())
                            .or_insert_with(|| module.clone());
                    }
                }
                None => {}
            }
        }
        if exports.len() == before {
            return exports;
        }
    }
}
