//! Incidents from live traffic: how fast one opens, that a healthy farm never opens one, the
//! hint, and the `on_incident` pin policy.

use std::path::Path;
use std::time::{Duration, SystemTime};

use sessionwatch_proxy::{Config, StartOptions};
use sessionwatch_test_support::{
    DriveConfig, Farm, FarmConfig, StoreMode, drive_users, wait_until,
};
use sessionwatch_tests::{Scratch, config_toml, farm_backends, lines_of};

fn time_of(line: &serde_json::Value, field: &str) -> SystemTime {
    humantime::parse_rfc3339(line[field].as_str().unwrap()).unwrap()
}

/// The proxy exactly as `serve` runs it: default incident settings and tick.
async fn start_default(toml: &str) -> sessionwatch_proxy::RunningProxy {
    let config = Config::parse(toml, Path::new("test.toml")).unwrap();
    sessionwatch_proxy::start(config, StartOptions::default())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_node_store_opens_an_incident_within_five_seconds_with_the_right_hint() {
    let scratch = Scratch::new("incident");
    let farm = Farm::start(FarmConfig::new(2, StoreMode::PerNode))
        .await
        .unwrap();
    let proxy = start_default(&config_toml(
        &farm_backends(&farm),
        farm.cookie_name(),
        &scratch.alert_log(),
        "",
    ))
    .await;
    let report = drive_users(
        proxy.addr,
        farm.cookie_name(),
        DriveConfig::new(50, 20).with_concurrency(10),
    )
    .await;
    assert_eq!(report.errors, 0);
    let log = scratch.alert_log();
    assert!(
        wait_until(Duration::from_secs(6), || {
            proxy.flush_alerts();
            !lines_of(&log, "incident_opened").is_empty()
        })
        .await,
        "no incident opened"
    );
    let first_reset = time_of(&lines_of(&log, "session_reset")[0], "time");
    let opened = &lines_of(&log, "incident_opened")[0];
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
    assert!(proxy.metrics.render().contains("sessionwatch_incident_open 1"));
    proxy.shutdown().await;
    farm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_store_under_the_same_load_never_opens_an_incident() {
    let scratch = Scratch::new("no-incident");
    let farm = Farm::start(FarmConfig::new(2, StoreMode::Shared))
        .await
        .unwrap();
    let proxy = start_default(&config_toml(
        &farm_backends(&farm),
        farm.cookie_name(),
        &scratch.alert_log(),
        "",
    ))
    .await;
    let report = drive_users(
        proxy.addr,
        farm.cookie_name(),
        DriveConfig::new(50, 20).with_concurrency(10),
    )
    .await;
    assert_eq!(report.logged_out, 0);
    // Give the watch a few ticks to be sure.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    proxy.flush_alerts();
    assert!(lines_of(&scratch.alert_log(), "incident_opened").is_empty());
    assert!(!proxy.incidents.is_open());
    assert!(
        proxy
            .metrics
            .render()
            .contains("sessionwatch_incident_open 0")
    );
    proxy.shutdown().await;
    farm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_incident_pins_while_open_and_unpins_when_resolved() {
    let scratch = Scratch::new("on-incident");
    let farm = Farm::start(FarmConfig::new(2, StoreMode::PerNode))
        .await
        .unwrap();
    let extra = "[pin]\npolicy = \"on_incident\"\n[incident]\nwindow = \"2s\"\nresolve_after = \"1s\"\nupdate_every = \"1s\"\n";
    let proxy = sessionwatch_tests::start_proxy(&config_toml(
        &farm_backends(&farm),
        farm.cookie_name(),
        &scratch.alert_log(),
        extra,
    ))
    .await;
    let log = scratch.alert_log();
    // Traffic until the incident opens and pinning starts.
    let mut opened = false;
    for _ in 0..20 {
        drive_users(
            proxy.addr,
            farm.cookie_name(),
            DriveConfig::new(10, 5).with_concurrency(5),
        )
        .await;
        proxy.flush_alerts();
        if !lines_of(&log, "pinning_started").is_empty() {
            opened = true;
            break;
        }
    }
    assert!(opened, "pinning never started");
    // While pinned, users who sign in now stay signed in.
    let pinned = drive_users(
        proxy.addr,
        farm.cookie_name(),
        DriveConfig::new(20, 10).with_concurrency(5),
    )
    .await;
    assert_eq!(
        pinned.logged_out, 0,
        "every known session is pinned during the incident"
    );
    // Losses stopped, so the share falls and the incident resolves; pinning stops with it.
    assert!(
        wait_until(Duration::from_secs(8), || {
            proxy.flush_alerts();
            !lines_of(&log, "pinning_stopped").is_empty()
        })
        .await,
        "pinning never stopped"
    );
    let resolved = lines_of(&log, "incident_resolved");
    assert_eq!(resolved.len(), 1);
    assert_eq!(
        lines_of(&log, "pinning_started")[0]["incident_id"],
        resolved[0]["incident_id"]
    );
    proxy.shutdown().await;
    farm.shutdown().await;
}
