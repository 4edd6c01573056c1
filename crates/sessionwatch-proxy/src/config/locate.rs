//! Turning byte offsets and field paths of a TOML file into `line:column` for error messages.

use std::ops::Range;

use toml_edit::{Document, Item, Value};

/// One step of a field path: a key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Key(String),
    Index(usize),
}

/// A field path such as `backends[1].url`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldPath(pub(crate) Vec<Step>);

impl FieldPath {
    pub(crate) fn key(mut self, k: &str) -> Self {
        self.0.push(Step::Key(k.to_owned()));
        self
    }

    pub(crate) fn index(mut self, i: usize) -> Self {
        self.0.push(Step::Index(i));
        self
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, step) in self.0.iter().enumerate() {
            match step {
                Step::Key(k) if n == 0 => write!(f, "{k}")?,
                Step::Key(k) => write!(f, ".{k}")?,
                Step::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

/// 1-based line and column of byte `offset` in `src` (columns count characters).
pub(crate) fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// A place in the parsed document: toml_edit hands out items, tables (array-of-tables elements)
/// and values (array elements) as different types.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Table(&'a toml_edit::Table),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(Item::Value(v)) | Node::Value(v) => v.span(),
            Node::Item(Item::Table(t)) | Node::Table(t) => t.span(),
            Node::Item(Item::ArrayOfTables(a)) => a.span(),
            Node::Item(Item::None) => None,
        }
    }

    fn child(self, step: &Step) -> Option<Node<'a>> {
        match (self, step) {
            (Node::Item(Item::Table(t)) | Node::Table(t), Step::Key(k)) => t.get(k).map(Node::Item),
            (
                Node::Item(Item::Value(Value::InlineTable(t))) | Node::Value(Value::InlineTable(t)),
                Step::Key(k),
            ) => t.get(k).map(Node::Value),
            (Node::Item(Item::ArrayOfTables(a)), Step::Index(i)) => a.get(*i).map(Node::Table),
            (
                Node::Item(Item::Value(Value::Array(a))) | Node::Value(Value::Array(a)),
                Step::Index(i),
            ) => a.get(*i).map(Node::Value),
            _ => None,
        }
    }
}

/// The span of the value at `path` (or of the closest enclosing item that exists).
pub(crate) fn span_of(src: &str, path: &FieldPath) -> Option<Range<usize>> {
    let doc = Document::parse(src).ok()?;
    let mut node = Node::Table(doc.as_table());
    let mut best = None;
    for step in &path.0 {
        let Some(next) = node.child(step) else {
            break;
        };
        if let Some(span) = next.span() {
            best = Some(span);
        }
        node = next;
    }
    best
}

/// The field path of the innermost item whose key or value contains byte `offset`.
pub(crate) fn path_at(src: &str, offset: usize) -> FieldPath {
    let Ok(doc) = Document::parse(src) else {
        return FieldPath::default();
    };
    let mut path = FieldPath::default();
    walk_table(doc.as_table(), offset, &mut path);
    path
}

fn contains(span: Option<Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.start <= offset && offset <= s.end)
}

fn walk_table(table: &toml_edit::Table, offset: usize, path: &mut FieldPath) -> bool {
    for (key, item) in table.iter() {
        let key_span = table.key(key).and_then(|k| k.span());
        let here = contains(key_span.clone(), offset);
        match item {
            Item::Table(t) => {
                let mut sub = path.clone().key(key);
                if walk_table(t, offset, &mut sub) {
                    *path = sub;
                    return true;
                }
                if here || contains(t.span(), offset) {
                    *path = path.clone().key(key);
                    return true;
                }
            }
            Item::ArrayOfTables(a) => {
                for (i, t) in a.iter().enumerate() {
                    let mut sub = path.clone().key(key).index(i);
                    if walk_table(t, offset, &mut sub) {
                        *path = sub;
                        return true;
                    }
                    if contains(t.span(), offset) {
                        *path = path.clone().key(key).index(i);
                        return true;
                    }
                }
            }
            Item::Value(v) => {
                if here || contains(v.span(), offset) {
                    *path = path.clone().key(key);
                    walk_value(v, offset, path);
                    return true;
                }
            }
            Item::None => {}
        }
    }
    false
}

fn walk_value(value: &Value, offset: usize, path: &mut FieldPath) {
    match value {
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                if contains(v.span(), offset) {
                    *path = path.clone().index(i);
                    walk_value(v, offset, path);
                    return;
                }
            }
        }
        Value::InlineTable(t) => {
            for (k, v) in t.iter() {
                let key_span = t.key(k).and_then(|key| key.span());
                if contains(key_span, offset) || contains(v.span(), offset) {
                    *path = path.clone().key(k);
                    walk_value(v, offset, path);
                    return;
                }
            }
        }
        _ => {}
    }
}

/// Replace the item at `path` in `text` with spaces, keeping every newline, so that the rest of
/// the document parses as before and every other byte keeps its offset (later errors still point
/// at the right place in the original file). Whether anything was blanked.
pub(crate) fn blank(text: &mut String, path: &FieldPath) -> bool {
    let ranges = match Document::parse(text.as_str()) {
        Ok(doc) => ranges_of(text, doc.as_table(), path),
        Err(_) => return false,
    };
    let mut bytes = std::mem::take(text).into_bytes();
    let mut changed = false;
    for range in ranges {
        for b in bytes.get_mut(range).into_iter().flatten() {
            if !matches!(*b, b'\n' | b'\r' | b' ') {
                *b = b' ';
                changed = true;
            }
        }
    }
    // Only ASCII bytes were written, over whole runs of bytes that began and ended on character
    // boundaries (spans), so the text is still UTF-8; fall back to lossy just in case.
    *text = String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    changed
}

/// The start of the line holding byte `offset`.
fn line_start(src: &str, offset: usize) -> usize {
    src.get(..offset)
        .and_then(|s| s.rfind('\n'))
        .map_or(0, |i| i + 1)
}

/// `range` extended over a `,` that follows it (after blanks), so that removing an array element
/// or inline-table entry does not leave a leading or doubled comma.
fn with_comma(src: &str, range: Range<usize>) -> Range<usize> {
    let rest = src.get(range.end..).unwrap_or("");
    let skipped = rest.len() - rest.trim_start_matches([' ', '\t']).len();
    if rest[skipped..].starts_with(',') {
        range.start..range.end + skipped + 1
    } else {
        range
    }
}

/// Byte ranges that hold the item at `path`: a `key = value` from the start of its line, or a
/// table's header and everything in it.
fn ranges_of(src: &str, root: &toml_edit::Table, path: &FieldPath) -> Vec<Range<usize>> {
    let Some((last, parents)) = path.0.split_last() else {
        return Vec::new();
    };
    let mut node = Node::Table(root);
    for step in parents {
        match node.child(step) {
            Some(next) => node = next,
            None => return Vec::new(),
        }
    }
    match (node, last) {
        (Node::Item(Item::Table(t)) | Node::Table(t), Step::Key(k)) => t
            .get_key_value(k)
            .map(|(key, item)| entry_ranges(src, key, item))
            .unwrap_or_default(),
        (
            Node::Item(Item::Value(Value::InlineTable(t))) | Node::Value(Value::InlineTable(t)),
            Step::Key(k),
        ) => match t.get_key_value(k) {
            Some((key, Item::Value(v))) => match (key.span(), v.span()) {
                (Some(ks), Some(vs)) => vec![with_comma(src, ks.start..vs.end)],
                _ => Vec::new(),
            },
            _ => Vec::new(),
        },
        (Node::Item(Item::ArrayOfTables(a)), Step::Index(i)) => {
            a.get(*i).map(|t| table_ranges(src, t)).unwrap_or_default()
        }
        (
            Node::Item(Item::Value(Value::Array(a))) | Node::Value(Value::Array(a)),
            Step::Index(i),
        ) => a
            .get(*i)
            .and_then(|v| v.span())
            .map(|s| vec![with_comma(src, s)])
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Ranges of one `key = value` (or sub-table) of a standard table.
fn entry_ranges(src: &str, key: &toml_edit::Key, item: &Item) -> Vec<Range<usize>> {
    match item {
        // A key/value pair of a standard table starts its own line (after a dotted prefix,
        // perhaps), so the whole line up to the value's end goes.
        Item::Value(v) => match (key.span(), v.span()) {
            (Some(ks), Some(vs)) => {
                let line = line_start(src, ks.start)..vs.end;
                vec![line]
            }
            _ => Vec::new(),
        },
        Item::Table(t) => table_ranges(src, t),
        Item::ArrayOfTables(a) => a.iter().flat_map(|t| table_ranges(src, t)).collect(),
        Item::None => Vec::new(),
    }
}

/// A table's `[header]` line and every entry in it.
fn table_ranges(src: &str, table: &toml_edit::Table) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    if let Some(span) = table.span().filter(|s| !s.is_empty()) {
        out.push(line_start(src, span.start)..span.end);
    }
    for (k, item) in table.iter() {
        if let Some(key) = table.key(k) {
            out.extend(entry_ranges(src, key, item));
        }
    }
    out
}
