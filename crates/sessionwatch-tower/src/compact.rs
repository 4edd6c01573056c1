//! A compact session table for large farms: about a fifth of the memory of [`crate::MokaStore`]
//! per session, for when millions of sessions must be tracked.
//!
//! Each record is packed into 12 bytes (issuer, flags, issue and last-seen times in whole
//! seconds) under a 64-bit key, in up to 64 shards of a plain hash map. Each shard is divided
//! like the table (see [`crate::SessionStore`]): records nobody has presented wait in a probation
//! part of a fifth of the shard, where a new one displaces the oldest; a flag marks the presented
//! ones, which only presented records displace, in insertion order with a second chance for a
//! recently used session (the CLOCK approximation of LRU). The table is bounded by
//! `max_sessions`. An idle session is dropped when next looked up, and
//! [`SessionStore::maintain`] sweeps the rest.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use sessionwatch_core::{BackendId, Fingerprint, SessionRecord, Timestamp};

use crate::SessionStore;
use crate::store::{EvictionCounts, Evictions, IdentityHasher, split};

const MAX_SHARDS: u64 = 64;
/// A smaller table has fewer shards, so that each shard's probation part (a fifth of it) still
/// has room for a burst of new sessions.
const MIN_SHARD_CAPACITY: u64 = 64;
/// Entries looked at for a second chance before one is evicted regardless.
const SECOND_CHANCES: usize = 8;

#[derive(Clone, Copy)]
struct Packed {
    issued: u32,
    seen: u32,
    issuer: u16,
    flags: u8,
}

const PINNED: u8 = 1;
const LOST: u8 = 2;
const PRESENTED: u8 = 4;

fn secs(t: Timestamp) -> u32 {
    u32::try_from(t.as_secs()).unwrap_or(u32::MAX)
}

impl Packed {
    fn pack(r: &SessionRecord) -> Self {
        Self {
            issued: secs(r.issued_at),
            seen: secs(r.last_seen),
            issuer: r.issuer.0,
            flags: (u8::from(r.pinned) * PINNED)
                | (u8::from(r.lost) * LOST)
                | (u8::from(r.presented) * PRESENTED),
        }
    }

    fn unpack(self) -> SessionRecord {
        SessionRecord {
            issuer: BackendId(self.issuer),
            issued_at: Timestamp::from_millis(u64::from(self.issued) * 1000),
            last_seen: Timestamp::from_millis(u64::from(self.seen) * 1000),
            pinned: self.flags & PINNED != 0,
            lost: self.flags & LOST != 0,
            presented: self.presented(),
        }
    }

    fn presented(self) -> bool {
        self.flags & PRESENTED != 0
    }
}

#[derive(Default)]
struct Shard {
    map: HashMap<u64, Packed, BuildHasherDefault<IdentityHasher>>,
    /// Keys in probation in insertion order; may hold keys since removed or presented, skipped
    /// when met.
    probation: VecDeque<u64>,
    /// Keys of presented records in the order they became presented; may hold keys since
    /// removed, skipped when met.
    presented: VecDeque<u64>,
    /// Records in `map` that nobody has presented.
    unpresented: usize,
}

/// See the module docs.
pub struct CompactStore {
    shards: Box<[Mutex<Shard>]>,
    /// The shard count (a power of two) minus one.
    shard_mask: usize,
    /// Per shard.
    probation_capacity: usize,
    /// Per shard.
    presented_capacity: usize,
    idle_secs: u32,
    evictions: EvictionCounts,
}

impl std::fmt::Debug for CompactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompactStore")
            .field("shards", &self.shards.len())
            .field("probation_capacity", &self.probation_capacity)
            .field("presented_capacity", &self.presented_capacity)
            .finish_non_exhaustive()
    }
}

/// 64 bits of the fingerprint: at a million sessions the chance that two collide is about
/// one in thirty million, and a collision only merges two sessions' records.
fn key(fp: Fingerprint) -> u64 {
    (fp.0 as u64) ^ ((fp.0 >> 64) as u64)
}

impl CompactStore {
    /// A table of at most `max_sessions` records, a fifth of them for sessions nobody has
    /// presented yet, each dropped once idle for `idle`.
    pub fn new(max_sessions: u64, idle: Duration) -> Self {
        let max = max_sessions.max(2);
        let wanted = (max / MIN_SHARD_CAPACITY).clamp(1, MAX_SHARDS);
        // The largest power of two not above `wanted` (at least 1), so a mask picks the shard.
        let shards = 1u64 << (63 - wanted.leading_zeros());
        // Rounding down keeps the whole table within `max_sessions`.
        let (probation, presented) = split(max / shards);
        let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Self {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            shard_mask: to_usize(shards - 1),
            probation_capacity: to_usize(probation),
            presented_capacity: to_usize(presented),
            idle_secs: u32::try_from(idle.as_secs()).unwrap_or(u32::MAX).max(1),
            evictions: EvictionCounts::default(),
        }
    }

    fn shard(&self, key: u64) -> MutexGuard<'_, Shard> {
        // Middle bits pick the shard: the map inside uses the low bits for the slot and the top
        // seven as its tag, and both must stay independent of the shard choice.
        let i = (key >> 32) as usize & self.shard_mask;
        // A panic while holding the lock cannot leave a plain map inconsistent.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn expired(&self, p: &Packed, now: u32) -> bool {
        now.saturating_sub(p.seen) > self.idle_secs
    }

    /// `k`, already marked presented in `shard.map`, leaves probation for the presented part.
    fn promoted(&self, shard: &mut Shard, k: u64, now: u32) {
        shard.unpresented -= 1;
        shard.presented.push_back(k);
        if shard.map.len() - shard.unpresented > self.presented_capacity {
            self.evict_presented(shard, now);
        }
        shard.tidy();
    }

    /// The oldest session in probation goes.
    fn evict_unpresented(&self, shard: &mut Shard) {
        while let Some(k) = shard.probation.pop_front() {
            if shard.map.get(&k).is_some_and(|p| !p.presented()) {
                shard.remove(k);
                self.evictions.count(false);
                return;
            }
        }
    }

    /// A presented session goes, the oldest unless it was used recently (a second chance).
    fn evict_presented(&self, shard: &mut Shard, now: u32) {
        let recent = self.idle_secs / 4;
        let mut chances = 0;
        while let Some(k) = shard.presented.pop_front() {
            let Some(p) = shard.map.get(&k).filter(|p| p.presented()) else {
                continue;
            };
            if chances < SECOND_CHANCES && now.saturating_sub(p.seen) < recent {
                chances += 1;
                shard.presented.push_back(k);
                continue;
            }
            shard.remove(k);
            self.evictions.count(true);
            return;
        }
    }
}

fn now_secs() -> u32 {
    secs(Timestamp::now())
}

impl Shard {
    fn remove(&mut self, k: u64) {
        if let Some(p) = self.map.remove(&k)
            && !p.presented()
        {
            self.unpresented -= 1;
        }
    }

    /// Removed and promoted keys linger in the queues until met; keep the queues from
    /// outgrowing what they order.
    fn tidy(&mut self) {
        let Shard {
            map,
            probation,
            presented,
            unpresented,
        } = self;
        if probation.len() > 2 * *unpresented + 64 {
            probation.retain(|k| map.get(k).is_some_and(|p| !p.presented()));
        }
        if presented.len() > 2 * (map.len() - *unpresented) + 64 {
            presented.retain(|k| map.get(k).is_some_and(|p| p.presented()));
        }
    }
}

impl SessionStore for CompactStore {
    fn get(&self, fingerprint: Fingerprint) -> Option<SessionRecord> {
        let k = key(fingerprint);
        let mut shard = self.shard(k);
        let mut p = *shard.map.get(&k)?;
        let now = now_secs();
        if self.expired(&p, now) {
            shard.remove(k);
            return None;
        }
        if !p.presented() {
            // The first presentation: once per session, off the common path.
            p.flags |= PRESENTED;
            shard.map.insert(k, p);
            self.promoted(&mut shard, k, now);
        }
        Some(p.unpack())
    }

    fn put(&self, fingerprint: Fingerprint, record: SessionRecord) {
        let k = key(fingerprint);
        let mut packed = Packed::pack(&record);
        let now = now_secs();
        let mut shard = self.shard(k);
        if let Some(slot) = shard.map.get_mut(&k) {
            let was_presented = slot.presented();
            if was_presented {
                packed.flags |= PRESENTED;
            }
            *slot = packed;
            if !was_presented && packed.presented() {
                self.promoted(&mut shard, k, now);
            }
            return;
        }
        if packed.presented() {
            if shard.map.len() - shard.unpresented >= self.presented_capacity {
                self.evict_presented(&mut shard, now);
            }
            shard.presented.push_back(k);
        } else {
            if shard.unpresented >= self.probation_capacity {
                self.evict_unpresented(&mut shard);
            }
            shard.unpresented += 1;
            shard.probation.push_back(k);
        }
        shard.map.insert(k, packed);
        shard.tidy();
    }

    fn remove(&self, fingerprint: Fingerprint) {
        let k = key(fingerprint);
        self.shard(k).remove(k);
    }

    fn len(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).map.len() as u64)
            .sum()
    }

    fn maintain(&self) {
        let now = now_secs();
        for s in self.shards.iter() {
            let mut shard = s.lock().unwrap_or_else(|e| e.into_inner());
            shard.map.retain(|_, p| !self.expired(p, now));
            shard.unpresented = shard.map.values().filter(|p| !p.presented()).count();
            let Shard {
                map,
                probation,
                presented,
                ..
            } = &mut *shard;
            probation.retain(|k| map.get(k).is_some_and(|p| !p.presented()));
            presented.retain(|k| map.get(k).is_some_and(|p| p.presented()));
        }
    }

    fn evictions(&self) -> Evictions {
        self.evictions.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::churn_tests::{self, Probe};

    impl Probe for CompactStore {
        fn settle(&self) {}

        fn probation_len(&self) -> u64 {
            self.shards
                .iter()
                .map(|s| s.lock().unwrap().unpresented as u64)
                .sum()
        }

        fn filling_presented(
            &self,
            candidates: impl Iterator<Item = Fingerprint>,
        ) -> Vec<Fingerprint> {
            let mut room = vec![self.presented_capacity; self.shards.len()];
            let mut left = room.iter().sum::<usize>();
            let mut chosen = Vec::with_capacity(left);
            for fp in candidates {
                if left == 0 {
                    break;
                }
                let shard = (key(fp) >> 32) as usize & self.shard_mask;
                if room[shard] > 0 {
                    room[shard] -= 1;
                    left -= 1;
                    chosen.push(fp);
                }
            }
            chosen
        }
    }

    fn fp(i: u64) -> Fingerprint {
        churn_tests::fp(0, i)
    }

    fn record(issuer: u16) -> SessionRecord {
        SessionRecord::issued(BackendId(issuer), Timestamp::now())
    }

    fn presented(issuer: u16) -> SessionRecord {
        SessionRecord {
            presented: true,
            ..record(issuer)
        }
    }

    const MAX: u64 = 1000;

    fn store() -> CompactStore {
        CompactStore::new(MAX, Duration::from_secs(600))
    }

    #[test]
    fn put_get_remove_round_trip() {
        let store = CompactStore::new(1000, Duration::from_secs(600));
        let mut r = record(3);
        r.pinned = true;
        store.put(fp(1), r);
        let got = store.get(fp(1)).unwrap();
        assert_eq!(got.issuer, BackendId(3));
        assert!(got.pinned && !got.lost);
        assert!(got.presented, "the lookup presented it");
        assert_eq!(
            got.issued_at.as_secs(),
            r.issued_at.as_secs(),
            "kept to the second"
        );
        store.remove(fp(1));
        assert_eq!(store.get(fp(1)), None);
        assert_eq!(store.len(), 0);
    }

    #[test]
    fn shards_and_parts_fit_within_max_sessions() {
        for (max, shards) in [
            (1, 1),
            (2, 1),
            (127, 1),
            (500, 4),
            (1000, 8),
            (6400, 64),
            (1_000_000, 64),
        ] {
            let store = CompactStore::new(max, Duration::from_secs(600));
            assert_eq!(store.shards.len(), shards, "shards for {max}");
            let n = shards as u64;
            let probation = store.probation_capacity as u64 * n;
            let presented = store.presented_capacity as u64 * n;
            assert!(probation >= 1 && presented >= 1);
            assert!(
                probation + presented <= max.max(2),
                "{max}: {probation} + {presented}"
            );
            assert!(
                probation <= (max / 5).max(1),
                "{max}: probation {probation}"
            );
        }
    }

    #[test]
    fn bounded_by_max_sessions_whatever_the_traffic() {
        let store = CompactStore::new(6400, Duration::from_secs(600));
        for i in 0..100_000 {
            store.put(fp(i), presented(0));
        }
        for i in 100_000..200_000 {
            store.put(fp(i), record(0));
        }
        assert_eq!(
            store.len(),
            6400,
            "full to the last slot: eviction frees one slot at a time"
        );
        // Heavy churn of put/remove, and of promotions, does not let the queues grow without
        // bound.
        for i in 0..100_000 {
            store.put(fp(1_000_000 + i), record(0));
            if i % 2 == 0 {
                store.get(fp(1_000_000 + i));
            }
            store.remove(fp(1_000_000 + i));
        }
        assert!(store.len() <= 6400);
        let queued: usize = store
            .shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap();
                s.probation.len() + s.presented.len()
            })
            .sum();
        assert!(queued <= 2 * 6400 + 2 * 64 * 64, "{queued}");
    }

    #[test]
    fn idle_sessions_are_dropped() {
        let store = CompactStore::new(1000, Duration::from_secs(60));
        let mut old = record(0);
        old.last_seen = Timestamp::from_millis(Timestamp::now().as_millis() - 120_000);
        store.put(fp(1), old);
        store.put(fp(2), old);
        store.put(fp(3), record(0));
        assert_eq!(store.get(fp(1)), None, "expired on lookup");
        store.maintain();
        assert_eq!(store.len(), 1, "the sweep drops the other idle one");
        assert_eq!(store.probation_len(), 1);
        assert_eq!(
            store.evictions(),
            Evictions::default(),
            "expiry is no eviction"
        );
    }

    #[test]
    fn a_recently_used_session_survives_eviction_of_older_idle_ones() {
        // One shard of ten: two in probation, eight presented.
        let store = CompactStore::new(10, Duration::from_secs(600));
        assert_eq!((store.probation_capacity, store.presented_capacity), (2, 8));
        let mut stale = presented(0);
        stale.last_seen = Timestamp::from_millis(Timestamp::now().as_millis() - 500_000);
        store.put(fp(0), presented(1));
        for i in 1..8 {
            store.put(fp(i), stale);
        }
        store.put(fp(8), presented(2));
        assert!(store.get(fp(0)).is_some(), "second chance");
        assert!(store.get(fp(1)).is_none(), "the oldest stale one went");
        assert_eq!(store.len(), 8);
        assert_eq!(store.evictions().presented, 1);
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
