//! The heap cost of a tracked session: inserts 100k and then 1M sessions into a [`MokaStore`] and
//! counts the bytes allocated in between with a counting global allocator. The figure printed is
//! (heap at 1M - heap at 100k) / 900k, the same difference the benchmark harness takes of the
//! proxy's RSS, so fixed costs (the allocator, moka's housekeeping) cancel out.
//!
//! The bound guards against a change that makes every session record much larger.

use std::alloc::System;
use std::time::Duration;

use sessionwatch_core::{BackendId, Fingerprint, SessionRecord, Timestamp};
use sessionwatch_tower::{MokaStore, SessionStore};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Upper bound on heap bytes per tracked session; today's figure is printed by the test.
const MAX_BYTES_PER_SESSION: f64 = 400.0;

fn live_heap_bytes() -> i128 {
    let s = GLOBAL.stats();
    s.bytes_allocated as i128 - s.bytes_deallocated as i128 + s.bytes_reallocated as i128
}

/// Keys spread like keyed-hash output (the store hashes them by identity).
fn key(i: u64) -> Fingerprint {
    let x = u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    Fingerprint(x ^ (x >> 64))
}

fn fill(store: &MokaStore, from: u64, to: u64) {
    let record = SessionRecord::issued(BackendId(0), Timestamp::from_millis(1_795_478_400_000));
    for i in from..to {
        store.put(key(i), record);
    }
    store.run_pending_tasks();
}

#[test]
fn bytes_per_tracked_session_at_one_million() {
    let store = MokaStore::new(2_000_000, Duration::from_secs(1800));
    fill(&store, 0, 1);
    let at_one = live_heap_bytes();
    fill(&store, 1, 100_000);
    let at_100k = live_heap_bytes();
    fill(&store, 100_000, 1_000_000);
    let at_1m = live_heap_bytes();
    assert_eq!(
        store.len(),
        1_000_000,
        "no session may be evicted below capacity"
    );

    let per_session = (at_1m - at_100k) as f64 / 900_000.0;
    let first_100k = (at_100k - at_one) as f64 / 99_999.0;
    println!(
        "heap per tracked session: {per_session:.1} B from 100k to 1M \
         ({first_100k:.1} B over the first 100k; {:.1} MiB at 1M)",
        at_1m as f64 / (1024.0 * 1024.0)
    );
    assert!(
        per_session <= MAX_BYTES_PER_SESSION,
        "{per_session:.1} B per session, over the {MAX_BYTES_PER_SESSION} B budget"
    );
}
