//! The configuration file as written: serde structs that mirror the TOML, with no meaning yet.
//! Unknown fields are refused so that a typo is an error rather than a silently ignored line.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub(crate) listen: Option<ListenFile>,
    pub(crate) admin: Option<AdminFile>,
    #[serde(default)]
    pub(crate) backends: Vec<BackendFile>,
    pub(crate) discovery: Option<DiscoveryFile>,
    pub(crate) balance: Option<BalanceFile>,
    pub(crate) upstream: Option<UpstreamFile>,
    pub(crate) session: Option<SessionFile>,
    pub(crate) pin: Option<PinFile>,
    pub(crate) rescue: Option<RescueFile>,
    pub(crate) health: Option<HealthFile>,
    pub(crate) alerts: Option<AlertsFile>,
    pub(crate) incident: Option<IncidentFile>,
    pub(crate) alertmanager: Option<AlertmanagerFile>,
    pub(crate) webhook: Option<SinkFile>,
    pub(crate) redis: Option<RedisFile>,
    pub(crate) drain: Option<super::drain::DrainFile>,
    pub(crate) log: Option<super::log::LogFile>,
    pub(crate) probe: Option<super::probe::ProbeFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenFile {
    pub(crate) address: Option<String>,
    pub(crate) workers: Option<usize>,
    pub(crate) send_timeout: Option<String>,
    pub(crate) max_header_bytes: Option<usize>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) trusted_proxies: Option<Vec<String>>,
    pub(crate) proxy_protocol: Option<bool>,
    pub(crate) tls: Option<super::tls::TlsFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdminFile {
    pub(crate) address: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) token_env: Option<String>,
    pub(crate) open_paths: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackendFile {
    // Required, but optional here so that a missing one is reported with the other problems
    // instead of stopping the check.
    pub(crate) name: Option<String>,
    pub(crate) url: Option<String>,
    pub(crate) weight: Option<u32>,
    /// `host:port`: every A/AAAA address of `host` is a backend on `port`.
    pub(crate) dns: Option<String>,
    /// An SRV name: every target and port it lists is a backend.
    pub(crate) srv: Option<String>,
    pub(crate) refresh: Option<String>,
    pub(crate) resolver: Option<String>,
    /// For an `https://` backend: the name asked for and verified.
    pub(crate) server_name: Option<String>,
    /// For a `dns`/`srv` entry: its backends are reached over TLS.
    pub(crate) tls: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DiscoveryFile {
    pub(crate) resolver: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BalanceFile {
    pub(crate) policy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamFile {
    pub(crate) connect_timeout: Option<String>,
    pub(crate) response_timeout: Option<String>,
    pub(crate) pool_idle_timeout: Option<String>,
    pub(crate) pool_max_idle_per_host: Option<usize>,
    pub(crate) reuse: Option<String>,
    pub(crate) request_body_timeout: Option<String>,
    pub(crate) tls: Option<super::upstream_tls::UpstreamTlsFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CookieFile {
    /// Required (see [`BackendFile`]).
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) rotates: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SessionFile {
    pub(crate) preset: Option<String>,
    pub(crate) cookies: Option<Vec<CookieFile>>,
    pub(crate) login_paths: Option<Vec<String>>,
    pub(crate) logout_paths: Option<Vec<String>>,
    pub(crate) idle_timeout: Option<String>,
    pub(crate) max_sessions: Option<u64>,
    pub(crate) store: Option<String>,
    pub(crate) fingerprint_key: Option<String>,
    pub(crate) fingerprint_key_env: Option<String>,
    pub(crate) marker_header: Option<String>,
    pub(crate) marker_statuses: Option<Vec<u16>>,
    pub(crate) affinity_cookie: Option<bool>,
    pub(crate) affinity_cookie_name: Option<String>,
    pub(crate) affinity_cookie_secure: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PinFile {
    pub(crate) policy: Option<String>,
    pub(crate) when_unhealthy: Option<String>,
    pub(crate) retry_after: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RescueFile {
    pub(crate) enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthFile {
    pub(crate) active: Option<bool>,
    pub(crate) path: Option<String>,
    pub(crate) interval: Option<String>,
    pub(crate) timeout: Option<String>,
    pub(crate) rise: Option<u32>,
    pub(crate) fall: Option<u32>,
    pub(crate) passive_fall: Option<u32>,
    pub(crate) eject_for: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertsFile {
    pub(crate) log_file: Option<String>,
    pub(crate) stdout: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IncidentFile {
    pub(crate) window: Option<String>,
    pub(crate) min_requests: Option<u64>,
    pub(crate) min_resets: Option<u64>,
    pub(crate) threshold: Option<f64>,
    pub(crate) update_every: Option<String>,
    pub(crate) resolve_after: Option<String>,
    pub(crate) max_reset_lines_per_sec: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SinkFile {
    /// Required (see [`BackendFile`]).
    pub(crate) url: Option<String>,
    pub(crate) resend_every: Option<String>,
    pub(crate) timeout: Option<String>,
    /// For an `https://` URL: the roots to trust.
    pub(crate) ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedisFile {
    pub(crate) url: Option<String>,
    pub(crate) cluster: Option<Vec<String>>,
    pub(crate) key_prefix: Option<String>,
    pub(crate) timeout: Option<String>,
    pub(crate) password_env: Option<String>,
    pub(crate) ca_file: Option<String>,
    pub(crate) max_lookups_per_second: Option<u32>,
}

/// `[alertmanager]`: a sink, and how a fleet of replicas shares its one alert.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertmanagerFile {
    /// Required (see [`BackendFile`]).
    pub(crate) url: Option<String>,
    pub(crate) resend_every: Option<String>,
    pub(crate) timeout: Option<String>,
    pub(crate) farm: Option<String>,
    pub(crate) fleet: Option<bool>,
    /// For an `https://` URL: the roots to trust.
    pub(crate) ca_file: Option<String>,
}
