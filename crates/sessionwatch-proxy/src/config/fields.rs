//! Readers for one field of the file each: a default when it is absent, a problem pushed (with
//! its path) and the default kept when it is wrong, so that validation goes on and reports
//! everything at once.

use std::net::SocketAddr;
use std::time::Duration;

use sessionwatch_core::SessionProfile;

use super::file::SessionFile;
use super::locate::FieldPath;
use super::{AffinityCookieConfig, Issues, KeySource};

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

/// `[session] affinity_cookie`, `affinity_cookie_name`, `affinity_cookie_secure`.
pub(super) fn affinity_cookie(
    issues: &mut Issues,
    path: &FieldPath,
    s: Option<&SessionFile>,
    profile: &SessionProfile,
    key: &KeySource,
) -> Option<AffinityCookieConfig> {
    let s = s?;
    let name = s
        .affinity_cookie_name
        .clone()
        .unwrap_or_else(|| "swaff".into());
    let name_path = path.clone().key("affinity_cookie_name");
    // RFC 6265 4.1.1: a cookie name is an RFC 2616 token.
    let is_token = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
    if !is_token {
        issues.push(
            name_path.clone(),
            format!("{name:?} is not a cookie name (letters, digits and !#$%&'*+-.^_`|~)"),
        );
    } else if profile.cookies().iter().any(|c| c.name() == name) {
        issues.push(name_path, format!("{name:?} is a session cookie's name"));
    }
    if !s.affinity_cookie.unwrap_or(false) {
        return None;
    }
    if *key == KeySource::Random {
        issues.push(
            path.clone().key("affinity_cookie"),
            "needs fingerprint_key or fingerprint_key_env: every replica must derive the same key \
             to verify the cookies the others mint",
        );
    }
    Some(AffinityCookieConfig {
        name,
        secure: s.affinity_cookie_secure.unwrap_or(false),
    })
}
