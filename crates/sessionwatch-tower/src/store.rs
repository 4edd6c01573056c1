//! Where session records live.

use std::time::Duration;

use sessionwatch_core::{Fingerprint, SessionRecord};

/// A table of session records keyed by fingerprint. Implementations must be bounded: a flood of
/// new sessions evicts old ones rather than growing without limit.
pub trait SessionStore: Send + Sync + 'static {
    /// The record of `fingerprint`, if tracked.
    fn get(&self, fingerprint: Fingerprint) -> Option<SessionRecord>;
    /// Insert or replace a record.
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
}

/// The embedded store: a moka cache bounded by entry count, whose entries expire once idle for
/// the application's session timeout (an idle session is over for the application too).
#[derive(Clone)]
pub struct MokaStore {
    cache: moka::sync::Cache<u128, SessionRecord, std::hash::BuildHasherDefault<IdentityHasher>>,
}

impl std::fmt::Debug for MokaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MokaStore")
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

impl MokaStore {
    /// A store of at most `max_sessions` records, each expiring after `idle` without use.
    pub fn new(max_sessions: u64, idle: Duration) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(max_sessions)
            .time_to_idle(idle)
            .build_with_hasher(std::hash::BuildHasherDefault::<IdentityHasher>::default());
        Self { cache }
    }

    /// Apply pending evictions and expiries now (tests and the memory benchmark want exact
    /// counts; in service moka does this in the background of its own calls).
    pub fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks();
    }
}

impl SessionStore for MokaStore {
    fn get(&self, fingerprint: Fingerprint) -> Option<SessionRecord> {
        self.cache.get(&fingerprint.0)
    }

    fn put(&self, fingerprint: Fingerprint, record: SessionRecord) {
        self.cache.insert(fingerprint.0, record);
    }

    fn remove(&self, fingerprint: Fingerprint) {
        self.cache.invalidate(&fingerprint.0);
    }

    fn len(&self) -> u64 {
        self.cache.entry_count()
    }

    fn maintain(&self) {
        self.cache.run_pending_tasks();
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

#[cfg(test)]
mod tests {
    use super::*;
    use sessionwatch_core::{BackendId, Timestamp};

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
        assert_eq!(store.get(Fingerprint(7)), Some(rec));
        store.remove(Fingerprint(7));
        assert_eq!(store.get(Fingerprint(7)), None);
    }
}
