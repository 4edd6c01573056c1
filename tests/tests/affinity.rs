//! Two replicas of the proxy, each with its own session table, in front of one per-node-store
//! farm, and users whose requests alternate between them: the signed affinity cookie makes the
//! pair behave as one proxy (no logouts under `learn`, every loss detected under `off`, with its
//! issuer), a forged cookie pins and teaches nothing, and the backend never sees the cookie.

use std::collections::HashMap;
use std::net::SocketAddr;

use http::header::SET_COOKIE;
use http::{Method, StatusCode};
use sessionwatch_core::Fingerprinter;
use sessionwatch_proxy::RunningProxy;
use sessionwatch_test_support::{Farm, FarmConfig, StoreMode};
use sessionwatch_tests::browser::Browser;
use sessionwatch_tests::raw_http::{ClientConn, Reply};
use sessionwatch_tests::{Scratch, config_toml, farm_backends, lines_of, metric_sum, start_proxy};

const KEY: &str = "a fleet's shared fingerprint key";
const USERS: usize = 20;
const REQUESTS: usize = 10;

struct Fleet {
    farm: Farm,
    proxies: Vec<RunningProxy>,
    scratches: Vec<Scratch>,
}

/// Two proxies, each its own table, with the same key and backends, `pin` and the cookie on or
/// off.
async fn fleet(pin: &str, affinity: bool) -> Fleet {
    let farm = Farm::start(FarmConfig::new(2, StoreMode::PerNode))
        .await
        .expect("farm starts");
    let extra = format!(
        "[session]\ncookies = [{{ name = \"SID\" }}]\nlogout_paths = [\"/logout\"]\n\
         fingerprint_key = \"{KEY}\"\naffinity_cookie = {affinity}\n\
         [pin]\npolicy = \"{pin}\"\n[incident]\nmax_reset_lines_per_sec = 1000000\n"
    );
    let mut proxies = Vec::new();
    let mut scratches = Vec::new();
    for i in 0..2 {
        let scratch = Scratch::new(&format!("affinity-{i}"));
        let toml = config_toml(&farm_backends(&farm), "SID", &scratch.alert_log(), &extra);
        proxies.push(start_proxy(&toml).await);
        scratches.push(scratch);
    }
    Fleet {
        farm,
        proxies,
        scratches,
    }
}

impl Fleet {
    fn addrs(&self) -> Vec<SocketAddr> {
        self.proxies.iter().map(RunningProxy::addr).collect()
    }

    fn metric(&self, i: usize, name: &str, labels: &[&str]) -> f64 {
        metric_sum(&self.proxies[i].metrics_text(), name, labels)
    }

    /// Stops everything; returns each replica's `session_reset` lines.
    async fn stop(self) -> Vec<Vec<serde_json::Value>> {
        let mut lines = Vec::new();
        for (proxy, scratch) in self.proxies.into_iter().zip(&self.scratches) {
            proxy.flush_alerts();
            proxy.shutdown().await;
            lines.push(lines_of(&scratch.alert_log(), "session_reset"));
        }
        self.farm.shutdown().await;
        lines
    }
}

#[derive(Debug, Default)]
struct Run {
    logouts: usize,
    /// Short fingerprint of every session -> the node that issued it.
    issuers: HashMap<String, String>,
}

/// Each user signs in on one replica and then alternates between the two for `/me`, signing in
/// again after every logout.
async fn alternate(fleet: &Fleet) -> Run {
    let addrs = fleet.addrs();
    let fingerprinter = Fingerprinter::from_secret(KEY.as_bytes());
    let mut run = Run::default();
    for u in 0..USERS {
        let mut browser = Browser::new();
        let (sid, node) = browser.sign_in(addrs[u % 2], "SID").await;
        run.issuers.insert(
            fingerprinter
                .fingerprint("SID", sid.as_bytes())
                .short()
                .to_string(),
            node,
        );
        for r in 1..=REQUESTS {
            let to = u + r;
            let (status, _, _) = browser.send(addrs[to % 2], Method::GET, "/me", "").await;
            assert!(!status.is_server_error(), "{status}");
            if status != StatusCode::OK {
                run.logouts += 1;
                let (sid, node) = browser.sign_in(addrs[to % 2], "SID").await;
                run.issuers.insert(
                    fingerprinter
                        .fingerprint("SID", sid.as_bytes())
                        .short()
                        .to_string(),
                    node,
                );
            }
        }
    }
    run
}

#[tokio::test]
async fn with_the_cookie_two_replicas_under_learn_log_nobody_out() {
    let on = fleet("learn", true).await;
    let run = alternate(&on).await;
    let adopted: f64 = (0..2)
        .map(|i| {
            on.metric(
                i,
                "sessionwatch_affinity_cookies_total",
                &["result=\"adopted\""],
            )
        })
        .sum();
    on.stop().await;
    assert_eq!(run.logouts, 0, "{run:?}");
    // Every user's first request on the other replica took the session from the cookie.
    assert!(adopted >= USERS as f64, "adopted {adopted}");

    // The same traffic without the cookie: each replica pins only the sessions it saw issued.
    let off = fleet("learn", false).await;
    let run = alternate(&off).await;
    off.stop().await;
    assert!(
        run.logouts >= USERS / 4,
        "only {} logouts without the cookie",
        run.logouts
    );
}

#[tokio::test]
async fn with_pin_off_both_replicas_detect_every_loss_with_its_issuer() {
    let on = fleet("off", true).await;
    let run = alternate(&on).await;
    let resets: Vec<f64> = (0..2)
        .map(|i| on.metric(i, "sessionwatch_session_resets_total", &[]))
        .collect();
    let cross: f64 = (0..2)
        .map(|i| {
            on.metric(
                i,
                "sessionwatch_session_resets_total",
                &["attribution=\"cross_backend\""],
            )
        })
        .sum();
    let lines = on.stop().await;
    assert!(run.logouts > 0, "a per-node farm must lose sessions");
    assert!(
        resets.iter().all(|r| *r > 0.0),
        "resets per replica: {resets:?}"
    );
    assert_eq!(resets.iter().sum::<f64>(), run.logouts as f64, "{resets:?}");
    assert_eq!(cross, run.logouts as f64);
    for (replica, lines) in lines.iter().enumerate() {
        assert!(!lines.is_empty(), "replica {replica} wrote no reset line");
        for line in lines {
            let session = line["session"].as_str().unwrap();
            assert_eq!(
                line["issuer"].as_str(),
                run.issuers.get(session).map(String::as_str),
                "replica {replica}: {line}"
            );
            assert_ne!(line["issuer"], line["server"]);
        }
    }

    // Without the cookie a replica knows only what it saw issued: fewer losses detected.
    let off = fleet("off", false).await;
    let run = alternate(&off).await;
    let resets: f64 = (0..2)
        .map(|i| off.metric(i, "sessionwatch_session_resets_total", &[]))
        .sum();
    off.stop().await;
    assert!(
        resets < run.logouts as f64,
        "{resets} of {} without the cookie",
        run.logouts
    );
}

#[tokio::test]
async fn a_forged_cookie_pins_nothing_and_the_backend_never_sees_the_cookie() {
    let fleet = fleet("learn", true).await;
    let addrs = fleet.addrs();
    let mut browser = Browser::new();
    browser.login(addrs[0]).await;
    let genuine = browser.jar["swaff"].clone();
    // Every character changed in turn, and a value minted for nobody.
    let mut forged: Vec<String> = (0..genuine.len())
        .map(|i| {
            let mut b = genuine.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            String::from_utf8(b).unwrap()
        })
        .collect();
    forged.push("A".repeat(genuine.len()));
    for value in &forged {
        browser.jar.insert("swaff".into(), value.clone());
        let (status, _, echoed) = browser.send(addrs[1], Method::GET, "/headers", "").await;
        assert_eq!(status, StatusCode::OK);
        assert!(!echoed.contains("swaff"), "{echoed}");
        assert!(echoed.contains("SID="), "{echoed}");
    }
    let rejected = fleet.metric(
        1,
        "sessionwatch_affinity_cookies_total",
        &["result=\"forged\""],
    ) + fleet.metric(
        1,
        "sessionwatch_affinity_cookies_total",
        &["result=\"malformed\""],
    );
    assert_eq!(rejected, forged.len() as f64);
    assert_eq!(fleet.metric(1, "sessionwatch_pins_total", &[]), 0.0);
    assert_eq!(fleet.metric(1, "sessionwatch_sessions_tracked", &[]), 0.0);
    assert_eq!(
        fleet.metric(
            1,
            "sessionwatch_affinity_cookies_total",
            &["result=\"adopted\""]
        ),
        0.0
    );

    // The genuine one, on the same replica: now it pins, and still never reaches the backend.
    browser.jar.insert("swaff".into(), genuine);
    let (_, _, echoed) = browser.send(addrs[1], Method::GET, "/headers", "").await;
    assert!(!echoed.contains("swaff"), "{echoed}");
    assert_eq!(fleet.metric(1, "sessionwatch_pins_total", &[]), 1.0);
    // On the replica that minted it too, and on a logout the cookie is expired with the session.
    let (_, _, echoed) = browser.send(addrs[0], Method::GET, "/headers", "").await;
    assert!(!echoed.contains("swaff"), "{echoed}");
    let (_, headers, _) = browser.send(addrs[1], Method::GET, "/logout", "").await;
    let expired: Vec<_> = headers
        .get_all(SET_COOKIE)
        .iter()
        .filter(|v| v.to_str().unwrap().starts_with("swaff=;"))
        .collect();
    assert_eq!(expired.len(), 1, "{headers:?}");
    assert!(!browser.jar.contains_key("swaff"));
    fleet.stop().await;
}

#[tokio::test]
async fn the_cookie_is_stripped_on_hyper_s_path_too() {
    let fleet = fleet("learn", true).await;
    let addrs = fleet.addrs();
    let mut browser = Browser::new();
    browser.login(addrs[0]).await;
    let cookie = format!("SID={}; swaff={}", browser.jar["SID"], browser.jar["swaff"]);
    // A chunked request goes through hyper rather than the plain loop.
    for (i, framing) in ["", "Transfer-Encoding: chunked\r\n"]
        .into_iter()
        .enumerate()
    {
        let mut conn = ClientConn::connect(addrs[1]).await.unwrap();
        let body = if framing.is_empty() { "" } else { "0\r\n\r\n" };
        let request =
            format!("GET /headers HTTP/1.1\r\nHost: a\r\nCookie: {cookie}\r\n{framing}\r\n{body}");
        conn.send(request.as_bytes()).await.unwrap();
        let Reply::Complete { head, body } = conn.read_answer(false).await else {
            panic!("no answer");
        };
        assert_eq!(head.status, 200);
        let echoed = String::from_utf8_lossy(&body);
        assert!(echoed.contains("SID="), "{echoed}");
        assert!(!echoed.contains("swaff"), "{echoed}");
        assert_eq!(
            fleet.metric(
                1,
                "sessionwatch_affinity_cookies_total",
                &["result=\"adopted\""]
            ),
            1.0,
            "request {i}"
        );
    }
    fleet.stop().await;
}
