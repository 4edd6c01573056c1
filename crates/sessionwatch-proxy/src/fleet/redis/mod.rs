//! The Redis session store: the records a fleet of replicas shares, behind each replica's near
//! cache (its moka table).
//!
//! - **Lookups** happen only when the near cache misses a session a request carries, at most
//!   once per request, bounded by `redis.timeout`. A fingerprint Redis did not know is not asked
//!   again for a second, and lookups are capped per second, so made-up cookies cannot become a
//!   Redis flood.
//! - **Writes**: a session just issued is written before its answer goes (bounded the same way);
//!   every other change goes to a writer task that sends it in pipelined batches, never on the
//!   request path. Keys are the prefix and the fingerprint; values are [`codec`] records; every
//!   key expires after the session idle timeout, as the near cache's records do.
//! - **Faults**: an error, or three timeouts in a row followed by a ping that fails too, mark
//!   the store degraded (a `store_degraded` line, the `sessionwatch_store_up` gauge at 0): from then on no request
//!   waits on it, and the replica goes on with its near cache. A request waits at most once
//!   however the store fares: one whose lookup timed out does not wait for its own write. A
//!   keeper task pings with backoff; when Redis answers again it writes `store_recovered`, and
//!   writes back, on a connection of its own and in paced batches, the near-cache records Redis
//!   may lack (`SET … NX`: a record another replica wrote meanwhile wins): those used during the
//!   outage, or all of them when Redis lost its data (the replica's marker key, written at
//!   connect time, is gone), so the fleet knows them again.
//!   A Redis that lost its data answers "unknown", which is no verdict: it costs detection of
//!   old sessions on replicas that never saw them, never a wrong one.
//!
//! [`codec`]: crate::fleet::codec
//!
//! The connection ([`link`]), the writer of batches ([`writer`]) and the keeper that pings and
//! recovers ([`keeper`]) are rooms of their own; this one holds the store and its request path.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use metrics::{Counter, Gauge};
use redis::RedisError;
use sessionwatch_core::{Fingerprint, SessionRecord, Timestamp};
use sessionwatch_tower::{BackendDirectory, FleetStore, Found, Lookup, MokaStore, Publish};
use tokio::sync::{Notify, mpsc, watch};

use crate::config::RedisConfig;
use crate::fleet::codec;
use crate::metrics::Metrics;
use crate::report::alert_log::AlertLog;
use crate::report::lines::{AlertLine, LineKind, StoreLine};

/// Pending batched changes; past it, updates are dropped (the write-back on recovery and the
/// next touch cover them).
pub(super) const QUEUE: usize = 65_536;
/// Changes sent in one pipeline.
pub(super) const BATCH: usize = 512;
/// How long the writer gathers changes after the first before it sends them: a pipeline of
/// many rather than a round trip per change.
pub(super) const GATHER: Duration = Duration::from_millis(5);
/// Timeouts in a row that make the keeper ping at once; the store is degraded only if the ping
/// fails too. Requests on a loaded machine can miss a 5 ms deadline together while Redis is
/// fine; a Redis that has stopped answering misses the ping as well.
pub(super) const TIMEOUTS_TO_SUSPECT: u32 = 3;
/// Time allowed for the ping of a store that answers (or did until just now).
pub(super) const PING_TIMEOUT: Duration = Duration::from_millis(250);
/// The pause between two write-back batches after an outage, so that the write-back never
/// crowds out the lookups of live requests.
pub(super) const WRITE_BACK_PACE: Duration = Duration::from_millis(2);
/// Removals kept while the store is down, replayed when it is back.
pub(super) const MAX_PENDING_REMOVALS: usize = 100_000;
/// How long a fingerprint Redis did not know is not asked about again.
pub(super) const UNKNOWN_FOR: Duration = Duration::from_secs(1);
/// Time allowed for a ping, a connection attempt, or a batch (none is on a request's path).
pub(super) const BACKGROUND_TIMEOUT: Duration = Duration::from_secs(1);
/// Backoff between attempts to reach a degraded store.
pub(super) const BACKOFF_FIRST: Duration = Duration::from_millis(50);
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How often a healthy store is pinged, so that an outage is seen without traffic.
pub(super) const PING_EVERY: Duration = Duration::from_secs(1);

mod keeper;
mod link;
mod writer;

pub(crate) use link::Link;
use link::{LocalLink, Target};

/// The store's counters.
struct Counters {
    up: Gauge,
    hit: Counter,
    miss: Counter,
    timeout: Counter,
    error: Counter,
    /// Requests that waited the whole `redis.timeout`, by what they waited on.
    waited_lookup: Counter,
    waited_publish: Counter,
    skipped_down: Counter,
    skipped_capped: Counter,
    skipped_unknown: Counter,
    publish_ok: Counter,
    publish_failed: Counter,
    batch_ok: Counter,
    batch_failed: Counter,
    dropped: Counter,
    outages: Counter,
}

impl Counters {
    fn new(m: &Metrics) -> Self {
        let lookups = |result| m.counter("sessionwatch_store_lookups_total", &[("result", result)]);
        let skipped = |reason| {
            m.counter(
                "sessionwatch_store_lookups_skipped_total",
                &[("reason", reason)],
            )
        };
        let writes = |kind, result| {
            m.counter(
                "sessionwatch_store_writes_total",
                &[("kind", kind), ("result", result)],
            )
        };
        Self {
            up: m.gauge("sessionwatch_store_up"),
            hit: lookups("hit"),
            miss: lookups("miss"),
            timeout: lookups("timeout"),
            error: lookups("error"),
            waited_lookup: m.counter("sessionwatch_store_timeouts_total", &[("op", "lookup")]),
            waited_publish: m.counter("sessionwatch_store_timeouts_total", &[("op", "publish")]),
            skipped_down: skipped("down"),
            skipped_capped: skipped("capped"),
            skipped_unknown: skipped("unknown"),
            publish_ok: writes("publish", "ok"),
            publish_failed: writes("publish", "failed"),
            batch_ok: writes("batch", "ok"),
            batch_failed: writes("batch", "failed"),
            dropped: writes("batch", "dropped"),
            outages: m.counter("sessionwatch_store_outages_total", &[]),
        }
    }
}

/// Lookups allowed per second, counted in the current second.
struct Budget {
    per_second: u32,
    epoch: Instant,
    second: AtomicU64,
    used: AtomicU32,
}

impl Budget {
    fn take(&self) -> bool {
        let now = self.epoch.elapsed().as_secs();
        if self.second.swap(now, Ordering::Relaxed) != now {
            // A new second: a race here lets a few extra lookups through, never fewer.
            self.used.store(0, Ordering::Relaxed);
        }
        self.used.fetch_add(1, Ordering::Relaxed) < self.per_second
    }
}

/// A change for the writer task.
enum Change {
    Put(Fingerprint, SessionRecord),
    Remove(Fingerprint),
}

/// What failed.
enum Fault {
    Timeout,
    Error(RedisError),
}

struct Inner {
    target: Target,
    /// This replica, among those sharing the store.
    replica: u64,
    prefix: Vec<u8>,
    timeout: Duration,
    ttl: Duration,
    link: RwLock<Option<Link>>,
    up: AtomicBool,
    timeouts_in_a_row: AtomicU32,
    down_since: Mutex<Option<Instant>>,
    wake: Notify,
    unknown: moka::sync::Cache<u128, ()>,
    budget: Budget,
    changes: mpsc::Sender<Change>,
    pending_removals: Mutex<Vec<Fingerprint>>,
    issuers: Arc<dyn BackendDirectory>,
    near: Arc<MokaStore>,
    counters: Counters,
    log: AlertLog,
}

/// The fleet's store in Redis; see the module docs.
#[derive(Clone)]
pub(crate) struct RedisStore {
    inner: Arc<Inner>,
    /// A worker's own connection, made on its first request on that worker's runtime, so that
    /// the connection's driver runs on the thread that waits for its answers.
    local: Option<Arc<LocalLink>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("up", &self.inner.up.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// The store, degraded until its keeper has connected: a Redis that is down at start
    /// delays nothing. The keeper and the writer are spawned on the current runtime; their
    /// handles come back with the store.
    pub(crate) fn start(
        config: &RedisConfig,
        ttl: Duration,
        near: Arc<MokaStore>,
        issuers: Arc<dyn BackendDirectory>,
        metrics: &Metrics,
        log: AlertLog,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Self, [tokio::task::JoinHandle<()>; 2]), RedisError> {
        let target = Target::new(config)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let counters = Counters::new(metrics);
        counters.up.set(0.0);
        let inner = Arc::new(Inner {
            target,
            replica: rand::random(),
            prefix: config.key_prefix.clone().into_bytes(),
            timeout: config.timeout,
            ttl,
            link: RwLock::new(None),
            up: AtomicBool::new(false),
            timeouts_in_a_row: AtomicU32::new(0),
            down_since: Mutex::new(None),
            wake: Notify::new(),
            unknown: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(UNKNOWN_FOR)
                .build(),
            budget: Budget {
                per_second: config.max_lookups_per_second,
                epoch: Instant::now(),
                second: AtomicU64::new(0),
                used: AtomicU32::new(0),
            },
            changes: tx,
            pending_removals: Mutex::new(Vec::new()),
            issuers,
            near,
            counters,
            log,
        });
        let tasks = [
            tokio::spawn(keeper::keep(inner.clone(), shutdown.clone())),
            tokio::spawn(writer::write(inner.clone(), rx, shutdown)),
        ];
        Ok((Self { inner, local: None }, tasks))
    }

    /// Whether the store answers now.
    pub(crate) fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    /// The connection, while the store answers.
    pub(crate) fn link(&self) -> Option<Link> {
        self.inner.link()
    }

    /// The connection a request uses, while the store answers: this worker's own once made
    /// (its first use starts making it here, on this thread's runtime), else the shared one.
    fn request_link(&self) -> Option<Link> {
        let Some(local) = &self.local else {
            return self.inner.link();
        };
        if let Some(own) = local.link.get() {
            // The shared connection (and its lock) is not touched once the worker has its own.
            return self.inner.up.load(Ordering::Relaxed).then(|| own.clone());
        }
        let shared = self.inner.link()?;
        if !local.started.swap(true, Ordering::Relaxed)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (inner, local) = (self.inner.clone(), local.clone());
            runtime.spawn(async move {
                match tokio::time::timeout(BACKGROUND_TIMEOUT, inner.target.connect()).await {
                    Ok(Ok(own)) => {
                        let _ = local.link.set(own);
                    }
                    // Tried again on a later request; the shared connection serves meanwhile.
                    _ => local.started.store(false, Ordering::Relaxed),
                }
            });
        }
        Some(shared)
    }

    /// The configured key prefix.
    pub(crate) fn prefix(&self) -> &[u8] {
        &self.inner.prefix
    }
}

impl Inner {
    fn link(&self) -> Option<Link> {
        if !self.up.load(Ordering::Relaxed) {
            return None;
        }
        self.link.read().ok()?.clone()
    }

    fn key(&self, fingerprint: Fingerprint) -> Vec<u8> {
        codec::key(&self.prefix, fingerprint)
    }

    fn px(&self, record: &SessionRecord) -> Option<u64> {
        let idle = Timestamp::now().since(record.last_seen);
        let left = self.ttl.checked_sub(idle)?;
        u64::try_from(left.as_millis()).ok().filter(|ms| *ms > 0)
    }

    fn set(&self, fingerprint: Fingerprint, record: &SessionRecord) -> Option<redis::Cmd> {
        let px = self.px(record)?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(fingerprint))
            .arg(&codec::encode(record, &*self.issuers)[..])
            .arg("PX")
            .arg(px);
        Some(cmd)
    }

    fn succeeded(&self) {
        self.timeouts_in_a_row.store(0, Ordering::Relaxed);
    }

    /// An error marks the store degraded at once. Timeouts in a row have the keeper ping now,
    /// and it marks the store degraded if the ping fails too, so that no later request waits on
    /// a store that has stopped answering.
    fn failed(&self, fault: Fault) {
        match fault {
            Fault::Timeout => {
                let n = self.timeouts_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                if n == TIMEOUTS_TO_SUSPECT {
                    self.wake.notify_one();
                }
            }
            Fault::Error(e) => self.degrade("error", Some(e.to_string())),
        }
    }

    fn degrade(&self, reason: &'static str, error: Option<String>) {
        if !self.up.swap(false, Ordering::Relaxed) {
            return;
        }
        if let Ok(mut since) = self.down_since.lock() {
            *since = Some(Instant::now());
        }
        self.counters.up.set(0.0);
        self.counters.outages.increment(1);
        tracing::warn!(
            reason,
            error = error.as_deref(),
            "session store degraded: going on with the near cache"
        );
        self.log.emit(AlertLine::new(
            LineKind::StoreDegraded,
            SystemTime::now(),
            &StoreLine {
                store: "redis",
                reason,
                error,
                down_ms: None,
                rewritten: None,
            },
        ));
        self.wake.notify_one();
    }
}

impl FleetStore for RedisStore {
    fn for_thread(&self) -> Option<Arc<dyn FleetStore>> {
        Some(Arc::new(Self {
            inner: self.inner.clone(),
            local: Some(Arc::new(LocalLink::default())),
        }))
    }

    fn lookup(&self, misses: &[Fingerprint]) -> Option<Lookup> {
        let inner = &self.inner;
        let Some(mut link) = self.request_link() else {
            inner.counters.skipped_down.increment(1);
            return None;
        };
        let asked: Vec<Fingerprint> = misses
            .iter()
            .copied()
            .filter(|f| !inner.unknown.contains_key(&f.0))
            .collect();
        if asked.is_empty() {
            inner.counters.skipped_unknown.increment(1);
            return None;
        }
        if !inner.budget.take() {
            inner.counters.skipped_capped.increment(1);
            return None;
        }
        let inner = inner.clone();
        Some(Box::pin(async move {
            let mut cmd = redis::cmd(if asked.len() == 1 { "GET" } else { "MGET" });
            for f in &asked {
                cmd.arg(inner.key(*f));
            }
            let answer = if asked.len() == 1 {
                tokio::time::timeout(inner.timeout, link.query::<Option<Vec<u8>>>(&cmd))
                    .await
                    .map(|r| r.map(|v| vec![v]))
            } else {
                tokio::time::timeout(inner.timeout, link.query::<Vec<Option<Vec<u8>>>>(&cmd)).await
            };
            let values = match answer {
                Ok(Ok(values)) => {
                    inner.succeeded();
                    values
                }
                Ok(Err(e)) => {
                    inner.counters.error.increment(1);
                    inner.failed(Fault::Error(e));
                    return Found::default();
                }
                Err(_) => {
                    inner.counters.timeout.increment(1);
                    inner.counters.waited_lookup.increment(1);
                    inner.failed(Fault::Timeout);
                    return Found {
                        records: Vec::new(),
                        waited_out: true,
                    };
                }
            };
            let mut found = Found::default();
            for (f, value) in asked.iter().zip(values) {
                match value.and_then(|v| codec::decode(&v, &*inner.issuers)) {
                    Some(record) => {
                        inner.counters.hit.increment(1);
                        found.records.push((*f, record));
                    }
                    None => {
                        inner.counters.miss.increment(1);
                        inner.unknown.insert(f.0, ());
                    }
                }
            }
            found
        }))
    }

    fn publish(&self, fingerprint: Fingerprint, record: SessionRecord) -> Option<Publish> {
        let inner = self.inner.clone();
        inner.unknown.invalidate(&fingerprint.0);
        // Down: the near cache has it, and the write-back on recovery sends it.
        let mut link = self.request_link()?;
        let cmd = inner.set(fingerprint, &record)?;
        Some(Box::pin(async move {
            match tokio::time::timeout(inner.timeout, link.query::<()>(&cmd)).await {
                Ok(Ok(())) => {
                    inner.succeeded();
                    inner.counters.publish_ok.increment(1);
                }
                Ok(Err(e)) => {
                    inner.counters.publish_failed.increment(1);
                    inner.failed(Fault::Error(e));
                }
                Err(_) => {
                    inner.counters.publish_failed.increment(1);
                    inner.counters.waited_publish.increment(1);
                    inner.failed(Fault::Timeout);
                }
            }
        }))
    }

    fn update(&self, fingerprint: Fingerprint, record: SessionRecord) {
        self.inner.unknown.invalidate(&fingerprint.0);
        if !self.is_up() {
            return;
        }
        if self
            .inner
            .changes
            .try_send(Change::Put(fingerprint, record))
            .is_err()
        {
            self.inner.counters.dropped.increment(1);
        }
    }

    fn remove(&self, fingerprint: Fingerprint) {
        let inner = &self.inner;
        if inner.up.load(Ordering::Relaxed)
            && inner.changes.try_send(Change::Remove(fingerprint)).is_ok()
        {
            return;
        }
        if let Ok(mut pending) = inner.pending_removals.lock()
            && pending.len() < MAX_PENDING_REMOVALS
        {
            pending.push(fingerprint);
        }
    }
}
