//! The heap cost of a tracked session: inserts 100k and then 1M sessions into each store and
//! counts the bytes allocated in between with a counting global allocator. The figure printed is
//! (heap at 1M - heap at 100k) / 900k, the same difference the benchmark harness takes of the
//! proxy's RSS, so fixed costs (the allocator, moka's housekeeping) cancel out.
//!
//! One test measures both stores in turn: the allocator's counters are process-wide, so two
//! tests running at once would count each other's allocations.

use std::alloc::System;
use std::time::Duration;

use sessionwatch_core::{BackendId, Fingerprint, SessionRecord, Timestamp};
use sessionwatch_tower::{CompactStore, MokaStore, SessionStore};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Budgets in heap bytes per tracked session: moka's entry bookkeeping dominates its figure; the
/// compact store must stay within the 200 B target of the benchmark issue.
const MOKA_MAX_BYTES: f64 = 400.0;
const COMPACT_MAX_BYTES: f64 = 200.0;

fn live_heap_bytes() -> i128 {
    let s = GLOBAL.stats();
    s.bytes_allocated as i128 - s.bytes_deallocated as i128 + s.bytes_reallocated as i128
}

/// Keys spread like keyed-hash output (the stores hash them by identity).
fn key(i: u64) -> Fingerprint {
    let x = u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    Fingerprint(x ^ (x >> 64))
}

/// Sessions issued on a login path, so presented from the start: a table keeps only a fifth of
/// its room for sessions nobody has presented, and a user's session ends up in the rest whether
/// it was issued there or promoted by its first presentation.
fn fill(store: &dyn SessionStore, from: u64, to: u64) {
    let record = SessionRecord {
        presented: true,
        ..SessionRecord::issued(BackendId(0), Timestamp::now())
    };
    for i in from..to {
        store.put(key(i), record);
    }
    store.maintain();
}

/// Heap bytes per session from 100k to 1M sessions.
fn per_session(name: &str, store: &dyn SessionStore) -> f64 {
    fill(store, 0, 1);
    let at_one = live_heap_bytes();
    fill(store, 1, 100_000);
    let at_100k = live_heap_bytes();
    fill(store, 100_000, 1_000_000);
    let at_1m = live_heap_bytes();
    assert_eq!(
        store.len(),
        1_000_000,
        "{name}: no session may be evicted below capacity"
    );
    let per_session = (at_1m - at_100k) as f64 / 900_000.0;
    let first_100k = (at_100k - at_one) as f64 / 99_999.0;
    println!(
        "{name}: heap per tracked session: {per_session:.1} B from 100k to 1M \
         ({first_100k:.1} B over the first 100k; {:.1} MiB at 1M)",
        (at_1m - at_one) as f64 / (1024.0 * 1024.0)
    );
    per_session
}

#[test]
fn bytes_per_tracked_session_at_one_million() {
    let moka = MokaStore::new(2_000_000, Duration::from_secs(1800));
    let moka_bytes = per_session("moka", &moka);
    drop(moka);
    let compact = CompactStore::new(2_000_000, Duration::from_secs(1800));
    let compact_bytes = per_session("compact", &compact);
    assert!(
        moka_bytes <= MOKA_MAX_BYTES,
        "moka: {moka_bytes:.1} B per session, over {MOKA_MAX_BYTES} B"
    );
    assert!(
        compact_bytes <= COMPACT_MAX_BYTES,
        "compact: {compact_bytes:.1} B per session, over {COMPACT_MAX_BYTES} B"
    );
}
