//! Keeping users signed in: pin policies, rescue, health checks and failover, through the real
//! proxy against a per-node-store farm.

use std::collections::HashMap;
use std::time::Duration;

use sessionwatch_core::BackendId;
use sessionwatch_test_support::{
    DriveReport, FarmConfig, MeOutcome, StoreMode, UserClient, wait_until,
};
use sessionwatch_tests::{Harness, Scratch, http_get, lines_of, metric_sum};

/// 50 users x 20 requests against a per-node farm of `nodes`; every reset gets its line.
async fn run(nodes: usize, extra: &str) -> (DriveReport, Scratch, String) {
    let extra = format!("{extra}[incident]\nmax_reset_lines_per_sec = 1000000\n");
    let h = Harness::start(FarmConfig::new(nodes, StoreMode::PerNode), &extra).await;
    let report = h.drive(50, 20, 10).await;
    let metrics = h.metrics();
    let scratch = h.stop().await;
    assert_eq!(report.errors, 0);
    assert_eq!(report.requests, 1000);
    (report, scratch, metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learn_logs_nobody_out() {
    let compact = "[session]\nstore = \"compact\"\ncookies = [{ name = \"SID\" }]\nfingerprint_key = \"integration-test-key-0123456789\"\n";
    for (nodes, store) in [(2, ""), (3, ""), (2, compact)] {
        let (report, scratch, metrics) =
            run(nodes, &format!("[pin]\npolicy = \"learn\"\n{store}")).await;
        assert_eq!(report.logged_out, 0, "{nodes} nodes");
        assert_eq!(lines_of(&scratch.alert_log(), "session_reset").len(), 0);
        // Every /me went to its pinned issuer.
        assert!(metric_sum(&metrics, "sessionwatch_pins_total", &[]) >= 1000.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_reset_logs_a_user_out_at_most_once() {
    for nodes in [2, 3] {
        let (report, scratch, _) = run(nodes, "[pin]\npolicy = \"on_reset\"\n").await;
        let worst = report.losses_per_user.iter().copied().max().unwrap();
        assert!(
            worst <= 1,
            "{nodes} nodes: a user was logged out {worst} times"
        );
        assert!(
            report.logged_out > 0,
            "{nodes} nodes: the first loss still happens (and is reported)"
        );
        assert_eq!(
            lines_of(&scratch.alert_log(), "session_reset").len() as u64,
            report.logged_out
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescue_hides_every_loss_from_get_requests_but_reports_it() {
    for nodes in [2, 3] {
        let (report, scratch, metrics) =
            run(nodes, "[pin]\npolicy = \"off\"\n[rescue]\nenabled = true\n").await;
        assert_eq!(
            report.logged_out, 0,
            "{nodes} nodes: the client never saw a logout"
        );
        let resets = lines_of(&scratch.alert_log(), "session_reset");
        let rescues = lines_of(&scratch.alert_log(), "session_rescued");
        assert!(
            resets.len() > 200,
            "{nodes} nodes: losses still happen and are recorded ({})",
            resets.len()
        );
        assert_eq!(resets.len(), rescues.len());
        let by_request: HashMap<&str, &serde_json::Value> = rescues
            .iter()
            .map(|r| (r["request_id"].as_str().unwrap(), r))
            .collect();
        assert_eq!(by_request.len(), rescues.len(), "one rescue per request");
        for reset in &resets {
            assert_eq!(reset["rescue"], true);
            let rescue = by_request[reset["request_id"].as_str().unwrap()];
            assert_eq!(rescue["issuer"], reset["issuer"]);
            assert_eq!(rescue["server"], reset["server"]);
            assert_eq!(rescue["still_lost"], false);
            assert_eq!(rescue["status"], 200);
        }
        assert_eq!(
            metric_sum(
                &metrics,
                "sessionwatch_rescues_total",
                &["result=\"rescued\""]
            ),
            resets.len() as f64
        );
    }
}

/// `n` users signed in through the proxy, each with the node that answered its first `/me`.
async fn pinned_users(h: &Harness, n: usize) -> Vec<(UserClient, String)> {
    let mut users = Vec::new();
    for _ in 0..n {
        let mut u = h.user();
        u.login().await.unwrap();
        let (_, headers, _) = u.get("/me").await.unwrap();
        let node = headers["x-served-by"].to_str().unwrap().to_owned();
        users.push((u, node));
    }
    users
}

const FAST_HEALTH: &str =
    "[health]\ninterval = \"30ms\"\ntimeout = \"100ms\"\nrise = 2\nfall = 2\npassive_fall = 1\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_pinned_backend_redistributes_once_then_comes_back() {
    let extra =
        format!("[pin]\npolicy = \"learn\"\nwhen_unhealthy = \"redistribute\"\n{FAST_HEALTH}");
    let h = Harness::start(FarmConfig::new(2, StoreMode::PerNode), &extra).await;
    let mut users = pinned_users(&h, 10).await;
    let on_a = users.iter().filter(|(_, n)| n == "node-a").count();
    assert!(on_a > 0 && on_a < 10);

    h.farm.stop_node(0).await;
    assert!(
        wait_until(Duration::from_secs(5), || !h
            .proxy
            .backend_is_up(BackendId(0)))
        .await
    );
    let mut losses = vec![0u32; users.len()];
    for _round in 0..3 {
        for (i, (u, _)) in users.iter_mut().enumerate() {
            if let MeOutcome::LoggedOut { .. } = u.me().await.unwrap() {
                losses[i] += 1;
                u.login().await.unwrap();
            }
        }
    }
    for (i, (_, node)) in users.iter().enumerate() {
        let expected = u32::from(node == "node-a");
        assert_eq!(
            losses[i], expected,
            "users of the dead node are logged out once; the others never"
        );
    }
    // Counted per request: for each user of the dead node, the request that found its session
    // lost and the sign-in that still carried the old session.
    assert_eq!(
        metric_sum(&h.metrics(), "sessionwatch_pin_broken_total", &[]),
        2.0 * on_a as f64
    );

    // node-a returns: health checks bring it back and new sessions land on it again.
    h.farm.start_node(0).await.unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || h
            .proxy
            .backend_is_up(BackendId(0)))
        .await
    );
    let before = h.farm.served(0);
    let fresh = pinned_users(&h, 6).await;
    assert!(
        fresh.iter().any(|(_, n)| n == "node-a"),
        "the recovered backend gets traffic"
    );
    assert!(h.farm.served(0) > before);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_pinned_backend_fails_with_503_when_configured() {
    let extra = format!(
        "[pin]\npolicy = \"learn\"\nwhen_unhealthy = \"fail\"\nretry_after = \"7s\"\n{FAST_HEALTH}"
    );
    let h = Harness::start(FarmConfig::new(2, StoreMode::PerNode), &extra).await;
    let mut users = pinned_users(&h, 8).await;
    h.farm.stop_node(0).await;
    assert!(
        wait_until(Duration::from_secs(5), || !h
            .proxy
            .backend_is_up(BackendId(0)))
        .await
    );
    for (u, node) in users.iter_mut() {
        let (status, headers, _) = u.get("/me").await.unwrap();
        if node == "node-a" {
            assert_eq!(status, 503);
            assert_eq!(headers["retry-after"], "7");
        } else {
            assert_eq!(status, 200);
        }
    }
    h.farm.start_node(0).await.unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || h
            .proxy
            .backend_is_up(BackendId(0)))
        .await
    );
    // The node restarted with an empty store, so its users must sign in again, but they reach it.
    for (u, node) in users.iter_mut().filter(|(_, n)| n == "node-a") {
        let (status, headers, _) = u.get("/me").await.unwrap();
        assert_ne!(status, 503);
        assert_eq!(headers["x-served-by"].to_str().unwrap(), node.as_str());
    }
    assert!(metric_sum(&h.metrics(), "sessionwatch_pin_failed_total", &[]) >= 1.0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_eject_and_readmit_within_thresholds() {
    let extra = "[health]\ninterval = \"20ms\"\ntimeout = \"100ms\"\nrise = 3\nfall = 4\n";
    let h = Harness::start(FarmConfig::new(2, StoreMode::Shared), extra).await;
    let (farm, proxy) = (&h.farm, &h.proxy);
    let admin = proxy.admin_addr().unwrap();
    assert!(wait_until(Duration::from_secs(2), || farm.node(1).health_checks() >= 2).await);

    farm.set_healthy(1, false);
    let failing_from = farm.node(1).health_checks();
    assert!(
        wait_until(Duration::from_secs(5), || !proxy
            .backend_is_up(BackendId(1)))
        .await
    );
    let failed = farm.node(1).health_checks() - failing_from;
    assert!(
        (4..=5).contains(&failed),
        "ejected after fall=4 failing checks, saw {failed}"
    );
    // Ejected: no new traffic reaches it.
    let before = farm.served(1);
    for _ in 0..10 {
        assert_eq!(http_get(proxy.addr(), "/anon").await.0, 200);
    }
    assert_eq!(farm.served(1), before);
    assert_eq!(
        http_get(admin, "/readyz").await.0,
        200,
        "one backend is still healthy"
    );

    farm.set_healthy(1, true);
    let passing_from = farm.node(1).health_checks();
    assert!(wait_until(Duration::from_secs(5), || proxy.backend_is_up(BackendId(1))).await);
    let passed = farm.node(1).health_checks() - passing_from;
    assert!(
        (3..=4).contains(&passed),
        "re-admitted after rise=3 passing checks, saw {passed}"
    );
    for _ in 0..10 {
        http_get(proxy.addr(), "/anon").await;
    }
    assert!(
        farm.served(1) > before,
        "re-admitted backend gets traffic again"
    );

    farm.set_healthy(0, false);
    farm.set_healthy(1, false);
    assert!(wait_until(Duration::from_secs(5), || !proxy.any_backend_up()).await);
    assert_eq!(http_get(admin, "/readyz").await.0, 503);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rescue_that_cannot_reach_the_issuer_returns_the_original_answer() {
    // No health checks and a high passive threshold: the dead issuer still looks healthy, so the
    // rescue is tried and fails to connect.
    let extra = "[rescue]\nenabled = true\n[health]\nactive = false\npassive_fall = 100\n";
    let h = Harness::start(FarmConfig::new(2, StoreMode::PerNode), extra).await;
    let mut user = h.user();
    user.login().await.unwrap();
    let (_, headers, _) = user.get("/me").await.unwrap();
    let issuer = headers["x-served-by"].to_str().unwrap().to_owned();
    let index = h.farm.names().iter().position(|n| *n == issuer).unwrap();
    let rescued_before = metric_sum(&h.metrics(), "sessionwatch_rescues_total", &[]);
    h.farm.stop_node(index).await;
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(
            user.get("/me")
                .await
                .map(|(s, _, _)| s.as_u16())
                .unwrap_or(502),
        );
    }
    statuses.sort_unstable();
    // Round robin: one request reached the dead issuer (502); the other was lost on the live
    // node, whose own answer (the login redirect) comes back rather than the failed replay's 502.
    assert_eq!(statuses, vec![302, 502]);
    let metrics = h.metrics();
    assert_eq!(
        metric_sum(
            &metrics,
            "sessionwatch_rescues_total",
            &["result=\"rescued\""]
        ),
        rescued_before,
        "a failed replay is not counted as a rescue"
    );
    assert_eq!(
        metric_sum(
            &metrics,
            "sessionwatch_rescues_total",
            &["result=\"failed\""]
        ),
        1.0
    );
    let failed: Vec<_> = h
        .lines("session_rescued")
        .into_iter()
        .filter(|l| l["reached_issuer"] == false)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["still_lost"], true);
    assert_eq!(failed[0]["status"], 302);
    h.stop().await;
}
