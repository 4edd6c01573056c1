//! Live sessions against table churn, end to end on the real PHP farm.
//!
//! PHP starts a fresh session for every request that brings no cookie, so a bot, a crawler or an
//! attacker sending such requests fills the session table with sessions no client ever presents.
//! Here the farm is the broken one (each node its own session store) behind the proxy with
//! `pin = "learn"` and a small table (`max_sessions = 500`), so a user whose session the proxy
//! forgets is routed by round robin and, half the time, logged out by the node that does not hold
//! the session. One client floods cookie-less `GET /me` for the whole run (it fills the table
//! before the users arrive) while 30 users sign in and browse: nobody may be logged out, with
//! either store, and the table's eviction counter shows the flood churned only sessions nobody
//! presented.
//!
//! Needs the `php` command line (Debian's `php-cli`); without it every test fails and says so.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sessionwatch_test_support::{
    DriveConfig, DriveReport, SharedClient, drive_users, shared_client,
};
use sessionwatch_tests::php::{COOKIE, PhpFarm, Store, proxy_with};
use sessionwatch_tests::{Scratch, http_get, lines_of, metric_sum};
use tokio::task::JoinSet;

const MAX_SESSIONS: u64 = 500;
const USERS: usize = 30;
const REQUESTS_PER_USER: usize = 20;
/// Users in flight at once, as in the other PHP farm tests.
const USER_CONCURRENCY: usize = 12;
/// Flood requests in flight at once, all from one client. Well above the users' concurrency, so
/// that the flood issues several new sessions for every request a user makes and the table
/// turns over many times while the users browse.
const FLOOD_CONCURRENCY: usize = 24;
/// Bounds on each phase, far above what they take, so that a hung farm fails the test instead
/// of stalling it.
const FILL_WITHIN: Duration = Duration::from_secs(30);
const USERS_WITHIN: Duration = Duration::from_secs(90);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the flood saw.
#[derive(Debug, Default)]
struct FloodTally {
    /// Requests answered.
    answered: AtomicU64,
    /// Answers that set a `PHPSESSID`: sessions issued that nobody will present.
    issued: AtomicU64,
    /// Requests that failed or timed out.
    errors: AtomicU64,
}

/// One cookie-less `GET /me`; whether its answer set a session cookie.
async fn flood_request(client: &SharedClient, uri: &http::Uri) -> Result<bool, ()> {
    let req = http::Request::get(uri.clone())
        .body(Full::new(Bytes::new()))
        .map_err(|_| ())?;
    let exchange = async {
        let resp = client.request(req).await.map_err(|_| ())?;
        let issued = resp
            .headers()
            .get_all(http::header::SET_COOKIE)
            .iter()
            .any(|v| v.as_bytes().starts_with(format!("{COOKIE}=").as_bytes()));
        resp.into_body().collect().await.map_err(|_| ())?;
        Ok(issued)
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| ())?
}

/// Floods `proxy` with cookie-less `GET /me` from one client until `stop` is set.
fn start_flood(proxy: SocketAddr, stop: Arc<AtomicBool>, tally: Arc<FloodTally>) -> JoinSet<()> {
    let client = shared_client();
    let uri: http::Uri = format!("http://{proxy}/me").parse().expect("flood uri");
    let mut tasks = JoinSet::new();
    for _ in 0..FLOOD_CONCURRENCY {
        let (client, uri, stop, tally) = (client.clone(), uri.clone(), stop.clone(), tally.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match flood_request(&client, &uri).await {
                    Ok(issued) => {
                        tally.answered.fetch_add(1, Ordering::Relaxed);
                        tally.issued.fetch_add(u64::from(issued), Ordering::Relaxed);
                    }
                    Err(()) => {
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    tasks
}

async fn users_browse_through_a_flood(name: &str, store: &str) {
    let scratch = Scratch::new(name);
    let alert_log = scratch.alert_log();
    let farm = tokio::task::block_in_place(|| PhpFarm::start(&scratch, Store::PerNode, false));
    let session = format!("max_sessions = {MAX_SESSIONS}\nstore = \"{store}\"");
    let proxy = proxy_with(&farm, &alert_log, "learn", &session).await;

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(FloodTally::default());
    let mut flood = start_flood(proxy.addr(), stop.clone(), tally.clone());

    // The users arrive at a table the flood has already filled.
    let filled = tokio::time::timeout(FILL_WITHIN, async {
        while tally.issued.load(Ordering::Relaxed) < MAX_SESSIONS {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        filled.is_ok(),
        "the flood issued {tally:?} sessions in {FILL_WITHIN:?}, short of the table's \
         {MAX_SESSIONS}\n{}",
        farm.logs()
    );
    let issued_before_users = tally.issued.load(Ordering::Relaxed);

    let users = DriveConfig::new(USERS, REQUESTS_PER_USER).with_concurrency(USER_CONCURRENCY);
    let report: DriveReport =
        tokio::time::timeout(USERS_WITHIN, drive_users(proxy.addr(), COOKIE, users))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the users did not finish within {USERS_WITHIN:?}\n{}",
                    farm.logs()
                )
            });

    stop.store(true, Ordering::Relaxed);
    while let Some(joined) = flood.join_next().await {
        joined.expect("a flood task panicked");
    }
    let issued_during_users = tally.issued.load(Ordering::Relaxed) - issued_before_users;

    // What the users saw, without the raw session values the report also holds.
    let seen = format!(
        "{} requests, {} logged out, losses per user {:?}, {} errors",
        report.requests, report.logged_out, report.losses_per_user, report.errors
    );
    assert_eq!(report.errors, 0, "{seen}\n{}", farm.logs());
    assert_eq!(report.requests, (USERS * REQUESTS_PER_USER) as u64);
    assert_eq!(
        report.logged_out, 0,
        "users were logged out while the flood churned the table ({issued_during_users} \
         sessions issued to the flood while they browsed): {seen}"
    );
    assert_eq!(tally.errors.load(Ordering::Relaxed), 0, "{tally:?}");
    // Without turnover the test would prove nothing: the flood must have issued several
    // tables' worth of sessions while the users browsed.
    assert!(
        issued_during_users >= 2 * MAX_SESSIONS,
        "the flood issued only {issued_during_users} sessions while the users browsed ({tally:?})"
    );

    // Pending evictions applied now rather than at the next housekeeping tick, so the scrape
    // counts them all.
    tokio::task::block_in_place(|| proxy.maintain_sessions());
    let admin = proxy.admin_addr().expect("admin listener configured");
    let (status, metrics) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200, "GET /metrics");
    let evicted = |kind: &str| {
        metric_sum(
            &metrics,
            "sessionwatch_sessions_evicted_total",
            &[&format!("kind=\"{kind}\"")],
        )
    };
    assert!(
        evicted("unpresented") >= MAX_SESSIONS as f64,
        "the flood's sessions were evicted: {}",
        evicted("unpresented")
    );
    assert_eq!(
        evicted("presented"),
        0.0,
        "no session a client presented was evicted"
    );
    let tracked = metric_sum(&metrics, "sessionwatch_sessions_tracked", &[]);
    assert!(
        tracked <= MAX_SESSIONS as f64,
        "{tracked} sessions tracked, over max_sessions"
    );

    tokio::task::block_in_place(|| proxy.flush_alerts());
    assert!(
        lines_of(&alert_log, "session_reset").is_empty(),
        "no session was lost"
    );
    for value in &report.cookie_values {
        assert!(
            !metrics.contains(value.as_str()),
            "a raw PHPSESSID value leaked into the metrics"
        );
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_cookieless_requests_logs_nobody_out_with_the_moka_store() {
    users_browse_through_a_flood("churn-moka", "moka").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_cookieless_requests_logs_nobody_out_with_the_compact_store() {
    users_browse_through_a_flood("churn-compact", "compact").await;
}
