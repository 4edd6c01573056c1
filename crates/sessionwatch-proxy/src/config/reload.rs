//! What a running proxy may take from a new configuration, and what it must keep.
//!
//! [`plan`] compares the configuration the proxy runs with a new, validated one and returns the
//! one to run next: the new file's values where they may change live, the old values where they
//! are baked into what was built at start (the listening sockets, the worker threads and their
//! connection pools, the session table and its fingerprint key), and the list of those refused.
//! A refused key does not stop the rest of the reload: each one that is kept is independent of
//! what changes (a new cookie list reads with the old idle timeout as well as with the new), so
//! refusing the whole file would only hold back changes that are safe, such as the backends an
//! operator is adding to take load. Each refusal is reported by its key, never by its value (a
//! fingerprint key is a secret).
//!
//! The `Config` is taken apart field by field, with no `..`: a field added to it does not
//! compile here until someone has decided whether it may change live.

use super::{BackendConfig, Config, SessionConfig};

/// A key the new file changes that the running proxy cannot, and keeps at its old value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    /// The key, as in the file (`listen.address`, `backends[2].url`).
    pub key: String,
    /// What would take it (a restart, mostly).
    pub why: &'static str,
}

/// What a reload does.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// The configuration to run from now: the new one, with every refused key at its old value.
    pub next: Config,
    /// The keys kept at their old value.
    pub refused: Vec<Refused>,
    /// The sections that change live, in file order (empty: nothing to do).
    pub changes: Vec<&'static str>,
}

const RESTART: &str = "it is fixed when the proxy starts; restart to change it";

/// Keep `old` in `new` if they differ, and say so.
fn keep<T: PartialEq + Clone>(refused: &mut Vec<Refused>, key: &str, old: &T, new: &mut T) {
    if old != new {
        refused.push(Refused {
            key: key.to_owned(),
            why: RESTART,
        });
        *new = old.clone();
    }
}

/// See the module docs.
pub(crate) fn plan(old: &Config, mut next: Config) -> Plan {
    let mut refused = Vec::new();
    let mut changes = Vec::new();
    let Config {
        listen,
        workers,
        send_timeout,
        max_header_bytes,
        max_connections,
        forwarded,
        admin,
        admin_auth,
        backends,
        discovery,
        balance,
        upstream,
        session,
        pin,
        rescue,
        health,
        alerts,
        incident,
        alertmanager,
        webhook,
        drain,
        access_log,
        tls,
        probe,
    } = &mut next;
    let r = &mut refused;
    keep(r, "listen.address", &old.listen, listen);
    keep(r, "listen.workers", &old.workers, workers);
    keep(r, "listen.send_timeout", &old.send_timeout, send_timeout);
    keep(
        r,
        "listen.max_header_bytes",
        &old.max_header_bytes,
        max_header_bytes,
    );
    keep(
        r,
        "listen.max_connections",
        &old.max_connections,
        max_connections,
    );
    keep(
        r,
        "listen.trusted_proxies",
        &old.forwarded.trusted,
        &mut forwarded.trusted,
    );
    keep(
        r,
        "listen.proxy_protocol",
        &old.forwarded.proxy_protocol,
        &mut forwarded.proxy_protocol,
    );
    // The certificates' files are read again on their own (`listen/tls`); the table itself,
    // like the listener it configures, is the process's.
    keep(r, "listen.tls", &old.tls, tls);
    keep(r, "admin.address", &old.admin, admin);
    keep(r, "admin.token", &old.admin_auth, admin_auth);
    keep(r, "upstream", &old.upstream, upstream);
    keep(r, "health", &old.health, health);
    keep(r, "drain", &old.drain, drain);
    keep(r, "log.access", &old.access_log, access_log);
    // The admin listener's probe is built with the settings the proxy started with.
    keep(r, "probe", &old.probe, probe);
    keep_sessions(r, &old.session, session);
    keep_addresses(r, &old.backends, backends);

    if old.backends != *backends || old.discovery != *discovery {
        changes.push("backends");
    }
    if old.balance != *balance {
        changes.push("balance");
    }
    if old.session.profile != session.profile {
        changes.push("session");
    }
    if old.session.affinity != session.affinity {
        changes.push("session.affinity_cookie");
    }
    if old.pin != *pin {
        changes.push("pin");
    }
    if old.rescue != *rescue {
        changes.push("rescue");
    }
    if old.incident != *incident {
        changes.push("incident");
    }
    if old.alerts != *alerts {
        changes.push("alerts");
    }
    if old.alertmanager != *alertmanager {
        changes.push("alertmanager");
    }
    if old.webhook != *webhook {
        changes.push("webhook");
    }
    Plan {
        next,
        refused,
        changes,
    }
}

/// The session table and its key are built once: its size, its kind, its idle expiry, the key
/// every fingerprint in it was made with, and the Redis store it shares.
fn keep_sessions(r: &mut Vec<Refused>, old: &SessionConfig, new: &mut SessionConfig) {
    keep(
        r,
        "session.max_sessions",
        &old.max_sessions,
        &mut new.max_sessions,
    );
    keep(r, "session.store", &old.store, &mut new.store);
    keep(r, "session.fingerprint_key", &old.key, &mut new.key);
    keep(r, "redis", &old.redis, &mut new.redis);
    let idle = old.profile.idle_timeout();
    if new.profile.idle_timeout() != idle {
        r.push(Refused {
            key: "session.idle_timeout".into(),
            why: RESTART,
        });
        new.profile = new.profile.clone().with_idle_timeout(idle);
    }
}

/// A backend keeps what it was first known with for the life of the process, its weight aside
/// (its id, its pooled connections and the sessions it issued all hang on the name): a new
/// address (or anything else but the weight) under an old name is refused; under a new name it
/// is a new backend.
fn keep_addresses(r: &mut Vec<Refused>, old: &[BackendConfig], new: &mut [BackendConfig]) {
    for (i, b) in new.iter_mut().enumerate() {
        if let Some(was) = old.iter().find(|o| o.name == b.name) {
            let weight = b.weight;
            let as_before = BackendConfig {
                weight,
                ..was.clone()
            };
            if *b != as_before {
                r.push(Refused {
                    key: format!("backends[{i}].url"),
                    why: "a backend's address is fixed for its name; give the new address a new name",
                });
                *b = as_before;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const BASE: &str = "[listen]\naddress = \"127.0.0.1:8080\"\n\
        [session]\ncookies = [{ name = \"SID\" }]\nfingerprint_key = \"reload-test-key-0123456789\"\n";

    fn config(extra: &str, backends: &[(&str, u16, u32)]) -> Config {
        let mut src = format!("{BASE}{extra}\n");
        for (name, port, weight) in backends {
            src.push_str(&format!(
                "[[backends]]\nname = \"{name}\"\nurl = \"http://127.0.0.1:{port}\"\nweight = {weight}\n"
            ));
        }
        Config::parse(&src, Path::new("reload.toml")).unwrap_or_else(|e| panic!("{e}\n{src}"))
    }

    fn keys(plan: &Plan) -> Vec<&str> {
        plan.refused.iter().map(|r| r.key.as_str()).collect()
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let old = config("", &[("a", 1, 1)]);
        let plan = plan(&old, old.clone());
        assert!(
            plan.refused.is_empty() && plan.changes.is_empty(),
            "{plan:?}"
        );
        assert_eq!(plan.next, old);
    }

    #[test]
    fn backends_weights_policies_thresholds_cookies_and_sinks_change_live() {
        let old = config("", &[("a", 1, 1), ("b", 2, 1)]);
        let new = config(
            "[balance]\npolicy = \"least_requests\"\n[pin]\npolicy = \"learn\"\n\
             [incident]\nthreshold = 0.5\n[webhook]\nurl = \"http://127.0.0.1:9/hook\"\n\
             [rescue]\nenabled = true\n",
            &[("b", 2, 3), ("c", 3, 1)],
        )
        .with_cookies("OTHER");
        let plan = plan(&old, new.clone());
        assert!(plan.refused.is_empty(), "{plan:?}");
        assert_eq!(
            plan.changes,
            [
                "backends", "balance", "session", "pin", "rescue", "incident", "webhook"
            ]
        );
        assert_eq!(plan.next, new);
    }

    #[test]
    fn what_is_fixed_at_start_keeps_its_old_value_by_key_and_the_rest_applies() {
        let old = config("", &[("a", 1, 1)]);
        let mut src = "[listen]\naddress = \"127.0.0.1:9090\"\nworkers = 7\n\
            [admin]\naddress = \"127.0.0.1:9091\"\n\
            [session]\ncookies = [{ name = \"NEW\" }]\nfingerprint_key = \"another-key-0123456789abc\"\n\
            max_sessions = 5000\nstore = \"compact\"\nidle_timeout = \"3m\"\n\
            [incident]\nthreshold = 0.5\n"
            .to_owned();
        src.push_str("[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:7\"\n");
        src.push_str("[[backends]]\nname = \"z\"\nurl = \"http://127.0.0.1:8\"\n");
        let new = Config::parse(&src, Path::new("reload.toml")).unwrap();
        let plan = plan(&old, new);
        assert_eq!(
            keys(&plan),
            [
                "listen.address",
                "listen.workers",
                "admin.address",
                "session.max_sessions",
                "session.store",
                "session.fingerprint_key",
                "session.idle_timeout",
                "backends[0].url",
            ]
        );
        let next = &plan.next;
        assert_eq!(next.listen, old.listen);
        assert_eq!(next.workers, old.workers);
        assert_eq!(next.admin, old.admin);
        assert_eq!(next.session.max_sessions, old.session.max_sessions);
        assert_eq!(next.session.store, old.session.store);
        assert_eq!(next.session.key, old.session.key);
        assert_eq!(
            next.session.profile.idle_timeout(),
            old.session.profile.idle_timeout()
        );
        assert_eq!(next.backends[0].authority, old.backends[0].authority);
        // What may change did.
        assert_eq!(next.session.profile.cookies()[0].name(), "NEW");
        assert_eq!(next.incident.threshold, 0.5);
        assert_eq!(next.backends[1].name, "z");
        assert_eq!(plan.changes, ["backends", "session", "incident"]);
    }

    #[test]
    fn dns_entries_change_live_with_the_backends() {
        let old = config("", &[("a", 1, 1)]);
        let src = format!(
            "{BASE}[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n\
             [[backends]]\nsrv = \"_http._tcp.app.test\"\nresolver = \"127.0.0.1:53\"\n"
        );
        let new = Config::parse(&src, Path::new("reload.toml")).unwrap();
        let plan = plan(&old, new.clone());
        assert!(plan.refused.is_empty(), "{plan:?}");
        assert_eq!(plan.changes, ["backends"]);
        assert_eq!(plan.next.discovery, new.discovery);
    }

    #[test]
    fn a_refusal_never_carries_the_value() {
        let old = config("", &[("a", 1, 1)]);
        let src = BASE.replace("reload-test-key-0123456789", "a-secret-never-logged-0123")
            + "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n";
        let plan = plan(&old, Config::parse(&src, Path::new("reload.toml")).unwrap());
        assert_eq!(keys(&plan), ["session.fingerprint_key"]);
        assert!(!format!("{:?}", plan.refused).contains("a-secret"));
    }

    impl Config {
        fn with_cookies(mut self, name: &str) -> Self {
            let idle = self.session.profile.idle_timeout();
            self.session.profile = sessionwatch_core::SessionProfile::custom(vec![
                sessionwatch_core::CookieSpec::new(name),
            ])
            .with_idle_timeout(idle);
            self
        }
    }
}
