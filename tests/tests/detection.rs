//! Session-loss detection through the real proxy against in-process farms (issue: proxy +
//! detector, end to end).

use std::collections::HashSet;
use std::time::Duration;

use sessionwatch_core::BackendId;
use sessionwatch_test_support::{FarmConfig, LossStyle, MeOutcome, StoreMode, wait_until};
use sessionwatch_tests::{Harness, alert_lines, metric_sum};

/// Every reset line is wanted in these tests; the incident rate limit has its own test below.
const ALL_LINES: &str = "[incident]\nmax_reset_lines_per_sec = 1000000\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_store_farm_has_no_resets() {
    let h = Harness::start(FarmConfig::new(2, StoreMode::Shared), "").await;
    let report = h.drive(50, 20, 10).await;
    assert_eq!(report.errors, 0);
    assert_eq!(report.requests, 1000);
    assert_eq!(report.logged_out, 0);
    assert_eq!(h.lines("session_reset").len(), 0);
    assert!(
        h.farm.served(0) > 300 && h.farm.served(1) > 300,
        "round robin used both nodes"
    );
    h.stop().await;
}

/// Drives 50 users x 20 requests through the proxy in front of a per-node-store farm and checks
/// every reset line against what the users saw.
async fn per_node_store(nodes: usize, expected_share: f64, extra: &str) {
    let h = Harness::start(
        FarmConfig::new(nodes, StoreMode::PerNode),
        &format!("{ALL_LINES}{extra}"),
    )
    .await;
    let report = h.drive(50, 20, 10).await;
    assert_eq!(report.errors, 0);
    let resets = h.lines("session_reset");
    let me_resets = resets.iter().filter(|l| l["path"] == "/me").count() as u64;
    assert_eq!(
        me_resets, report.logged_out,
        "every logout the users saw was detected, and nothing else"
    );
    let share = me_resets as f64 / report.requests as f64;
    assert!(
        (share - expected_share).abs() < 0.12,
        "loss share {share:.2} with {nodes} nodes, expected about {expected_share:.2}"
    );
    let names: HashSet<String> = h.farm.names().into_iter().collect();
    for l in &resets {
        assert_eq!(l["attribution"], "cross_backend", "{l}");
        assert_eq!(l["signal"], "login_redirect", "{l}");
        let (issuer, server) = (l["issuer"].as_str().unwrap(), l["server"].as_str().unwrap());
        assert!(
            names.contains(issuer) && names.contains(server) && issuer != server,
            "{l}"
        );
        assert_eq!(l["status"], 302);
        assert_eq!(l["method"], "GET");
        assert_eq!(l["session"].as_str().unwrap().len(), 12);
        assert!(l["request_id"].as_str().is_some_and(|r| !r.is_empty()));
        assert!(l["time"].as_str().unwrap().ends_with('Z'));
    }
    // Sequence numbers grow by one down the file; event ids are unique.
    let all = alert_lines(&h.log());
    let seqs: Vec<u64> = all.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=all.len() as u64).collect::<Vec<_>>());
    let ids: HashSet<&str> = all
        .iter()
        .map(|l| l["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), all.len());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_node_store_loses_half_the_requests_with_two_nodes() {
    per_node_store(2, 0.5, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_node_store_loses_two_thirds_with_three_nodes() {
    per_node_store(3, 2.0 / 3.0, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compact_store_detects_the_same() {
    per_node_store(2, 0.5, "[session]\nstore = \"compact\"\ncookies = [{ name = \"SID\" }]\nfingerprint_key = \"integration-test-key-0123456789\"\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issuer_and_server_are_named_right() {
    // With two nodes and round robin, some of a fresh user's requests go to the node that did
    // not issue the session: check each reset line against the node that answered.
    let h = Harness::start(FarmConfig::new(2, StoreMode::PerNode), "").await;
    let mut user = h.user();
    user.login().await.unwrap();
    let mut outcomes = vec![];
    for _ in 0..4 {
        let (status, headers, _) = user.get("/me").await.unwrap();
        let served = headers["x-served-by"].to_str().unwrap().to_owned();
        outcomes.push((status.as_u16(), served));
    }
    let resets = h.lines("session_reset");
    let lost: Vec<&(u16, String)> = outcomes.iter().filter(|(s, _)| *s == 302).collect();
    assert_eq!(resets.len(), lost.len());
    assert!(
        !lost.is_empty(),
        "round robin sends some of four requests to the other node"
    );
    for ((_, served), line) in lost.iter().zip(&resets) {
        assert_eq!(line["server"].as_str().unwrap(), served);
        assert_ne!(line["issuer"].as_str().unwrap(), served);
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_restart_with_an_in_memory_store_is_same_backend() {
    // Pinned to the issuer so that every loss is on the node that restarted.
    let h = Harness::start(
        FarmConfig::new(2, StoreMode::PerNode),
        "[pin]\npolicy = \"learn\"\n",
    )
    .await;
    let mut users = Vec::new();
    for _ in 0..6 {
        let mut u = h.user();
        u.login().await.unwrap();
        assert_eq!(u.me().await.unwrap(), MeOutcome::LoggedIn);
        users.push(u);
    }
    h.farm.restart_node(0).await.unwrap();
    // The health checker may see the node down and up again; wait until it takes traffic.
    assert!(
        wait_until(Duration::from_secs(5), || h
            .proxy
            .backend_is_up(BackendId(0)))
        .await
    );
    let mut lost = 0;
    for u in &mut users {
        let mut outcome = u.me().await;
        // A pooled connection to the old process may fail once; the proxy answers 502 then.
        if outcome.is_err() {
            outcome = u.me().await;
        }
        if matches!(outcome.unwrap(), MeOutcome::LoggedOut { .. }) {
            lost += 1;
        }
    }
    assert!(lost >= 1, "some users were on the restarted node");
    let resets = h.lines("session_reset");
    assert_eq!(resets.len(), lost);
    let restarted = h.farm.names()[0].clone();
    for l in &resets {
        assert_eq!(l["attribution"], "same_backend", "{l}");
        assert_eq!(l["issuer"], restarted.as_str());
        assert_eq!(l["server"], restarted.as_str());
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_loss_style_gives_its_signal() {
    for (style, signal) in [
        (LossStyle::LoginRedirect, "login_redirect"),
        (LossStyle::Reissue, "reissued"),
        (LossStyle::Clear, "cleared"),
        (LossStyle::Unauthorized, "unauthorized"),
    ] {
        let h = Harness::start(
            FarmConfig::new(2, StoreMode::PerNode).with_loss(style),
            ALL_LINES,
        )
        .await;
        let report = h.drive(10, 6, 5).await;
        assert_eq!(report.errors, 0);
        let resets = h.lines("session_reset");
        assert!(!resets.is_empty(), "{signal}: no reset detected");
        assert!(
            resets.iter().all(|l| l["signal"] == signal),
            "{signal}: {resets:?}"
        );
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logouts_and_made_up_cookies_are_not_resets() {
    let h = Harness::start(FarmConfig::new(2, StoreMode::Shared), "").await;
    for _ in 0..10 {
        let mut u = h.user();
        u.login().await.unwrap();
        u.me().await.unwrap();
        u.logout().await.unwrap();
        assert!(u.cookie().is_none(), "the logout deleted the cookie");
    }
    // A client inventing a session id: the farm rejects it, the proxy never learned it.
    for i in 0..10 {
        let mut u = h.user();
        u.set_cookie(Some(format!("{i:032x}")));
        assert!(matches!(u.me().await.unwrap(), MeOutcome::LoggedOut { .. }));
    }
    // Anonymous visitors who get a fresh session are not resets either.
    for _ in 0..5 {
        let mut u = h.user();
        u.get("/anon").await.unwrap();
        assert!(u.cookie().is_some());
    }
    assert_eq!(h.lines("session_reset").len(), 0);
    h.proxy.maintain_sessions();
    // Only the anonymous sessions remain: logged-out ones were forgotten, made-up ones never
    // learned.
    assert_eq!(h.proxy.session_count(), 5);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_an_incident_reset_lines_are_rate_limited_and_totals_stay_exact() {
    let h = Harness::start(
        FarmConfig::new(2, StoreMode::PerNode),
        "[incident]\nmax_reset_lines_per_sec = 5\n",
    )
    .await;
    let report = h.drive(50, 20, 10).await;
    assert_eq!(report.errors, 0);
    let lines = h.lines("session_reset").len() as f64;
    let metrics = h.metrics();
    let suppressed = metric_sum(&metrics, "sessionwatch_reset_lines_suppressed_total", &[]);
    let counted = metric_sum(&metrics, "sessionwatch_session_resets_total", &[]);
    assert!(
        suppressed > 0.0,
        "the incident opened and lines were limited"
    );
    assert_eq!(lines + suppressed, report.logged_out as f64);
    assert_eq!(
        counted, report.logged_out as f64,
        "the reset counter is exact"
    );
    h.stop().await;
}
