//! `module-graph [--all] [--edges] [CRATE_DIR...]`: prints the import cycles between each
//! crate's top-level modules, with a `file:line` for every edge (and with `--edges` every edge).
//! Exits 1 if any crate has a cycle, 2 if a crate cannot be read, 0 otherwise.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: module-graph [--all] [--edges] [CRATE_DIR...]
  CRATE_DIR  a package directory with src/lib.rs or src/main.rs (e.g. crates/sessionwatch-tower)
  --all      every workspace member with a src/ (found from the current directory up)
  --edges    also list every edge between top-level modules, with the first site found";

fn main() -> ExitCode {
    let mut dirs = Vec::new();
    let mut list_edges = false;
    for arg in std::env::args_os().skip(1) {
        match arg.to_str() {
            Some("--all") => match all_crates() {
                Ok(all) => dirs.extend(all),
                Err(e) => return fail(&e),
            },
            Some("--edges") => list_edges = true,
            Some("-h" | "--help") => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            Some(flag) if flag.starts_with('-') => {
                eprintln!("module-graph: unknown option {flag}\n{USAGE}");
                return ExitCode::from(2);
            }
            _ => dirs.push(PathBuf::from(arg)),
        }
    }
    if dirs.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let mut cycles = false;
    for dir in &dirs {
        let graphs = match module_graph::read_crate(dir) {
            Ok(graphs) => graphs,
            Err(e) => return fail(&e),
        };
        for graph in &graphs {
            cycles |= !graph.cycles().is_empty();
            print!("{}", module_graph::render(graph));
            if list_edges {
                for ((from, to), site) in &graph.edges {
                    println!("  edge {from} -> {to}  {site}");
                }
            }
        }
    }
    if cycles {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn all_crates() -> Result<Vec<PathBuf>, module_graph::Error> {
    let root = module_graph::find_workspace_root()?;
    module_graph::workspace_crates(&root)
}

fn fail(e: &module_graph::Error) -> ExitCode {
    eprintln!("module-graph: {e}");
    ExitCode::from(2)
}
