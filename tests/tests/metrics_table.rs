//! The README's metrics table against real scrapes, both ways: every metric the table names is
//! in a scrape, and every metric family a scrape holds (a histogram's `_bucket`, `_sum` and
//! `_count` folded into it) is in the table; each scrape passes `promtool check metrics`.
//!
//! Two proxies cover every family. The first sees the traffic that makes the families with
//! labels only events give appear: a per-node farm loses sessions (resets by signal and
//! backend, pins on reset, rescues), its webhook is dead (sink failures), and one backend comes
//! from DNS (discovery). The second has what the first cannot have with it: a TLS listener and
//! the Redis session store, whose families are there from the start.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair};
use sessionwatch_test_support::{DnsServer, DriveConfig, Farm, FarmConfig, StoreMode, drive_users};
use sessionwatch_tests::redis::RedisServer;
use sessionwatch_tests::{Scratch, config_toml, farm_backends, http_get, start_proxy};

/// `promtool` on PATH or in /usr/bin; the test fails (never skips) without it.
fn promtool() -> PathBuf {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("promtool")).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin/promtool")])
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("promtool is not installed: install the Debian package `prometheus` (scripts/test-all does)")
        })
}

/// `promtool check metrics` on `scrape`, which must pass.
fn check_with_promtool(scrape: &str, dir: &Path, name: &str) {
    let file = dir.join(format!("{name}.prom"));
    std::fs::write(&file, scrape).expect("write the scrape");
    let output = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).expect("reopen the scrape"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run promtool");
    assert!(
        output.status.success(),
        "promtool check metrics failed on the {name} scrape ({}):\nstdout:\n{}\nstderr:\n{}\n\
         --- scrape ---\n{scrape}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

/// The metric families of a scrape that have at least one sample: a sample's name, or for a
/// histogram or summary (by its `# TYPE` line) the family its `_bucket`, `_sum` or `_count`
/// belongs to.
fn families(scrape: &str) -> BTreeSet<String> {
    let folded: BTreeSet<&str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let (name, kind) = l.split_once(' ')?;
            matches!(kind.trim(), "histogram" | "summary").then_some(name)
        })
        .collect();
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or(l))
        .map(|name| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| name.strip_suffix(suffix))
                .find(|base| folded.contains(base))
                .unwrap_or(name)
                .to_owned()
        })
        .collect()
}

/// The metric names in the first column of the README's metrics table (the table in
/// `## Admin endpoints and metrics` whose header starts `| metric |`); a row may name several.
fn table_metrics(readme: &str) -> BTreeSet<String> {
    let section = readme
        .split("\n## Admin endpoints and metrics\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README.md has a `## Admin endpoints and metrics` section");
    let mut lines = section
        .lines()
        .skip_while(|l| !l.starts_with("| metric |"))
        .skip(2);
    let mut names = BTreeSet::new();
    for row in lines.by_ref().take_while(|l| l.starts_with('|')) {
        let first = row.split('|').nth(1).unwrap_or("");
        // Every backticked word in the cell.
        for (i, quoted) in first.split('`').enumerate() {
            if i % 2 == 1 {
                names.insert(quoted.trim().to_owned());
            }
        }
    }
    assert!(
        names.len() >= 20,
        "too few metrics read from README.md's table: {names:?}"
    );
    names
}

/// A certificate for 127.0.0.1 written under `dir`, as (cert, key).
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("self-signed certificate");
    let (cert_path, key_path) = (dir.join("proxy.crt"), dir.join("proxy.key"));
    std::fs::write(&cert_path, cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    (cert_path, key_path)
}

/// Scrape `admin` until `done` says the scrape holds what the test waits for (at most 15 s).
async fn scrape_until(
    admin: std::net::SocketAddr,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, scrape) = http_get(admin, "/metrics").await;
        assert_eq!(status, 200, "GET /metrics answered {status}: {scrape}");
        if done(&scrape) {
            return scrape;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} not in the scrape within 15s:\n{scrape}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_the_readme_table_is_scraped_and_every_scraped_one_is_in_the_table() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("read README.md");
    let table = table_metrics(&readme);
    let scratch = Scratch::new("metrics-table");

    // The first proxy: a broken farm, a dead webhook, a backend found by DNS.
    let farm = Farm::start(FarmConfig::new(2, StoreMode::PerNode))
        .await
        .expect("farm starts");
    let dns = DnsServer::start().await.expect("DNS server starts");
    let first_node = farm.addrs()[0];
    dns.set_ips("extra.app.test", &[first_node.ip()]);
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("pick a free port");
    let mut toml = config_toml(
        &farm_backends(&farm),
        farm.cookie_name(),
        &scratch.alert_log(),
        &format!(
            "[pin]\npolicy = \"on_reset\"\n[rescue]\nenabled = true\n\
             [webhook]\nurl = \"http://{dead}\"\ntimeout = \"200ms\"\n"
        ),
    );
    toml.push_str(&format!(
        "[[backends]]\ndns = \"extra.app.test:{}\"\nresolver = \"{}\"\nrefresh = \"100ms\"\n",
        first_node.port(),
        dns.addr()
    ));
    let traffic = start_proxy(&toml).await;
    let report = drive_users(traffic.addr(), farm.cookie_name(), DriveConfig::new(12, 15)).await;
    assert!(
        !report.cookie_values.is_empty(),
        "the users got no session at all: {report:?}"
    );
    let admin = traffic.admin_addr().expect("admin listener configured");
    let busy = scrape_until(admin, "a reset and a webhook failure", |s| {
        s.contains("sessionwatch_alert_sink_failures_total{sink=\"webhook\"}")
            && s.contains("sessionwatch_session_resets_total{")
    })
    .await;
    check_with_promtool(&busy, scratch.path(), "traffic");

    // The second: TLS on the listener, sessions in Redis.
    let redis = tokio::task::block_in_place(|| RedisServer::start(&scratch.path().join("redis")));
    let (cert, key) = certificate(scratch.path());
    let extra = format!(
        "[session]\ncookies = [{{ name = \"{cookie}\" }}]\n\
         fingerprint_key = \"integration-test-key-0123456789\"\nstore = \"redis\"\n\
         [redis]\nurl = \"{url}\"\n\
         [listen.tls]\n[[listen.tls.certificates]]\ncert = {cert:?}\nkey = {key:?}\n",
        cookie = farm.cookie_name(),
        url = redis.url(),
        cert = cert.display().to_string(),
        key = key.display().to_string(),
    );
    let other_log = scratch.path().join("other-alerts.jsonl");
    let fleet = start_proxy(&config_toml(
        &farm_backends(&farm),
        farm.cookie_name(),
        &other_log,
        &extra,
    ))
    .await;
    let fleet_admin = fleet.admin_addr().expect("admin listener configured");
    let quiet = scrape_until(fleet_admin, "the Redis store up", |s| {
        s.lines().any(|l| l == "sessionwatch_store_up 1")
    })
    .await;
    check_with_promtool(&quiet, scratch.path(), "tls-and-redis");

    let scraped: BTreeSet<String> = families(&busy).union(&families(&quiet)).cloned().collect();
    let not_scraped: Vec<&String> = table.difference(&scraped).collect();
    let not_in_table: Vec<&String> = scraped.difference(&table).collect();
    assert!(
        not_scraped.is_empty() && not_in_table.is_empty(),
        "README.md's metrics table and the scrapes disagree.\n\
         In the table but in neither scrape: {not_scraped:?}\n\
         Scraped but not in the table: {not_in_table:?}"
    );

    fleet.shutdown().await;
    traffic.shutdown().await;
    farm.shutdown().await;
    drop(redis);
}
