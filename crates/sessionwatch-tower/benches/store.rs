//! Micro-benchmarks of the session tables holding 100k sessions, [`MokaStore`] (the default) and
//! [`CompactStore`]: a lookup of a tracked session (every request that carries a cookie), a miss
//! (a cookie the proxy never learned), and a write that replaces a record (a touch, at most once
//! a second per session).
//!
//! `cargo bench -p sessionwatch-tower --bench store`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use sessionwatch_core::{BackendId, Fingerprint, Fingerprinter, SessionRecord, Timestamp};
use sessionwatch_tower::{CompactStore, MokaStore, SessionStore};

const SESSIONS: u32 = 100_000;
const MAX_SESSIONS: u64 = 2_000_000;
const IDLE: Duration = Duration::from_secs(1800);

/// Fingerprints as the proxy makes them, of 32-hex-digit session ids.
fn fingerprints(from: u32, count: u32) -> Vec<Fingerprint> {
    let fp = Fingerprinter::from_secret(b"benchmark fingerprint key");
    (from..from + count)
        .map(|i| fp.fingerprint("SESSIONID", format!("{i:032x}").as_bytes()))
        .collect()
}

fn fill(store: &dyn SessionStore, keys: &[Fingerprint]) {
    let record = SessionRecord::issued(BackendId(0), Timestamp::now());
    for key in keys {
        store.put(*key, record);
    }
    store.maintain();
}

fn bench_store(c: &mut Criterion, name: &str, store: &dyn SessionStore) {
    let keys = fingerprints(0, SESSIONS);
    let misses = fingerprints(SESSIONS, 4096);
    fill(store, &keys);
    // Visit keys in a scattered order (a stride coprime with the count) so that successive
    // lookups do not share cache lines, as requests of different users do not.
    let stride = 7919;
    let mut i = 0usize;
    c.bench_function(&format!("{name}/get_hit_100k"), |b| {
        b.iter(|| {
            i = (i + stride) % keys.len();
            black_box(store.get(black_box(keys[i])))
        })
    });
    let mut m = 0usize;
    c.bench_function(&format!("{name}/get_miss_100k"), |b| {
        b.iter(|| {
            m = (m + 1) % misses.len();
            black_box(store.get(black_box(misses[m])))
        })
    });
    let mut j = 0usize;
    let mut now = Timestamp::now().as_millis();
    c.bench_function(&format!("{name}/put_replace_100k"), |b| {
        b.iter(|| {
            j = (j + stride) % keys.len();
            now += 1;
            let record = SessionRecord::issued(BackendId(1), Timestamp::from_millis(now));
            store.put(black_box(keys[j]), record);
        })
    });
    black_box(store.len());
}

fn stores(c: &mut Criterion) {
    bench_store(c, "moka_store", &MokaStore::new(MAX_SESSIONS, IDLE));
    bench_store(c, "compact_store", &CompactStore::new(MAX_SESSIONS, IDLE));
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
    targets = stores
}
criterion_main!(benches);
