//! A fleet of replicas in front of the real PHP farm, each request sent to a replica chosen at
//! random, against one replica in front of the same farm:
//!
//! - sharing one real `redis-server` (`store = "redis"`): with `pin = "off"` at least 99% of the
//!   losses users saw are detected, every one cross-backend, and a healthy farm shows none; with
//!   `pin = "learn"` nobody is logged out; the same figures as one replica;
//! - the same with the signed affinity cookie and no Redis;
//! - Redis killed (SIGKILL, restarted empty) or stalled (SIGSTOP, then SIGCONT) mid-run: no
//!   client request fails, only requests counted by the proxy's timeout counter waited (at most
//!   once each), `store_degraded` and `store_recovered` are written, and detection is back above
//!   99% once Redis answers again.
//!
//! Needs `php` (Debian's php-cli) and `redis-server` (Debian's redis-server); without them
//! every test fails and says so.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, StatusCode};
use sessionwatch_proxy::RunningProxy;
use sessionwatch_tests::browser::Browser;
use sessionwatch_tests::php::{COOKIE, PhpFarm, Store, proxy_with_sections};
use sessionwatch_tests::redis::RedisServer;
use sessionwatch_tests::{Scratch, lines_of, metric_sum};

const USERS: usize = 30;
const REQUESTS: usize = 10;

/// How the replicas agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shared {
    /// One replica: nothing to agree on.
    Alone,
    /// A real `redis-server`.
    Redis,
    /// The signed affinity cookie, no shared store.
    Cookie,
}

struct Fleet {
    farm: PhpFarm,
    redis: Option<RedisServer>,
    proxies: Vec<RunningProxy>,
    logs: Vec<Scratch>,
    _scratch: Scratch,
}

/// The Redis settings of the tests: generous for a loaded 2-core machine; the default
/// (`5ms`) is what production uses.
fn redis_section(url: &str) -> String {
    format!("[redis]\nurl = \"{url}\"\ntimeout = \"250ms\"\n")
}

async fn fleet(name: &str, replicas: usize, shared: Shared, store: Store, pin: &str) -> Fleet {
    fleet_with(name, replicas, shared, store, pin, "").await
}

/// [`fleet`] with `incident` (more `[incident]` keys) in every replica's configuration.
async fn fleet_with(
    name: &str,
    replicas: usize,
    shared: Shared,
    store: Store,
    pin: &str,
    incident: &str,
) -> Fleet {
    let scratch = Scratch::new(name);
    let farm = tokio::task::block_in_place(|| PhpFarm::start(&scratch, store, false));
    let redis = (shared == Shared::Redis)
        .then(|| tokio::task::block_in_place(|| RedisServer::start(&scratch.path().join("redis"))));
    let (session_extra, tables) = match (&redis, shared) {
        (Some(r), _) => ("store = \"redis\"".to_owned(), redis_section(&r.url())),
        (None, Shared::Cookie) => ("affinity_cookie = true".to_owned(), String::new()),
        (None, _) => (String::new(), String::new()),
    };
    let sections = format!("{incident}\n{tables}");
    let mut proxies = Vec::new();
    let mut logs = Vec::new();
    for i in 0..replicas {
        let log = Scratch::new(&format!("{name}-replica-{i}"));
        proxies.push(
            proxy_with_sections(&farm, &log.alert_log(), pin, &session_extra, &sections).await,
        );
        logs.push(log);
    }
    Fleet {
        farm,
        redis,
        proxies,
        logs,
        _scratch: scratch,
    }
}

/// What the users saw and what the replicas said.
#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    requests: usize,
    /// `GET /me` answered with the login redirect.
    losses: usize,
    /// Requests that failed (a proxy error or no answer).
    failed: usize,
}

/// One user of the PHP application.
struct User {
    browser: Browser,
    form: &'static str,
    signed_in: bool,
}

impl User {
    fn new(seed: u64, n: usize) -> Self {
        Self {
            browser: Browser::new(),
            form: Box::leak(format!("user=u{seed}-{n}").into_boxed_str()),
            signed_in: false,
        }
    }
}

/// A deterministic stream of replica choices.
struct Pick(u64);

impl Pick {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

impl Fleet {
    fn addrs(&self) -> Vec<SocketAddr> {
        self.proxies.iter().map(RunningProxy::addr).collect()
    }

    /// `users` new users sign in and ask `GET /me` `REQUESTS` times, each request on a replica
    /// picked at random, signing in again after every loss.
    async fn drive(&self, users: usize, seed: u64) -> Figures {
        let mut users = (0..users).map(|u| User::new(seed, u)).collect::<Vec<_>>();
        self.go_on(&mut users, seed).await
    }

    /// The same for users who may have signed in already: they go on with their sessions.
    async fn go_on(&self, users: &mut [User], seed: u64) -> Figures {
        let addrs = self.addrs();
        let mut pick = Pick(seed | 1);
        let mut f = Figures::default();
        for user in users {
            for _ in 0..=REQUESTS {
                let to = addrs[pick.next(addrs.len())];
                f.requests += 1;
                if !user.signed_in {
                    let (status, _, _) = user
                        .browser
                        .send(to, Method::POST, "/login", user.form)
                        .await;
                    if status == StatusCode::FOUND && user.browser.cookie(COOKIE).is_some() {
                        user.signed_in = true;
                    } else {
                        f.failed += 1;
                    }
                    continue;
                }
                let (status, _, _) = user.browser.send(to, Method::GET, "/me", "").await;
                match status {
                    StatusCode::OK => {}
                    StatusCode::FOUND => {
                        f.losses += 1;
                        user.signed_in = false;
                    }
                    _ => f.failed += 1,
                }
            }
        }
        f
    }

    fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        self.proxies
            .iter()
            .map(|p| metric_sum(&p.metrics_text(), name, labels))
            .sum()
    }

    /// Every replica's lines of `kind`.
    fn lines(&self, kind: &str) -> Vec<serde_json::Value> {
        let mut all = Vec::new();
        for (proxy, log) in self.proxies.iter().zip(&self.logs) {
            tokio::task::block_in_place(|| proxy.flush_alerts());
            all.extend(lines_of(&log.alert_log(), kind));
        }
        all
    }

    async fn stop(self) {
        for proxy in self.proxies {
            proxy.shutdown().await;
        }
        drop(self.farm);
        drop(self.redis);
    }
}

/// Detection under `pin = "off"`: the share of losses reported, and every report cross-backend.
async fn detection(name: &str, replicas: usize, shared: Shared) -> (Figures, usize) {
    let fleet = fleet(name, replicas, shared, Store::PerNode, "off").await;
    let figures = fleet.drive(USERS, 7).await;
    let resets = fleet.lines("session_reset");
    let farm_logs = fleet.farm.logs();
    fleet.stop().await;
    eprintln!("{name}: {figures:?}, {} resets reported", resets.len());
    assert_eq!(figures.failed, 0, "{figures:?}\n{farm_logs}");
    assert!(
        figures.losses >= USERS * REQUESTS / 4,
        "a per-node farm behind random replicas loses about half the requests: {figures:?}"
    );
    for line in &resets {
        assert_eq!(line["attribution"], "cross_backend", "{line}");
    }
    assert!(
        resets.len() <= figures.losses,
        "more resets ({}) than losses: {figures:?}",
        resets.len()
    );
    assert!(
        resets.len() * 100 >= figures.losses * 99,
        "{name}: {} resets detected of {} losses users saw ({:.2})",
        resets.len(),
        figures.losses,
        resets.len() as f64 / figures.losses as f64
    );
    (figures, resets.len())
}

async fn logouts(name: &str, replicas: usize, shared: Shared) -> Figures {
    let fleet = fleet(name, replicas, shared, Store::PerNode, "learn").await;
    let figures = fleet.drive(USERS, 11).await;
    fleet.stop().await;
    assert_eq!(figures.failed, 0, "{figures:?}");
    assert_eq!(
        figures.losses, 0,
        "{name}: users logged out under learn: {figures:?}"
    );
    figures
}

async fn healthy(name: &str, replicas: usize, shared: Shared) {
    let fleet = fleet(name, replicas, shared, Store::Shared, "off").await;
    let figures = fleet.drive(USERS / 2, 13).await;
    let resets = fleet.lines("session_reset");
    fleet.stop().await;
    assert_eq!(figures.failed, 0, "{figures:?}");
    assert_eq!(
        figures.losses, 0,
        "a shared-store farm loses nothing: {figures:?}"
    );
    assert!(resets.is_empty(), "{name}: {resets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_detects_every_loss() {
    detection("fleet-one-off", 1, Shared::Alone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_sharing_redis_detect_every_loss_as_one_does() {
    detection("fleet-redis-off", 3, Shared::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_with_the_affinity_cookie_detect_every_loss_as_one_does() {
    detection("fleet-cookie-off", 3, Shared::Cookie).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_without_either_miss_most_losses() {
    // The regression the fleet store exists for: replicas that share nothing do not know the
    // sessions the others saw issued.
    let fleet = fleet("fleet-none-off", 3, Shared::Alone, Store::PerNode, "off").await;
    let figures = fleet.drive(USERS, 7).await;
    let resets = fleet.lines("session_reset");
    fleet.stop().await;
    eprintln!(
        "fleet-none-off: {figures:?}, {} resets reported",
        resets.len()
    );
    assert!(
        resets.len() * 100 < figures.losses * 80,
        "{} of {} detected",
        resets.len(),
        figures.losses
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_learn_nobody_is_logged_out_by_one_replica_or_a_fleet() {
    logouts("fleet-one-learn", 1, Shared::Alone).await;
    logouts("fleet-redis-learn", 3, Shared::Redis).await;
    logouts("fleet-cookie-learn", 3, Shared::Cookie).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_farm_shows_no_reset_to_one_replica_or_a_fleet() {
    healthy("fleet-one-healthy", 1, Shared::Alone).await;
    healthy("fleet-redis-healthy", 3, Shared::Redis).await;
    healthy("fleet-cookie-healthy", 3, Shared::Cookie).await;
}

/// Drives users while `fault` runs on Redis for about ten seconds, then checks what the
/// replicas did, and that detection is back once Redis answers again.
async fn outage(
    name: &str,
    fault: impl FnOnce(&mut RedisServer) + Send,
    recover: impl FnOnce(&mut RedisServer) + Send,
    recovered_as: &str,
) {
    let mut fleet = fleet(name, 3, Shared::Redis, Store::PerNode, "off").await;
    let mut old = (0..USERS).map(|u| User::new(17, u)).collect::<Vec<_>>();
    let before = fleet.go_on(&mut old, 17).await;
    assert_eq!(before.failed, 0, "{before:?}");

    let mut redis = fleet.redis.take().expect("a redis");
    fault(&mut redis);
    let started = tokio::time::Instant::now();
    let mut during = Figures::default();
    let mut seed = 19;
    while started.elapsed() < Duration::from_secs(10) {
        let f = fleet.drive(2, seed).await;
        seed += 2;
        during.requests += f.requests;
        during.losses += f.losses;
        during.failed += f.failed;
    }
    recover(&mut redis);
    fleet.redis = Some(redis);
    assert_eq!(
        during.failed, 0,
        "a client request failed during the outage: {during:?}"
    );

    // Back: every replica says so within a few seconds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fleet.lines("store_recovered").len() < fleet.proxies.len()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let degraded = fleet.lines("store_degraded");
    let recovered = fleet.lines("store_recovered");
    assert_eq!(degraded.len(), fleet.proxies.len(), "{degraded:?}");
    assert_eq!(recovered.len(), fleet.proxies.len(), "{recovered:?}");
    for line in &recovered {
        assert_eq!(line["reason"], recovered_as, "{line}");
    }
    assert_eq!(
        fleet.metric("sessionwatch_store_up", &[]),
        fleet.proxies.len() as f64
    );

    // Every request that waited on Redis is counted, and none waited twice: at most one
    // timeout per request sent while Redis was out, and the rest went on without waiting.
    let timeouts = fleet.metric("sessionwatch_store_timeouts_total", &[]);
    let skipped = fleet.metric(
        "sessionwatch_store_lookups_skipped_total",
        &["reason=\"down\""],
    );
    eprintln!(
        "{name}: during {during:?}: {timeouts} requests waited the whole timeout, {skipped} \
         lookups went on without waiting"
    );
    assert!(
        timeouts <= during.requests as f64,
        "{timeouts} timeouts for {during:?}"
    );
    assert!(
        skipped > 0.0,
        "no lookup went on without waiting: {during:?}"
    );

    // Detection is back above 99% within 5 s of Redis's return, for the sessions of users who
    // signed in before the outage (a Redis restarted empty has them again from the replicas'
    // near caches) as for new ones.
    let resets_before = fleet.lines("session_reset").len();
    let mut after = fleet.go_on(&mut old, 23).await;
    let new = fleet.drive(USERS, 29).await;
    after.requests += new.requests;
    after.losses += new.losses;
    after.failed += new.failed;
    let resets_after = fleet.lines("session_reset").len() - resets_before;
    eprintln!("{name}: after {after:?}: {resets_after} resets reported");
    fleet.stop().await;
    assert_eq!(after.failed, 0, "{after:?}");
    assert!(
        resets_after * 100 >= after.losses * 99,
        "after the outage: {resets_after} detected of {} losses",
        after.losses
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_empty_fails_no_request() {
    outage(
        "fleet-redis-killed",
        |r| tokio::task::block_in_place(|| r.kill()),
        |r| tokio::task::block_in_place(|| r.restart()),
        // Empty: every replica writes its whole near cache back.
        "answering_empty",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stalled_fails_no_request() {
    outage(
        "fleet-redis-stalled",
        |r| r.pause(),
        |r| r.resume(),
        // Its data kept: only what changed while it was out is written back.
        "answering",
    )
    .await;
}

/// An incident the fleet's traffic opens, though no replica alone sees enough resets: the
/// replicas sharing Redis add up their windows; with the affinity cookie alone each decides on
/// its own third.
async fn fleet_incident(name: &str, shared: Shared) -> (usize, Vec<serde_json::Value>) {
    // About 13 of the 40-odd losses reach each replica: under 25 alone, over it together.
    let fleet = fleet_with(name, 3, shared, Store::PerNode, "off", "min_resets = 25").await;
    let figures = fleet.drive(9, 31).await;
    let resets = fleet.lines("session_reset").len();
    // Enough resets reach the fleet's window to open it (detection itself is the subject of the
    // tests above, over more traffic).
    assert!(
        figures.losses >= 30 && resets >= 28,
        "{figures:?}, {resets} detected; store: {} timeouts, {} skipped, {} errors, {} outages",
        fleet.metric("sessionwatch_store_timeouts_total", &[]),
        fleet.metric("sessionwatch_store_lookups_skipped_total", &[]),
        fleet.metric("sessionwatch_store_lookups_total", &["result=\"error\""]),
        fleet.metric("sessionwatch_store_outages_total", &[]),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut opened = Vec::new();
    while tokio::time::Instant::now() < deadline {
        opened = fleet.lines("incident_opened");
        if opened.len() == fleet.proxies.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fleet.stop().await;
    eprintln!("{name}: {figures:?}, {} replicas opened", opened.len());
    (figures.losses, opened)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_redis_open_the_incident_on_the_fleets_traffic() {
    let (losses, opened) = fleet_incident("fleet-incident-redis", Shared::Redis).await;
    assert_eq!(opened.len(), 3, "every replica opens: {opened:?}");
    for line in &opened {
        assert!(line["resets"].as_u64().unwrap() >= 25, "{line}");
        assert!(line["resets"].as_u64().unwrap() <= losses as u64, "{line}");
        assert_eq!(line["hint"]["code"], "store_not_shared", "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_the_cookie_alone_decide_on_their_own_share() {
    // What the README says the cookie-only fleet costs: the same traffic opens nothing.
    let (_, opened) = fleet_incident("fleet-incident-cookie", Shared::Cookie).await;
    assert!(opened.is_empty(), "{opened:?}");
}
