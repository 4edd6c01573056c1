//! Walks a crate's module tree from its root file and records every path that may name another
//! module of the crate, with the module it is written in.
//!
//! Files are found as rustc finds them: `mod x;` in a `lib.rs`, `main.rs` or `mod.rs` (or in a
//! file loaded through `#[path]`, which rustc treats the same) looks for `x.rs` or `x/mod.rs`
//! beside it; in any other file `m.rs`, under `m/`; an inline `mod a { mod x; }` adds `a/` (or
//! its own `#[path]`) to the directory. Every file is read whatever `#[cfg]` stands on its `mod`
//! (test modules included), so the graph is the strictest one.
//!
//! What is recorded, per module path (`[]` is the crate root):
//! - each leaf of each `use` tree, with the name it binds (the root's bindings are its
//!   re-exports);
//! - each path in code that starts with `crate::`, `$crate::`, `super::` or `self::`;
//! - the names of the items each module defines at its own level, and the bare identifiers each
//!   module uses, so that a glob import of the crate root (`use crate::*`, `use super::*` from a
//!   top-level module) can be resolved to the names it actually uses.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use crate::Error;
use crate::lex::{Kind, Token, tokenize};

/// A module's path from the crate root: `[]` is the root, `["a", "b"]` is `crate::a::b`.
pub(crate) type ModPath = Vec<String>;

/// A path that may name a module of the crate.
#[derive(Debug, Clone)]
pub(crate) struct PathRef {
    /// The module the path is written in.
    pub(crate) module: ModPath,
    /// As written: from `crate`, `super`, `self`, `::` (an extern crate) or, in a `use`, a bare
    /// name; a group's leaf carries its prefix (`use a::{b::c}` gives `a, b, c`).
    pub(crate) segments: Vec<String>,
    /// Whether it ends in `::*`.
    pub(crate) glob: bool,
    /// For a `use` leaf, the name it binds (`as` alias, or the last segment).
    pub(crate) bound: Option<String>,
    /// Index into [`Scan::files`].
    pub(crate) file: usize,
    pub(crate) line: u32,
}

/// Where a bare identifier is first used in a module.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FirstUse {
    pub(crate) file: usize,
    pub(crate) line: u32,
}

/// Everything read from one crate root.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Every file read, in the order read.
    pub(crate) files: Vec<PathBuf>,
    /// The crate's top-level modules (file or inline).
    pub(crate) top_level: BTreeSet<String>,
    /// In reading order, so the first site found for an edge is the earliest in the tree.
    pub(crate) refs: Vec<PathRef>,
    /// The names each module defines or binds at its own level.
    pub(crate) defined: BTreeMap<ModPath, BTreeSet<String>>,
    /// Bare identifiers per module, and whether `::` follows them, with their first use.
    pub(crate) idents: BTreeMap<(ModPath, String, bool), FirstUse>,
}

/// Reads the crate whose root file is `root` (a `lib.rs` or `main.rs`) and every module file
/// below it.
pub(crate) fn scan_crate(root: &Path) -> Result<Scan, Error> {
    let mut walker = Walker {
        scan: Scan::default(),
        visited: HashSet::new(),
    };
    walker.file(root, Vec::new(), true)?;
    Ok(walker.scan)
}

struct Walker {
    scan: Scan,
    /// Files already read: a `#[path]` loop must not recurse for ever.
    visited: HashSet<PathBuf>,
}

/// An inline `mod name { ... }` the cursor is inside.
struct Inline {
    name: String,
    /// What it adds to the directory of the files its `mod x;` declarations load.
    dir: String,
    /// The brace depth inside its body.
    depth: usize,
}

/// The state of reading one file.
struct FileCursor<'t> {
    toks: &'t [Token],
    file: usize,
    path: &'t Path,
    /// The module the file itself is.
    module: ModPath,
    /// Where its `mod x;` declarations look for `x.rs` and `x/mod.rs`.
    child_dir: PathBuf,
    inline: Vec<Inline>,
    depth: usize,
    /// A `#[path = "..."]` waiting for the `mod` it stands on.
    pending_path: Option<String>,
}

impl FileCursor<'_> {
    fn module(&self) -> ModPath {
        let mut m = self.module.clone();
        m.extend(self.inline.iter().map(|i| i.name.clone()));
        m
    }

    fn base_depth(&self) -> usize {
        self.inline.last().map_or(0, |i| i.depth)
    }

    fn tok(&self, i: usize) -> Option<&Token> {
        self.toks.get(i)
    }

    fn ident_at(&self, i: usize) -> Option<&str> {
        self.tok(i).and_then(Token::ident)
    }

    fn punct_at(&self, i: usize, c: char) -> bool {
        self.tok(i).is_some_and(|t| t.is_punct(c))
    }

    fn sep_at(&self, i: usize) -> bool {
        self.tok(i).is_some_and(|t| t.kind == Kind::PathSep)
    }
}

const ITEM_KEYWORDS: &[&str] = &[
    "struct", "enum", "union", "fn", "trait", "type", "const", "static", "mod",
];

impl Walker {
    fn file(&mut self, path: &Path, module: ModPath, mod_rs: bool) -> Result<(), Error> {
        let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if !self.visited.insert(key) {
            return Ok(());
        }
        let source = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let toks = tokenize(&source);
        let file = self.scan.files.len();
        self.scan.files.push(path.to_path_buf());
        let parent = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let child_dir = match (mod_rs, path.file_stem()) {
            (false, Some(stem)) => parent.join(stem),
            _ => parent,
        };
        let mut cur = FileCursor {
            toks: &toks,
            file,
            path,
            module,
            child_dir,
            inline: Vec::new(),
            depth: 0,
            pending_path: None,
        };
        let mut i = 0;
        while i < toks.len() {
            i = self.step(&mut cur, i)?;
        }
        Ok(())
    }

    /// Reads what starts at token `i`; returns where to go on.
    fn step(&mut self, cur: &mut FileCursor<'_>, i: usize) -> Result<usize, Error> {
        let t = &cur.toks[i];
        if let Some(next) = path_attribute(cur, i) {
            return Ok(next);
        }
        if t.is_keyword("mod") {
            if let Some(next) = self.module_declaration(cur, i)? {
                return Ok(next);
            }
        }
        if t.is_keyword("use") && !cur.punct_at(i + 1, '<') {
            return Ok(self.use_declaration(cur, i + 1));
        }
        if let Some(next) = self.code_path(cur, i) {
            return Ok(next);
        }
        match &t.kind {
            Kind::Punct('{') => {
                cur.depth += 1;
                cur.pending_path = None;
            }
            Kind::Punct('}') => {
                if cur.inline.last().is_some_and(|m| m.depth == cur.depth) {
                    cur.inline.pop();
                }
                cur.depth = cur.depth.saturating_sub(1);
                cur.pending_path = None;
            }
            Kind::Punct(';') => cur.pending_path = None,
            Kind::Ident { text, raw } => {
                let text = text.clone();
                if !raw {
                    self.item_definition(cur, i, &text);
                }
                self.bare_ident(cur, i, text);
            }
            _ => {}
        }
        Ok(i + 1)
    }

    /// `mod name;` (reads the file) or `mod name {` (enters it); `None` if this `mod` is neither.
    fn module_declaration(
        &mut self,
        cur: &mut FileCursor<'_>,
        i: usize,
    ) -> Result<Option<usize>, Error> {
        let Some(name) = cur.ident_at(i + 1).map(str::to_owned) else {
            return Ok(None);
        };
        let here = cur.module();
        let line = cur.toks[i].line;
        if cur.punct_at(i + 2, ';') {
            self.define(&here, &name);
            let (path, mod_rs) = module_file(cur, &name, line)?;
            let mut module = here;
            if module.is_empty() {
                self.scan.top_level.insert(name.clone());
            }
            module.push(name);
            self.file(&path, module, mod_rs)?;
            return Ok(Some(i + 3));
        }
        if cur.punct_at(i + 2, '{') {
            self.define(&here, &name);
            if here.is_empty() {
                self.scan.top_level.insert(name.clone());
            }
            cur.depth += 1;
            let dir = cur.pending_path.take().unwrap_or_else(|| name.clone());
            cur.inline.push(Inline {
                name,
                dir,
                depth: cur.depth,
            });
            return Ok(Some(i + 3));
        }
        Ok(None)
    }

    /// The tree after `use` at `i`; returns the index after it.
    fn use_declaration(&mut self, cur: &mut FileCursor<'_>, i: usize) -> usize {
        let mut leaves = Vec::new();
        let next = use_tree(cur.toks, i, &[], &mut leaves);
        let module = cur.module();
        for leaf in leaves {
            if let Some(bound) = &leaf.bound {
                self.define(&module, bound);
            }
            self.scan.refs.push(PathRef {
                module: module.clone(),
                segments: leaf.segments,
                glob: leaf.glob,
                bound: leaf.bound,
                file: cur.file,
                line: leaf.line,
            });
        }
        cur.pending_path = None;
        next
    }

    /// A path in code from `crate::`, `$crate::`, `super::` or `self::`.
    fn code_path(&mut self, cur: &FileCursor<'_>, i: usize) -> Option<usize> {
        let t = &cur.toks[i];
        let starts = ["crate", "super", "self"].iter().any(|w| t.is_keyword(w));
        if !starts || !cur.sep_at(i + 1) || (i > 0 && cur.sep_at(i - 1)) {
            return None;
        }
        // `pub(in crate::a)` limits visibility; it uses nothing from `a`.
        if i >= 2 && cur.toks[i - 1].is_keyword("in") && cur.toks[i - 2].is_punct('(') {
            return None;
        }
        let mut segments = vec![t.ident()?.to_owned()];
        let mut j = i + 1;
        while cur.sep_at(j) {
            let Some(seg) = cur.ident_at(j + 1) else {
                break;
            };
            segments.push(seg.to_owned());
            j += 2;
        }
        self.scan.refs.push(PathRef {
            module: cur.module(),
            segments,
            glob: false,
            bound: None,
            file: cur.file,
            line: t.line,
        });
        Some(j)
    }

    /// `struct Name`, `fn name`, `macro_rules! name`... at the module's own level.
    fn item_definition(&mut self, cur: &FileCursor<'_>, i: usize, word: &str) {
        if cur.depth != cur.base_depth() {
            return;
        }
        let name = if ITEM_KEYWORDS.contains(&word) {
            cur.ident_at(i + 1)
        } else if word == "macro_rules" && cur.punct_at(i + 1, '!') {
            cur.ident_at(i + 2)
        } else {
            None
        };
        if let Some(name) = name.map(str::to_owned) {
            self.define(&cur.module(), &name);
        }
    }

    /// A name not reached through `.` or `::`: one a glob import could have brought in.
    fn bare_ident(&mut self, cur: &FileCursor<'_>, i: usize, name: String) {
        let after_dot_or_sep = i > 0 && (cur.toks[i - 1].is_punct('.') || cur.sep_at(i - 1));
        if after_dot_or_sep || (cur.module.is_empty() && cur.inline.is_empty()) {
            return;
        }
        let line = cur.toks[i].line;
        let key = (cur.module(), name, cur.sep_at(i + 1));
        self.scan.idents.entry(key).or_insert(FirstUse {
            file: cur.file,
            line,
        });
    }

    fn define(&mut self, module: &ModPath, name: &str) {
        self.scan
            .defined
            .entry(module.clone())
            .or_default()
            .insert(name.to_owned());
    }
}

/// `#[path = "..."]` at `i`: remembers it for the next `mod`; returns the index after it.
fn path_attribute(cur: &mut FileCursor<'_>, i: usize) -> Option<usize> {
    if !cur.punct_at(i, '#') || !cur.punct_at(i + 1, '[') || cur.ident_at(i + 2) != Some("path") {
        return None;
    }
    if !cur.punct_at(i + 3, '=') || !cur.punct_at(i + 5, ']') {
        return None;
    }
    let Kind::Str(path) = &cur.tok(i + 4)?.kind else {
        return None;
    };
    cur.pending_path = Some(path.clone());
    Some(i + 6)
}

/// The file a `mod name;` loads, and whether it counts as a `mod.rs` for its own declarations.
fn module_file(cur: &mut FileCursor<'_>, name: &str, line: u32) -> Result<(PathBuf, bool), Error> {
    let mut dir = cur.child_dir.clone();
    dir.extend(cur.inline.iter().map(|m| m.dir.as_str()));
    if let Some(attr) = cur.pending_path.take() {
        // Outside inline modules `#[path]` is relative to the declaring file's own directory.
        let base = if cur.inline.is_empty() {
            cur.path.parent().unwrap_or(Path::new("")).to_path_buf()
        } else {
            dir
        };
        let path = base.join(attr);
        return if path.is_file() {
            Ok((path, true))
        } else {
            Err(not_found(cur, name, line, vec![path]))
        };
    }
    let flat = dir.join(format!("{name}.rs"));
    if flat.is_file() {
        return Ok((flat, false));
    }
    let nested = dir.join(name).join("mod.rs");
    if nested.is_file() {
        return Ok((nested, true));
    }
    Err(not_found(cur, name, line, vec![flat, nested]))
}

fn not_found(cur: &FileCursor<'_>, name: &str, line: u32, tried: Vec<PathBuf>) -> Error {
    Error::ModuleNotFound {
        module: name.to_owned(),
        declared_in: cur.path.to_path_buf(),
        line,
        tried,
    }
}

/// One leaf of a `use` tree.
struct UseLeaf {
    segments: Vec<String>,
    glob: bool,
    bound: Option<String>,
    line: u32,
}

/// Parses the use tree at `i` under `prefix` into `out`; returns the index after it. Malformed
/// input ends the tree where it stops making sense, and the caller reads on from there.
fn use_tree(toks: &[Token], mut i: usize, prefix: &[String], out: &mut Vec<UseLeaf>) -> usize {
    let Some(first) = toks.get(i) else {
        return i;
    };
    let line = first.line;
    let mut segments = prefix.to_vec();
    if first.kind == Kind::PathSep {
        segments.push("::".to_owned());
        i += 1;
    }
    loop {
        let Some(t) = toks.get(i) else {
            return i;
        };
        match &t.kind {
            Kind::Ident { text, .. } => {
                let name = text.clone();
                i += 1;
                if toks.get(i).is_some_and(|t| t.kind == Kind::PathSep) {
                    segments.push(name);
                    i += 1;
                    continue;
                }
                let alias = if toks.get(i).is_some_and(|t| t.is_keyword("as")) {
                    i += 1;
                    let alias = toks.get(i).and_then(Token::ident).map(str::to_owned);
                    i += 1;
                    alias
                } else {
                    None
                };
                // `a::{self}` is `a` itself.
                let bound = if name == "self" && !segments.is_empty() {
                    alias.or_else(|| segments.last().cloned())
                } else {
                    segments.push(name.clone());
                    alias.or(Some(name))
                };
                out.push(UseLeaf {
                    segments,
                    glob: false,
                    bound,
                    line,
                });
                return i;
            }
            Kind::Punct('*') => {
                out.push(UseLeaf {
                    segments,
                    glob: true,
                    bound: None,
                    line,
                });
                return i + 1;
            }
            Kind::Punct('{') => {
                i += 1;
                loop {
                    match toks.get(i).map(|t| &t.kind) {
                        Some(Kind::Punct('}')) => return i + 1,
                        Some(Kind::Punct(',')) => i += 1,
                        None => return i,
                        Some(_) => {
                            let next = use_tree(toks, i, &segments, out);
                            if next == i {
                                return i;
                            }
                            i = next;
                        }
                    }
                }
            }
            _ => return i,
        }
    }
}
