//! `[redis]`: the store a fleet of replicas shares (`[session] store = "redis"`).

use std::time::Duration;

use super::fields::{duration, p};
use super::file::FileConfig;
use super::{Issues, KeySource, RedisConfig, StoreKind};

/// A request waits on Redis at most this long by default: a lookup on loopback or in one zone
/// takes well under a millisecond.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(5);
const DEFAULT_PREFIX: &str = "sw:";
const DEFAULT_MAX_LOOKUPS_PER_SECOND: u32 = 10_000;

/// The `[redis]` section for `store`, checked against it: present exactly when the store is
/// Redis, with a configured fingerprint key (replicas with random keys fingerprint apart, and
/// share nothing).
pub(super) fn redis(
    issues: &mut Issues,
    raw: &FileConfig,
    store: StoreKind,
    key: &KeySource,
) -> Option<RedisConfig> {
    let path = p("redis");
    let Some(r) = raw.redis.as_ref() else {
        if store == StoreKind::Redis {
            issues.push(
                p("session").key("store"),
                "store = \"redis\" needs a [redis] section with its url",
            );
        }
        return None;
    };
    if store != StoreKind::Redis {
        issues.push(
            path,
            "a [redis] section is used only with [session] store = \"redis\"",
        );
        return None;
    }
    if *key == KeySource::Random {
        issues.push(
            p("session").key("fingerprint_key"),
            "store = \"redis\" needs a fingerprint key every replica shares \
             (fingerprint_key or fingerprint_key_env)",
        );
    }
    let (urls, cluster) = match (&r.url, &r.cluster) {
        (Some(url), None) => (vec![url.clone()], false),
        (None, Some(nodes)) if !nodes.is_empty() => (nodes.clone(), true),
        (Some(_), Some(_)) => {
            issues.push(path.clone().key("cluster"), "give url or cluster, not both");
            (Vec::new(), false)
        }
        _ => {
            issues.push(
                path.clone().key("url"),
                "missing: the server's URL (redis://host:6379 or rediss://host:6380), \
                 or cluster = [the nodes' URLs]",
            );
            (Vec::new(), false)
        }
    };
    for (i, url) in urls.iter().enumerate() {
        let at = if cluster {
            path.clone().key("cluster").index(i)
        } else {
            path.clone().key("url")
        };
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            issues.push(at, "must start with redis:// or rediss:// (TLS)");
        } else if redis::IntoConnectionInfo::into_connection_info(url.as_str()).is_err() {
            // Not the client's message: it may quote the URL, password and all.
            issues.push(
                at,
                "not a Redis URL: write redis://[user:password@]host:port[/db]",
            );
        }
    }
    let password = r
        .password_env
        .as_ref()
        .and_then(|var| match std::env::var(var) {
            Ok(pw) if !pw.is_empty() => Some(pw),
            _ => {
                issues.push(
                    path.clone().key("password_env"),
                    format!("environment variable {var} is not set"),
                );
                None
            }
        });
    let ca = r
        .ca_file
        .as_ref()
        .and_then(|file| match std::fs::read(file) {
            Ok(pem) => Some(pem),
            Err(e) => {
                issues.push(
                    path.clone().key("ca_file"),
                    format!("cannot read {file}: {e}"),
                );
                None
            }
        });
    let max_lookups_per_second = r
        .max_lookups_per_second
        .unwrap_or(DEFAULT_MAX_LOOKUPS_PER_SECOND);
    if max_lookups_per_second == 0 {
        issues.push(
            path.clone().key("max_lookups_per_second"),
            "must be at least 1",
        );
    }
    Some(RedisConfig {
        urls,
        cluster,
        key_prefix: r
            .key_prefix
            .clone()
            .unwrap_or_else(|| DEFAULT_PREFIX.into()),
        timeout: duration(
            issues,
            path.clone().key("timeout"),
            r.timeout.as_deref(),
            DEFAULT_TIMEOUT,
        ),
        password,
        ca,
        max_lookups_per_second,
    })
}
