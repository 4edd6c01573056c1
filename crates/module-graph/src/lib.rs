//! Finds import cycles between the top-level modules of a crate, without compiling it.
//!
//! A crate's top-level modules are the `mod` items of its root (`src/lib.rs`, `src/main.rs`,
//! `src/bin/*.rs`, or a `path` its `Cargo.toml` gives a `[lib]` or `[[bin]]`); a module and everything below it, files and inline `mod { }` blocks alike,
//! count as one node. Module `a` depends on module `b` when any code in `a` names a path into
//! `b`: a `use` line (groups, `as`, globs included), or a path written inline in code, types or
//! macro calls (`crate::b::f()`, `$crate::b::T`), with `super::` and `self::` resolved from the
//! module the path is written in. A root item re-exported from `b` (`pub use b::Config` in
//! `lib.rs`) reached as `crate::Config` counts as `b`. Comments and string literals never count.
//!
//! Test code counts too: `#[cfg(test)]` modules and items are read like any other, so a
//! test-only helper module used by one module's tests belongs below that module (or must not
//! import it back). That is the strictest reading, and it costs nothing real: such a helper can
//! always live under the module whose tests use it.
//!
//! Not seen: names brought in by a macro's expansion, and macros used through `#[macro_use]`
//! textual scope (a `macro_rules!` of module `b` called bare from `a` without a path).
//!
//! ```no_run
//! let graphs = module_graph::read_crate(std::path::Path::new("crates/sessionwatch-tower"))?;
//! for graph in &graphs {
//!     print!("{}", module_graph::render(graph));
//! }
//! # Ok::<(), module_graph::Error>(())
//! ```
//!
//! `cargo run -p module-graph -- crates/NAME...` (or `--all`) prints each cycle as
//! `a -> b -> a` with a `file:line` for every edge, and exits 1 if there is one.

mod error;
mod graph;
mod lex;
mod resolve;
mod scan;
mod workspace;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use error::Error;
pub use graph::{Cycle, Graph, Site, render};
pub use workspace::{find_workspace_root, workspace_crates};

/// The graph of each crate root in the package at `dir`: its library, then its binaries.
pub fn read_crate(dir: &Path) -> Result<Vec<Graph>, Error> {
    let roots = workspace::crate_roots(dir);
    if roots.is_empty() {
        return Err(Error::NoRoot {
            dir: dir.to_path_buf(),
        });
    }
    roots
        .into_iter()
        .map(|(kind, root)| {
            let scan = scan::scan_crate(&root)?;
            Ok(resolve::build(&scan, format!("{} ({kind})", dir.display())))
        })
        .collect()
}
