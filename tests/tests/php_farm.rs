//! End to end against a real PHP farm: two `php -S` nodes serving `tests/php/app/router.php`
//! with native PHP sessions, behind the proxy with the `php` preset.
//!
//! - broken farm (each node its own `session.save_path`), no pinning: about half of the `GET /me`
//!   requests land on the node that does not hold the session; every one is reported as a
//!   cross-backend reset (`login_redirect` with PHP's default `use_strict_mode=0`, where only the
//!   redirect shows the loss; `reissued` with `use_strict_mode=1`, where the node hands out a new
//!   id) naming the right issuer and server, and an incident opens with the store-not-shared hint;
//! - broken farm with `pin = "learn"`: nobody is logged out;
//! - healthy farm (one shared `session.save_path`): no reset and no incident, though users log out
//!   (PHP deletes the cookie) and anonymous visitors get fresh `PHPSESSID`s.
//!
//! Every test also checks that no raw `PHPSESSID` value reaches the alert log or the metrics.
//!
//! Needs the `php` command line (Debian's `php-cli`); without it every test fails and says so.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sessionwatch_proxy::RunningProxy;
use sessionwatch_test_support::{DriveConfig, DriveReport, MeOutcome, UserClient, drive_users};
use sessionwatch_tests::php::{COOKIE, NODE_NAMES, PhpFarm, Store, proxy_for};
use sessionwatch_tests::{Scratch, lines_of};

fn flush(proxy: &RunningProxy) {
    tokio::task::block_in_place(|| proxy.flush_alerts());
}

/// Asserts no raw session value any user held appears in the alert log or the metrics.
fn assert_no_raw_values(proxy: &RunningProxy, alert_log: &Path, values: &[String]) {
    flush(proxy);
    assert!(
        !values.is_empty(),
        "the users held no session values at all"
    );
    let log = std::fs::read_to_string(alert_log).unwrap_or_default();
    let metrics = proxy.metrics_text();
    for value in values {
        assert!(
            !log.contains(value.as_str()),
            "a raw PHPSESSID value leaked into the alert log"
        );
        assert!(
            !metrics.contains(value.as_str()),
            "a raw PHPSESSID value leaked into the metrics"
        );
    }
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A loss seen by one scripted user: which node issued the session, which lost it, and the
/// proxy's request id of the request that showed it.
#[derive(Debug)]
struct ScriptedLoss {
    issuer: String,
    server: String,
    request_id: String,
    /// Every session value the user held.
    values: Vec<String>,
}

/// One user logs in and asks `GET /me` until a node other than the issuer answers it with the
/// redirect to `/login`. Only this user talks to the proxy, so round robin alternates and the
/// first try already does it; a few more are allowed.
async fn scripted_loss(proxy: SocketAddr, farm: &PhpFarm) -> ScriptedLoss {
    let mut user = UserClient::new(proxy, COOKIE).with_user("scripted");
    for _ in 0..10 {
        let (status, headers, _) = user.post("/login", "user=scripted").await.expect("login");
        assert_eq!(status, 302, "login answers 302 to /me\n{}", farm.logs());
        assert!(user.cookie().is_some(), "login sets PHPSESSID");
        let issuer = header(&headers, "x-served-by").to_owned();
        let (status, headers, body) = user.get("/me").await.expect("GET /me");
        let server = header(&headers, "x-served-by").to_owned();
        match status.as_u16() {
            200 => {
                assert_eq!(
                    issuer, server,
                    "a node that did not issue the session knew it"
                );
                assert_eq!(body.as_ref(), b"scripted\n");
            }
            302 => {
                assert_eq!(header(&headers, "location"), "/login");
                assert_ne!(issuer, server, "the issuing node lost its own session");
                return ScriptedLoss {
                    issuer,
                    server,
                    request_id: header(&headers, "x-request-id").to_owned(),
                    values: user.all_cookie_values().to_vec(),
                };
            }
            other => panic!("GET /me answered {other}\n{}", farm.logs()),
        }
    }
    panic!("ten logins in a row were all answered by their own node: is round robin on?");
}

/// Polls (bounded) until an `incident_opened` line is written.
async fn wait_for_incident(proxy: &RunningProxy, alert_log: &Path) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        flush(proxy);
        let opened = lines_of(alert_log, "incident_opened");
        if !opened.is_empty() || tokio::time::Instant::now() >= deadline {
            return opened;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The broken farm without pinning: half the requests lose their session, and the proxy says so,
/// request by request and as an incident.
async fn broken_farm_without_pinning(strict: bool, expected_signal: &str) {
    let name = if strict {
        "php-broken-strict"
    } else {
        "php-broken"
    };
    let scratch = Scratch::new(name);
    let alert_log = scratch.alert_log();
    let farm = tokio::task::block_in_place(|| PhpFarm::start(&scratch, Store::PerNode, strict));
    let proxy = proxy_for(&farm, &alert_log, "off").await;

    let report = drive_users(
        proxy.addr(),
        COOKIE,
        DriveConfig::new(30, 20).with_concurrency(12),
    )
    .await;
    assert_eq!(report.errors, 0, "{report:?}\n{}", farm.logs());
    assert_eq!(report.requests, 600);
    let share = report.logged_out as f64 / report.requests as f64;
    assert!(
        (0.3..=0.7).contains(&share),
        "with 2 nodes about half of the /me requests should lose the session; {share:.3} did \
         ({report:?})"
    );
    assert_eq!(
        report.total_losses(),
        report.logged_out,
        "every logged-out answer was to a user who held a session"
    );

    flush(&proxy);
    let resets = lines_of(&alert_log, "session_reset");
    assert_eq!(
        resets.len() as u64,
        report.logged_out,
        "one session_reset line per logged-out answer"
    );
    for line in &resets {
        assert_eq!(line["signal"], expected_signal, "{line}");
        assert_eq!(line["attribution"], "cross_backend", "{line}");
        assert_eq!(line["method"], "GET", "{line}");
        assert_eq!(line["path"], "/me", "{line}");
        assert_eq!(line["status"], 302, "{line}");
        let issuer = line["issuer"].as_str().unwrap_or_default();
        let server = line["server"].as_str().unwrap_or_default();
        assert!(NODE_NAMES.contains(&issuer), "issuer is a backend: {line}");
        assert!(NODE_NAMES.contains(&server), "server is a backend: {line}");
        assert_ne!(issuer, server, "{line}");
    }

    let opened = wait_for_incident(&proxy, &alert_log).await;
    assert!(
        !opened.is_empty(),
        "no incident opened after {} resets",
        resets.len()
    );
    assert_eq!(
        opened[0]["hint"]["code"], "store_not_shared",
        "incident: {}",
        opened[0]
    );
    // Across nodes every request with a session was a loss; on the issuing node none was.
    // Sign-ins (which follow every loss, carrying the lost or the replacement id) are no part
    // of the matrix: they can never show a loss.
    let matrix = opened[0]["matrix"].as_array().expect("matrix");
    for cell in matrix {
        if cell["issuer"] == cell["server"] {
            assert_eq!(cell["resets"], 0, "{cell}");
        } else {
            assert_eq!(cell["resets"], cell["requests"], "{cell}");
        }
    }
    assert!(proxy.incident_open());

    // One loss followed closely: the line names the node that issued the session and the one
    // that lost it, as the nodes themselves said.
    let scripted = scripted_loss(proxy.addr(), &farm).await;
    flush(&proxy);
    let line = lines_of(&alert_log, "session_reset")
        .into_iter()
        .find(|l| l["request_id"] == scripted.request_id.as_str())
        .unwrap_or_else(|| panic!("no session_reset line for the scripted loss {scripted:?}"));
    assert_eq!(line["issuer"], scripted.issuer.as_str(), "{line}");
    assert_eq!(line["server"], scripted.server.as_str(), "{line}");
    assert_eq!(line["signal"], expected_signal, "{line}");

    let mut values = report.cookie_values.clone();
    values.extend(scripted.values);
    assert_no_raw_values(&proxy, &alert_log, &values);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_php_farm_without_pinning_reports_login_redirects_across_backends() {
    // PHP's default (`use_strict_mode=0`): the other node adopts the unknown id with an empty
    // session and sets no cookie; only the redirect to /login shows the loss.
    broken_farm_without_pinning(false, "login_redirect").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_strict_php_farm_without_pinning_reports_reissued_ids_across_backends() {
    // `use_strict_mode=1`: the other node refuses the unknown id and sets a new one along with
    // the redirect.
    broken_farm_without_pinning(true, "reissued").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_php_farm_with_learned_pins_logs_nobody_out() {
    let scratch = Scratch::new("php-learn");
    let alert_log = scratch.alert_log();
    let farm = tokio::task::block_in_place(|| PhpFarm::start(&scratch, Store::PerNode, false));
    let proxy = proxy_for(&farm, &alert_log, "learn").await;

    let report = drive_users(
        proxy.addr(),
        COOKIE,
        DriveConfig::new(50, 20).with_concurrency(12),
    )
    .await;
    assert_eq!(report.errors, 0, "{report:?}\n{}", farm.logs());
    assert_eq!(report.requests, 1000);
    assert_eq!(report.logged_out, 0, "{report:?}");

    flush(&proxy);
    assert!(lines_of(&alert_log, "session_reset").is_empty());
    assert_no_raw_values(&proxy, &alert_log, &report.cookie_values);
    proxy.shutdown().await;
}

/// The healthy farm: signed-in traffic, logouts and anonymous visits, and not one reset.
async fn healthy_farm(strict: bool) {
    let name = if strict {
        "php-healthy-strict"
    } else {
        "php-healthy"
    };
    let scratch = Scratch::new(name);
    let alert_log = scratch.alert_log();
    let farm = tokio::task::block_in_place(|| PhpFarm::start(&scratch, Store::Shared, strict));
    let proxy = proxy_for(&farm, &alert_log, "off").await;

    let report: DriveReport = drive_users(
        proxy.addr(),
        COOKIE,
        DriveConfig::new(30, 10).with_concurrency(12),
    )
    .await;
    assert_eq!(report.errors, 0, "{report:?}\n{}", farm.logs());
    assert_eq!(report.logged_out, 0, "{report:?}");
    let mut values = report.cookie_values.clone();

    // Users sign in, use the app, sign out through the proxy (PHP answers with
    // `PHPSESSID=deleted; expires=...1970...; Max-Age=0`), and come back anonymously.
    for i in 0..10 {
        let mut user = UserClient::new(proxy.addr(), COOKIE).with_user(format!("leaver{i}"));
        user.login().await.expect("login");
        for _ in 0..3 {
            assert_eq!(user.me().await.expect("me"), MeOutcome::LoggedIn);
        }
        let (status, headers, _) = user.get("/logout").await.expect("logout");
        assert_eq!(status, 302);
        let deletion = header(&headers, "set-cookie");
        assert!(
            deletion.starts_with("PHPSESSID=deleted;") && deletion.contains("Max-Age=0"),
            "PHP deletes the cookie on logout: {deletion}"
        );
        assert!(user.cookie().is_none(), "the deletion removed the cookie");
        // Signed out: /me redirects to /login and PHP starts a fresh anonymous session.
        assert_eq!(
            user.me().await.expect("me after logout"),
            MeOutcome::LoggedOut { status: 302 }
        );
        assert!(
            user.cookie().is_some(),
            "PHP gave the signed-out visitor a new id"
        );
        values.extend(user.all_cookie_values().iter().cloned());
    }

    // Anonymous visitors: each first request gets a fresh PHPSESSID; later ones keep it.
    for _ in 0..10 {
        let mut visitor = UserClient::new(proxy.addr(), COOKIE);
        let (status, headers, _) = visitor.get("/anon").await.expect("anon");
        assert_eq!(status, 200);
        assert!(
            header(&headers, "set-cookie").starts_with("PHPSESSID="),
            "session_start() set a cookie for a new visitor"
        );
        let first = visitor.cookie().map(str::to_owned);
        assert!(first.is_some());
        for _ in 0..3 {
            let (status, _, _) = visitor.get("/anon").await.expect("anon again");
            assert_eq!(status, 200);
        }
        assert_eq!(visitor.cookie().map(str::to_owned), first);
        values.extend(visitor.all_cookie_values().iter().cloned());
    }

    // Let the incident watch (100 ms ticks in tests) look at all of it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    flush(&proxy);
    let resets = lines_of(&alert_log, "session_reset");
    assert!(resets.is_empty(), "resets on a healthy farm: {resets:?}");
    assert!(lines_of(&alert_log, "incident_opened").is_empty());
    assert!(!proxy.incident_open());
    assert_no_raw_values(&proxy, &alert_log, &values);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_php_farm_has_no_resets_for_logouts_or_anonymous_visits() {
    healthy_farm(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_strict_php_farm_has_no_resets_for_logouts_or_anonymous_visits() {
    healthy_farm(true).await;
}
