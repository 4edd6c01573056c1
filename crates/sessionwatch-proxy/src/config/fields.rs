//! Readers for one field of the file each: a default when it is absent, a problem pushed (with
//! its path) and the default kept when it is wrong, so that validation goes on and reports
//! everything at once.

use std::net::SocketAddr;
use std::time::Duration;

use super::Issues;
use super::locate::FieldPath;

/// The path of a top-level section.
pub(super) fn p(root: &str) -> FieldPath {
    FieldPath::default().key(root)
}

pub(super) fn duration(
    issues: &mut Issues,
    path: FieldPath,
    value: Option<&str>,
    default: Duration,
) -> Duration {
    let Some(text) = value else {
        return default;
    };
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => {
            issues.push(path, "must be above zero");
            default
        }
        Err(e) => {
            issues.push(path, format!("{e} (write e.g. \"500ms\", \"2s\", \"20m\")"));
            default
        }
    }
}

pub(super) fn address(
    issues: &mut Issues,
    path: FieldPath,
    value: Option<&str>,
    default: &str,
) -> Option<SocketAddr> {
    let text = value.unwrap_or(default);
    match text.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            issues.push(
                path,
                format!("{text:?} is not an IP address and port, e.g. \"127.0.0.1:8080\""),
            );
            None
        }
    }
}

pub(super) fn positive(
    issues: &mut Issues,
    path: FieldPath,
    value: Option<u32>,
    default: u32,
) -> u32 {
    match value {
        Some(0) => {
            issues.push(path, "must be at least 1");
            default
        }
        Some(v) => v,
        None => default,
    }
}

pub(super) fn one_of<T: Copy>(
    issues: &mut Issues,
    path: FieldPath,
    value: Option<&str>,
    default: T,
    choices: &[(&str, T)],
) -> T {
    let Some(text) = value else {
        return default;
    };
    match choices.iter().find(|(name, _)| *name == text) {
        Some((_, v)) => *v,
        None => {
            let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
            issues.push(
                path,
                format!(
                    "unknown value {text:?}; expected one of: {}",
                    names.join(", ")
                ),
            );
            default
        }
    }
}

/// A field the file must give; reported as missing when absent.
pub(super) fn required<'a>(
    issues: &mut Issues,
    path: FieldPath,
    value: Option<&'a str>,
) -> Option<&'a str> {
    if value.is_none() {
        issues.push(path, "required, but missing");
    }
    value
}
