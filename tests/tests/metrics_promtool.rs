//! The admin `/metrics` scrape after real traffic through a broken farm: `promtool check metrics`
//! accepts it, every metric family is described, resets carry their attribution, and no label
//! holds a session value or anything shaped like a fingerprint.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use sessionwatch_test_support::{DriveConfig, Farm, FarmConfig, StoreMode, drive_users};
use sessionwatch_tests::{Scratch, config_toml, farm_backends, http_get, start_proxy};

/// `promtool` on PATH or in /usr/bin; the test fails (never skips) without it.
fn promtool() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("promtool"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/bin/promtool")])
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("promtool is not installed: install the Debian package `prometheus` (scripts/test-all does)")
        })
}

/// The metric family a sample line belongs to, given the families that have a `# TYPE` line.
fn family<'a>(sample: &'a str, typed: &BTreeSet<String>) -> &'a str {
    let name = sample.split(['{', ' ']).next().unwrap_or(sample);
    if typed.contains(name) {
        return name;
    }
    ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|suffix| name.strip_suffix(suffix))
        .find(|base| typed.contains(*base))
        .unwrap_or(name)
}

/// Every label value of a sample line (`name{a="x",b="y"} 1`).
fn label_values(sample: &str) -> Vec<String> {
    let Some(start) = sample.find('{') else {
        return Vec::new();
    };
    let Some(end) = sample.rfind('}') else {
        return Vec::new();
    };
    let mut values = Vec::new();
    let mut rest = &sample[start + 1..end];
    while let Some(eq) = rest.find("=\"") {
        let after = &rest[eq + 2..];
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut consumed = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(n);
                    }
                }
                '"' => {
                    consumed = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        values.push(value);
        rest = &after[consumed..];
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_passes_promtool_and_holds_no_session_values() {
    let promtool = promtool();
    let scratch = Scratch::new("metrics-promtool");
    let farm = Farm::start(FarmConfig::new(2, StoreMode::PerNode))
        .await
        .expect("farm starts");
    // A webhook nobody listens on, so the sink-failure counter exists once an incident opens.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("pick a free port");
    let toml = config_toml(
        &farm_backends(&farm),
        farm.cookie_name(),
        &scratch.alert_log(),
        &format!(
            "[pin]\npolicy = \"on_reset\"\n[webhook]\nurl = \"http://{dead}\"\ntimeout = \"200ms\"\n"
        ),
    );
    let proxy = start_proxy(&toml).await;
    let admin = proxy.admin_addr().expect("admin listener configured");

    let report = drive_users(proxy.addr(), farm.cookie_name(), DriveConfig::new(12, 15)).await;
    assert!(
        !report.cookie_values.is_empty(),
        "the users got no session at all: {report:?}"
    );

    // The incident opens on the next tick and its webhook delivery fails soon after.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    let scrape = loop {
        let (status, scrape) = http_get(admin, "/metrics").await;
        assert_eq!(status, 200, "GET /metrics answered {status}: {scrape}");
        if scrape.contains("sessionwatch_alert_sink_failures_total{sink=\"webhook\"}") {
            break scrape;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no incident or no webhook failure counted within 15s:\n{scrape}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        scrape.lines().any(|l| l == "sessionwatch_incident_open 1"),
        "the incident should be open:\n{scrape}"
    );

    let file = scratch.path().join("metrics.prom");
    std::fs::write(&file, &scrape).expect("write the scrape");
    let output = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).expect("reopen the scrape"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run promtool");
    assert!(
        output.status.success(),
        "promtool check metrics failed ({}):\nstdout:\n{}\nstderr:\n{}\n--- scrape ---\n{scrape}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );

    let samples: Vec<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert!(
        samples
            .iter()
            .any(|l| l.starts_with("sessionwatch_session_resets_total{")
                && l.contains("attribution=\"cross_backend\"")),
        "no cross_backend reset counted after driving a per-node farm:\n{scrape}"
    );
    assert!(
        samples
            .iter()
            .any(|l| l.starts_with("sessionwatch_pins_total ") && !l.ends_with(" 0")),
        "on_reset pinning should have routed some requests by pin:\n{scrape}"
    );

    let described = |kind: &str| -> BTreeSet<String> {
        scrape
            .lines()
            .filter_map(|l| l.strip_prefix(kind))
            .filter_map(|l| l.split(' ').next())
            .map(str::to_owned)
            .collect()
    };
    let helped = described("# HELP ");
    let typed = described("# TYPE ");
    let families: BTreeSet<&str> = samples
        .iter()
        .filter(|l| l.starts_with("sessionwatch_"))
        .map(|l| family(l, &typed))
        .collect();
    assert!(
        families.len() >= 10,
        "too few sessionwatch_ families: {families:?}"
    );
    for f in &families {
        assert!(
            helped.contains(*f),
            "metric family {f} has no # HELP line:\n{scrape}"
        );
        assert!(
            typed.contains(*f),
            "metric family {f} has no # TYPE line:\n{scrape}"
        );
    }

    // Label values are backend names and fixed enums: never a session value or a fingerprint.
    let looks_like_fingerprint =
        |v: &str| v.len() >= 12 && v.chars().all(|c| c.is_ascii_hexdigit());
    for line in &samples {
        for value in label_values(line) {
            assert!(
                !looks_like_fingerprint(&value),
                "label value {value:?} looks like a fingerprint in: {line}"
            );
        }
    }
    for raw in &report.cookie_values {
        assert!(
            !scrape.contains(raw.as_str()),
            "a raw session value appears in /metrics"
        );
    }

    proxy.shutdown().await;
    farm.shutdown().await;
}
