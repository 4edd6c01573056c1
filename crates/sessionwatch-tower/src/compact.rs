//! A compact session table for large farms: about a fifth of the memory of [`crate::MokaStore`]
//! per session, for when millions of sessions must be tracked.
//!
//! Each record is packed into 12 bytes (issuer, flags, issue and last-seen times in whole
//! seconds) under a 64-bit key, in 64 shards of a plain hash map. The table is bounded by
//! `max_sessions`: a full shard evicts in insertion order, giving a recently used session a
//! second chance (the CLOCK approximation of LRU). An idle session is dropped when next looked
//! up, and [`SessionStore::maintain`] sweeps the rest.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use sessionwatch_core::{BackendId, Fingerprint, SessionRecord, Timestamp};

use crate::SessionStore;
use crate::store::IdentityHasher;

const SHARDS: usize = 64;
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

fn secs(t: Timestamp) -> u32 {
    u32::try_from(t.as_secs()).unwrap_or(u32::MAX)
}

impl Packed {
    fn pack(r: &SessionRecord) -> Self {
        Self {
            issued: secs(r.issued_at),
            seen: secs(r.last_seen),
            issuer: r.issuer.0,
            flags: (u8::from(r.pinned) * PINNED) | (u8::from(r.lost) * LOST),
        }
    }

    fn unpack(self) -> SessionRecord {
        SessionRecord {
            issuer: BackendId(self.issuer),
            issued_at: Timestamp::from_millis(u64::from(self.issued) * 1000),
            last_seen: Timestamp::from_millis(u64::from(self.seen) * 1000),
            pinned: self.flags & PINNED != 0,
            lost: self.flags & LOST != 0,
        }
    }
}

#[derive(Default)]
struct Shard {
    map: HashMap<u64, Packed, BuildHasherDefault<IdentityHasher>>,
    /// Keys in insertion order; may hold keys already removed, skipped when met.
    order: VecDeque<u64>,
}

/// See the module docs.
pub struct CompactStore {
    shards: Box<[Mutex<Shard>]>,
    shard_capacity: usize,
    idle_secs: u32,
}

impl std::fmt::Debug for CompactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompactStore")
            .field("shard_capacity", &self.shard_capacity)
            .finish_non_exhaustive()
    }
}

/// 64 bits of the fingerprint: at a million sessions the chance that two collide is about
/// one in thirty million, and a collision only merges two sessions' records.
fn key(fp: Fingerprint) -> u64 {
    (fp.0 as u64) ^ ((fp.0 >> 64) as u64)
}

impl CompactStore {
    /// A table of at most `max_sessions` records, each dropped once idle for `idle`.
    pub fn new(max_sessions: u64, idle: Duration) -> Self {
        let max = usize::try_from(max_sessions)
            .unwrap_or(usize::MAX)
            .max(SHARDS);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            shard_capacity: max.div_ceil(SHARDS),
            idle_secs: u32::try_from(idle.as_secs()).unwrap_or(u32::MAX).max(1),
        }
    }

    fn shard(&self, key: u64) -> MutexGuard<'_, Shard> {
        // Middle bits pick the shard: the map inside uses the low bits for the slot and the top
        // seven as its tag, and both must stay independent of the shard choice.
        let i = (key >> 32) as usize % SHARDS;
        // A panic while holding the lock cannot leave a plain map inconsistent.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn expired(&self, p: &Packed, now: u32) -> bool {
        now.saturating_sub(p.seen) > self.idle_secs
    }
}

fn now_secs() -> u32 {
    secs(Timestamp::now())
}

impl Shard {
    fn evict_one(&mut self, now: u32, recent: u32) {
        let mut chances = 0;
        while let Some(k) = self.order.pop_front() {
            let Some(p) = self.map.get(&k) else {
                continue;
            };
            if chances < SECOND_CHANCES && now.saturating_sub(p.seen) < recent {
                chances += 1;
                self.order.push_back(k);
                continue;
            }
            self.map.remove(&k);
            return;
        }
    }
}

impl SessionStore for CompactStore {
    fn get(&self, fingerprint: Fingerprint) -> Option<SessionRecord> {
        let k = key(fingerprint);
        let mut shard = self.shard(k);
        let p = *shard.map.get(&k)?;
        if self.expired(&p, now_secs()) {
            shard.map.remove(&k);
            return None;
        }
        Some(p.unpack())
    }

    fn put(&self, fingerprint: Fingerprint, record: SessionRecord) {
        let k = key(fingerprint);
        let packed = Packed::pack(&record);
        let mut shard = self.shard(k);
        if let Some(slot) = shard.map.get_mut(&k) {
            *slot = packed;
            return;
        }
        if shard.map.len() >= self.shard_capacity {
            shard.evict_one(now_secs(), self.idle_secs / 4);
        }
        shard.map.insert(k, packed);
        shard.order.push_back(k);
        // Removed keys linger in `order` until met; keep it from outgrowing the map.
        if shard.order.len() > 2 * shard.map.len() + 64 {
            let Shard { map, order } = &mut *shard;
            order.retain(|k| map.contains_key(k));
        }
    }

    fn remove(&self, fingerprint: Fingerprint) {
        let k = key(fingerprint);
        self.shard(k).map.remove(&k);
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
            let Shard { map, order } = &mut *shard;
            map.retain(|_, p| !self.expired(p, now));
            order.retain(|k| map.contains_key(k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(i: u64) -> Fingerprint {
        let x = u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
        Fingerprint(x ^ (x >> 64))
    }

    fn record(issuer: u16) -> SessionRecord {
        SessionRecord::issued(BackendId(issuer), Timestamp::now())
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
    fn bounded_by_max_sessions_whatever_the_traffic() {
        let store = CompactStore::new(6400, Duration::from_secs(600));
        for i in 0..100_000 {
            store.put(fp(i), record(0));
        }
        assert!(store.len() <= 6400, "{}", store.len());
        assert!(
            store.len() >= 6000,
            "eviction frees one slot at a time: {}",
            store.len()
        );
        // Heavy churn of put/remove does not let the order queues grow without bound.
        for i in 0..100_000 {
            store.put(fp(1_000_000 + i), record(0));
            store.remove(fp(1_000_000 + i));
        }
        let queued: usize = store
            .shards
            .iter()
            .map(|s| s.lock().unwrap().order.len())
            .sum();
        assert!(queued <= 2 * 6400 + 64 * 64, "{queued}");
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
    }

    #[test]
    fn a_recently_used_session_survives_eviction_of_older_idle_ones() {
        // Two records a shard: the recent one, then a stale one; a third forces an eviction.
        let store = CompactStore::new(128, Duration::from_secs(600));
        let mut stale = record(0);
        stale.last_seen = Timestamp::from_millis(Timestamp::now().as_millis() - 500_000);
        let same_shard: Vec<u64> = (0..100_000)
            .filter(|i| (key(fp(*i)) >> 32) % SHARDS as u64 == 0)
            .take(3)
            .collect();
        store.put(fp(same_shard[0]), record(1));
        store.put(fp(same_shard[1]), stale);
        store.put(fp(same_shard[2]), record(2));
        assert!(store.get(fp(same_shard[0])).is_some(), "second chance");
        assert!(store.get(fp(same_shard[1])).is_none(), "the stale one went");
    }
}
