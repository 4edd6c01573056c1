//! Live reload (`RunningProxy::reload`, what SIGHUP and a change of the file start): under
//! continuous keep-alive load the backends, weights, incident thresholds and session cookies
//! change with no failed request, the session table and the open incident kept, new backends
//! taking traffic and removed ones none; a broken file keeps the running configuration and is
//! counted; a key fixed at start (the listen address) is refused while the rest applies and the
//! old listener serves on; a pin policy turned on pins the sessions learnt before; the alert
//! log moves to a new file, and stays put when the new one
//! cannot be opened; a change of the DNS entries moves the farm to what the new ones
//! resolve to, under load, with no failed request; and a ConfigMap-style swap of the `..data`
//! symlink is seen and applied.
//!
//! The backends share one session set, so they never lose a session by themselves: the only
//! loss is the one a test asks for (`/lose/NAME` answers with the cookie cleared). Tests assert
//! counts and outcomes, never durations; every wait is bounded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sessionwatch_proxy::{Config, ReloadError, RunningProxy, StartOptions};
use sessionwatch_test_support::DnsServer;
use sessionwatch_tests::raw_http::{Act, ClientConn, Reply, ScriptedBackend};
use sessionwatch_tests::{Scratch, http_get, lines_of, metric_sum};

/// A bound for every wait, generous for a debug build on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);
/// Keep-alive connections the load runs on.
const LOAD_CONNECTIONS: usize = 4;

/// Backends that share one session set, each counting the requests it served.
struct Farm {
    backends: HashMap<&'static str, (ScriptedBackend, Arc<AtomicU64>)>,
}

impl Farm {
    async fn start(names: &[&'static str]) -> Self {
        let ids = Arc::new(AtomicU64::new(0));
        let sessions = Arc::new(Mutex::new(Vec::<String>::new()));
        let mut backends = HashMap::new();
        for &name in names {
            let served = Arc::new(AtomicU64::new(0));
            let (ids, sessions, counted) = (ids.clone(), sessions.clone(), served.clone());
            let backend = ScriptedBackend::start(move |req| {
                counted.fetch_add(1, Ordering::SeqCst);
                let served_by = format!("x-served-by: {name}\r\n");
                if let Some(cookie) = req.target.strip_prefix("/login/") {
                    let id = format!("{cookie}{:026}", ids.fetch_add(1, Ordering::SeqCst));
                    sessions.lock().unwrap().push(id.clone());
                    let set = format!("set-cookie: {cookie}={id}; Path=/\r\n{served_by}");
                    return Act::Answer(answer(200, &set, name));
                }
                if let Some(cookie) = req.target.strip_prefix("/lose/") {
                    let clear = format!("set-cookie: {cookie}=; Max-Age=0; Path=/\r\n{served_by}");
                    return Act::Answer(answer(302, &format!("location: /login\r\n{clear}"), ""));
                }
                Act::Answer(answer(200, &served_by, name))
            })
            .await;
            backends.insert(name, (backend, served));
        }
        Self { backends }
    }

    fn addr(&self, name: &str) -> SocketAddr {
        self.backends[name].0.addr
    }

    fn served(&self, name: &str) -> u64 {
        self.backends[name].1.load(Ordering::SeqCst)
    }
}

fn answer(status: u16, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The configuration file: these backends (name, weight), these cookies, and `extra`.
fn config(farm: &Farm, backends: &[(&str, u32)], cookies: &[&str], extra: &str) -> String {
    let cookies: Vec<String> = cookies
        .iter()
        .map(|c| format!("{{ name = \"{c}\" }}"))
        .collect();
    let mut toml = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\nworkers = 2\n[admin]\naddress = \"127.0.0.1:0\"\n\
         [alerts]\nlog_file = \"alerts.jsonl\"\n[health]\nactive = false\n\
         [session]\ncookies = [{}]\nfingerprint_key = \"reload-test-key-0123456789abcdef\"\n{extra}\n",
        cookies.join(", ")
    );
    for (name, weight) in backends {
        toml.push_str(&format!(
            "[[backends]]\nname = \"{name}\"\nurl = \"http://{}\"\nweight = {weight}\n",
            farm.addr(name)
        ));
    }
    toml
}

/// Thresholds no single loss reaches, and the ones it does; either way an open incident stays
/// open for the rest of the test.
const HIGH_THRESHOLDS: &str =
    "[incident]\nmin_requests = 1000\nmin_resets = 1000\nresolve_after = \"10m\"\n";
const LOW_THRESHOLDS: &str =
    "[incident]\nmin_requests = 1\nmin_resets = 1\nthreshold = 0.01\nresolve_after = \"10m\"\n";

/// Start the proxy from `file` (the alert log beside it), as `serve` does.
async fn start(file: &Path, watch: Option<Duration>) -> RunningProxy {
    let text = std::fs::read_to_string(file).unwrap();
    let text = text.replace(
        "log_file = \"alerts.jsonl\"",
        &format!("log_file = {:?}", alerts(file).display().to_string()),
    );
    std::fs::write(file, &text).unwrap();
    let config = Config::load(file).unwrap_or_else(|e| panic!("{e}\n{text}"));
    sessionwatch_proxy::start(
        config,
        StartOptions {
            incident_tick: Some(Duration::from_millis(100)),
            config_file: Some(file.to_owned()),
            watch_config: watch,
            ..StartOptions::default()
        },
    )
    .await
    .expect("proxy starts")
}

fn alerts(file: &Path) -> PathBuf {
    file.with_file_name("alerts.jsonl")
}

/// Write the next version of the file, with the alert log where the first one put it.
fn rewrite(file: &Path, text: &str) {
    let text = text.replace(
        "log_file = \"alerts.jsonl\"",
        &format!("log_file = {:?}", alerts(file).display().to_string()),
    );
    std::fs::write(file, text).unwrap();
}

/// Requests in a loop on keep-alive connections until stopped (or a bound is reached).
struct Load {
    stop: Arc<AtomicBool>,
    /// Per connection: requests answered 200 so far.
    done: Vec<Arc<AtomicU64>>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(proxy: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut done = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..LOAD_CONNECTIONS {
            let (stop, count) = (stop.clone(), Arc::new(AtomicU64::new(0)));
            done.push(count.clone());
            tasks.push(tokio::spawn(async move {
                let mut failures = Vec::new();
                let mut conn = ClientConn::connect(proxy).await.unwrap();
                // Bounded, whatever happens to the stop flag.
                for _ in 0..200_000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Err(e) = conn.send(b"GET /page HTTP/1.1\r\nHost: t\r\n\r\n").await {
                        failures.push(format!("send: {e}"));
                        break;
                    }
                    match conn.read_answer(false).await {
                        Reply::Complete { head, .. } if head.status == 200 && !head.closes() => {
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        Reply::Complete { head, body } => {
                            failures.push(format!(
                                "{} {:?}: {}",
                                head.status,
                                head.headers,
                                String::from_utf8_lossy(&body)
                            ));
                        }
                        other => {
                            failures.push(format!("{other:?}"));
                            break;
                        }
                    }
                }
                failures
            }));
        }
        Self { stop, done, tasks }
    }

    fn counts(&self) -> Vec<u64> {
        self.done.iter().map(|c| c.load(Ordering::SeqCst)).collect()
    }

    /// Wait until every connection has had `n` more requests answered: those under way when
    /// this was called are then over.
    async fn advance(&self, n: u64) {
        let from = self.counts();
        let start = Instant::now();
        while self
            .counts()
            .iter()
            .zip(&from)
            .any(|(now, was)| now - was < n)
        {
            assert!(
                start.elapsed() < PATIENCE,
                "the load stalled: {:?} from {from:?}",
                self.counts()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stop, and every failed request.
    async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let mut failures = Vec::new();
        for t in self.tasks {
            failures.extend(t.await.unwrap());
        }
        (
            self.done.iter().map(|c| c.load(Ordering::SeqCst)).sum(),
            failures,
        )
    }
}

/// One request on its own connection: the status and the `set-cookie` value for `cookie`.
async fn request(
    proxy: SocketAddr,
    target: &str,
    cookie: Option<(&str, &str)>,
) -> (u16, Option<String>) {
    let mut c = ClientConn::connect(proxy).await.unwrap();
    let cookie_line = cookie.map_or(String::new(), |(n, v)| format!("Cookie: {n}={v}\r\n"));
    c.send(
        format!("GET {target} HTTP/1.1\r\nHost: t\r\n{cookie_line}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    match c.read_answer(false).await {
        Reply::Complete { head, .. } => {
            let set = head.header("set-cookie").map(|v| {
                let pair = v.split(';').next().unwrap_or("");
                pair.split_once('=').map_or("", |(_, v)| v).to_owned()
            });
            (head.status, set)
        }
        other => panic!("{target}: {other:?}"),
    }
}

/// What `/metrics` on the admin listener says of `name`.
async fn metric(proxy: &RunningProxy, name: &str, labels: &[&str]) -> f64 {
    let (status, text) = http_get(proxy.admin_addr().unwrap(), "/metrics").await;
    assert_eq!(status, 200);
    metric_sum(&text, name, labels)
}

/// Sessions in the table, once its housekeeping has caught up.
fn sessions(proxy: &RunningProxy) -> u64 {
    proxy.maintain_sessions();
    proxy.session_count()
}

async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < PATIENCE, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_thresholds_and_cookies_change_under_load_and_nothing_is_lost() {
    let scratch = Scratch::new("reload-load");
    let farm = Farm::start(&["a", "b", "c"]).await;
    let file = scratch.path().join("sessionwatch.toml");
    std::fs::write(
        &file,
        config(&farm, &[("a", 1), ("b", 1)], &["SID"], HIGH_THRESHOLDS),
    )
    .unwrap();
    let proxy = start(&file, None).await;
    let addr = proxy.addr();

    // A session learnt before the reload; a cookie not configured yet is not learnt.
    let (status, sid) = request(addr, "/login/SID", None).await;
    assert_eq!(status, 200);
    let sid = sid.expect("the backend issued SID");
    assert_eq!(request(addr, "/login/APP", None).await.0, 200);
    assert_eq!(sessions(&proxy), 1);

    let load = Load::start(addr);
    load.advance(20).await;
    assert_eq!(farm.served("c"), 0);

    // a out, c in (three times b's share), a loss now opens an incident, APP is a session too.
    rewrite(
        &file,
        &config(
            &farm,
            &[("b", 1), ("c", 3)],
            &["SID", "APP"],
            LOW_THRESHOLDS,
        ),
    );
    let report = proxy.reload().await.expect("the new file applies");
    assert_eq!(report.changed, ["backends", "session", "incident"]);
    assert!(report.refused.is_empty(), "{report:?}");

    load.advance(2).await;
    let (a, b, c) = (farm.served("a"), farm.served("b"), farm.served("c"));
    load.advance(40).await;
    assert_eq!(farm.served("a"), a, "a removed backend got traffic");
    let (b, c) = (farm.served("b") - b, farm.served("c") - c);
    assert!(
        c > b,
        "the new backend, weight 3, got {c} requests, b (weight 1) {b}"
    );

    // The table kept the session: its loss is known as one, and now opens an incident.
    assert_eq!(sessions(&proxy), 1);
    let resets = metric(&proxy, "sessionwatch_session_resets_total", &[]).await;
    assert_eq!(request(addr, "/lose/SID", Some(("SID", &sid))).await.0, 302);
    until("the loss is counted", async || {
        metric(&proxy, "sessionwatch_session_resets_total", &[]).await == resets + 1.0
    })
    .await;
    until("the incident opens", async || proxy.incident_open()).await;
    // The new cookie is learnt (the lost session may have left the table: its cookie was
    // cleared).
    let tracked = sessions(&proxy);
    assert_eq!(request(addr, "/login/APP", None).await.0, 200);
    assert_eq!(sessions(&proxy), tracked + 1);
    let tracked = tracked + 1;

    // Another reload (weights only) keeps the open incident and the table.
    rewrite(
        &file,
        &config(
            &farm,
            &[("b", 2), ("c", 1)],
            &["SID", "APP"],
            LOW_THRESHOLDS,
        ),
    );
    let report = proxy.reload().await.expect("the new file applies");
    assert_eq!(report.changed, ["backends"]);
    assert!(proxy.incident_open());
    assert_eq!(sessions(&proxy), tracked);
    load.advance(40).await;

    let (answered, failures) = load.stop().await;
    assert!(
        failures.is_empty(),
        "{} failed requests: {failures:#?}",
        failures.len()
    );
    assert!(answered >= 4 * 100, "{answered}");
    assert_eq!(
        metric(
            &proxy,
            "sessionwatch_config_reloads_total",
            &["result=\"applied\""]
        )
        .await,
        2.0
    );
    proxy.flush_alerts();
    let log = alerts(&file);
    assert_eq!(lines_of(&log, "incident_opened").len(), 1);
    assert!(lines_of(&log, "incident_resolved").is_empty());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(&sid), "a raw session id in the alert log");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_keeps_the_running_configuration_and_is_counted_once() {
    let scratch = Scratch::new("reload-broken");
    let farm = Farm::start(&["a", "b"]).await;
    let file = scratch.path().join("sessionwatch.toml");
    std::fs::write(&file, config(&farm, &[("a", 1)], &["SID"], "")).unwrap();
    let proxy = start(&file, Some(Duration::from_millis(50))).await;
    let addr = proxy.addr();
    let last_ok = "sessionwatch_config_last_reload_successful";
    assert_eq!(metric(&proxy, last_ok, &[]).await, 1.0, "none tried yet");

    // Asked for: the error, and nothing changes.
    std::fs::write(&file, "[[backends]\nname = \"b\"\n").unwrap();
    match proxy.reload().await {
        Err(ReloadError::Invalid(e)) => {
            assert!(e.to_string().contains("sessionwatch.toml:1:"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        metric(&proxy, "sessionwatch_config_reload_failures_total", &[]).await,
        1.0
    );
    assert_eq!(
        metric(
            &proxy,
            "sessionwatch_config_reloads_total",
            &["result=\"failed\""]
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(&proxy, last_ok, &[]).await,
        0.0,
        "the file on disk does not run"
    );
    let before = farm.served("a");
    assert_eq!(request(addr, "/page", None).await.0, 200);
    assert_eq!(farm.served("a"), before + 1);

    // Seen by the watch: valid TOML that check-config refuses (a URL with no port), counted
    // once however many times the watch reads it.
    let invalid = config(&farm, &[("b", 1)], &["SID"], "")
        .replace(&format!("http://{}", farm.addr("b")), "http://127.0.0.1");
    rewrite(&file, &invalid);
    until("the watch counts the failure", async || {
        metric(&proxy, "sessionwatch_config_reload_failures_total", &[]).await == 2.0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        metric(&proxy, "sessionwatch_config_reload_failures_total", &[]).await,
        2.0
    );
    assert_eq!(request(addr, "/page", None).await.0, 200);
    assert_eq!(farm.served("b"), 0);

    // Fixed: applied.
    rewrite(&file, &config(&farm, &[("b", 1)], &["SID"], ""));
    until("the fixed file applies", async || {
        metric(
            &proxy,
            "sessionwatch_config_reloads_total",
            &["result=\"applied\""],
        )
        .await
            == 1.0
    })
    .await;
    assert_eq!(metric(&proxy, last_ok, &[]).await, 1.0);
    let before = farm.served("a");
    for _ in 0..5 {
        assert_eq!(request(addr, "/page", None).await.0, 200);
    }
    assert_eq!(farm.served("b"), 5);
    assert_eq!(farm.served("a"), before);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_fixed_at_start_is_refused_and_the_rest_applies_on_the_old_listener() {
    let scratch = Scratch::new("reload-refused");
    let farm = Farm::start(&["a", "b"]).await;
    let file = scratch.path().join("sessionwatch.toml");
    std::fs::write(&file, config(&farm, &[("a", 1)], &["SID"], "")).unwrap();
    let proxy = start(&file, None).await;
    let addr = proxy.addr();
    let load = Load::start(addr);
    load.advance(10).await;

    let moved = config(&farm, &[("b", 1)], &["SID"], "").replace(
        "address = \"127.0.0.1:0\"\nworkers = 2",
        "address = \"127.0.0.2:0\"\nworkers = 2",
    );
    rewrite(&file, &moved);
    let report = proxy.reload().await.expect("the rest applies");
    assert_eq!(report.refused, ["listen.address"]);
    assert_eq!(report.changed, ["backends"]);
    assert_eq!(proxy.addr(), addr);
    load.advance(2).await;
    let b = farm.served("b");
    load.advance(10).await;
    assert!(farm.served("b") >= b + 10 * LOAD_CONNECTIONS as u64);
    let (_, failures) = load.stop().await;
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(
        metric(&proxy, "sessionwatch_config_reload_refused_keys_total", &[]).await,
        1.0
    );
    // The refused key stays refused on the next reload, with its old value kept.
    let report = proxy.reload().await.unwrap();
    assert_eq!(report.refused, ["listen.address"]);
    assert!(report.changed.is_empty());
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_style_swap_of_the_data_symlink_is_applied() {
    let scratch = Scratch::new("reload-configmap");
    let farm = Farm::start(&["a", "b"]).await;
    let dir = scratch.path();
    // What the kubelet makes: config.toml -> ..data/config.toml, ..data -> ..<timestamp>.
    let first = dir.join("..2026_12_01_10_00_00.1");
    std::fs::create_dir(&first).unwrap();
    let alerts_at = dir.join("alerts.jsonl").display().to_string();
    let with_log = |text: String| text.replace("\"alerts.jsonl\"", &format!("{alerts_at:?}"));
    std::fs::write(
        first.join("config.toml"),
        with_log(config(&farm, &[("a", 1)], &["SID"], "")),
    )
    .unwrap();
    std::os::unix::fs::symlink(first.file_name().unwrap(), dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/config.toml", dir.join("config.toml")).unwrap();
    let config_file = dir.join("config.toml");
    let proxy = sessionwatch_proxy::start(
        Config::load(&config_file).unwrap(),
        StartOptions {
            config_file: Some(config_file),
            watch_config: Some(Duration::from_millis(50)),
            ..StartOptions::default()
        },
    )
    .await
    .unwrap();
    let addr = proxy.addr();
    assert_eq!(request(addr, "/page", None).await.0, 200);
    assert_eq!(farm.served("a"), 1);

    // The update: a new directory, a new symlink beside ..data, renamed over it (atomic).
    let second = dir.join("..2026_12_01_10_05_00.2");
    std::fs::create_dir(&second).unwrap();
    std::fs::write(
        second.join("config.toml"),
        with_log(config(&farm, &[("b", 1)], &["SID"], "")),
    )
    .unwrap();
    std::os::unix::fs::symlink(second.file_name().unwrap(), dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(&first).unwrap();

    until("the swap is applied", async || {
        metric(
            &proxy,
            "sessionwatch_config_reloads_total",
            &["result=\"applied\""],
        )
        .await
            == 1.0
    })
    .await;
    for _ in 0..3 {
        assert_eq!(request(addr, "/page", None).await.0, 200);
    }
    assert_eq!(farm.served("a"), 1);
    assert_eq!(farm.served("b"), 3);
    assert_eq!(
        metric(&proxy, "sessionwatch_config_reload_failures_total", &[]).await,
        0.0
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_dns_entry_takes_over_from_the_old_one_under_load() {
    let scratch = Scratch::new("reload-dns");
    let farm = Farm::start(&["a", "b"]).await;
    let dns = DnsServer::start().await.unwrap();
    for (name, srv) in [("a", "_http._tcp.one.test"), ("b", "_http._tcp.two.test")] {
        let pod = format!("{name}.pods.test");
        dns.set_ips(&pod, &[farm.addr(name).ip()]);
        dns.set_srv(srv, &[(pod.as_str(), farm.addr(name).port())]);
    }
    let entry = |srv: &str| {
        format!(
            "[[backends]]\nsrv = \"{srv}\"\nresolver = \"{}\"\nrefresh = \"100ms\"\n",
            dns.addr()
        )
    };
    let file = scratch.path().join("sessionwatch.toml");
    let first = config(&farm, &[], &["SID"], "") + &entry("_http._tcp.one.test");
    std::fs::write(&file, first).unwrap();
    let proxy = start(&file, None).await;
    let load = Load::start(proxy.addr());
    load.advance(10).await;
    assert_eq!(proxy.members(), [farm.addr("a").to_string()]);

    rewrite(
        &file,
        &(config(&farm, &[], &["SID"], "") + &entry("_http._tcp.two.test")),
    );
    let report = proxy.reload().await.expect("the new entry applies");
    assert_eq!(report.changed, ["backends"]);
    let b = farm.addr("b").to_string();
    until("the new entry's backend is the farm", async || {
        proxy.members() == [b.clone()]
    })
    .await;
    load.advance(2).await;
    let a = farm.served("a");
    load.advance(20).await;
    assert_eq!(farm.served("a"), a, "the old entry's backend got traffic");
    assert!(farm.served("b") >= 20 * LOAD_CONNECTIONS as u64);
    let (_, failures) = load.stop().await;
    assert!(
        failures.is_empty(),
        "{} failed requests: {failures:#?}",
        failures.len()
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_log_moves_to_a_new_file_and_stays_when_it_cannot_open() {
    let scratch = Scratch::new("reload-alerts");
    let farm = Farm::start(&["a"]).await;
    let file = scratch.path().join("sessionwatch.toml");
    std::fs::write(&file, config(&farm, &[("a", 1)], &["SID"], "")).unwrap();
    let proxy = start(&file, None).await;
    let addr = proxy.addr();
    let lose = async |proxy: &RunningProxy| {
        let (_, sid) = request(addr, "/login/SID", None).await;
        let sid = sid.unwrap();
        assert_eq!(request(addr, "/lose/SID", Some(("SID", &sid))).await.0, 302);
        proxy.flush_alerts();
    };
    lose(&proxy).await;
    let first = alerts(&file);
    assert_eq!(lines_of(&first, "session_reset").len(), 1);

    let second = scratch.path().join("moved.jsonl");
    let moved = config(&farm, &[("a", 1)], &["SID"], "").replace(
        "\"alerts.jsonl\"",
        &format!("{:?}", second.display().to_string()),
    );
    std::fs::write(&file, &moved).unwrap();
    let report = proxy.reload().await.unwrap();
    assert_eq!(report.changed, ["alerts"]);
    lose(&proxy).await;
    assert_eq!(lines_of(&first, "session_reset").len(), 1);
    assert_eq!(lines_of(&second, "session_reset").len(), 1);

    let nowhere = scratch.path().join("missing-dir").join("alerts.jsonl");
    let broken = config(&farm, &[("a", 1)], &["SID"], "").replace(
        "\"alerts.jsonl\"",
        &format!("{:?}", nowhere.display().to_string()),
    );
    std::fs::write(&file, &broken).unwrap();
    let report = proxy.reload().await.unwrap();
    assert_eq!(report.refused, ["alerts.log_file"]);
    assert!(report.changed.is_empty(), "{report:?}");
    lose(&proxy).await;
    assert_eq!(lines_of(&second, "session_reset").len(), 2);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_policy_turned_on_pins_the_sessions_learnt_before() {
    let scratch = Scratch::new("reload-pin");
    let farm = Farm::start(&["a", "b"]).await;
    let file = scratch.path().join("sessionwatch.toml");
    std::fs::write(&file, config(&farm, &[("a", 1), ("b", 1)], &["SID"], "")).unwrap();
    let proxy = start(&file, None).await;
    let addr = proxy.addr();
    let (_, sid) = request(addr, "/login/SID", None).await;
    let sid = sid.unwrap();
    let issuer = if farm.served("a") == 1 { "a" } else { "b" };
    let other = if issuer == "a" { "b" } else { "a" };
    let session = Some(("SID", sid.as_str()));
    let before = farm.served(other);
    for _ in 0..6 {
        assert_eq!(request(addr, "/page", session).await.0, 200);
    }
    assert!(farm.served(other) > before, "not pinned: spread over both");

    rewrite(
        &file,
        &config(
            &farm,
            &[("a", 1), ("b", 1)],
            &["SID"],
            "[pin]\npolicy = \"learn\"\n",
        ),
    );
    assert_eq!(proxy.reload().await.unwrap().changed, ["pin"]);
    let (mine, theirs) = (farm.served(issuer), farm.served(other));
    for _ in 0..6 {
        assert_eq!(request(addr, "/page", session).await.0, 200);
    }
    assert_eq!(farm.served(issuer), mine + 6, "pinned to the issuer");
    assert_eq!(farm.served(other), theirs);
    proxy.shutdown().await;
}
