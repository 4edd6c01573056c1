//! What every store must do under churn, run against each store by its own tests: sessions
//! clients have presented (or that were issued on a login path) survive a flood of sessions
//! nobody presents, probation stays within a fifth of the table, and the table within
//! `max_sessions`.

use sessionwatch_core::{BackendId, Fingerprint, SessionRecord, Timestamp};

use crate::{Evictions, SessionStore};

/// What the scenarios need to see inside a store.
pub(crate) trait Probe: SessionStore {
    /// Apply pending evictions, so that counts are exact.
    fn settle(&self);
    /// Records in probation.
    fn probation_len(&self) -> u64;
    /// The first of `candidates` that fill the presented part to the brim, so that a table can
    /// be made exactly full whatever its layout.
    fn filling_presented(&self, candidates: impl Iterator<Item = Fingerprint>) -> Vec<Fingerprint>;
}

/// Fingerprints spread like keyed-hash output; `space` keeps sets apart. Distinct in their low
/// and their folded 64 bits alike (the multiplier is odd), so no two collide in either store.
pub(crate) fn fp(space: u64, i: u64) -> Fingerprint {
    let n = u128::from(space << 48 | (i & ((1 << 48) - 1)));
    let x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    Fingerprint(x ^ (x >> 64))
}

const USERS: u64 = 1;
const FLOOD: u64 = 2;
const MORE_USERS: u64 = 3;

fn issued() -> SessionRecord {
    SessionRecord::issued(BackendId(1), Timestamp::now())
}

fn signed_in() -> SessionRecord {
    SessionRecord {
        presented: true,
        ..issued()
    }
}

/// The presented part filled exactly: every other session presented by a client after its issue,
/// the rest issued on a login path and never looked up.
fn fill_presented<S: Probe>(store: &S) -> Vec<Fingerprint> {
    let users = store.filling_presented((0..).map(|i| fp(USERS, i)));
    for (i, &user) in users.iter().enumerate() {
        if i % 2 == 0 {
            store.put(user, issued());
            let got = store.get(user).expect("a session just issued is tracked");
            assert!(got.presented, "a lookup is a presentation");
        } else {
            store.put(user, signed_in());
        }
    }
    store.settle();
    assert_eq!(store.len(), users.len() as u64);
    assert_eq!(store.probation_len(), 0, "every one was promoted");
    users
}

/// A full table of presented sessions, then ten tables' worth of sessions nobody presents.
pub(crate) fn presented_sessions_survive_a_flood<S: Probe>(store: &S, max: u64) {
    let users = fill_presented(store);
    assert!(
        users.len() as u64 >= max * 3 / 4,
        "the presented part holds most of the table: {} of {max}",
        users.len()
    );
    let flood = 10 * max;
    for i in 0..flood {
        store.put(fp(FLOOD, i), issued());
        if i % (max / 10) == 0 {
            store.settle();
            assert!(
                store.probation_len() <= max / 5,
                "probation holds {} after {i} flood sessions, over a fifth of {max}",
                store.probation_len()
            );
            assert!(store.len() <= max, "{} tracked, over {max}", store.len());
        }
    }
    store.settle();
    let survivors = users.iter().filter(|&&u| store.get(u).is_some()).count();
    assert_eq!(
        survivors,
        users.len(),
        "every presented session outlived the flood"
    );
    assert!(store.len() <= max, "{} tracked, over {max}", store.len());
    assert!(store.probation_len() <= max / 5);
    assert!(
        store.probation_len() > 0,
        "the newest flood sessions are tracked"
    );
    assert_eq!(
        store.evictions(),
        Evictions {
            presented: 0,
            unpresented: flood - store.probation_len(),
        },
        "every flood session but those still in probation was evicted, and nothing else"
    );
}

/// A session waits in probation until a client sends it back; then a flood cannot touch it.
pub(crate) fn a_presented_session_is_promoted<S: Probe>(store: &S, max: u64) {
    let session = fp(USERS, 0);
    store.put(session, issued());
    store.settle();
    assert_eq!(store.probation_len(), 1);
    assert!(
        store.get(session).expect("tracked").presented,
        "the lookup presented it"
    );
    store.settle();
    assert_eq!(store.probation_len(), 0, "promoted out of probation");
    assert_eq!(store.len(), 1);
    // Issued again as if new (a framework re-sending the cookie): it stays presented.
    store.put(session, issued());
    store.settle();
    assert_eq!(store.probation_len(), 0);
    assert!(store.get(session).expect("tracked").presented);

    // A second session, issued and never presented, is flooded out; the presented one is not.
    let ignored = fp(USERS, 1);
    store.put(ignored, issued());
    for i in 0..2 * max {
        store.put(fp(FLOOD, i), issued());
    }
    store.settle();
    assert!(store.get(session).is_some(), "the presented session stayed");
    assert!(store.get(ignored).is_none(), "the unpresented one went");
}

/// When the presented part itself is full, a newly signed-in session displaces a presented one,
/// and each such eviction is counted.
pub(crate) fn presented_evictions_are_counted<S: Probe>(store: &S, max: u64) {
    let users = fill_presented(store);
    let extra = 7;
    for i in 0..extra {
        store.put(fp(MORE_USERS, i), signed_in());
    }
    store.settle();
    assert_eq!(
        store.evictions(),
        Evictions {
            presented: extra,
            unpresented: 0,
        }
    );
    assert_eq!(store.len(), users.len() as u64, "full, and no fuller");
    assert!(store.len() <= max);
    // Sessions nobody presented neither displace presented ones nor count as such.
    for i in 0..max {
        store.put(fp(FLOOD, i), issued());
    }
    store.settle();
    assert_eq!(store.evictions().presented, extra);
}
