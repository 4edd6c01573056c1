//! Where session records live.
//!
//! A framework such as PHP starts a fresh session for every request that brings no cookie, so
//! bots, crawlers or an attacker can issue sessions far faster than users sign in, and none of
//! them is ever sent back. A table that evicted those alongside the sessions users present would
//! forget live users under such churn, and with pinning a forgotten user is routed anywhere and,
//! on a farm whose stores are not shared, logged out. Both embedded stores therefore keep two
//! parts: sessions nobody has presented wait in probation, at most a fifth of `max_sessions`,
//! where new ones displace the oldest; a client's first presentation (or issue on a login path)
//! moves a session into the presented part, the rest of the table, which only presented sessions
//! can displace, and each such eviction is counted ([`Evictions`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use sessionwatch_core::{Fingerprint, SessionRecord};

/// A table of session records keyed by fingerprint.
///
/// Implementations must be bounded: a flood of new sessions evicts old ones rather than growing
/// without limit. They must also keep the sessions clients use: a record that says
/// [`SessionRecord::presented`], or one a lookup has found, may be displaced only by other such
/// records, never by sessions nobody has presented.
pub trait SessionStore: Send + Sync + 'static {
    /// The record of `fingerprint`, if tracked. The layer looks up only the cookies a request
    /// carried, so a hit is the session's presentation: a store promotes the session out of
    /// probation then, and the record it returns says `presented`.
    fn get(&self, fingerprint: Fingerprint) -> Option<SessionRecord>;
    /// Insert or replace a record. A session once presented stays presented, whatever the new
    /// record says.
    fn put(&self, fingerprint: Fingerprint, record: SessionRecord);
    /// Forget a session.
    fn remove(&self, fingerprint: Fingerprint);
    /// How many sessions are tracked (may be approximate).
    fn len(&self) -> u64;
    /// Whether no session is tracked.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Housekeeping: drop idle records, apply pending evictions. Called periodically.
    fn maintain(&self) {}
    /// Sessions evicted to make room since the store was made (idle ones that expired and
    /// removed ones are not counted). A store that cannot tell reports none.
    fn evictions(&self) -> Evictions {
        Evictions::default()
    }
}

/// Sessions a full table dropped to make room, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evictions {
    /// Sessions a client had presented (or issued on a login path): live users the table had no
    /// room for, so `max_sessions` is too small for the farm.
    pub presented: u64,
    /// Sessions nobody had presented, displaced in probation by newer ones: the expected cost of
    /// cookie-less traffic.
    pub unpresented: u64,
}

/// The eviction counts a store keeps, shared with the callbacks that see evictions.
#[derive(Debug, Default)]
pub(crate) struct EvictionCounts {
    presented: AtomicU64,
    unpresented: AtomicU64,
}

impl EvictionCounts {
    pub(crate) fn count(&self, presented: bool) {
        let counter = if presented {
            &self.presented
        } else {
            &self.unpresented
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Evictions {
        Evictions {
            presented: self.presented.load(Ordering::Relaxed),
            unpresented: self.unpresented.load(Ordering::Relaxed),
        }
    }
}

/// How a table of `max_sessions` divides: probation gets a fifth, the presented part the rest.
/// Each gets at least one, so a table of fewer than two is taken as two.
pub(crate) fn split(max_sessions: u64) -> (u64, u64) {
    let max = max_sessions.max(2);
    let probation = (max / 5).max(1);
    (probation, max - probation)
}

type Table = moka::sync::Cache<u128, SessionRecord, std::hash::BuildHasherDefault<IdentityHasher>>;

/// The embedded store: two moka caches, probation and the presented part (see the module docs),
/// bounded by entry count and evicting the least recently used, whose entries expire once idle
/// for the application's session timeout (an idle session is over for the application too).
///
/// Both parts evict by recency rather than by moka's default TinyLFU admission: TinyLFU turns
/// away a newcomer less popular than the entry it would replace, which in the presented part
/// would refuse a user who has just signed in in favour of an idle session used often before.
#[derive(Clone)]
pub struct MokaStore {
    presented: Table,
    probation: Table,
    evictions: Arc<EvictionCounts>,
}

impl std::fmt::Debug for MokaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MokaStore")
            .field("presented", &self.presented.entry_count())
            .field("probation", &self.probation.entry_count())
            .finish()
    }
}

impl MokaStore {
    /// A store of at most `max_sessions` records, a fifth of them for sessions nobody has
    /// presented yet, each expiring after `idle` without use.
    pub fn new(max_sessions: u64, idle: Duration) -> Self {
        let (probation, presented) = split(max_sessions);
        let evictions = Arc::new(EvictionCounts::default());
        let table = |capacity: u64, holds_presented: bool| {
            let counts = evictions.clone();
            moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(idle)
                .eviction_policy(EvictionPolicy::lru())
                .eviction_listener(move |_, _, cause| {
                    if cause == RemovalCause::Size {
                        counts.count(holds_presented);
                    }
                })
                .build_with_hasher(std::hash::BuildHasherDefault::<IdentityHasher>::default())
        };
        Self {
            presented: table(presented, true),
            probation: table(probation, false),
            evictions,
        }
    }

    /// Apply pending evictions and expiries now (tests and the memory benchmark want exact
    /// counts; in service moka does this in the background of its own calls).
    pub fn run_pending_tasks(&self) {
        self.presented.run_pending_tasks();
        self.probation.run_pending_tasks();
    }

    /// Every record held, presented ones first (a fleet replica writes them back to a shared
    /// store that lost them).
    pub fn for_each_record(&self, mut f: impl FnMut(Fingerprint, SessionRecord)) {
        for (key, record) in self.presented.iter().chain(self.probation.iter()) {
            f(Fingerprint(*key), record);
        }
    }

    /// A client presents a session for the first time: it leaves probation. It enters the
    /// presented part before it leaves probation, so that a concurrent request presenting it
    /// finds it in one part or the other.
    #[cold]
    fn promote(&self, key: u128) -> Option<SessionRecord> {
        let Some(record) = self.probation.get(&key) else {
            // Not in probation (unknown), or promoted by a concurrent request since the first
            // lookup.
            return self.presented.get(&key);
        };
        let record = SessionRecord {
            presented: true,
            ..record
        };
        self.presented.insert(key, record);
        self.probation.invalidate(&key);
        Some(record)
    }
}

impl SessionStore for MokaStore {
    fn get(&self, fingerprint: Fingerprint) -> Option<SessionRecord> {
        // A session in use: one lookup.
        if let Some(record) = self.presented.get(&fingerprint.0) {
            return Some(record);
        }
        self.promote(fingerprint.0)
    }

    fn put(&self, fingerprint: Fingerprint, record: SessionRecord) {
        let key = fingerprint.0;
        if record.presented {
            self.presented.insert(key, record);
            // Issued on a login path under a value already in probation: one part only.
            self.probation.invalidate(&key);
        } else if self.presented.contains_key(&key) {
            // A value in use, issued again: it stays presented.
            self.presented.insert(
                key,
                SessionRecord {
                    presented: true,
                    ..record
                },
            );
        } else {
            self.probation.insert(key, record);
        }
    }

    fn remove(&self, fingerprint: Fingerprint) {
        self.presented.invalidate(&fingerprint.0);
        self.probation.invalidate(&fingerprint.0);
    }

    fn len(&self) -> u64 {
        self.presented.entry_count() + self.probation.entry_count()
    }

    fn maintain(&self) {
        self.run_pending_tasks();
    }

    fn evictions(&self) -> Evictions {
        self.evictions.snapshot()
    }
}

/// The keys are already keyed-hash output, uniformly distributed and not chosen by clients, so
/// hashing them again (SipHash by default) would only cost time.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdentityHasher(u64);

impl std::hash::Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for non-integer keys, which this store never uses; fold to stay correct.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = i;
    }

    fn write_u128(&mut self, i: u128) {
        self.0 = (i as u64) ^ ((i >> 64) as u64);
    }
}

// The churn scenarios every store must pass live here, below the trait they test, so that
// another store's tests (`compact`) reach them without the store module reaching back.
#[cfg(test)]
pub(crate) mod churn_tests;

#[cfg(test)]
mod tests {
    use super::churn_tests::{self, Probe};
    use super::*;
    use sessionwatch_core::{BackendId, Timestamp};

    impl Probe for MokaStore {
        fn settle(&self) {
            self.run_pending_tasks();
        }

        fn probation_len(&self) -> u64 {
            self.probation.entry_count()
        }

        fn filling_presented(
            &self,
            candidates: impl Iterator<Item = Fingerprint>,
        ) -> Vec<Fingerprint> {
            let capacity = self.presented.policy().max_capacity().unwrap_or(0);
            candidates.take(capacity as usize).collect()
        }
    }

    const MAX: u64 = 1000;

    fn store() -> MokaStore {
        MokaStore::new(MAX, Duration::from_secs(600))
    }

    #[test]
    fn bounded_by_max_sessions() {
        let store = MokaStore::new(100, Duration::from_secs(60));
        for i in 0..10_000u128 {
            store.put(
                Fingerprint(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)),
                SessionRecord::issued(BackendId(0), Timestamp::from_millis(0)),
            );
        }
        store.run_pending_tasks();
        assert!(store.len() <= 100, "len {}", store.len());
    }

    #[test]
    fn put_get_remove() {
        let store = MokaStore::new(100, Duration::from_secs(60));
        let rec = SessionRecord::issued(BackendId(3), Timestamp::from_millis(5));
        store.put(Fingerprint(7), rec);
        let presented = SessionRecord {
            presented: true,
            ..rec
        };
        assert_eq!(store.get(Fingerprint(7)), Some(presented));
        assert_eq!(
            store.get(Fingerprint(7)),
            Some(presented),
            "and it stays so"
        );
        store.remove(Fingerprint(7));
        assert_eq!(store.get(Fingerprint(7)), None);
        store.run_pending_tasks();
        assert_eq!(store.len(), 0);
    }

    #[test]
    fn splits_a_fifth_for_probation() {
        assert_eq!(split(1000), (200, 800));
        assert_eq!(split(500), (100, 400));
        assert_eq!(split(4), (1, 3));
        assert_eq!(split(1), (1, 1), "a table of one is taken as two");
        let store = store();
        assert_eq!(store.probation.policy().max_capacity(), Some(200));
        assert_eq!(store.presented.policy().max_capacity(), Some(800));
    }

    #[test]
    fn presented_sessions_survive_a_flood() {
        churn_tests::presented_sessions_survive_a_flood(&store(), MAX);
    }

    #[test]
    fn a_presented_session_is_promoted() {
        churn_tests::a_presented_session_is_promoted(&store(), MAX);
    }

    #[test]
    fn presented_evictions_are_counted() {
        churn_tests::presented_evictions_are_counted(&store(), MAX);
    }
}
