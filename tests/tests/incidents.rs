//! Incidents from live traffic: how fast one opens, that a healthy farm never opens one, the
//! hint, and the `on_incident` pin policy.

use std::time::{Duration, SystemTime};

use sessionwatch_test_support::{FarmConfig, StoreMode, wait_until};
use sessionwatch_tests::Harness;

fn time_of(line: &serde_json::Value, field: &str) -> SystemTime {
    humantime::parse_rfc3339(line[field].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_node_store_opens_an_incident_within_five_seconds_with_the_right_hint() {
    // The proxy exactly as `serve` runs it: default incident settings and tick.
    let h = Harness::start_with(FarmConfig::new(2, StoreMode::PerNode), "", None).await;
    let report = h.drive(50, 20, 10).await;
    assert_eq!(report.errors, 0);
    assert!(
        wait_until(Duration::from_secs(6), || !h
            .lines("incident_opened")
            .is_empty())
        .await,
        "no incident opened"
    );
    let first_reset = time_of(&h.lines("session_reset")[0], "time");
    let opened = &h.lines("incident_opened")[0];
    let delay = time_of(opened, "time")
        .duration_since(first_reset)
        .unwrap_or_default();
    assert!(
        delay <= Duration::from_secs(5),
        "opened {delay:?} after the first reset"
    );
    assert_eq!(opened["hint"]["code"], "store_not_shared");
    let summary = opened["summary"].as_str().unwrap();
    assert!(summary.starts_with("incident since "), "{summary}");
    assert!(summary.contains("not shared across the farm"), "{summary}");
    let matrix = opened["matrix"].as_array().unwrap();
    assert!(matrix.iter().any(|c| c["issuer"] == "node-a"
        && c["server"] == "node-b"
        && c["resets"].as_u64().unwrap() > 0));
    assert!(
        matrix
            .iter()
            .all(|c| c["issuer"] != c["server"] || c["resets"] == 0),
        "no same-backend losses: {matrix:?}"
    );
    assert!(!opened["samples"].as_array().unwrap().is_empty());
    assert!(h.metrics().contains("sessionwatch_incident_open 1"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_store_under_the_same_load_never_opens_an_incident() {
    let h = Harness::start_with(FarmConfig::new(2, StoreMode::Shared), "", None).await;
    let report = h.drive(50, 20, 10).await;
    assert_eq!(report.logged_out, 0);
    // Not one loss: with none, no tick can open an incident (the watch's unit tests run it for
    // minutes of paused time). A few ticks (100 ms each here) for the proxy as a whole.
    assert!(h.lines("session_reset").is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(h.lines("incident_opened").is_empty());
    assert!(!h.proxy.incident_open());
    assert!(h.metrics().contains("sessionwatch_incident_open 0"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_incident_pins_while_open_and_unpins_when_resolved() {
    let extra = "[pin]\npolicy = \"on_incident\"\n[incident]\nwindow = \"2s\"\nresolve_after = \"1s\"\nupdate_every = \"1s\"\n";
    let h = Harness::start(FarmConfig::new(2, StoreMode::PerNode), extra).await;
    // Traffic until the incident opens and pinning starts.
    let mut opened = false;
    for _ in 0..20 {
        h.drive(10, 5, 5).await;
        if !h.lines("pinning_started").is_empty() {
            opened = true;
            break;
        }
    }
    assert!(opened, "pinning never started");
    // While pinned, users who sign in now stay signed in.
    let pinned = h.drive(20, 10, 5).await;
    assert_eq!(
        pinned.logged_out, 0,
        "every known session is pinned during the incident"
    );
    // Losses stopped, so the share falls and the incident resolves; pinning stops with it.
    assert!(
        wait_until(Duration::from_secs(8), || !h
            .lines("pinning_stopped")
            .is_empty())
        .await,
        "pinning never stopped"
    );
    let resolved = h.lines("incident_resolved");
    assert_eq!(resolved.len(), 1);
    assert_eq!(
        h.lines("pinning_started")[0]["incident_id"],
        resolved[0]["incident_id"]
    );
    h.stop().await;
}
