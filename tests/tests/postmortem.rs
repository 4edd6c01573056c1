//! The incident this product exists for, start to end, on the real PHP farm: the farm's session
//! store is not shared (each node its own `session.save_path`), users keep browsing, an incident
//! opens and the proxy pins; then the farm is fixed while users go on browsing (node `php-b`'s
//! session directory is switched to `php-a`'s, live, through a symbolic link), and the incident
//! resolves. There must be exactly one incident, opened and resolved; its resolved line keeps the
//! cause (`store_not_shared`) though the last windows saw no loss; and
//! `sessionwatch alerts --report` drafts a postmortem with every part from the log.
//!
//! Real time with short incident settings, generous bounds; outcomes are asserted, not durations.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use sessionwatch_proxy::RunningProxy;
use sessionwatch_test_support::UserClient;
use sessionwatch_tests::binary::sessionwatch_binary;
use sessionwatch_tests::php::{COOKIE, PhpFarm, Store, proxy_with_sections};
use sessionwatch_tests::{Scratch, alert_lines, lines_of};

/// Generous for a debug build on a busy two-core machine.
const PHASE_WITHIN: Duration = Duration::from_secs(40);
const USERS: usize = 6;

/// The incident settings: a short window and a short quiet spell before it resolves.
const INCIDENT: &str = "window = \"3s\"\nmin_requests = 10\nmin_resets = 3\n\
                        update_every = \"1s\"\nresolve_after = \"3s\"\n";

/// Users who sign in, look at `/me` a few times, and sign in again when logged out, until
/// `stop`; the count of requests that found them logged out goes to `logged_out`.
fn browse(
    proxy: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    logged_out: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..USERS)
        .map(|i| {
            let stop = stop.clone();
            let logged_out = logged_out.clone();
            tokio::spawn(async move {
                let name = format!("user{i}");
                let mut user = UserClient::new(proxy, COOKIE).with_user(name.clone());
                let mut signed_in = false;
                while !stop.load(Ordering::Relaxed) {
                    if !signed_in {
                        signed_in = user
                            .post("/login", format!("user={name}"))
                            .await
                            .is_ok_and(|(status, _, _)| status == 302);
                    }
                    match user.get("/me").await {
                        Ok((status, _, _)) if status == 200 => {}
                        Ok(_) => {
                            logged_out.fetch_add(1, Ordering::Relaxed);
                            signed_in = false;
                        }
                        Err(_) => signed_in = false,
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect()
}

/// Polls (bounded) until a line of `kind` is in the log.
async fn wait_for_line(proxy: &RunningProxy, log: &Path, kind: &str) -> Value {
    let deadline = tokio::time::Instant::now() + PHASE_WITHIN;
    loop {
        tokio::task::block_in_place(|| proxy.flush_alerts());
        if let Some(line) = lines_of(log, kind).into_iter().next() {
            return line;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {kind} line within {PHASE_WITHIN:?}; the log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fix the farm: `php-b`'s sessions go to `php-a`'s directory, and `php-b`'s directory (a
/// symbolic link) is pointed there in one rename, so no request sees a missing directory.
fn share_the_store(dir: &Path) {
    let a = dir.join("sessions-php-a");
    let b_own = dir.join("sessions-b-own");
    for entry in std::fs::read_dir(&b_own).unwrap().flatten() {
        let _ = std::fs::copy(entry.path(), a.join(entry.file_name()));
    }
    let next = dir.join("sessions-php-b.next");
    std::os::unix::fs::symlink(&a, &next).unwrap();
    std::fs::rename(&next, dir.join("sessions-php-b")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_farm_broken_then_fixed_has_one_incident_that_keeps_its_cause_and_a_full_postmortem() {
    let binary = tokio::task::spawn_blocking(sessionwatch_binary)
        .await
        .unwrap();
    let scratch = Scratch::new("postmortem");
    let log = scratch.alert_log();
    // `php-b`'s session directory is a link, so that the store can be switched under it.
    std::fs::create_dir_all(scratch.path().join("sessions-php-a")).unwrap();
    std::fs::create_dir_all(scratch.path().join("sessions-b-own")).unwrap();
    std::os::unix::fs::symlink(
        scratch.path().join("sessions-b-own"),
        scratch.path().join("sessions-php-b"),
    )
    .unwrap();
    let farm = PhpFarm::start(&scratch, Store::PerNode, false);
    let proxy = proxy_with_sections(&farm, &log, "on_incident", "", INCIDENT).await;

    let stop = Arc::new(AtomicBool::new(false));
    let logged_out = Arc::new(AtomicU64::new(0));
    let users = browse(proxy.addr(), stop.clone(), logged_out.clone());

    // Broken: the incident opens, and the proxy pins.
    let opened = wait_for_line(&proxy, &log, "incident_opened").await;
    wait_for_line(&proxy, &log, "pinning_started").await;
    assert!(
        logged_out.load(Ordering::Relaxed) > 0,
        "users were logged out before the incident"
    );

    // Fixed while the users go on browsing; the incident resolves, the pins go, and the fixed
    // farm loses no session though nobody is pinned any more.
    share_the_store(scratch.path());
    let resolved = wait_for_line(&proxy, &log, "incident_resolved").await;
    wait_for_line(&proxy, &log, "pinning_stopped").await;
    let after_resolved = logged_out.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for u in users {
        u.await.unwrap();
    }
    tokio::task::block_in_place(|| proxy.flush_alerts());
    assert_eq!(
        logged_out.load(Ordering::Relaxed),
        after_resolved,
        "the fixed farm logged users out once the pins went:\n{}",
        farm.logs()
    );

    // Exactly one incident, opened and resolved, whose resolved line keeps its cause.
    let id = opened["incident_id"].as_str().unwrap().to_owned();
    assert_eq!(lines_of(&log, "incident_opened").len(), 1);
    assert_eq!(lines_of(&log, "incident_resolved").len(), 1);
    assert!(
        alert_lines(&log)
            .iter()
            .filter(|l| l["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("incident_")))
            .all(|l| l["incident_id"] == id.as_str())
    );
    assert_eq!(resolved["incident_id"], id.as_str());
    assert_eq!(
        resolved["hint"]["code"], "store_not_shared",
        "the resolved line lost the cause: {resolved}"
    );
    let life = &resolved["incident"];
    assert!(life["resets"].as_u64().unwrap() > 0, "{resolved}");
    assert!(life["last_loss"].is_string(), "{resolved}");

    // The postmortem draft, from the log alone.
    let out_dir = scratch.path().join("report");
    std::fs::create_dir_all(&out_dir).unwrap();
    let report = Command::new(&binary)
        .args(["alerts", "--report", "--out"])
        .arg(&out_dir)
        .arg(&log)
        .output()
        .unwrap();
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let md = std::fs::read_to_string(out_dir.join(format!("postmortem-{id}.md"))).unwrap();
    let svg = std::fs::read_to_string(out_dir.join(format!("postmortem-{id}.svg"))).unwrap();
    for part in [
        format!("# Postmortem draft: sessions lost (incident {id})"),
        "## Duration and impact".into(),
        "| Duration | ".into(),
        "| Sessions affected | ".into(),
        "| Requests that lost their session | ".into(),
        "## Timeline".into(),
        " | First session lost |".into(),
        " | Incident opened: ".into(),
        " | Peak: ".into(),
        " | Pinning started (policy `on_incident`) |".into(),
        " | Losses stopped (the last session lost) |".into(),
        " | Resolved: ".into(),
        " | Pinning stopped (policy `on_incident`) |".into(),
        "## Root cause (the proxy's hint)".into(),
        "**`store_not_shared`**: ".into(),
        "| issuer \\ server | php-a | php-b |".into(),
        "| php-a | ".into(),
        "| php-b | ".into(),
        "## What the proxy did".into(),
        "**Pins**: pinned every session to the backend that issued it from ".into(),
        "**Rescues**: ".into(),
        format!("![share over time](postmortem-{id}.svg)"),
    ] {
        assert!(md.contains(&part), "the report has no {part:?}:\n{md}");
    }
    let incident_lines = alert_lines(&log)
        .iter()
        .filter(|l| l["incident_id"] == id.as_str() && l.get("share").is_some())
        .count();
    assert_eq!(svg.matches("<circle").count(), incident_lines, "{svg}");
    // The log holds fingerprints only, and so does the report: no PHPSESSID value.
    for entry in std::fs::read_dir(scratch.path().join("sessions-php-a"))
        .unwrap()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(value) = name.strip_prefix("sess_") {
            assert!(!md.contains(value) && !svg.contains(value));
            assert!(!std::fs::read_to_string(&log).unwrap().contains(value));
        }
    }
    proxy.shutdown().await;
}
