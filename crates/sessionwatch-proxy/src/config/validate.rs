//! From the file as written to a [`Config`]: defaults filled in, every value checked, every
//! problem collected (not just the first) with its field path.

use std::path::PathBuf;
use std::time::Duration;

use http::Uri;
use sessionwatch_core::{IncidentConfig, PinPolicy};

use super::fields::{address, duration, one_of, p, positive, required};
use super::file::{AlertmanagerFile, FileConfig, SinkFile};
use super::{
    ActiveHealth, AlertmanagerConfig, AlertsConfig, BackendConfig, BalancePolicy, Config,
    ConnectionLimit, HealthConfig, Issues, PinConfig, ReusePolicy, SinkConfig, UpstreamConfig,
    WhenUnhealthy,
};

/// As NGINX's `send_timeout`.
const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// As NGINX's `large_client_header_buffers` (4 x 8k): room for big cookies, small enough that a
/// connection's buffer stays modest.
const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// hyper cannot read with a smaller buffer; offsets into a head must fit a `u16`.
const HEADER_BYTES_RANGE: std::ops::RangeInclusive<usize> = 8 * 1024..=u16::MAX as usize;
/// As HAProxy's `maxconn` default order of magnitude; lowered at start to fit the
/// file-descriptor limit when not set explicitly.
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

pub(crate) fn from_toml(raw: FileConfig) -> Result<Config, Issues> {
    let mut issues = Issues::default();

    let listen = address(
        &mut issues,
        p("listen").key("address"),
        raw.listen.as_ref().and_then(|l| l.address.as_deref()),
        "127.0.0.1:8080",
    );
    let admin = match raw.admin.as_ref() {
        Some(a) => address(
            &mut issues,
            p("admin").key("address"),
            a.address.as_deref(),
            "127.0.0.1:9090",
        ),
        None => None,
    };
    let admin_auth = super::admin::token(&mut issues, raw.admin.as_ref());

    if let (Some(listen), Some(admin)) = (listen, admin)
        && clash(listen, admin)
    {
        issues.push(
            p("admin").key("address"),
            format!("{admin} is the traffic listener's address too (listen.address = {listen}): give the admin listener a port of its own"),
        );
    }

    let backends = backends(&mut issues, &raw);
    let discovery = super::discovery::entries(&mut issues, &raw);
    let balance = one_of(
        &mut issues,
        p("balance").key("policy"),
        raw.balance.as_ref().and_then(|b| b.policy.as_deref()),
        BalancePolicy::RoundRobin,
        &[
            ("round_robin", BalancePolicy::RoundRobin),
            ("least_requests", BalancePolicy::LeastRequests),
        ],
    );

    let upstream = upstream(&mut issues, &raw);

    let session = super::session::session(&mut issues, &raw);

    let pin_file = raw.pin.as_ref();
    let pin = PinConfig {
        policy: one_of(
            &mut issues,
            p("pin").key("policy"),
            pin_file.and_then(|x| x.policy.as_deref()),
            PinPolicy::Off,
            &PinPolicy::ALL.map(|policy| (policy.as_str(), policy)),
        ),
        when_unhealthy: one_of(
            &mut issues,
            p("pin").key("when_unhealthy"),
            pin_file.and_then(|x| x.when_unhealthy.as_deref()),
            WhenUnhealthy::Redistribute,
            &[
                ("redistribute", WhenUnhealthy::Redistribute),
                ("fail", WhenUnhealthy::Fail),
            ],
        ),
        retry_after: duration(
            &mut issues,
            p("pin").key("retry_after"),
            pin_file.and_then(|x| x.retry_after.as_deref()),
            Duration::from_secs(5),
        ),
    };
    let rescue = raw.rescue.as_ref().and_then(|r| r.enabled).unwrap_or(false);

    let h = raw.health.as_ref();
    let active = if h.and_then(|h| h.active).unwrap_or(true) {
        let path = h
            .and_then(|h| h.path.clone())
            .unwrap_or_else(|| "/health".to_owned());
        if !path.starts_with('/') {
            issues.push(p("health").key("path"), "must start with '/'");
        }
        Some(ActiveHealth {
            path,
            interval: duration(
                &mut issues,
                p("health").key("interval"),
                h.and_then(|h| h.interval.as_deref()),
                Duration::from_secs(2),
            ),
            timeout: duration(
                &mut issues,
                p("health").key("timeout"),
                h.and_then(|h| h.timeout.as_deref()),
                Duration::from_secs(1),
            ),
            rise: positive(
                &mut issues,
                p("health").key("rise"),
                h.and_then(|h| h.rise),
                2,
            ),
            fall: positive(
                &mut issues,
                p("health").key("fall"),
                h.and_then(|h| h.fall),
                3,
            ),
        })
    } else {
        None
    };
    let health = HealthConfig {
        active,
        passive_fall: positive(
            &mut issues,
            p("health").key("passive_fall"),
            h.and_then(|h| h.passive_fall),
            3,
        ),
        eject_for: duration(
            &mut issues,
            p("health").key("eject_for"),
            h.and_then(|h| h.eject_for.as_deref()),
            Duration::from_secs(10),
        ),
    };

    let a = raw.alerts.as_ref();
    let alerts = AlertsConfig {
        log_file: match a.map(|a| a.log_file.as_deref()) {
            Some(Some("")) => None,
            Some(Some(path)) => Some(PathBuf::from(path)),
            _ => Some(PathBuf::from("sessionwatch-alerts.jsonl")),
        },
        stdout: a.and_then(|a| a.stdout).unwrap_or(false),
    };

    let incident = incident(&mut issues, &raw);
    let alertmanager = raw
        .alertmanager
        .as_ref()
        .and_then(|s| alertmanager(&mut issues, s));
    let webhook = raw
        .webhook
        .as_ref()
        .and_then(|s| sink(&mut issues, "webhook", s));

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = match raw.listen.as_ref().and_then(|l| l.workers) {
        Some(n) if (1..=256).contains(&n) => n,
        Some(_) => {
            issues.push(p("listen").key("workers"), "must be from 1 to 256");
            cores
        }
        None => cores,
    };
    let send_timeout = duration(
        &mut issues,
        p("listen").key("send_timeout"),
        raw.listen.as_ref().and_then(|l| l.send_timeout.as_deref()),
        DEFAULT_SEND_TIMEOUT,
    );
    let (max_header_bytes, max_connections) = listen_limits(&mut issues, &raw);
    let forwarded = super::forwarded::forwarded(&mut issues, &raw);
    let drain = super::drain::drain(&mut issues, &raw);
    let tls = super::tls::tls(&mut issues, &raw);
    let probe = super::probe::probe(&mut issues, &raw, session.as_ref().map(|s| &s.profile));
    let mut session = session;
    if let Some(affinity) = session.as_mut().and_then(|s| s.affinity.as_mut()) {
        // Clients that reach the proxy over TLS get a `Secure` cookie unless the file says.
        let said = raw.session.as_ref().and_then(|s| s.affinity_cookie_secure);
        affinity.secure = said.unwrap_or(tls.is_some());
    }
    match (issues.0.is_empty(), listen, session) {
        (true, Some(listen), Some(session)) => Ok(Config {
            listen,
            workers,
            send_timeout,
            max_header_bytes,
            max_connections,
            forwarded,
            tls,
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
            access_log: raw.log.as_ref().and_then(|l| l.access).unwrap_or(false),
            probe,
        }),
        _ => Err(issues),
    }
}

fn backends(issues: &mut Issues, raw: &FileConfig) -> Vec<BackendConfig> {
    if raw.backends.is_empty() {
        issues.push(p("backends"), "at least one backend is needed: [[backends]] name = \"a\" url = \"http://127.0.0.1:8081\", or [[backends]] dns = \"app.example:8080\"");
    }
    if raw.backends.len() > 256 {
        // The incident matrix is backends x backends counters per second of the window.
        issues.push(p("backends"), "at most 256 backends are supported");
    }
    let mut out = Vec::new();
    let mut tls = super::upstream_tls::BackendsTls::new(raw);
    for (i, b) in raw.backends.iter().enumerate() {
        if b.dns.is_some() || b.srv.is_some() {
            // Discovered: checked apart (see `discovery`).
            continue;
        }
        let path = p("backends").index(i);
        for (key, set) in [
            ("refresh", b.refresh.is_some()),
            ("resolver", b.resolver.is_some()),
            ("tls", b.tls.is_some()),
        ] {
            if set {
                issues.push(
                    path.clone().key(key),
                    "only for a backend discovered by DNS (with dns or srv)",
                );
            }
        }
        let name = required(issues, path.clone().key("name"), b.name.as_deref());
        if let Some(name) = name {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                issues.push(
                    path.clone().key("name"),
                    "must be non-empty and use only letters, digits, '-', '_' and '.'",
                );
            }
            if raw.backends[..i]
                .iter()
                .any(|o| o.name.as_deref() == Some(name))
            {
                issues.push(
                    path.clone().key("name"),
                    format!("duplicate backend name {name:?}"),
                );
            }
        }
        let weight = positive(issues, path.clone().key("weight"), b.weight, 1);
        if weight > 1000 {
            issues.push(path.clone().key("weight"), "must be at most 1000");
        }
        let Some(url) = required(issues, path.clone().key("url"), b.url.as_deref()) else {
            continue;
        };
        match url.parse::<Uri>() {
            Ok(uri) => match (uri.scheme_str(), uri.authority(), uri.path()) {
                (Some(scheme @ ("http" | "https")), Some(authority), "" | "/")
                    if authority.port_u16().is_none() =>
                {
                    // An implied port 80 (443) is seldom what a farm listens on, and a typo that
                    // drops the port would send every request to the wrong place.
                    issues.push(
                        path.clone().key("url"),
                        format!(
                            "give the port: {scheme}://{}:PORT",
                            authority
                                .host()
                                .trim_start_matches('[')
                                .trim_end_matches(']')
                        ),
                    )
                }
                (Some(scheme @ ("http" | "https")), Some(authority), "" | "/")
                    if !authority.host().is_empty() =>
                {
                    let backend_tls = if scheme == "https" {
                        tls.https(issues, &path, b, authority)
                    } else {
                        tls.plain(issues, &path, b);
                        None
                    };
                    if let Some(name) = name {
                        out.push(BackendConfig {
                            name: name.to_owned(),
                            authority: authority.clone(),
                            weight,
                            tls: backend_tls,
                        });
                    }
                }
                (Some(scheme @ ("http" | "https")), Some(_), _) => issues.push(
                    path.clone().key("url"),
                    format!("must not have a path: {scheme}://host:port"),
                ),
                _ => issues.push(
                    path.clone().key("url"),
                    format!("{url:?} is not an http://host:port or https://host:port URL"),
                ),
            },
            Err(e) => issues.push(path.clone().key("url"), format!("invalid URL {url:?}: {e}")),
        }
    }
    out
}

fn incident(issues: &mut Issues, raw: &FileConfig) -> IncidentConfig {
    let d = IncidentConfig::default();
    let i = raw.incident.as_ref();
    let path = p("incident");
    let threshold = i.and_then(|i| i.threshold).unwrap_or(d.threshold);
    if !(threshold > 0.0 && threshold <= 1.0) {
        issues.push(
            path.clone().key("threshold"),
            "must be a share above 0 and at most 1, e.g. 0.05",
        );
    }
    IncidentConfig {
        window: duration(
            issues,
            path.clone().key("window"),
            i.and_then(|i| i.window.as_deref()),
            d.window,
        ),
        min_requests: i.and_then(|i| i.min_requests).unwrap_or(d.min_requests),
        min_resets: i.and_then(|i| i.min_resets).unwrap_or(d.min_resets).max(1),
        threshold,
        update_every: duration(
            issues,
            path.clone().key("update_every"),
            i.and_then(|i| i.update_every.as_deref()),
            d.update_every,
        ),
        resolve_after: duration(
            issues,
            path.clone().key("resolve_after"),
            i.and_then(|i| i.resolve_after.as_deref()),
            d.resolve_after,
        ),
        max_reset_lines_per_sec: i
            .and_then(|i| i.max_reset_lines_per_sec)
            .unwrap_or(d.max_reset_lines_per_sec),
    }
}

fn sink(issues: &mut Issues, name: &str, s: &SinkFile) -> Option<SinkConfig> {
    let path = p(name);
    let url = match required(issues, path.clone().key("url"), s.url.as_deref())
        .map(|text| (text, text.parse::<Uri>()))
    {
        None => None,
        Some((_, Ok(u)))
            if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() =>
        {
            Some(u)
        }
        Some((text, Ok(_))) => {
            issues.push(
                path.clone().key("url"),
                format!("{text:?} must be an http:// or https:// URL"),
            );
            None
        }
        Some((text, Err(e))) => {
            issues.push(
                path.clone().key("url"),
                format!("invalid URL {text:?}: {e}"),
            );
            None
        }
    };
    let resend_every = duration(
        issues,
        path.clone().key("resend_every"),
        s.resend_every.as_deref(),
        Duration::from_secs(60),
    );
    let timeout = duration(
        issues,
        path.clone().key("timeout"),
        s.timeout.as_deref(),
        Duration::from_secs(5),
    );
    let https = url
        .as_ref()
        .is_some_and(|u| u.scheme_str() == Some("https"));
    let tls = super::upstream_tls::sink(issues, &path, https, s.ca_file.as_deref());
    if https && tls.is_none() {
        return None;
    }
    url.map(|url| SinkConfig {
        url,
        resend_every,
        timeout,
        tls,
    })
}

/// The `farm` label when none is configured: one farm per Alertmanager needs no setting.
const DEFAULT_FARM: &str = "default";

fn alertmanager(issues: &mut Issues, a: &AlertmanagerFile) -> Option<AlertmanagerConfig> {
    let sink = sink(
        issues,
        "alertmanager",
        &SinkFile {
            url: a.url.clone(),
            resend_every: a.resend_every.clone(),
            timeout: a.timeout.clone(),
            ca_file: a.ca_file.clone(),
        },
    );
    let farm = match a.farm.as_deref() {
        None => Some(DEFAULT_FARM.to_owned()),
        Some(f) if !f.trim().is_empty() && f.trim() == f && f.len() <= 128 => Some(f.to_owned()),
        Some(f) => {
            issues.push(
                p("alertmanager").key("farm"),
                format!("{f:?} must be 1 to 128 bytes, with no space at either end"),
            );
            None
        }
    };
    Some(AlertmanagerConfig {
        sink: sink?,
        farm: farm?,
        fleet: a.fleet.unwrap_or(false),
    })
}

fn upstream(issues: &mut Issues, raw: &FileConfig) -> UpstreamConfig {
    let up = raw.upstream.as_ref();
    UpstreamConfig {
        connect_timeout: duration(
            issues,
            p("upstream").key("connect_timeout"),
            up.and_then(|u| u.connect_timeout.as_deref()),
            Duration::from_secs(2),
        ),
        response_timeout: duration(
            issues,
            p("upstream").key("response_timeout"),
            up.and_then(|u| u.response_timeout.as_deref()),
            Duration::from_secs(30),
        ),
        pool_idle_timeout: duration(
            issues,
            p("upstream").key("pool_idle_timeout"),
            up.and_then(|u| u.pool_idle_timeout.as_deref()),
            Duration::from_secs(90),
        ),
        pool_max_idle_per_host: up.and_then(|u| u.pool_max_idle_per_host).unwrap_or(256),
        reuse: one_of(
            issues,
            p("upstream").key("reuse"),
            up.and_then(|u| u.reuse.as_deref()),
            ReusePolicy::Safe,
            &[("safe", ReusePolicy::Safe), ("always", ReusePolicy::Always)],
        ),
        request_body_timeout: duration(
            issues,
            p("upstream").key("request_body_timeout"),
            up.and_then(|u| u.request_body_timeout.as_deref()),
            Duration::from_secs(10),
        ),
    }
}

/// `listen.max_header_bytes` and `listen.max_connections`.
fn listen_limits(issues: &mut Issues, raw: &FileConfig) -> (usize, ConnectionLimit) {
    let listen_file = raw.listen.as_ref();
    let max_header_bytes = match listen_file.and_then(|l| l.max_header_bytes) {
        Some(n) if HEADER_BYTES_RANGE.contains(&n) => n,
        Some(_) => {
            issues.push(
                p("listen").key("max_header_bytes"),
                format!(
                    "must be from {} to {} bytes",
                    HEADER_BYTES_RANGE.start(),
                    HEADER_BYTES_RANGE.end()
                ),
            );
            DEFAULT_MAX_HEADER_BYTES
        }
        None => DEFAULT_MAX_HEADER_BYTES,
    };
    let max_connections = match listen_file.and_then(|l| l.max_connections) {
        Some(n) if (1..=1_000_000).contains(&n) => ConnectionLimit {
            max: n,
            explicit: true,
        },
        other => {
            if other.is_some() {
                issues.push(
                    p("listen").key("max_connections"),
                    "must be from 1 to 1000000",
                );
            }
            ConnectionLimit {
                max: DEFAULT_MAX_CONNECTIONS,
                explicit: false,
            }
        }
    };
    (max_header_bytes, max_connections)
}

/// Whether two listeners would take the same socket: the same port (not 0, which picks a free
/// one each time) on the same address, or on an address and the wildcard.
fn clash(a: std::net::SocketAddr, b: std::net::SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}
