//! The fleet store through the layer: replicas with their own near caches, one shared store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use sessionwatch_core::{
    Attribution, BackendId, Fingerprint, Fingerprinter, Outcome, PinPolicy, ResetSignal,
    RouteDecision, SessionRecord,
};
use tokio::sync::Semaphore;
use tower::{Service, ServiceExt};

use crate::affinity_tests::{Replica, SECRET, replica_with};
use crate::{FleetStore, Found, Lookup, Publish, SessionStore};

/// A fleet store in memory. Publishes wait for a permit when `gated`.
struct MemFleet {
    records: Mutex<HashMap<Fingerprint, SessionRecord>>,
    lookups: AtomicUsize,
    published: AtomicUsize,
    updated: AtomicUsize,
    removed: AtomicUsize,
    /// Whether the store answers lookups at all (a store that is down, or over its budget).
    silent: AtomicBool,
    gated: AtomicBool,
    permits: Arc<Semaphore>,
    /// Every lookup times out (and finds nothing).
    waits_out: AtomicBool,
}

impl Default for MemFleet {
    fn default() -> Self {
        Self {
            records: Mutex::default(),
            lookups: AtomicUsize::new(0),
            published: AtomicUsize::new(0),
            updated: AtomicUsize::new(0),
            removed: AtomicUsize::new(0),
            silent: AtomicBool::new(false),
            gated: AtomicBool::new(false),
            permits: Arc::new(Semaphore::new(0)),
            waits_out: AtomicBool::new(false),
        }
    }
}

impl FleetStore for MemFleet {
    fn lookup(&self, misses: &[Fingerprint]) -> Option<Lookup> {
        if self.silent.load(Ordering::Relaxed) {
            return None;
        }
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let records = self.records.lock().unwrap();
        let found = Found {
            records: misses
                .iter()
                .filter_map(|f| records.get(f).map(|r| (*f, *r)))
                .collect(),
            waited_out: self.waits_out.load(Ordering::Relaxed),
        };
        Some(Box::pin(async move { found }))
    }

    fn publish(&self, fingerprint: Fingerprint, record: SessionRecord) -> Option<Publish> {
        self.published.fetch_add(1, Ordering::Relaxed);
        self.records.lock().unwrap().insert(fingerprint, record);
        if !self.gated.load(Ordering::Relaxed) {
            return None;
        }
        let permits = self.permits.clone();
        Some(Box::pin(async move {
            let _ = permits.acquire().await;
        }))
    }

    fn update(&self, fingerprint: Fingerprint, record: SessionRecord) {
        self.updated.fetch_add(1, Ordering::Relaxed);
        self.records.lock().unwrap().insert(fingerprint, record);
    }

    fn remove(&self, fingerprint: Fingerprint) {
        self.removed.fetch_add(1, Ordering::Relaxed);
        self.records.lock().unwrap().remove(&fingerprint);
    }
}

fn fleet_of_two(policy: PinPolicy) -> (Arc<MemFleet>, Replica, Replica) {
    let fleet = Arc::new(MemFleet::default());
    let shared: Arc<dyn FleetStore> = fleet.clone();
    let a = replica_with(SECRET, policy, false, 0, None, Some(shared.clone()));
    let b = replica_with(SECRET, policy, false, 1, None, Some(shared));
    (fleet, a, b)
}

fn fingerprint(value: &[u8]) -> Fingerprint {
    Fingerprinter::from_secret(SECRET).fingerprint("SID", value)
}

#[tokio::test]
async fn a_session_one_replica_saw_issued_pins_on_another() {
    let (fleet, mut a, mut b) = fleet_of_two(PinPolicy::Learn);
    a.send("/login", "").await;
    assert_eq!(fleet.published.load(Ordering::Relaxed), 1);

    // B balances to node 1, which would send the user to the login page: the fleet's record
    // pins the request to node 0.
    let resp = b.send("/me", "SID=0-user").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        b.seen.routes.lock().unwrap()[0],
        Some(RouteDecision::Pin(BackendId(0)))
    );
    // B's near cache has it now, presented: the next request does not ask again.
    let record = b.store.get(fingerprint(b"0-user")).unwrap();
    assert_eq!(record.issuer, BackendId(0));
    assert!(record.presented);
    b.send("/me", "SID=0-user").await;
    assert_eq!(fleet.lookups.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn with_pin_off_another_replica_attributes_the_reset_to_the_issuer() {
    let (_fleet, mut a, mut b) = fleet_of_two(PinPolicy::Off);
    a.send("/login", "").await;
    let resp = b.send("/me", "SID=0-user").await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(
        *b.seen.observed.lock().unwrap(),
        [(
            Outcome::Reset {
                signal: ResetSignal::LoginRedirect,
                attribution: Attribution::CrossBackend,
            },
            BackendId(0),
            BackendId(1),
        )]
    );
}

#[tokio::test]
async fn a_store_that_does_not_answer_leaves_the_session_unknown() {
    let (fleet, mut a, mut b) = fleet_of_two(PinPolicy::Learn);
    a.send("/login", "").await;
    fleet.silent.store(true, Ordering::Relaxed);
    let resp = b.send("/me", "SID=0-user").await;
    assert_eq!(resp.status(), StatusCode::FOUND, "balanced, not pinned");
    assert_eq!(
        b.seen.routes.lock().unwrap()[0],
        Some(RouteDecision::Balance)
    );
    assert!(b.seen.observed.lock().unwrap().is_empty(), "no verdict");
}

#[tokio::test]
async fn a_session_the_near_cache_knows_is_not_looked_up() {
    let (fleet, mut a, _b) = fleet_of_two(PinPolicy::Learn);
    a.send("/login", "").await;
    a.send("/me", "SID=0-user").await;
    a.send("/me", "SID=0-user").await;
    assert_eq!(fleet.lookups.load(Ordering::Relaxed), 0);
    // A request without any session cookie asks nothing either.
    a.send("/", "").await;
    assert_eq!(fleet.lookups.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn the_answer_that_issues_a_session_waits_for_the_fleet_write() {
    let (fleet, mut a, _b) = fleet_of_two(PinPolicy::Learn);
    fleet.gated.store(true, Ordering::Relaxed);
    let req = crate::affinity_tests::get("/login", "");
    let call = a.svc.ready().await.unwrap().call(req);
    let mut call = Box::pin(call);
    let early = tokio::time::timeout(Duration::from_secs(1), &mut call).await;
    assert!(early.is_err(), "the answer went before the write was done");
    assert_eq!(fleet.published.load(Ordering::Relaxed), 1);
    fleet.permits.add_permits(1);
    let resp = call.await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().contains_key("set-cookie"));
}

#[tokio::test]
async fn a_logout_is_removed_from_the_fleet_and_renewals_are_updates() {
    let (fleet, mut a, _b) = fleet_of_two(PinPolicy::Learn);
    a.send("/login", "").await;
    a.send("/me", "SID=0-user").await;
    assert_eq!(fleet.published.load(Ordering::Relaxed), 1);
    a.send("/logout", "SID=0-user").await;
    assert_eq!(fleet.removed.load(Ordering::Relaxed), 1);
    assert!(fleet.records.lock().unwrap().is_empty());
}

#[tokio::test]
async fn with_the_cookie_too_the_cookie_answers_first_and_the_fleet_covers_clients_that_drop_it() {
    let fleet = Arc::new(MemFleet::default());
    let shared: Arc<dyn FleetStore> = fleet.clone();
    let mut a = replica_with(
        SECRET,
        PinPolicy::Learn,
        true,
        0,
        None,
        Some(shared.clone()),
    );
    let mut b = replica_with(
        SECRET,
        PinPolicy::Learn,
        true,
        1,
        None,
        Some(shared.clone()),
    );
    let mut c = replica_with(SECRET, PinPolicy::Learn, true, 1, None, Some(shared));
    let login = a.send("/login", "").await;
    let swaff = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find_map(|v| {
            v.strip_prefix("swaff=")
                .map(|r| r.split(';').next().unwrap().to_owned())
        })
        .expect("the affinity cookie");

    // With the cookie: adopted, pinned, and Redis not asked.
    let resp = b.send("/me", &format!("SID=0-user; swaff={swaff}")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(fleet.lookups.load(Ordering::Relaxed), 0);

    // A client that dropped the cookie: the fleet store knows the session all the same.
    let resp = c.send("/me", "SID=0-user").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(fleet.lookups.load(Ordering::Relaxed), 1);
    assert_eq!(
        c.seen.routes.lock().unwrap()[0],
        Some(RouteDecision::Pin(BackendId(0)))
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_that_waited_out_its_lookup_does_not_wait_for_its_write() {
    let (fleet, mut a, _b) = fleet_of_two(PinPolicy::Learn);
    fleet.gated.store(true, Ordering::Relaxed);
    fleet.waits_out.store(true, Ordering::Relaxed);
    // A sign-in that carries an old value the near cache misses: a lookup (waited out), then
    // the new session the answer issues.
    let req = crate::affinity_tests::get("/login", "SID=stale");
    let call = a.svc.ready().await.unwrap().call(req);
    let resp = tokio::time::timeout(Duration::from_secs(1), call)
        .await
        .expect("the answer waited a second time")
        .unwrap();
    assert!(resp.headers().contains_key("set-cookie"));
    assert_eq!(fleet.lookups.load(Ordering::Relaxed), 1);
    assert_eq!(fleet.published.load(Ordering::Relaxed), 0);
    // The session still reaches the fleet, batched.
    assert_eq!(fleet.updated.load(Ordering::Relaxed), 1);
}

#[test]
fn the_fleet_hears_of_a_last_use_once_an_eighth_of_the_idle_timeout() {
    use sessionwatch_core::Timestamp;
    let idle = Duration::from_secs(800);
    let at = |s: u64| Timestamp::from_millis(1_000_000_000 + s * 1000);
    let record = |seen: u64| SessionRecord {
        last_seen: at(seen),
        ..SessionRecord::issued(BackendId(0), at(0))
    };
    // Touches within one eighth (100 s) of the timeout: the fleet's copy is recent enough.
    assert!(!crate::answer::fleet_needs(
        Some(record(0)),
        &record(30),
        idle
    ));
    assert!(!crate::answer::fleet_needs(
        Some(record(30)),
        &record(60),
        idle
    ));
    // Into the next eighth: written.
    assert!(crate::answer::fleet_needs(
        Some(record(90)),
        &record(120),
        idle
    ));
    // Anything else that changed is written at once.
    let lost = SessionRecord {
        lost: true,
        ..record(31)
    };
    assert!(crate::answer::fleet_needs(Some(record(30)), &lost, idle));
    assert!(crate::answer::fleet_needs(None, &record(30), idle));
}
