//! Configuration: the file as written ([`file`]), turned into a typed, validated [`Config`]
//! that the rest of the proxy takes. Every error names the file, the `line:column` and the
//! field path (`backends[1].url`), so `check-config` and `serve` can say exactly what is wrong.

mod admin;
mod discovery;
mod drain;
mod fields;
mod file;
mod forwarded;
mod locate;
mod log;
pub(crate) mod probe;
mod read;
pub(crate) mod reload;
mod session;
mod store;
#[cfg(test)]
mod tests;
mod tls;
mod upstream_tls;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::Authority;
use sessionwatch_core::{IncidentConfig, PinPolicy, SessionProfile};

pub(crate) use admin::AdminAuth;
use validate::from_toml;

pub(crate) use forwarded::{ForwardedConfig, TrustedProxies};
pub(crate) use tls::{TlsConfig, TlsVersion};
pub(crate) use upstream_tls::{BackendTls, TlsClient};

use locate::{FieldPath, line_col, span_of};

/// One backend of the farm.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BackendConfig {
    /// Its name in alerts, logs and metric labels.
    pub name: String,
    /// `host:port` to connect to.
    pub authority: Authority,
    /// Relative share of new traffic.
    pub weight: u32,
    /// For an `https://` backend, how to speak TLS to it.
    pub tls: Option<BackendTls>,
}

/// What a discovered backend set is resolved from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DnsTarget {
    /// Every A and AAAA address of `host`, each on `port`.
    Host {
        /// The name to resolve.
        host: String,
        /// The port every address is reached on.
        port: u16,
    },
    /// Every target of the SRV name, on the port each record gives.
    Srv {
        /// The SRV name (`_http._tcp.app.shop.svc.cluster.local`).
        name: String,
    },
}

/// A `[[backends]]` entry that names a DNS record rather than one backend.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DiscoveryConfig {
    /// What to resolve.
    pub target: DnsTarget,
    /// The target as written (`dns` or `srv`), for logs and the metric label.
    pub text: String,
    /// How often it is resolved again.
    pub refresh: Duration,
    /// The DNS server to ask; `None`: the system's resolver.
    pub resolver: Option<SocketAddr>,
    /// Each discovered backend's share of new traffic.
    pub weight: u32,
    /// With `tls = true`, how to speak TLS to each discovered backend.
    pub tls: Option<BackendTls>,
}

/// How new (unpinned) requests are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BalancePolicy {
    /// In turn, by weight.
    RoundRobin,
    /// The less loaded of two backends picked at random, by in-flight requests over weight.
    LeastRequests,
}

/// What to do with a pinned request whose backend is unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WhenUnhealthy {
    /// Route by the balancer (the user is logged out once) and count `pin_broken`.
    Redistribute,
    /// Answer 503 with `Retry-After`.
    Fail,
}

/// Upstream connection settings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UpstreamConfig {
    /// Time allowed to establish a TCP connection; past it the answer is 502.
    pub connect_timeout: Duration,
    /// Time allowed for the response head once the request is sent; past it the answer is 504.
    pub response_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept per backend.
    pub pool_max_idle_per_host: usize,
    /// Which requests may go on an idle connection another client's request used.
    pub reuse: ReusePolicy,
    /// Time allowed between two reads of a client's request body; past it the answer is 408
    /// and the upstream connection is closed.
    pub request_body_timeout: Duration,
}

/// When a request may be sent on an idle upstream connection that carried another client's
/// request (as HAProxy's `http-reuse`).
///
/// A backend that sends bytes nobody asked for (a late second answer, a body longer than its
/// `Content-Length`) makes the next request on that connection read them as its own answer.
/// Such bytes are caught when they arrive before the connection is reused, and the connection
/// is closed; bytes that arrive just after the next request went out cannot be told from its
/// answer. `Safe` keeps every client's first request off connections other clients used, so a
/// backend cannot hand a new visitor another user's page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReusePolicy {
    /// The first request of a client connection goes on a new upstream connection; later ones
    /// may reuse any idle connection.
    Safe,
    /// Any request may reuse any idle connection (for backends that are trusted to frame their
    /// answers correctly; fewer connections made).
    Always,
}

/// The cap on open client connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectionLimit {
    /// Connections open at once, over all workers.
    pub max: usize,
    /// Whether the file set it (an explicit cap the file-descriptor limit cannot honour is an
    /// error at start; the default is lowered to fit instead).
    pub explicit: bool,
}

/// Where the fingerprint key comes from.
#[derive(Clone, PartialEq)]
pub(crate) enum KeySource {
    /// From the file or the environment.
    Configured(Vec<u8>),
    /// None configured: a random key for this process (fingerprints change on restart).
    Random,
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Configured(_) => f.write_str("Configured(<redacted>)"),
            KeySource::Random => f.write_str("Random"),
        }
    }
}

/// Which table holds session records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreKind {
    /// moka: two LRU caches (probation and presented sessions), idle expiry (about 270 B a
    /// session).
    Moka,
    /// Packed records in sharded maps, each split into probation and presented parts, CLOCK
    /// eviction among the presented (about 70 B a session).
    Compact,
    /// Redis, shared by every replica of a fleet, behind a moka near cache (`[redis]`).
    Redis,
}

/// The shared store (`[redis]`), for `store = "redis"`.
#[derive(Clone, PartialEq)]
pub(crate) struct RedisConfig {
    /// `redis://` or `rediss://` URLs: one server, or the seed nodes of a cluster.
    pub urls: Vec<String>,
    /// Whether `urls` are a Redis Cluster's nodes.
    pub cluster: bool,
    /// Put before every key (keys are the prefix and a 16-byte fingerprint).
    pub key_prefix: String,
    /// The most a request waits on Redis (a lookup, or the write of a session its answer
    /// issued).
    pub timeout: Duration,
    /// From `password_env`.
    pub password: Option<String>,
    /// PEM roots to trust for `rediss://` instead of the system's (`ca_file`).
    pub ca: Option<Vec<u8>>,
    /// Lookups of unknown sessions allowed per second, so made-up cookies cannot flood Redis.
    pub max_lookups_per_second: u32,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("urls", &self.urls.len())
            .field("cluster", &self.cluster)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca", &self.ca.is_some())
            .field("max_lookups_per_second", &self.max_lookups_per_second)
            .finish()
    }
}

/// Session learning settings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SessionConfig {
    /// Cookies, paths, markers and idle timeout.
    pub profile: SessionProfile,
    /// Most sessions tracked at once. A fifth is probation for sessions no client has sent back
    /// yet (what bots and cookie-less floods are handed), where new ones displace the oldest; a
    /// session moves to the rest of the table when a client first presents it, or straight
    /// there when issued on a login path, and only such sessions displace each other there
    /// (`sessionwatch_sessions_evicted_total{kind="presented"}` counts it happening).
    pub max_sessions: u64,
    /// The session table.
    pub store: StoreKind,
    /// The fingerprint key.
    pub key: KeySource,
    /// The signed affinity cookie, when on.
    pub affinity: Option<AffinityCookieConfig>,
    /// The shared store, with `store = "redis"`.
    pub redis: Option<RedisConfig>,
}

/// The signed affinity cookie (`[session] affinity_cookie`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AffinityCookieConfig {
    /// The cookie's name (`swaff` unless configured).
    pub name: String,
    /// Whether it carries `Secure`: set when clients reach the proxy over TLS.
    pub secure: bool,
}

/// Pinning settings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PinConfig {
    /// When sessions are pinned.
    pub policy: PinPolicy,
    /// What happens when the pinned backend is unhealthy.
    pub when_unhealthy: WhenUnhealthy,
    /// `Retry-After` on the 503 of [`WhenUnhealthy::Fail`].
    pub retry_after: Duration,
}

/// Active health checks.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ActiveHealth {
    /// Path requested on each backend.
    pub path: String,
    /// Time between checks.
    pub interval: Duration,
    /// Time allowed per check.
    pub timeout: Duration,
    /// Consecutive successes that bring a backend back.
    pub rise: u32,
    /// Consecutive failures that take it out.
    pub fall: u32,
}

/// Health settings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HealthConfig {
    /// Active checks, if enabled.
    pub active: Option<ActiveHealth>,
    /// Consecutive connect errors or timeouts on live traffic that eject a backend.
    pub passive_fall: u32,
    /// Without active checks, how long a passively ejected backend stays out.
    pub eject_for: Duration,
}

/// Alert log settings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AlertsConfig {
    /// The JSON Lines file.
    pub log_file: Option<PathBuf>,
    /// Also write alert lines to standard output.
    pub stdout: bool,
}

/// An HTTP alert sink.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SinkConfig {
    /// Base URL (Alertmanager) or full URL (webhook).
    pub url: http::Uri,
    /// How often a firing alert is re-sent.
    pub resend_every: Duration,
    /// Time allowed per POST.
    pub timeout: Duration,
    /// For an `https://` URL, the roots to trust.
    pub tls: Option<TlsClient>,
}

/// The Alertmanager sink: where it posts, and what makes the alert the farm's.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AlertmanagerConfig {
    /// Where and how often.
    pub sink: SinkConfig,
    /// The `farm` label: the same on every replica in front of one farm.
    pub farm: String,
    /// Whether other replicas may still see the incident when no shared view can say: then a
    /// replica whose incident closes stops re-sending and lets the alert expire by its `endsAt`,
    /// instead of resolving it for everyone.
    pub fleet: bool,
}

/// The whole, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where clients connect.
    pub(crate) listen: SocketAddr,
    /// Threads serving clients, each with its own event loop, listening socket
    /// (`SO_REUSEPORT`) and upstream connection pool.
    pub(crate) workers: usize,
    /// How long an answer may wait for its next bytes to go out to the client (the client not
    /// reading, or the backend not sending); past it the connection is closed.
    pub(crate) send_timeout: Duration,
    /// The largest request head accepted, on every path (HTTP/1.1 and HTTP/2); larger heads
    /// are answered 431.
    pub(crate) max_header_bytes: usize,
    /// Client connections open at once, over all workers.
    pub(crate) max_connections: ConnectionLimit,
    /// Which peers' forwarded headers are believed, and whether connections start with a
    /// PROXY protocol header.
    pub(crate) forwarded: ForwardedConfig,
    /// TLS termination on the listener (`[listen.tls]`); `None`: plain HTTP.
    pub(crate) tls: Option<TlsConfig>,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`).
    pub(crate) admin: Option<SocketAddr>,
    /// What every admin path but `/healthz` and `/readyz` asks for (`[admin] token`).
    pub(crate) admin_auth: Option<AdminAuth>,
    /// The farm's configured backends.
    pub(crate) backends: Vec<BackendConfig>,
    /// The farm's discovered backends: the entries that name DNS records.
    pub(crate) discovery: Vec<DiscoveryConfig>,
    /// Balancing policy.
    pub(crate) balance: BalancePolicy,
    /// Upstream connections.
    pub(crate) upstream: UpstreamConfig,
    /// Session learning.
    pub(crate) session: SessionConfig,
    /// Pinning.
    pub(crate) pin: PinConfig,
    /// Replay lost GET/HEAD requests on the issuer.
    pub(crate) rescue: bool,
    /// Health checks.
    pub(crate) health: HealthConfig,
    /// Alert log.
    pub(crate) alerts: AlertsConfig,
    /// Incident detection.
    pub(crate) incident: IncidentConfig,
    /// Alertmanager v2 sink.
    pub(crate) alertmanager: Option<AlertmanagerConfig>,
    /// Generic JSON webhook sink.
    pub(crate) webhook: Option<SinkConfig>,
    /// How a stopping proxy drains (`[drain]`).
    pub(crate) drain: crate::shutdown::DrainTimes,
    /// One log event a request (`[log] access`).
    pub(crate) access_log: bool,
    /// The deploy gate's settings (`[probe]`), for `sessionwatch probe` and `POST /probe`.
    pub(crate) probe: Option<probe::ProbeConfig>,
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigIssue {
    /// 1-based line, if the problem has a place in the file.
    pub line: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
    /// Field path, e.g. `backends[1].url` (empty for the whole file).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// A configuration that cannot be used: every problem found, each with its place. It displays
/// as one problem a line, `file:line:column: field: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    /// The file, as given.
    pub(crate) file: PathBuf,
    /// The problems.
    pub(crate) issues: Vec<ConfigIssue>,
}

impl ConfigError {
    fn render(&self) -> String {
        let mut out = String::new();
        for (n, issue) in self.issues.iter().enumerate() {
            if n > 0 {
                out.push('\n');
            }
            out.push_str(&self.file.display().to_string());
            if let (Some(l), Some(c)) = (issue.line, issue.column) {
                out.push_str(&format!(":{l}:{c}"));
            }
            out.push_str(": ");
            if !issue.field.is_empty() {
                out.push_str(&issue.field);
                out.push_str(": ");
            }
            out.push_str(&issue.message);
        }
        out
    }

    /// A single problem with no place (the file cannot be read).
    pub(crate) fn whole_file(file: &Path, message: String) -> Self {
        Self {
            file: file.to_owned(),
            issues: vec![ConfigIssue {
                line: None,
                column: None,
                field: String::new(),
                message,
            }],
        }
    }
}

/// Problems found while validating, each with its field path; placed in the file afterwards.
#[derive(Debug, Default)]
pub(crate) struct Issues(Vec<(FieldPath, String)>);

impl Issues {
    pub(crate) fn push(&mut self, path: FieldPath, message: impl Into<String>) {
        self.0.push((path, message.into()));
    }

    /// Each problem with its `line:column` in `src`.
    fn place(self, src: &str) -> Vec<ConfigIssue> {
        self.0
            .into_iter()
            .map(|(path, message)| {
                let (line, column) = match span_of(src, &path) {
                    Some(span) => {
                        let (l, c) = line_col(src, span.start);
                        (Some(l), Some(c))
                    }
                    None => (None, None),
                };
                ConfigIssue {
                    line,
                    column,
                    field: path.to_string(),
                    message,
                }
            })
            .collect()
    }
}

impl Config {
    /// What is valid but likely a mistake, one sentence each (`check-config` prints them,
    /// `serve` logs them).
    pub fn warnings(&self) -> Vec<String> {
        admin::warnings(self.admin, self.admin_auth.as_ref())
    }

    /// Read and validate the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let src = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::whole_file(path, format!("cannot read: {e}")))?;
        Self::parse(&src, path)
    }

    /// Validate configuration text; `file` is only used in error messages.
    ///
    /// Every problem is reported, not just the first: unknown and mistyped fields, then every
    /// value that fails validation, in file order. Only a syntax error stops the check early.
    pub fn parse(src: &str, file: &Path) -> Result<Config, ConfigError> {
        let (raw, mut issues) = read::read(src);
        let validated = match raw {
            Some(raw) => from_toml(raw),
            None => Err(Issues::default()),
        };
        match validated {
            Ok(config) if issues.is_empty() => return Ok(config),
            Ok(_) => {}
            Err(more) => {
                // A field refused while reading was left out, so validation may call it missing:
                // one problem per field, the first found.
                let refused: Vec<String> = issues.iter().map(|i| i.field.clone()).collect();
                issues.extend(
                    more.place(src)
                        .into_iter()
                        .filter(|i| !refused.contains(&i.field)),
                );
            }
        }
        // File order; problems with no place (a missing section) last.
        issues.sort_by_key(|i| (i.line.is_none(), i.line, i.column));
        Err(ConfigError {
            file: file.to_owned(),
            issues,
        })
    }
}
