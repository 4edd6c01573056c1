//! Micro-benchmarks of the embedded session table, [`MokaStore`], holding 100k sessions: a lookup
//! of a tracked session (every request that carries a cookie), a miss (a cookie the proxy never
//! learned), and a write that replaces a record (a touch, at most once a second per session).
//!
//! `cargo bench -p sessionwatch-tower --bench store`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use sessionwatch_core::{BackendId, Fingerprint, Fingerprinter, SessionRecord, Timestamp};
use sessionwatch_tower::{MokaStore, SessionStore};

const SESSIONS: u32 = 100_000;

/// Fingerprints as the proxy makes them, of 32-hex-digit session ids.
fn fingerprints(from: u32, count: u32) -> Vec<Fingerprint> {
    let fp = Fingerprinter::from_secret(b"benchmark fingerprint key");
    (from..from + count)
        .map(|i| fp.fingerprint("SESSIONID", format!("{i:032x}").as_bytes()))
        .collect()
}

fn filled() -> (MokaStore, Vec<Fingerprint>) {
    let store = MokaStore::new(2_000_000, Duration::from_secs(1800));
    let keys = fingerprints(0, SESSIONS);
    let record = SessionRecord::issued(BackendId(0), Timestamp::from_millis(1_795_478_400_000));
    for key in &keys {
        store.put(*key, record);
    }
    store.run_pending_tasks();
    (store, keys)
}

fn store(c: &mut Criterion) {
    let (store, keys) = filled();
    let misses = fingerprints(SESSIONS, 4096);
    // Visit keys in a scattered order (a stride coprime with the count) so that successive
    // lookups do not share cache lines, as requests of different users do not.
    let stride = 7919;
    let mut i = 0usize;
    c.bench_function("moka_store/get_hit_100k", |b| {
        b.iter(|| {
            i = (i + stride) % keys.len();
            black_box(store.get(black_box(keys[i])))
        })
    });
    let mut m = 0usize;
    c.bench_function("moka_store/get_miss_100k", |b| {
        b.iter(|| {
            m = (m + 1) % misses.len();
            black_box(store.get(black_box(misses[m])))
        })
    });
    let mut j = 0usize;
    let mut now = 1_795_478_400_000u64;
    c.bench_function("moka_store/put_replace_100k", |b| {
        b.iter(|| {
            j = (j + stride) % keys.len();
            now += 1;
            let record = SessionRecord::issued(BackendId(1), Timestamp::from_millis(now));
            store.put(black_box(keys[j]), record);
        })
    });
    black_box(store.len());
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = store
}
criterion_main!(benches);
