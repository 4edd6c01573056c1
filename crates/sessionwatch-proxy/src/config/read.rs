//! Reading the file structs out of TOML text without stopping at the first unknown or mistyped
//! field: each such field is reported, blanked out of a working copy of the text (offsets kept,
//! so every later error still points into the original file) and the text is read again. Only a
//! syntax error, or a problem with no field to leave out, ends the reading early. Required fields
//! are optional in the file structs, so validation reports a missing one with the rest.

use super::ConfigIssue;
use super::file::FileConfig;
use super::locate::{FieldPath, blank, line_col, path_at};

/// More rounds than any real file has mistakes; bounds the work on a pathological one.
const MAX_ROUNDS: usize = 64;

/// The file structs, if the text could be read into them, and every problem met on the way.
pub(super) fn read(src: &str) -> (Option<FileConfig>, Vec<ConfigIssue>) {
    let mut text = src.to_owned();
    let mut issues = Vec::new();
    let mut blanked: Vec<String> = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let err = match toml::from_str::<FileConfig>(&text) {
            Ok(raw) => return (Some(raw), issues),
            Err(e) => e,
        };
        let (line, column, path) = match err.span() {
            Some(span) => {
                let (l, c) = line_col(src, span.start);
                (Some(l), Some(c), path_at(&text, span.start))
            }
            None => (None, None, FieldPath::default()),
        };
        let message = err.message().trim();
        if let Some(field) = missing_field(message) {
            let path = path.key(field);
            let field = path.to_string();
            // A required field blanked for a bad type in an earlier round: already reported.
            if !blanked.contains(&field) {
                issues.push(ConfigIssue {
                    line,
                    column,
                    field,
                    message: "required, but missing".to_owned(),
                });
            }
            return (None, issues);
        }
        issues.push(ConfigIssue {
            line,
            column,
            field: path.to_string(),
            message: plain(message),
        });
        if path.0.is_empty() || !blank(&mut text, &path) {
            return (None, issues);
        }
        blanked.push(path.to_string());
    }
    (None, issues)
}

/// The field named by serde's "missing field `x`" message.
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
}

/// serde's message without the names of this crate's structs ("expected struct PinFile") or
/// Rust's number types ("expected u32").
fn plain(message: &str) -> String {
    let message = match message.find("struct ") {
        Some(i) => {
            let rest = &message[i + "struct ".len()..];
            let end = rest
                .find(|c: char| !c.is_ascii_alphanumeric())
                .unwrap_or(rest.len());
            format!("{}a table{}", &message[..i], &rest[end..])
        }
        None => message.to_owned(),
    };
    match message.rsplit_once("expected ") {
        Some((head, ty)) => match number_type(ty) {
            Some(plain) => format!("{head}expected {plain}"),
            None => message,
        },
        None => message,
    }
}

/// What a Rust number type accepts, in words.
fn number_type(ty: &str) -> Option<&'static str> {
    Some(match ty {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number, 0 or more",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        _ => return None,
    })
}
