//! Backends discovered by DNS: each `[[backends]]` entry with `dns` or `srv` is resolved again
//! every `refresh`, and the farm becomes the configured backends plus every address the entries
//! resolve to now.
//!
//! - An address is a backend named by it (`10.1.2.7:8080`, `[fd00::7]:8080`): every replica that
//!   resolves the same records names the same backends, whatever order the answers came in.
//! - An address seen for the first time gets a new [`BackendId`]; one seen before gets its old
//!   one back (ids are never reused, see [`Backends::add_with_tls`]).
//! - A resolution that fails, times out or returns nothing keeps the entry's last known set:
//!   losing the DNS server must not empty the farm. Failures are logged when the state changes
//!   (not on every refresh) and counted.
//! - [`Discovery::wake`] asks for a resolution now, at most once a second: another replica's
//!   cookie named a backend this one has not resolved yet.
//! - A reload that changes the entries replaces the discovery ([`Discovery::successor`]): the
//!   new one resolves its entries before it takes over ([`Discovery::prime`],
//!   [`Discovery::take_over`]), so the farm never goes without their backends, and an entry
//!   both have that it could not resolve keeps the old one's last known set; the old one is
//!   retired (it publishes nothing more and its tasks end).
//!
//! What a change means for the rest of the proxy (the incident tracker, health checks, alert
//! lines) goes through [`Hooks`], so that the refresh logic is tested here on paused time.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use sessionwatch_core::BackendId;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backends::{Backends, Change, MAX_LIVE};
use crate::config::{DiscoveryConfig, DnsTarget};
use crate::metrics::{DiscoveryMetrics, Metrics};
use crate::upstream::TlsTarget;

/// The longest one resolution may take; past it, it counts as failed.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// The least time between two resolutions of one entry that [`Discovery::wake`] asks for.
const WAKE_GAP: Duration = Duration::from_secs(1);

/// Why a resolution gave no addresses.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResolveError {
    /// The resolver failed.
    #[error("{0}")]
    Failed(String),
    /// The records list no address.
    #[error("no addresses")]
    Empty,
    /// No answer within [`RESOLVE_TIMEOUT`].
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

type Resolving = Pin<Box<dyn Future<Output = Result<Vec<SocketAddr>, ResolveError>> + Send>>;

/// Turns a target into addresses: the system's resolver or a configured server, or a test's.
pub(crate) trait Resolve: Send + Sync + 'static {
    /// The addresses `target` lists now.
    fn resolve(&self, target: &DnsTarget) -> Resolving;
}

/// What the rest of the proxy does about membership.
pub(crate) trait Hooks: Send + Sync + 'static {
    /// `id` is about to join (before it takes traffic): `initial` for the farm the proxy starts
    /// with, which is not news.
    fn joining(&self, id: BackendId, initial: bool);
    /// The farm changed, at the given time (not called for the starting farm).
    fn changed(&self, change: &Change, at: std::time::SystemTime);
}

/// The name of the backend at `addr`.
pub(crate) fn backend_name(addr: SocketAddr) -> String {
    // The socket address' own text: "10.1.2.7:8080", "[fd00::7]:8080".
    addr.to_string()
}

struct Entry {
    config: DiscoveryConfig,
    /// With `tls = true`: one target for all the entry's backends, so they share its sessions.
    tls: Option<Arc<TlsTarget>>,
    resolver: Arc<dyn Resolve>,
    metrics: DiscoveryMetrics,
}

/// Per entry: its last known set, and whether its last resolution succeeded; and the
/// configured backends, which a reload may change.
struct State {
    configured: Vec<BackendId>,
    sets: Vec<Vec<BackendId>>,
    ok: Vec<Option<bool>>,
    refused: bool,
}

/// See the module docs.
pub(crate) struct Discovery {
    backends: Arc<Backends>,
    metrics: Arc<Metrics>,
    hooks: Arc<dyn Hooks>,
    entries: Vec<Entry>,
    state: Mutex<State>,
    wake: Notify,
    /// Turns true when a successor takes over (see [`Discovery::retire`]).
    retired: watch::Sender<bool>,
    /// The resolver given in place of each entry's own (tests), which a successor keeps.
    resolver: Option<Arc<dyn Resolve>>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// Discovery of `configs` into `backends`, whose members now are the configured backends.
    /// `resolver` overrides the resolver each entry would use (tests).
    pub(crate) fn new(
        configs: &[DiscoveryConfig],
        backends: Arc<Backends>,
        metrics: Arc<Metrics>,
        hooks: Arc<dyn Hooks>,
        resolver: Option<Arc<dyn Resolve>>,
    ) -> Self {
        let entries: Vec<Entry> = configs
            .iter()
            .map(|c| Entry {
                resolver: resolver.clone().unwrap_or_else(|| resolver_for(c.resolver)),
                metrics: metrics.discovery(&c.text),
                tls: c.tls.as_ref().map(|t| Arc::new(TlsTarget::new(t))),
                config: c.clone(),
            })
            .collect();
        let configured = backends.live().members.clone();
        let n = entries.len();
        Self {
            backends,
            metrics,
            hooks,
            entries,
            state: Mutex::new(State {
                configured,
                sets: vec![Vec::new(); n],
                ok: vec![None; n],
                refused: false,
            }),
            wake: Notify::new(),
            retired: watch::Sender::new(false),
            resolver,
        }
    }

    /// A discovery of `configs` into the same farm, with the same hooks, to take over from this
    /// one (a reload changed the entries): [`Discovery::prime`] it, then
    /// [`Discovery::take_over`].
    pub(crate) fn successor(&self, configs: &[DiscoveryConfig]) -> Self {
        Self::new(
            configs,
            self.backends.clone(),
            self.metrics.clone(),
            self.hooks.clone(),
            self.resolver.clone(),
        )
    }

    /// Resolve every entry once, keeping what they list without changing the farm: a successor
    /// learns its backends before it takes over, so that the farm never goes without them.
    pub(crate) async fn prime(&self) {
        let rounds = (0..self.entries.len()).map(|i| async move {
            match self.resolve(i).await {
                Ok(addrs) => {
                    let mut st = self.lock();
                    self.record(&mut st, i, addrs);
                }
                Err(e) => self.failed(i, &e),
            }
        });
        futures_util::future::join_all(rounds).await;
    }

    /// Take over the farm from `old`, which is retired (it publishes nothing more and its tasks
    /// end): its configured backends are this one's, and an entry both have that this one could
    /// not resolve keeps `old`'s last known set. Then the farm is published.
    pub(crate) fn take_over(&self, old: &Discovery) {
        let was = old.retire();
        let mut st = self.lock();
        st.configured = was.configured;
        for (i, entry) in self.entries.iter().enumerate() {
            if st.ok[i] == Some(true) {
                continue;
            }
            if let Some(j) = old.entries.iter().position(|e| e.config == entry.config) {
                st.sets[i] = was.sets[j].clone();
            }
        }
        self.publish(st, false, "configuration");
    }

    /// Stop: publish nothing more, end the tasks. Returns the last state, for a successor.
    fn retire(&self) -> State {
        let st = self.lock();
        self.retired.send_replace(true);
        State {
            configured: st.configured.clone(),
            sets: st.sets.clone(),
            ok: st.ok.clone(),
            refused: st.refused,
        }
    }

    /// Resolve every entry once, together, for the farm the proxy starts with.
    pub(crate) async fn resolve_all(&self) {
        let rounds = (0..self.entries.len()).map(|i| self.refresh(i, true));
        futures_util::future::join_all(rounds).await;
    }

    /// Ask every entry to resolve again now (at most once a second each).
    pub(crate) fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// Re-resolve every entry on its schedule until `shutdown` turns true.
    pub(crate) fn spawn(self: &Arc<Self>, shutdown: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        (0..self.entries.len())
            .map(|i| {
                let this = self.clone();
                let mut shutdown = shutdown.clone();
                let mut retired = self.retired.subscribe();
                tokio::spawn(async move {
                    tokio::select! {
                        () = this.run(i) => {}
                        _ = crate::shutdown::stopped(&mut shutdown) => {}
                        _ = crate::shutdown::stopped(&mut retired) => {}
                    }
                })
            })
            .collect()
    }

    async fn run(&self, i: usize) {
        let refresh = self.entries[i].config.refresh;
        let mut last = Instant::now();
        loop {
            // Registered before the sleep, so that a wake during a resolution is not lost.
            let woken = self.wake.notified();
            tokio::select! {
                () = tokio::time::sleep_until(last + refresh) => {}
                () = woken => {
                    tokio::time::sleep_until(last + WAKE_GAP).await;
                }
            }
            last = Instant::now();
            self.refresh(i, false).await;
        }
    }

    /// Resolve entry `i` and apply what it says.
    async fn refresh(&self, i: usize, initial: bool) {
        match self.resolve(i).await {
            Ok(addrs) => self.apply(i, addrs, initial),
            Err(e) => self.failed(i, &e),
        }
    }

    /// What entry `i` lists now.
    async fn resolve(&self, i: usize) -> Result<Vec<SocketAddr>, ResolveError> {
        let entry = &self.entries[i];
        match tokio::time::timeout(
            RESOLVE_TIMEOUT,
            entry.resolver.resolve(&entry.config.target),
        )
        .await
        {
            Ok(Ok(addrs)) if addrs.is_empty() => Err(ResolveError::Empty),
            Ok(result) => result,
            Err(_) => Err(ResolveError::Timeout(RESOLVE_TIMEOUT)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Each change under the lock is a few stores; a panic cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn failed(&self, i: usize, e: &ResolveError) {
        let entry = &self.entries[i];
        entry.metrics.failures.increment(1);
        entry.metrics.up.set(0.0);
        let mut st = self.lock();
        if st.ok[i] != Some(false) {
            st.ok[i] = Some(false);
            let kept = st.sets[i].len();
            tracing::warn!(
                entry = entry.config.text,
                error = %e,
                kept,
                "backend discovery failed; keeping the last known backends"
            );
        }
    }

    fn apply(&self, i: usize, addrs: Vec<SocketAddr>, initial: bool) {
        let mut st = self.lock();
        self.record(&mut st, i, addrs);
        self.publish(st, initial, &self.entries[i].config.text);
    }

    /// Make `addrs` entry `i`'s set (each a known backend from now on), without publishing it.
    fn record(&self, st: &mut State, i: usize, mut addrs: Vec<SocketAddr>) {
        let entry = &self.entries[i];
        entry.metrics.up.set(1.0);
        // The order of the answer is the resolver's, not the farm's.
        addrs.sort_unstable();
        addrs.dedup();
        entry.metrics.addresses.set(addrs.len() as f64);
        if st.ok[i] == Some(false) {
            tracing::info!(
                entry = entry.config.text,
                "backend discovery resolves again"
            );
        }
        st.ok[i] = Some(true);
        let mut ids = Vec::with_capacity(addrs.len());
        let mut refused = false;
        for addr in addrs {
            let name = backend_name(addr);
            let Ok(authority) = name.parse() else {
                continue;
            };
            let tls = entry.tls.clone();
            match self
                .backends
                .add_with_tls(&name, authority, entry.config.weight, tls)
            {
                Ok(id) => {
                    self.metrics.add_backend(id, &name);
                    ids.push(id);
                }
                Err(e) => {
                    self.metrics.backends_refused.increment(1);
                    if !st.refused {
                        tracing::error!(backend = name, error = %e, "discovered backend refused");
                    }
                    refused = true;
                }
            }
        }
        st.refused = refused;
        st.sets[i] = ids;
    }

    /// Make `configured` the farm's configured backends (a reload changed them), beside the
    /// discovered ones, which stay.
    pub(crate) fn set_configured(&self, configured: Vec<BackendId>) {
        let mut st = self.lock();
        st.configured = configured;
        self.publish(st, false, "configuration");
    }

    /// Make the farm the configured backends and every entry's last known set, and tell what
    /// changed (`why`: the entry that resolved, for the log).
    fn publish(&self, st: std::sync::MutexGuard<'_, State>, initial: bool, why: &str) {
        // A resolution that ends after a successor took over must not undo its farm.
        if *self.retired.borrow() {
            return;
        }
        let mut members: Vec<BackendId> = st.configured.clone();
        for id in st.sets.iter().flatten() {
            if !members.contains(id) {
                members.push(*id);
            }
        }
        if members.len() > MAX_LIVE {
            tracing::error!(
                members = members.len(),
                "more than {MAX_LIVE} backends discovered; the farm keeps the first {MAX_LIVE}"
            );
            members.truncate(MAX_LIVE);
        }
        for id in &members {
            if self.backends.get(*id).is_some_and(|b| !b.is_member()) {
                self.hooks.joining(*id, initial);
            }
        }
        let change = self.backends.set_members(&members);
        let live = self.backends.live().members.len();
        self.metrics.backends_live.set(live as f64);
        self.metrics
            .backends_left
            .set(self.backends.known().count().saturating_sub(live) as f64);
        drop(st);
        if initial || (change.joined.is_empty() && change.left.is_empty()) {
            return;
        }
        for id in &change.joined {
            tracing::info!(
                backend = self.backends.name(*id),
                target = why,
                "backend joined"
            );
        }
        for id in &change.left {
            tracing::info!(
                backend = self.backends.name(*id),
                target = why,
                "backend left"
            );
        }
        self.metrics.backend_changes[0].increment(change.joined.len() as u64);
        self.metrics.backend_changes[1].increment(change.left.len() as u64);
        self.hooks.changed(&change, std::time::SystemTime::now());
    }
}

/// The addresses `config` lists now, resolved once as a refresh would (its resolver, the same
/// time limit): for `sessionwatch probe`, which tests the backends the proxy would find.
pub(crate) async fn resolve_once(
    config: &DiscoveryConfig,
) -> Result<Vec<SocketAddr>, ResolveError> {
    let resolving = resolver_for(config.resolver).resolve(&config.target);
    match tokio::time::timeout(RESOLVE_TIMEOUT, resolving).await {
        Ok(Ok(addrs)) if addrs.is_empty() => Err(ResolveError::Empty),
        Ok(found) => found,
        Err(_) => Err(ResolveError::Timeout(RESOLVE_TIMEOUT)),
    }
}

/// The resolver for an entry: the system's, or the server at `server`.
fn resolver_for(server: Option<SocketAddr>) -> Arc<dyn Resolve> {
    match server {
        None => Arc::new(SystemResolver::default()),
        Some(addr) => Arc::new(Hickory::at(addr)),
    }
}

/// The system's resolver: `getaddrinfo` (tokio's `lookup_host`) for A/AAAA, so `/etc/hosts` and
/// the system's search domains apply as for any program; SRV through hickory with the system's
/// `resolv.conf`, made the first time an SRV entry resolves.
#[derive(Default)]
struct SystemResolver {
    srv: std::sync::OnceLock<Result<Hickory, String>>,
}

impl Resolve for SystemResolver {
    fn resolve(&self, target: &DnsTarget) -> Resolving {
        match target.clone() {
            DnsTarget::Host { host, port } => Box::pin(async move {
                tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .map(Iterator::collect)
                    .map_err(|e| ResolveError::Failed(e.to_string()))
            }),
            DnsTarget::Srv { .. } => match self
                .srv
                .get_or_init(|| Hickory::system().map_err(|e| e.to_string()))
            {
                Ok(h) => h.resolve(target),
                Err(e) => Box::pin(std::future::ready(Err(ResolveError::Failed(e.clone())))),
            },
        }
    }
}

/// hickory's resolver, without its cache (each refresh asks the server: the point is to see
/// changes, and a headless Service's records have a short TTL anyway).
#[derive(Clone)]
struct Hickory(TokioResolver);

impl Hickory {
    fn at(server: SocketAddr) -> Self {
        let group = NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
        let config = ResolverConfig::from_parts(None, Vec::new(), group);
        let mut builder =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
        Self::tune(builder.options_mut());
        Self(builder.build())
    }

    fn system() -> Result<Self, hickory_resolver::ResolveError> {
        let mut builder = TokioResolver::builder_tokio()?;
        Self::tune(builder.options_mut());
        Ok(Self(builder.build()))
    }

    fn tune(opts: &mut hickory_resolver::config::ResolverOpts) {
        opts.cache_size = 0;
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 1;
    }

    async fn ips(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let found = self
            .0
            .lookup_ip(host)
            .await
            .map_err(|e| ResolveError::Failed(e.to_string()))?;
        Ok(found.iter().collect())
    }
}

impl Resolve for Hickory {
    fn resolve(&self, target: &DnsTarget) -> Resolving {
        let this = self.clone();
        let target = target.clone();
        Box::pin(async move {
            match target {
                DnsTarget::Host { host, port } => Ok(this
                    .ips(&host)
                    .await?
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect()),
                DnsTarget::Srv { name } => {
                    let records = this
                        .0
                        .srv_lookup(name.as_str())
                        .await
                        .map_err(|e| ResolveError::Failed(e.to_string()))?;
                    let mut addrs = Vec::new();
                    for srv in records.iter() {
                        let target = srv.target().to_ascii();
                        // A target that does not resolve is left out; the others still count.
                        if let Ok(ips) = this.ips(&target).await {
                            addrs.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, srv.port())));
                        }
                    }
                    Ok(addrs)
                }
            }
        })
    }
}

#[cfg(test)]
#[path = "discovery_tests.rs"]
mod tests;
