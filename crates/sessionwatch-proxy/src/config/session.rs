//! `[session]`: the profile (preset, cookies, paths, markers, idle timeout), the table, the
//! fingerprint key and the affinity cookie, with the shared store's section checked against them.

use http::{HeaderName, StatusCode};
use sessionwatch_core::{CookieSpec, Framework, Marker, SessionProfile};

use super::fields::{affinity_cookie, duration, one_of, p, required};
use super::file::FileConfig;
use super::{Issues, KeySource, SessionConfig, StoreKind};

pub(super) fn session(issues: &mut Issues, raw: &FileConfig) -> Option<SessionConfig> {
    let s = raw.session.as_ref();
    let path = p("session");
    let preset = match s.and_then(|s| s.preset.as_deref()) {
        Some(name) => match Framework::from_name(name) {
            Some(f) => Some(f),
            None => {
                let names: Vec<&str> = Framework::ALL.iter().map(|f| f.name()).collect();
                issues.push(
                    path.clone().key("preset"),
                    format!(
                        "unknown preset {name:?}; expected one of: {}",
                        names.join(", ")
                    ),
                );
                return None;
            }
        },
        None => None,
    };
    let cookies = s.and_then(|s| s.cookies.as_ref());
    let mut profile = match (preset, cookies) {
        (Some(f), None) => SessionProfile::preset(f),
        (preset, Some(cookies)) => {
            let mut specs = Vec::new();
            for (i, c) in cookies.iter().enumerate() {
                let name_path = path.clone().key("cookies").index(i).key("name");
                let Some(name) = required(issues, name_path.clone(), c.name.as_deref()) else {
                    continue;
                };
                if name.is_empty()
                    || name
                        .bytes()
                        .any(|b| b <= b' ' || b >= 0x7f || b"()<>@,;:\\\"/[]?={}".contains(&b))
                {
                    issues.push(name_path, format!("{name:?} is not a valid cookie name"));
                }
                specs.push(CookieSpec::new(name).rotating(c.rotates));
            }
            match preset {
                Some(f) => {
                    let base = SessionProfile::preset(f);
                    SessionProfile::custom(specs)
                        .with_login_paths(base.login_paths().to_vec())
                        .with_logout_paths(base.logout_paths().to_vec())
                        .with_idle_timeout(base.idle_timeout())
                }
                None => SessionProfile::custom(specs),
            }
        }
        (None, None) => SessionProfile::preset(Framework::Php),
    };
    if let Some(paths) = s.and_then(|s| s.login_paths.clone()) {
        profile = profile.with_login_paths(paths);
    }
    if let Some(paths) = s.and_then(|s| s.logout_paths.clone()) {
        profile = profile.with_logout_paths(paths);
    }
    if let Some(text) = s.and_then(|s| s.idle_timeout.as_deref()) {
        let current = profile.idle_timeout();
        profile = profile.with_idle_timeout(duration(
            issues,
            path.clone().key("idle_timeout"),
            Some(text),
            current,
        ));
    }
    let mut marker = Marker::default();
    if let Some(h) = s.and_then(|s| s.marker_header.as_deref()) {
        match HeaderName::from_bytes(h.as_bytes()) {
            Ok(name) => marker.header = Some(name),
            Err(_) => issues.push(
                path.clone().key("marker_header"),
                format!("{h:?} is not a header name"),
            ),
        }
    }
    for (i, code) in s
        .and_then(|s| s.marker_statuses.clone())
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        match StatusCode::from_u16(code) {
            Ok(st) if (200..600).contains(&code) => marker.statuses.push(st),
            _ => issues.push(
                path.clone().key("marker_statuses").index(i),
                format!("{code} is not an HTTP status from 200 to 599"),
            ),
        }
    }
    profile = profile.with_marker(marker);
    if let Err(e) = profile.validate() {
        let field = match e {
            sessionwatch_core::ProfileError::RelativePath(_) => "login_paths",
            sessionwatch_core::ProfileError::ZeroIdleTimeout => "idle_timeout",
            _ => "cookies",
        };
        issues.push(path.clone().key(field), e.to_string());
    }

    let max_sessions = s.and_then(|s| s.max_sessions).unwrap_or(1_000_000);
    if max_sessions == 0 {
        issues.push(path.clone().key("max_sessions"), "must be at least 1");
    }
    let store = one_of(
        issues,
        path.clone().key("store"),
        s.and_then(|s| s.store.as_deref()),
        StoreKind::Moka,
        &[
            ("moka", StoreKind::Moka),
            ("compact", StoreKind::Compact),
            ("redis", StoreKind::Redis),
        ],
    );
    let key = match (
        s.and_then(|s| s.fingerprint_key.as_deref()),
        s.and_then(|s| s.fingerprint_key_env.as_deref()),
    ) {
        (Some(_), Some(_)) => {
            issues.push(
                path.clone().key("fingerprint_key_env"),
                "give fingerprint_key or fingerprint_key_env, not both",
            );
            KeySource::Random
        }
        (Some(k), None) if k.len() < 16 => {
            issues.push(
                path.clone().key("fingerprint_key"),
                "must be at least 16 characters",
            );
            KeySource::Random
        }
        (Some(k), None) => KeySource::Configured(k.as_bytes().to_vec()),
        (None, Some(var)) => match std::env::var(var) {
            Ok(k) if k.len() >= 16 => KeySource::Configured(k.into_bytes()),
            Ok(_) => {
                issues.push(
                    path.clone().key("fingerprint_key_env"),
                    format!("environment variable {var} must hold at least 16 characters"),
                );
                KeySource::Random
            }
            Err(_) => {
                issues.push(
                    path.clone().key("fingerprint_key_env"),
                    format!("environment variable {var} is not set"),
                );
                KeySource::Random
            }
        },
        (None, None) => KeySource::Random,
    };
    let affinity = affinity_cookie(issues, &path, s, &profile, &key);
    let redis = super::store::redis(issues, raw, store, &key);
    Some(SessionConfig {
        profile,
        max_sessions,
        store,
        key,
        affinity,
        redis,
    })
}
