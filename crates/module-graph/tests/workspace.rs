//! No crate of the workspace has an import cycle between its top-level modules.

use std::path::Path;

#[test]
fn no_crate_of_the_workspace_has_a_module_cycle() {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .ancestors()
        .nth(2)
        .expect("crates/module-graph sits two levels below the root");
    let crates = module_graph::workspace_crates(root).expect("the workspace manifest reads");
    // Guards against a listing that silently finds nothing (a moved manifest, a new layout).
    for expected in ["sessionwatch-core", "sessionwatch-tower", "module-graph"] {
        assert!(
            crates.iter().any(|c| c.ends_with(expected)),
            "crates/{expected} missing from {crates:?}"
        );
    }
    let mut report = String::new();
    for dir in &crates {
        let graphs =
            module_graph::read_crate(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for graph in graphs.iter().filter(|g| !g.cycles().is_empty()) {
            report.push_str(&module_graph::render(graph));
        }
    }
    assert!(
        report.is_empty(),
        "import cycles between top-level modules (run `cargo run -p module-graph -- --all`):\n{report}"
    );
}
