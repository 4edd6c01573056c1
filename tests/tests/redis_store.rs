//! The Redis store against real `redis-server`s reached the three ways the configuration
//! allows: a server that requires a password (taken from an environment variable), a server
//! that speaks only TLS (`rediss://`, with the CA file the test made), and a three-node Redis
//! Cluster. In each case two replicas in front of a per-node farm share what they learn: a
//! session one saw issued pins on the other, so nobody is logged out; and a replica that cannot
//! reach its Redis still serves every request.
//!
//! Needs Debian's `redis-server` (and `redis-cli` for the cluster); without it every test fails
//! and says so.

use std::net::SocketAddr;

use http::{Method, StatusCode};
use sessionwatch_proxy::RunningProxy;
use sessionwatch_test_support::{Farm, FarmConfig, StoreMode};
use sessionwatch_tests::browser::Browser;
use sessionwatch_tests::redis::{RedisCluster, RedisServer};
use sessionwatch_tests::{Scratch, config_toml, farm_backends, lines_of, metric_sum, start_proxy};

/// Cargo sets it for the test process (the tests cannot set variables themselves: that needs
/// `unsafe` in this edition, which the workspace forbids), so it is the password.
const PASSWORD_ENV: &str = "CARGO_PKG_NAME";

struct Pair {
    farm: Farm,
    proxies: Vec<RunningProxy>,
    logs: Vec<Scratch>,
}

/// Two replicas with `redis` (the body of their `[redis]` table) in front of a per-node farm.
async fn pair(name: &str, redis: &str) -> Pair {
    let farm = Farm::start(FarmConfig::new(2, StoreMode::PerNode))
        .await
        .expect("farm starts");
    let extra = format!(
        "[session]\ncookies = [{{ name = \"SID\" }}]\nlogout_paths = [\"/logout\"]\n\
         fingerprint_key = \"a fleet's shared fingerprint key\"\nstore = \"redis\"\n\
         [pin]\npolicy = \"learn\"\n[redis]\ntimeout = \"250ms\"\n{redis}\n"
    );
    let mut proxies = Vec::new();
    let mut logs = Vec::new();
    for i in 0..2 {
        let log = Scratch::new(&format!("{name}-{i}"));
        let toml = config_toml(&farm_backends(&farm), "SID", &log.alert_log(), &extra);
        proxies.push(start_proxy(&toml).await);
        logs.push(log);
    }
    Pair {
        farm,
        proxies,
        logs,
    }
}

impl Pair {
    fn addrs(&self) -> Vec<SocketAddr> {
        self.proxies.iter().map(RunningProxy::addr).collect()
    }

    /// Waits (bounded) until both replicas reach their Redis.
    async fn until_up(&self) {
        let up = sessionwatch_test_support::wait_until(std::time::Duration::from_secs(10), || {
            self.proxies
                .iter()
                .all(|p| metric_sum(&p.metrics_text(), "sessionwatch_store_up", &[]) == 1.0)
        })
        .await;
        let lines: Vec<_> = self
            .logs
            .iter()
            .flat_map(|l| lines_of(&l.alert_log(), "store_degraded"))
            .collect();
        assert!(up, "the replicas never reached Redis: {lines:?}");
    }

    /// Users sign in on one replica and alternate between both for `/me`; the logouts.
    async fn alternate(&self, users: usize) -> (usize, usize) {
        let addrs = self.addrs();
        let (mut logouts, mut failed) = (0, 0);
        for u in 0..users {
            let mut browser = Browser::new();
            browser.sign_in(addrs[u % 2], "SID").await;
            for r in 1..=6 {
                let (status, _, _) = browser
                    .send(addrs[(u + r) % 2], Method::GET, "/me", "")
                    .await;
                match status {
                    StatusCode::OK => {}
                    s if s.is_server_error() => failed += 1,
                    _ => {
                        logouts += 1;
                        browser.sign_in(addrs[(u + r) % 2], "SID").await;
                    }
                }
            }
        }
        (logouts, failed)
    }

    fn published(&self) -> f64 {
        self.proxies
            .iter()
            .map(|p| {
                metric_sum(
                    &p.metrics_text(),
                    "sessionwatch_store_writes_total",
                    &["kind=\"publish\"", "result=\"ok\""],
                )
            })
            .sum()
    }

    async fn stop(self) {
        for p in self.proxies {
            p.shutdown().await;
        }
        self.farm.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_from_the_environment_opens_a_server_that_requires_one() {
    let scratch = Scratch::new("redis-password");
    let password = std::env::var(PASSWORD_ENV).expect("cargo sets CARGO_PKG_NAME");
    let redis = tokio::task::block_in_place(|| {
        RedisServer::start_with_args(&scratch.path().join("redis"), &["--requirepass", &password])
    });
    let with = pair(
        "redis-password",
        &format!(
            "url = \"{}\"\npassword_env = \"{PASSWORD_ENV}\"",
            redis.url()
        ),
    )
    .await;
    with.until_up().await;
    let (logouts, failed) = with.alternate(10).await;
    assert_eq!((logouts, failed), (0, 0));
    assert!(with.published() >= 10.0);
    with.stop().await;
    assert!(
        tokio::task::block_in_place(|| redis.dbsize_with_password(&password)) >= 10,
        "the sessions are in Redis"
    );

    // Without the password the server refuses the replicas: they say so, and serve anyway.
    let without = pair(
        "redis-password-missing",
        &format!("url = \"{}\"", redis.url()),
    )
    .await;
    let (_, failed) = without.alternate(4).await;
    assert_eq!(failed, 0);
    for (p, log) in without.proxies.iter().zip(&without.logs) {
        p.flush_alerts();
        let degraded = lines_of(&log.alert_log(), "store_degraded");
        assert!(!degraded.is_empty(), "no store_degraded line");
        assert!(
            !serde_json::to_string(&degraded)
                .unwrap()
                .contains(&password),
            "the password reached an alert line"
        );
    }
    without.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_only_server_is_reached_over_rediss_with_the_configured_ca() {
    let scratch = Scratch::new("redis-tls");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("make a certificate");
    let cert = scratch.path().join("redis.crt");
    let key = scratch.path().join("redis.key");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let redis = tokio::task::block_in_place(|| {
        RedisServer::start_tls(&scratch.path().join("redis"), &cert, &key)
    });
    assert!(redis.url().starts_with("rediss://"));
    let pair = pair(
        "redis-tls",
        &format!(
            "url = \"{}\"\nca_file = {:?}",
            redis.url(),
            cert.display().to_string()
        ),
    )
    .await;
    pair.until_up().await;
    let (logouts, failed) = pair.alternate(10).await;
    assert_eq!((logouts, failed), (0, 0));
    assert!(pair.published() >= 10.0);
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_spreads_the_sessions_and_shares_them() {
    let scratch = Scratch::new("redis-cluster");
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(scratch.path()));
    let nodes: Vec<String> = cluster.urls().iter().map(|u| format!("{u:?}")).collect();
    let pair = pair(
        "redis-cluster",
        &format!("cluster = [{}]", nodes.join(", ")),
    )
    .await;
    pair.until_up().await;
    let (logouts, failed) = pair.alternate(30).await;
    assert_eq!((logouts, failed), (0, 0));
    pair.stop().await;
    let sizes = tokio::task::block_in_place(|| cluster.dbsizes());
    assert!(
        sizes.iter().filter(|n| **n > 0).count() >= 2,
        "30 sessions all landed on one node: {sizes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_cookies_cannot_flood_redis() {
    let scratch = Scratch::new("redis-flood");
    let redis = tokio::task::block_in_place(|| RedisServer::start(&scratch.path().join("redis")));
    let pair = pair(
        "redis-flood",
        &format!("url = \"{}\"\nmax_lookups_per_second = 20", redis.url()),
    )
    .await;
    pair.until_up().await;
    let to = pair.addrs()[0];
    let metric = |labels: &[&str]| {
        metric_sum(
            &pair.proxies[0].metrics_text(),
            "sessionwatch_store_lookups_total",
            labels,
        )
    };
    let skipped = |reason: &str| {
        metric_sum(
            &pair.proxies[0].metrics_text(),
            "sessionwatch_store_lookups_skipped_total",
            &[&format!("reason=\"{reason}\"")],
        )
    };

    // One made-up value sent over and over is asked about once: Redis did not know it.
    let mut browser = Browser::new();
    browser.jar.insert("SID".into(), "made-up-0".into());
    for _ in 0..50 {
        let (status, _, _) = browser.send(to, Method::GET, "/me", "").await;
        assert!(!status.is_server_error(), "{status}");
    }
    assert_eq!(metric(&["result=\"miss\""]), 1.0);
    assert!(skipped("unknown") >= 49.0, "{}", skipped("unknown"));

    // A new made-up value every request: past 20 lookups a second the rest are not asked.
    let started = std::time::Instant::now();
    for i in 0..300 {
        let mut browser = Browser::new();
        browser
            .jar
            .insert("SID".into(), format!("made-up-{}", i + 1));
        let (status, _, _) = browser.send(to, Method::GET, "/me", "").await;
        assert!(!status.is_server_error(), "{status}");
    }
    let seconds = started.elapsed().as_secs() as f64 + 2.0;
    let asked = metric(&[]);
    assert!(
        skipped("capped") > 0.0,
        "the cap was never hit: {asked} lookups"
    );
    assert!(
        asked <= 20.0 * seconds + 1.0,
        "{asked} lookups in about {seconds} s with a cap of 20 a second"
    );
    pair.stop().await;
}
