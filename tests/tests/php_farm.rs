//! End to end against a real PHP farm: two `php -S` nodes serving `tests/php/app/router.php`
//! with native PHP sessions, behind the proxy with the `php` preset.
//!
//! - broken farm (each node its own `session.save_path`), no pinning: about half of the `GET /me`
//!   requests land on the node that does not hold the session; every one is reported as a
//!   cross-backend reset (`login_redirect` with PHP's default `use_strict_mode=0`, where only the
//!   redirect shows the loss; `reissued` with `use_strict_mode=1`, where the node hands out a new
//!   id) naming the right issuer and server, and an incident opens with the store-not-shared hint;
//! - broken farm with `pin = "learn"`: nobody is logged out;
//! - healthy farm (one shared `session.save_path`): no reset and no incident, though users log out
//!   (PHP deletes the cookie) and anonymous visitors get fresh `PHPSESSID`s.
//!
//! Every test also checks that no raw `PHPSESSID` value reaches the alert log or the metrics.
//!
//! Needs the `php` command line (Debian's `php-cli`); without it every test fails and says so.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use sessionwatch_proxy::RunningProxy;
use sessionwatch_test_support::{DriveConfig, DriveReport, MeOutcome, UserClient, drive_users};
use sessionwatch_tests::{Scratch, config_toml, lines_of, start_proxy};

const COOKIE: &str = "PHPSESSID";
const NODE_NAMES: [&str; 2] = ["php-a", "php-b"];
/// Concurrent requests `php -S` can serve per node (it forks this many workers).
const PHP_WORKERS: &str = "4";
const READY_WITHIN: Duration = Duration::from_secs(10);
const STOP_WITHIN: Duration = Duration::from_secs(3);
const START_ATTEMPTS: usize = 5;

/// `php -v`, once per test binary; panics with instructions when PHP is missing or has no
/// session support.
fn php_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let probe = Command::new("php")
            .args([
                "-r",
                "echo PHP_VERSION, ' ', function_exists('session_start') ? 'sessions' : 'no-sessions';",
            ])
            .stdin(Stdio::null())
            .output();
        match probe {
            Ok(out) if out.status.success() => {
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                assert!(
                    text.ends_with(" sessions"),
                    "the `php` on PATH has no session support ({text}); install Debian's php-cli"
                );
                text
            }
            Ok(out) => panic!(
                "`php -r` failed ({}): {}\nthe PHP farm tests need a working `php` command line \
                 (Debian: apt-get install php-cli)",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => panic!(
                "cannot run `php` ({e}): the PHP farm tests need the PHP command line on PATH \
                 (Debian: apt-get install php-cli)"
            ),
        }
    })
}

fn app_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("php")
        .join("app")
}

/// A port that was free a moment ago: bind 127.0.0.1:0, read the port, let it go.
fn free_port() -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Sends `sig` to every process of group `pgid`: the `php -S` parent and its forked workers.
fn signal_group(pgid: u32, sig: &str) {
    let _ = Command::new("sh")
        .args(["-c", "kill -s \"$1\" -- \"-$2\" 2>/dev/null", "sh", sig])
        .arg(pgid.to_string())
        .stdin(Stdio::null())
        .status();
}

/// One `php -S` node, stopped (with its workers) when dropped.
#[derive(Debug)]
struct PhpNode {
    name: &'static str,
    addr: SocketAddr,
    instance: String,
    child: Child,
    log: PathBuf,
}

impl PhpNode {
    /// Starts a node on a free port, retrying on another port if PHP cannot bind or never
    /// answers its own `/health`.
    fn start(name: &'static str, save_path: &Path, strict: bool, log_dir: &Path) -> Self {
        static STARTED: AtomicU64 = AtomicU64::new(0);
        php_version();
        let app = app_dir();
        let mut failures = Vec::new();
        for attempt in 0..START_ATTEMPTS {
            let instance = format!(
                "{}-{}",
                std::process::id(),
                STARTED.fetch_add(1, Ordering::Relaxed)
            );
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let log = log_dir.join(format!("{name}-{attempt}.log"));
            let out = File::create(&log).expect("create php log");
            let err = out.try_clone().expect("clone php log handle");
            let child = Command::new("php")
                .arg("-d")
                .arg(format!("session.save_path={}", save_path.display()))
                .arg("-d")
                .arg(format!("session.use_strict_mode={}", u8::from(strict)))
                .args(["-d", "session.gc_probability=0"])
                .args(["-d", "display_errors=stderr", "-d", "log_errors=0"])
                .arg("-S")
                .arg(addr.to_string())
                .arg("-t")
                .arg(&app)
                .arg(app.join("router.php"))
                .env("PHP_CLI_SERVER_WORKERS", PHP_WORKERS)
                .env("SESSIONWATCH_PHP_NODE", name)
                .env("SESSIONWATCH_PHP_INSTANCE", &instance)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                // Its own group, so that stopping it reaches the forked workers too.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start `php -S` ({e}); is php-cli installed?"));
            let mut node = PhpNode {
                name,
                addr,
                instance,
                child,
                log,
            };
            match node.wait_ready() {
                Ok(()) => return node,
                Err(why) => failures.push(format!("{addr}: {why}\n{}", node.log_text())),
            }
        }
        panic!(
            "php node {name} did not start in {START_ATTEMPTS} attempts ({}):\n{}",
            php_version(),
            failures.join("\n---\n")
        );
    }

    /// Polls `GET /health` until this very process (not whoever else took the port) answers.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_WITHIN;
        let expected = format!("ok {} {}", self.name, self.instance);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("php exited with {status}"));
            }
            if health(self.addr).is_some_and(|body| body.trim() == expected) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("no answer to GET /health within {READY_WITHIN:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PhpNode {
    fn drop(&mut self) {
        let pgid = self.child.id();
        if self.child.try_wait().is_ok_and(|s| s.is_none()) {
            // SIGINT to the whole group: the workers end, and the parent reaps them and ends.
            // (Killing only the parent would leave the workers running on the port.)
            signal_group(pgid, "INT");
            let deadline = Instant::now() + STOP_WITHIN;
            while self.child.try_wait().is_ok_and(|s| s.is_none()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if self.child.try_wait().is_ok_and(|s| s.is_none()) {
            signal_group(pgid, "KILL");
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// One raw `GET /health` with the standard library, for readiness before any runtime client;
/// the body of the answer.
fn health(addr: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .ok()?;
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    if !answer.starts_with("HTTP/1.") {
        return None;
    }
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}

/// Where the nodes keep their sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    /// Each node its own directory: the broken farm.
    PerNode,
    /// One directory for all: the healthy farm.
    Shared,
}

/// Two PHP nodes.
#[derive(Debug)]
struct PhpFarm {
    nodes: Vec<PhpNode>,
}

impl PhpFarm {
    fn start(scratch: &Scratch, store: Store, strict: bool) -> Self {
        let nodes = NODE_NAMES
            .iter()
            .map(|name| {
                let dir = match store {
                    Store::PerNode => scratch.path().join(format!("sessions-{name}")),
                    Store::Shared => scratch.path().join("sessions"),
                };
                std::fs::create_dir_all(&dir).expect("create session dir");
                PhpNode::start(name, &dir, strict, scratch.path())
            })
            .collect();
        Self { nodes }
    }

    fn backends(&self) -> Vec<(String, SocketAddr)> {
        self.nodes
            .iter()
            .map(|n| (n.name.to_owned(), n.addr))
            .collect()
    }

    /// Every node's server log, for failure messages.
    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let text = n.log_text();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {} ---\n{}", n.name, tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The proxy in front of `farm`, with the `php` preset and pinning `pin`.
async fn proxy_for(farm: &PhpFarm, alert_log: &Path, pin: &str) -> RunningProxy {
    // Every reset gets its own line (no rate limit), so lines can be counted against what the
    // users saw. Health checks are lenient: `php -S` serves a few requests at a time.
    let extra = format!(
        "[session]\npreset = \"php\"\nfingerprint_key = \"php-farm-fingerprint-key-0123456789\"\n\
         [pin]\npolicy = \"{pin}\"\n\
         [health]\ninterval = \"100ms\"\ntimeout = \"2s\"\nrise = 1\nfall = 3\n\
         [incident]\nmax_reset_lines_per_sec = 1000000\n"
    );
    start_proxy(&config_toml(&farm.backends(), COOKIE, alert_log, &extra)).await
}

fn flush(proxy: &RunningProxy) {
    tokio::task::block_in_place(|| proxy.flush_alerts());
}

/// Asserts no raw session value any user held appears in the alert log or the metrics.
fn assert_no_raw_values(proxy: &RunningProxy, alert_log: &Path, values: &[String]) {
    flush(proxy);
    assert!(
        !values.is_empty(),
        "the users held no session values at all"
    );
    let log = std::fs::read_to_string(alert_log).unwrap_or_default();
    let metrics = proxy.metrics.render();
    for value in values {
        assert!(
            !log.contains(value.as_str()),
            "a raw PHPSESSID value leaked into the alert log"
        );
        assert!(
            !metrics.contains(value.as_str()),
            "a raw PHPSESSID value leaked into the metrics"
        );
    }
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A loss seen by one scripted user: which node issued the session, which lost it, and the
/// proxy's request id of the request that showed it.
#[derive(Debug)]
struct ScriptedLoss {
    issuer: String,
    server: String,
    request_id: String,
    /// Every session value the user held.
    values: Vec<String>,
}

/// One user logs in and asks `GET /me` until a node other than the issuer answers it with the
/// redirect to `/login`. Only this user talks to the proxy, so round robin alternates and the
/// first try already does it; a few more are allowed.
async fn scripted_loss(proxy: SocketAddr, farm: &PhpFarm) -> ScriptedLoss {
    let mut user = UserClient::new(proxy, COOKIE).with_user("scripted");
    for _ in 0..10 {
        let (status, headers, _) = user.post("/login", "user=scripted").await.expect("login");
        assert_eq!(status, 302, "login answers 302 to /me\n{}", farm.logs());
        assert!(user.cookie().is_some(), "login sets PHPSESSID");
        let issuer = header(&headers, "x-served-by").to_owned();
        let (status, headers, body) = user.get("/me").await.expect("GET /me");
        let server = header(&headers, "x-served-by").to_owned();
        match status.as_u16() {
            200 => {
                assert_eq!(
                    issuer, server,
                    "a node that did not issue the session knew it"
                );
                assert_eq!(body.as_ref(), b"scripted\n");
            }
            302 => {
                assert_eq!(header(&headers, "location"), "/login");
                assert_ne!(issuer, server, "the issuing node lost its own session");
                return ScriptedLoss {
                    issuer,
                    server,
                    request_id: header(&headers, "x-request-id").to_owned(),
                    values: user.all_cookie_values().to_vec(),
                };
            }
            other => panic!("GET /me answered {other}\n{}", farm.logs()),
        }
    }
    panic!("ten logins in a row were all answered by their own node: is round robin on?");
}

/// Polls (bounded) until an `incident_opened` line is written.
async fn wait_for_incident(proxy: &RunningProxy, alert_log: &Path) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        flush(proxy);
        let opened = lines_of(alert_log, "incident_opened");
        if !opened.is_empty() || tokio::time::Instant::now() >= deadline {
            return opened;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The broken farm without pinning: half the requests lose their session, and the proxy says so,
/// request by request and as an incident.
async fn broken_farm_without_pinning(strict: bool, expected_signal: &str) {
    let name = if strict {
        "php-broken-strict"
    } else {
        "php-broken"
    };
    let scratch = Scratch::new(name);
    let alert_log = scratch.alert_log();
    let farm = tokio::task::block_in_place(|| PhpFarm::start(&scratch, Store::PerNode, strict));
    let proxy = proxy_for(&farm, &alert_log, "off").await;

    let report = drive_users(
        proxy.addr,
        COOKIE,
        DriveConfig::new(30, 20).with_concurrency(12),
    )
    .await;
    assert_eq!(report.errors, 0, "{report:?}\n{}", farm.logs());
    assert_eq!(report.requests, 600);
    let share = report.logged_out as f64 / report.requests as f64;
    assert!(
        (0.3..=0.7).contains(&share),
        "with 2 nodes about half of the /me requests should lose the session; {share:.3} did \
         ({report:?})"
    );
    assert_eq!(
        report.total_losses(),
        report.logged_out,
        "every logged-out answer was to a user who held a session"
    );

    flush(&proxy);
    let resets = lines_of(&alert_log, "session_reset");
    assert_eq!(
        resets.len() as u64,
        report.logged_out,
        "one session_reset line per logged-out answer"
    );
    for line in &resets {
        assert_eq!(line["signal"], expected_signal, "{line}");
        assert_eq!(line["attribution"], "cross_backend", "{line}");
        assert_eq!(line["method"], "GET", "{line}");
        assert_eq!(line["path"], "/me", "{line}");
        assert_eq!(line["status"], 302, "{line}");
        let issuer = line["issuer"].as_str().unwrap_or_default();
        let server = line["server"].as_str().unwrap_or_default();
        assert!(NODE_NAMES.contains(&issuer), "issuer is a backend: {line}");
        assert!(NODE_NAMES.contains(&server), "server is a backend: {line}");
        assert_ne!(issuer, server, "{line}");
    }

    let opened = wait_for_incident(&proxy, &alert_log).await;
    assert!(
        !opened.is_empty(),
        "no incident opened after {} resets",
        resets.len()
    );
    assert_eq!(
        opened[0]["hint"]["code"], "store_not_shared",
        "incident: {}",
        opened[0]
    );
    // Across nodes every request with a session was a loss; on the issuing node none was.
    // Sign-ins (which follow every loss, carrying the lost or the replacement id) are no part
    // of the matrix: they can never show a loss.
    let matrix = opened[0]["matrix"].as_array().expect("matrix");
    for cell in matrix {
        if cell["issuer"] == cell["server"] {
            assert_eq!(cell["resets"], 0, "{cell}");
        } else {
            assert_eq!(cell["resets"], cell["requests"], "{cell}");
        }
    }
    assert!(proxy.incidents.is_open());

    // One loss followed closely: the line names the node that issued the session and the one
    // that lost it, as the nodes themselves said.
    let scripted = scripted_loss(proxy.addr, &farm).await;
    flush(&proxy);
    let line = lines_of(&alert_log, "session_reset")
        .into_iter()
        .find(|l| l["request_id"] == scripted.request_id.as_str())
        .unwrap_or_else(|| panic!("no session_reset line for the scripted loss {scripted:?}"));
    assert_eq!(line["issuer"], scripted.issuer.as_str(), "{line}");
    assert_eq!(line["server"], scripted.server.as_str(), "{line}");
    assert_eq!(line["signal"], expected_signal, "{line}");

    let mut values = report.cookie_values.clone();
    values.extend(scripted.values);
    assert_no_raw_values(&proxy, &alert_log, &values);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_php_farm_without_pinning_reports_login_redirects_across_backends() {
    // PHP's default (`use_strict_mode=0`): the other node adopts the unknown id with an empty
    // session and sets no cookie; only the redirect to /login shows the loss.
    broken_farm_without_pinning(false, "login_redirect").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_strict_php_farm_without_pinning_reports_reissued_ids_across_backends() {
    // `use_strict_mode=1`: the other node refuses the unknown id and sets a new one along with
    // the redirect.
    broken_farm_without_pinning(true, "reissued").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_php_farm_with_learned_pins_logs_nobody_out() {
    let scratch = Scratch::new("php-learn");
    let alert_log = scratch.alert_log();
    let farm = tokio::task::block_in_place(|| PhpFarm::start(&scratch, Store::PerNode, false));
    let proxy = proxy_for(&farm, &alert_log, "learn").await;

    let report = drive_users(
        proxy.addr,
        COOKIE,
        DriveConfig::new(50, 20).with_concurrency(12),
    )
    .await;
    assert_eq!(report.errors, 0, "{report:?}\n{}", farm.logs());
    assert_eq!(report.requests, 1000);
    assert_eq!(report.logged_out, 0, "{report:?}");

    flush(&proxy);
    assert!(lines_of(&alert_log, "session_reset").is_empty());
    assert_no_raw_values(&proxy, &alert_log, &report.cookie_values);
    proxy.shutdown().await;
}

/// The healthy farm: signed-in traffic, logouts and anonymous visits, and not one reset.
async fn healthy_farm(strict: bool) {
    let name = if strict {
        "php-healthy-strict"
    } else {
        "php-healthy"
    };
    let scratch = Scratch::new(name);
    let alert_log = scratch.alert_log();
    let farm = tokio::task::block_in_place(|| PhpFarm::start(&scratch, Store::Shared, strict));
    let proxy = proxy_for(&farm, &alert_log, "off").await;

    let report: DriveReport = drive_users(
        proxy.addr,
        COOKIE,
        DriveConfig::new(30, 10).with_concurrency(12),
    )
    .await;
    assert_eq!(report.errors, 0, "{report:?}\n{}", farm.logs());
    assert_eq!(report.logged_out, 0, "{report:?}");
    let mut values = report.cookie_values.clone();

    // Users sign in, use the app, sign out through the proxy (PHP answers with
    // `PHPSESSID=deleted; expires=...1970...; Max-Age=0`), and come back anonymously.
    for i in 0..10 {
        let mut user = UserClient::new(proxy.addr, COOKIE).with_user(format!("leaver{i}"));
        user.login().await.expect("login");
        for _ in 0..3 {
            assert_eq!(user.me().await.expect("me"), MeOutcome::LoggedIn);
        }
        let (status, headers, _) = user.get("/logout").await.expect("logout");
        assert_eq!(status, 302);
        let deletion = header(&headers, "set-cookie");
        assert!(
            deletion.starts_with("PHPSESSID=deleted;") && deletion.contains("Max-Age=0"),
            "PHP deletes the cookie on logout: {deletion}"
        );
        assert!(user.cookie().is_none(), "the deletion removed the cookie");
        // Signed out: /me redirects to /login and PHP starts a fresh anonymous session.
        assert_eq!(
            user.me().await.expect("me after logout"),
            MeOutcome::LoggedOut { status: 302 }
        );
        assert!(
            user.cookie().is_some(),
            "PHP gave the signed-out visitor a new id"
        );
        values.extend(user.all_cookie_values().iter().cloned());
    }

    // Anonymous visitors: each first request gets a fresh PHPSESSID; later ones keep it.
    for _ in 0..10 {
        let mut visitor = UserClient::new(proxy.addr, COOKIE);
        let (status, headers, _) = visitor.get("/anon").await.expect("anon");
        assert_eq!(status, 200);
        assert!(
            header(&headers, "set-cookie").starts_with("PHPSESSID="),
            "session_start() set a cookie for a new visitor"
        );
        let first = visitor.cookie().map(str::to_owned);
        assert!(first.is_some());
        for _ in 0..3 {
            let (status, _, _) = visitor.get("/anon").await.expect("anon again");
            assert_eq!(status, 200);
        }
        assert_eq!(visitor.cookie().map(str::to_owned), first);
        values.extend(visitor.all_cookie_values().iter().cloned());
    }

    // Let the incident watch (100 ms ticks in tests) look at all of it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    flush(&proxy);
    let resets = lines_of(&alert_log, "session_reset");
    assert!(resets.is_empty(), "resets on a healthy farm: {resets:?}");
    assert!(lines_of(&alert_log, "incident_opened").is_empty());
    assert!(!proxy.incidents.is_open());
    assert_no_raw_values(&proxy, &alert_log, &values);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_php_farm_has_no_resets_for_logouts_or_anonymous_visits() {
    healthy_farm(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_strict_php_farm_has_no_resets_for_logouts_or_anonymous_visits() {
    healthy_farm(true).await;
}
