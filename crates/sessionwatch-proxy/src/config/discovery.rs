//! The `[[backends]]` entries that name a DNS record instead of one backend, and the
//! `[discovery]` section's defaults for them:
//!
//! ```toml
//! [discovery]
//! resolver = "10.96.0.10:53"      # optional: the DNS server every entry asks by default
//!
//! [[backends]]
//! dns = "app-headless.shop.svc.cluster.local:8080"   # every A/AAAA address, on port 8080
//! refresh = "5s"                  # optional, the default
//!
//! [[backends]]
//! srv = "_http._tcp.app-headless.shop.svc.cluster.local"  # every SRV target, on its port
//! resolver = "127.0.0.1:5353"     # optional, this entry only
//! ```
//!
//! A discovered backend is named by its address (`10.1.2.7:8080`), so such an entry has no
//! `name` and no `url`. With `tls = true` its backends are reached over TLS (see
//! `upstream_tls`).

use std::time::Duration;

use super::fields::{address, duration, p, positive};
use super::file::{BackendFile, FileConfig};
use super::locate::FieldPath;
use super::upstream_tls::BackendsTls;
use super::{DiscoveryConfig, DnsTarget, Issues};

/// As Kubernetes' CoreDNS cache and NGINX Plus' `resolve` re-resolution, order of magnitude.
const DEFAULT_REFRESH: Duration = Duration::from_secs(5);
/// Below this, a farm of replicas would be a load on its DNS server for nothing.
const MIN_REFRESH: Duration = Duration::from_millis(100);

/// The discovery entries of `raw.backends`, checked.
pub(super) fn entries(issues: &mut Issues, raw: &FileConfig) -> Vec<DiscoveryConfig> {
    let mut tls = BackendsTls::new(raw);
    let default_resolver = raw
        .discovery
        .as_ref()
        .and_then(|d| d.resolver.as_deref())
        .and_then(|r| address(issues, p("discovery").key("resolver"), Some(r), r));
    raw.backends
        .iter()
        .enumerate()
        .filter(|(_, b)| b.dns.is_some() || b.srv.is_some())
        .filter_map(|(i, b)| {
            entry(
                issues,
                p("backends").index(i),
                b,
                default_resolver,
                &mut tls,
            )
        })
        .collect()
}

fn entry(
    issues: &mut Issues,
    path: FieldPath,
    b: &BackendFile,
    default_resolver: Option<std::net::SocketAddr>,
    tls: &mut BackendsTls<'_>,
) -> Option<DiscoveryConfig> {
    let tls = tls.discovered(issues, &path, b);
    if b.name.is_some() {
        issues.push(
            path.clone().key("name"),
            "a backend discovered by DNS is named by its address (e.g. 10.1.2.7:8080); drop name",
        );
    }
    if b.url.is_some() {
        issues.push(
            path.clone().key("url"),
            "give either url (one backend) or dns/srv (the backends a DNS name lists), not both",
        );
    }
    let weight = positive(issues, path.clone().key("weight"), b.weight, 1);
    if weight > 1000 {
        issues.push(path.clone().key("weight"), "must be at most 1000");
    }
    let refresh = duration(
        issues,
        path.clone().key("refresh"),
        b.refresh.as_deref(),
        DEFAULT_REFRESH,
    );
    if refresh < MIN_REFRESH {
        issues.push(path.clone().key("refresh"), "must be at least 100ms");
    }
    let resolver = match b.resolver.as_deref() {
        Some(r) => address(issues, path.clone().key("resolver"), Some(r), r),
        None => default_resolver,
    };
    let (target, text) = match (b.dns.as_deref(), b.srv.as_deref()) {
        (Some(_), Some(_)) => {
            issues.push(
                path.key("srv"),
                "give either dns (A/AAAA records, with a port) or srv (SRV records), not both",
            );
            return None;
        }
        (Some(dns), None) => (host_and_port(issues, path.key("dns"), dns)?, dns),
        (None, Some(srv)) => {
            if !is_dns_name(srv) {
                issues.push(
                    path.key("srv"),
                    format!(
                        "{srv:?} is not a DNS name; write e.g. \"_http._tcp.app.shop.svc.cluster.local\" (the port comes from the records)"
                    ),
                );
                return None;
            }
            (
                DnsTarget::Srv {
                    name: srv.to_owned(),
                },
                srv,
            )
        }
        (None, None) => return None,
    };
    Some(DiscoveryConfig {
        target,
        text: text.to_owned(),
        refresh,
        resolver,
        weight,
        tls,
    })
}

fn host_and_port(issues: &mut Issues, path: FieldPath, text: &str) -> Option<DnsTarget> {
    let parsed = text
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host, port.parse::<u16>().ok().filter(|p| *p != 0)?)))
        .filter(|(host, _)| is_dns_name(host));
    match parsed {
        Some((host, port)) => Some(DnsTarget::Host {
            host: host.to_owned(),
            port,
        }),
        None => {
            issues.push(
                path,
                format!(
                    "{text:?} is not a DNS name and port; write e.g. \"app-headless.shop.svc.cluster.local:8080\" (for SRV records, use srv)"
                ),
            );
            None
        }
    }
}

/// Letters, digits, '-', '_' and '.', in labels of 1 to 63, at most 253 in all.
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}
