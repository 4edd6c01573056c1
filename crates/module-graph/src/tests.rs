//! The check on small source trees written to a temporary directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{Error, Graph, read_crate};

/// A crate directory under the system temp dir, removed on drop.
struct TempCrate {
    dir: PathBuf,
}

impl TempCrate {
    /// A crate whose `src/` holds `files` (path below `src/`, contents).
    fn new(files: &[(&str, &str)]) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "module-graph-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        for (path, text) in files {
            let path = dir.join("src").join(path);
            std::fs::create_dir_all(path.parent().expect("a file below src/ has a parent"))
                .expect("create the test crate's directories");
            std::fs::write(&path, text).expect("write a test crate file");
        }
        Self { dir }
    }

    fn graph(&self) -> Graph {
        let mut graphs = read_crate(&self.dir).expect("the test crate reads");
        assert_eq!(graphs.len(), 1, "one crate root");
        graphs.remove(0)
    }

    fn file(&self, below_src: &str) -> PathBuf {
        self.dir.join("src").join(below_src)
    }
}

impl Drop for TempCrate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn edges(graph: &Graph) -> Vec<String> {
    graph
        .edges
        .keys()
        .map(|(a, b)| format!("{a} -> {b}"))
        .collect()
}

fn cycles(graph: &Graph) -> Vec<String> {
    graph.cycles().iter().map(ToString::to_string).collect()
}

fn site(graph: &Graph, from: &str, to: &str) -> (PathBuf, u32) {
    let site = &graph.edges[&(from.to_owned(), to.to_owned())];
    (site.file.clone(), site.line)
}

#[test]
fn every_leaf_of_a_use_group_is_an_edge() {
    let c = TempCrate::new(&[
        ("lib.rs", "mod a; mod b; mod c; mod d; mod m;"),
        ("a.rs", ""),
        ("b.rs", "pub mod inner { pub struct T; }"),
        ("c.rs", ""),
        ("d.rs", ""),
        (
            "m.rs",
            "use std::fmt;\nuse crate::{\n    a,\n    b::{inner::T, self},\n};\nuse crate::c as see;\n\
             use crate::{d::*};\n",
        ),
    ]);
    let g = c.graph();
    assert_eq!(edges(&g), ["m -> a", "m -> b", "m -> c", "m -> d"]);
    assert_eq!(site(&g, "m", "a"), (c.file("m.rs"), 3));
    assert_eq!(site(&g, "m", "b"), (c.file("m.rs"), 4));
    assert_eq!(site(&g, "m", "c"), (c.file("m.rs"), 6));
}

#[test]
fn paths_inline_in_code_types_and_macros_are_edges() {
    let c = TempCrate::new(&[
        ("lib.rs", "mod a; mod b; mod c; mod d; mod e; mod m;"),
        ("a.rs", "pub fn f() {}"),
        ("b.rs", "pub struct T;"),
        ("c.rs", "#[macro_export] macro_rules! mac { () => {} }"),
        ("d.rs", ""),
        ("e.rs", ""),
        (
            "m.rs",
            "fn g(x: crate::b::T) -> Vec<crate::e::U> {\n    crate::a::f();\n    \
             crate::c::mac!();\n    todo!()\n}\n\
             macro_rules! local { () => { $crate::d::thing() } }\n\
             pub(crate) fn h() {}\n",
        ),
    ]);
    let g = c.graph();
    assert_eq!(
        edges(&g),
        ["m -> a", "m -> b", "m -> c", "m -> d", "m -> e"]
    );
    assert_eq!(site(&g, "m", "a"), (c.file("m.rs"), 2));
    assert_eq!(site(&g, "m", "d"), (c.file("m.rs"), 6));
}

#[test]
fn super_and_self_resolve_from_the_module_they_are_written_in() {
    let c = TempCrate::new(&[
        (
            "lib.rs",
            "mod a; mod b; mod c; mod d; mod m;\nmod inline_root { use self::super::a; }",
        ),
        ("a.rs", ""),
        ("b.rs", ""),
        ("c.rs", ""),
        ("d.rs", ""),
        // m.rs is not a mod.rs: its children live in m/. m has a child `d` of its own, so a
        // `super::d` or `self::d` that climbed too far would reach the top-level `d`.
        (
            "m.rs",
            "mod d;\nmod sub;\nfn f() { super::a::x(); self::d::y(); }\nmod t { use super::*; }",
        ),
        ("m/d.rs", ""),
        (
            "m/sub.rs",
            "use super::super::b;\nuse super::d::Local;\nfn g() { self::h(); super::super::c::k(); }",
        ),
    ]);
    let g = c.graph();
    assert_eq!(
        edges(&g),
        ["inline_root -> a", "m -> a", "m -> b", "m -> c"]
    );
    assert_eq!(site(&g, "m", "b"), (c.file("m/sub.rs"), 1));
    assert_eq!(site(&g, "m", "c"), (c.file("m/sub.rs"), 3));
}

#[test]
fn a_root_re_export_counts_as_the_module_it_comes_from() {
    let c = TempCrate::new(&[
        (
            "lib.rs",
            "mod config; mod errors; mod glob; mod user;\n\
             pub use config::{Config, Limits as Bounds};\npub use self::errors::Error;\n\
             pub use glob::*;\npub use Config as Settings;\npub const ROOT_ITEM: u8 = 0;",
        ),
        ("config.rs", "pub struct Config; pub struct Limits;"),
        ("errors.rs", "pub struct Error;"),
        (
            "glob.rs",
            "pub fn helper() {}\nimpl X { fn not_exported() {} }",
        ),
        (
            "user.rs",
            "use crate::Config;\nfn f(_: crate::Error) { crate::helper(); }\n\
             fn g(_: super::Bounds, _: crate::Settings) {}\nconst R: u8 = crate::ROOT_ITEM;\n\
             fn h() { crate::not_exported(); }",
        ),
    ]);
    let g = c.graph();
    assert_eq!(
        edges(&g),
        ["user -> config", "user -> errors", "user -> glob"]
    );
    assert_eq!(site(&g, "user", "config"), (c.file("user.rs"), 1));
}

#[test]
fn a_glob_of_the_root_reaches_the_modules_behind_the_names_used() {
    let c = TempCrate::new(&[
        (
            "lib.rs",
            "mod farm; mod node; mod unused; mod tests;\npub use farm::Farm;\npub use unused::Unused;",
        ),
        ("farm.rs", "pub struct Farm;"),
        ("node.rs", "pub fn start() {}"),
        ("unused.rs", "pub struct Unused;"),
        // `node` as a plain variable is not the module; `node::start` is.
        (
            "tests.rs",
            "use crate::*;\nfn t() { let farm = 1; let f = Farm;\n node::start(); }",
        ),
    ]);
    let g = c.graph();
    assert_eq!(edges(&g), ["tests -> farm", "tests -> node"]);
    assert_eq!(site(&g, "tests", "node"), (c.file("tests.rs"), 3));
}

#[test]
fn comments_strings_and_characters_never_count() {
    let c = TempCrate::new(&[
        ("lib.rs", "mod a; mod b; mod c; mod d; mod e; mod f; mod m;"),
        ("a.rs", ""),
        ("b.rs", ""),
        ("c.rs", ""),
        ("d.rs", ""),
        ("e.rs", ""),
        ("f.rs", ""),
        (
            "m.rs",
            "//! Talks about [`crate::a`].\n/// Uses [`crate::b::T`].\n// use crate::c;\n\
             /* crate::d /* nested */ crate::d */\nconst S: &str = \"crate::e::x\";\n\
             const R: &str = r#\"use crate::e; \"quoted\"\"#;\n\
             fn life<'a>(x: &'a str) -> char { let _ = x; '\"' }\nuse crate::f;\n",
        ),
    ]);
    let g = c.graph();
    assert_eq!(edges(&g), ["m -> f"]);
    assert_eq!(site(&g, "m", "f"), (c.file("m.rs"), 8));
}

#[test]
fn a_cycle_of_two_is_found_with_a_site_for_each_edge() {
    let c = TempCrate::new(&[
        ("lib.rs", "mod a; mod b; mod c;"),
        ("a.rs", "use crate::b::B;\npub struct A;"),
        ("b.rs", "pub struct B;\nfn f() -> crate::a::A { todo!() }"),
        ("c.rs", "use crate::a::A;"),
    ]);
    let g = c.graph();
    assert_eq!(cycles(&g), ["a -> b -> a"]);
    let text = crate::render(&g);
    let a = c.file("a.rs").display().to_string();
    let b = c.file("b.rs").display().to_string();
    assert!(text.contains(&format!("a -> b  {a}:1")), "{text}");
    assert!(text.contains(&format!("b -> a  {b}:2")), "{text}");
}

#[test]
fn a_cycle_of_three_is_found() {
    let c = TempCrate::new(&[
        ("lib.rs", "mod a; mod b; mod c; mod d;"),
        ("a.rs", "use crate::b::B;"),
        ("b.rs", "use crate::c::C;"),
        ("c.rs", "use crate::a::A;\nuse crate::d::D;"),
        ("d.rs", ""),
    ]);
    assert_eq!(cycles(&c.graph()), ["a -> b -> c -> a"]);
}

#[test]
fn a_module_using_its_own_children_is_no_cycle() {
    let c = TempCrate::new(&[
        ("lib.rs", "mod a; mod b;"),
        (
            "a/mod.rs",
            "mod x;\nmod y;\nuse crate::a::x::X;\nuse self::y::Y;",
        ),
        (
            "a/x.rs",
            "use crate::a::y::Y;\nuse super::y;\npub struct X;",
        ),
        ("a/y.rs", "use super::x::X;\npub struct Y;"),
        ("b.rs", "use crate::a::X;"),
    ]);
    let g = c.graph();
    assert_eq!(edges(&g), ["b -> a"]);
    assert!(cycles(&g).is_empty());
}

#[test]
fn inline_modules_count_as_their_top_level_module() {
    let c = TempCrate::new(&[
        (
            "lib.rs",
            "mod a { pub mod deep { pub fn f() { crate::b::g(); } } }\nmod b;",
        ),
        ("b.rs", "pub fn g() { crate::a::deep::f(); }"),
    ]);
    let g = c.graph();
    assert_eq!(cycles(&g), ["a -> b -> a"]);
}

#[test]
fn test_code_counts() {
    let c = TempCrate::new(&[
        ("lib.rs", "mod a; mod b;"),
        (
            "a.rs",
            "pub fn f() {}\n#[cfg(test)]\nmod tests { use crate::b::helper; }",
        ),
        ("b.rs", "#[cfg(test)]\npub fn helper() { crate::a::f(); }"),
    ]);
    assert_eq!(cycles(&c.graph()), ["a -> b -> a"]);
}

#[test]
fn path_attributes_and_mod_rs_files_are_followed() {
    let c = TempCrate::new(&[
        (
            "lib.rs",
            "#[path = \"elsewhere/renamed.rs\"]\nmod a;\nmod b;\nmod c;",
        ),
        // A #[path] file is read like a mod.rs: its `mod x;` is beside it.
        ("elsewhere/renamed.rs", "mod x;"),
        ("elsewhere/x.rs", "use crate::b::B;"),
        ("b/mod.rs", "mod inner { #[path = \"n.rs\"] mod n; }"),
        ("b/inner/n.rs", "use crate::c::C;"),
        ("c.rs", ""),
    ]);
    assert_eq!(edges(&c.graph()), ["a -> b", "b -> c"]);
}

#[test]
fn a_missing_module_file_is_an_error_naming_the_declaration() {
    let c = TempCrate::new(&[
        ("lib.rs", "mod present;\n\nmod missing;"),
        ("present.rs", ""),
    ]);
    match read_crate(&c.dir) {
        Err(Error::ModuleNotFound { module, line, .. }) => {
            assert_eq!((module.as_str(), line), ("missing", 3));
        }
        other => panic!("expected a missing module, got {other:?}"),
    }
}

#[test]
fn a_library_and_a_binary_are_two_graphs() {
    let c = TempCrate::new(&[
        ("lib.rs", "mod a;"),
        ("a.rs", ""),
        ("main.rs", "mod cli; mod run;"),
        ("cli.rs", "use crate::run::go;"),
        ("run.rs", "pub fn go() { crate::cli::parse(); }"),
    ]);
    let graphs = read_crate(&c.dir).expect("reads");
    let labels: Vec<&str> = graphs.iter().map(|g| g.label.as_str()).collect();
    let dir = c.dir.display();
    assert_eq!(labels, [format!("{dir} (lib)"), format!("{dir} (bin)")]);
    assert!(cycles(&graphs[0]).is_empty());
    assert_eq!(cycles(&graphs[1]), ["cli -> run -> cli"]);
}

#[test]
fn no_src_is_an_error() {
    let c = TempCrate::new(&[]);
    assert!(matches!(
        read_crate(Path::new(&c.dir)),
        Err(Error::NoRoot { .. })
    ));
}
