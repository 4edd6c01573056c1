//! The deploy gate, `sessionwatch probe` and `POST /probe`, against real farms: the PHP farm
//! with one session directory per node (the broken farm: exit 1, 422, with the lost pairs),
//! with one shared directory (exit 0, 200), with a node stopped (exit 2, 503); a farm that never
//! answers (the time limit) and a second probe asked while one runs (409); and the Django-style
//! CSRF sign-in on an in-process farm whose login form carries a token.
//!
//! The command is the built binary, run as a deploy job would run it; the endpoint is the admin
//! listener of a proxy started from the same kind of file. Real time, generous bounds, outcomes
//! asserted, never durations.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sessionwatch_core::{BackendId, Hint};
use sessionwatch_test_support::{CsrfFarm, StoreMode, shared_client};
use sessionwatch_tests::binary::sessionwatch_binary;
use sessionwatch_tests::php::{PhpFarm, Store, proxy_with_sections};
use sessionwatch_tests::{Scratch, start_proxy};

/// The whole run's limit given to every probe here: far above what a run takes.
const PROBE_TIMEOUT: &str = "20s";
/// The most a test waits on one answer of the admin listener.
const ANSWER_WITHIN: Duration = Duration::from_secs(40);

/// What one run of the command gave.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("probe --json printed no JSON ({e}):\n{self:#?}"))
    }
}

/// `sessionwatch probe -c CONFIG ARGS...` with `env` set (and nothing else of ours).
fn probe(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(sessionwatch_binary());
    cmd.arg("probe").arg("-c").arg(config).args(args);
    cmd.env_remove("PROBE_USER").env_remove("PROBE_PASSWORD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run sessionwatch probe");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// [`probe`] on a blocking thread, for tests whose farm runs on this runtime.
async fn probe_async(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let config = config.to_owned();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        probe(&config, &args, &env)
    })
    .await
    .expect("probe thread")
}

/// A configuration for `backends` with `[session] preset` and `probe` as its `[probe]` section.
fn config(backends: &[(String, SocketAddr)], preset: &str, probe: &str) -> String {
    let mut toml = format!(
        "[session]\npreset = \"{preset}\"\nfingerprint_key = \"probe-test-fingerprint-key-0123\"\n\
         [health]\nactive = false\n{probe}\n"
    );
    for (name, addr) in backends {
        toml.push_str(&format!(
            "[[backends]]\nname = \"{name}\"\nurl = \"http://{addr}\"\n"
        ));
    }
    toml
}

/// The PHP application's sign-in: one POST of a form to its login path.
fn php_probe() -> String {
    format!(
        "[probe]\ncheck = \"/me\"\ntimeout = \"{PROBE_TIMEOUT}\"\n\
         [[probe.sign_in]]\nmethod = \"POST\"\npath = \"/login\"\nform = {{ user = \"probe\" }}\n"
    )
}

fn write(scratch: &Scratch, toml: &str) -> std::path::PathBuf {
    let path = scratch.path().join("probe.toml");
    std::fs::write(&path, toml).expect("write config");
    path
}

/// The pairs of a report that lost their session, sorted.
fn lost_pairs(report: &Value) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = report["lost_pairs"]
        .as_array()
        .unwrap_or_else(|| panic!("no lost_pairs in {report}"))
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap_or_default().to_owned(),
                p[1].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    pairs.sort();
    pairs
}

fn pair<'a>(report: &'a Value, issuer: &str, server: &str) -> &'a Value {
    report["pairs"]
        .as_array()
        .and_then(|ps| {
            ps.iter()
                .find(|p| p["issuer"] == issuer && p["server"] == server)
        })
        .unwrap_or_else(|| panic!("no pair {issuer} -> {server} in {report}"))
}

fn cross(a: &str, b: &str) -> Vec<(String, String)> {
    vec![(a.into(), b.into()), (b.into(), a.into())]
}

/// The sessions of a report are named by 12-digit keyed fingerprints.
fn assert_fingerprints(report: &Value) {
    for p in report["pairs"].as_array().into_iter().flatten() {
        let fp = p["session"].as_str().unwrap_or_default();
        assert!(
            fp.len() == 12 && fp.bytes().all(|b| b.is_ascii_hexdigit()),
            "a session is named by its short fingerprint, not {fp:?}"
        );
    }
}

/// What the broken farm must show: every cross pair lost (all three rounds, by a login
/// redirect), each backend keeping its own, and the incident's own words for the cause.
fn assert_store_not_shared(report: &Value, a: &str, b: &str) {
    assert_eq!(report["result"], "lost", "{report}");
    assert_eq!(lost_pairs(report), cross(a, b), "{report}");
    for (issuer, server) in cross(a, b) {
        let p = pair(report, &issuer, &server);
        assert_eq!(p["kept"], false, "{p}");
        assert_eq!(p["lost"], 3, "{p}");
        assert_eq!(p["signal"], "login_redirect", "{p}");
    }
    for own in [a, b] {
        assert_eq!(pair(report, own, own)["kept"], true, "{report}");
    }
    assert_eq!(report["hint"]["code"], "store_not_shared", "{report}");
    let words = Hint::StoreNotShared.text(&|_: BackendId| String::new());
    assert_eq!(report["hint"]["text"], words.as_str());
    assert_eq!(report["error"], Value::Null);
    assert_fingerprints(report);
}

#[test]
fn on_the_per_node_php_farm_the_probe_exits_1_with_the_lost_pairs() {
    let scratch = Scratch::new("probe-php-per-node");
    let farm = PhpFarm::start(&scratch, Store::PerNode, false);
    let file = write(&scratch, &config(&farm.backends(), "php", &php_probe()));
    let run = probe(&file, &["--json"], &[]);
    assert_eq!(run.code, 1, "{run:#?}\n{}", farm.logs());
    assert_store_not_shared(&run.json(), "php-a", "php-b");

    // The table for people says the same.
    let run = probe(&file, &[], &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stdout.contains("LOST 3/3 (login_redirect)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("hint (store_not_shared): every loss is a session issued by one backend"),
        "{}",
        run.stdout
    );
}

#[test]
fn on_the_shared_php_farm_the_probe_exits_0() {
    let scratch = Scratch::new("probe-php-shared");
    let farm = PhpFarm::start(&scratch, Store::Shared, false);
    let file = write(&scratch, &config(&farm.backends(), "php", &php_probe()));
    let run = probe(&file, &["--json"], &[]);
    assert_eq!(run.code, 0, "{run:#?}\n{}", farm.logs());
    let report = run.json();
    assert_eq!(report["result"], "kept");
    assert_eq!(lost_pairs(&report), Vec::<(String, String)>::new());
    assert_eq!(
        report["pairs"].as_array().map(Vec::len),
        Some(4),
        "{report}"
    );
    for p in report["pairs"].as_array().into_iter().flatten() {
        assert_eq!(p["kept"], true, "{p}");
        assert_eq!(p["status"], 200, "{p}");
    }
    assert_eq!(report["hint"], Value::Null);
    assert_fingerprints(&report);
    let run = probe(&file, &[], &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stdout.contains("kept: every session survived"),
        "{}",
        run.stdout
    );
}

#[test]
fn with_a_php_node_down_the_probe_exits_2_and_says_which() {
    let scratch = Scratch::new("probe-php-down");
    let mut farm = PhpFarm::start(&scratch, Store::Shared, false);
    let file = write(&scratch, &config(&farm.backends(), "php", &php_probe()));
    farm.stop_node("php-b");
    let run = probe(&file, &["--json"], &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    let report = run.json();
    assert_eq!(report["result"], "failed");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(error.contains("php-b is unreachable"), "{report}");
    assert!(
        run.stderr.contains("could not run: php-b is unreachable"),
        "{}",
        run.stderr
    );
}

/// A listener that accepts connections and never answers them: a hung backend.
async fn black_hole() -> (SocketAddr, Arc<tokio::sync::Notify>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(tokio::sync::Notify::new());
    let notify = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
            notify.notify_one();
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_answers_stops_the_probe_at_its_timeout() {
    let scratch = Scratch::new("probe-timeout");
    let (hole, _) = black_hole().await;
    let file = write(
        &scratch,
        &config(&[("hung".to_owned(), hole)], "php", &php_probe()),
    );
    let run = probe_async(&file, &["--json", "--timeout", "1s"], &[]).await;
    assert_eq!(run.code, 2, "{run:#?}");
    let error = run.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.contains("did not finish within 1s") && error.contains("on hung"),
        "{error}"
    );

    // Signed in on a backend that answers, the session is asked of both at once: the message
    // names the one that never answered.
    let (_, odd, _) = hostile_backends().await;
    let file = write(
        &scratch,
        &config(
            &[("odd".to_owned(), odd), ("hung".to_owned(), hole)],
            "php",
            &php_probe(),
        ),
    );
    let run = probe_async(&file, &["--json", "--timeout", "1s"], &[]).await;
    assert_eq!(run.code, 2, "{run:#?}");
    let report = run.json();
    let error = report["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("with the session odd issued, waiting on hung"),
        "{error}"
    );
}

/// POST (or `method`) `/probe` on the admin listener: status, `Allow`, body.
async fn post_probe(admin: SocketAddr, method: http::Method) -> (u16, Option<String>, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{admin}/probe"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let resp = tokio::time::timeout(ANSWER_WITHIN, shared_client().request(req))
        .await
        .expect("the admin listener answers in time")
        .expect("the admin listener answers");
    let status = resp.status().as_u16();
    let allow = resp
        .headers()
        .get(http::header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, allow, json)
}

async fn php_proxy(farm: &PhpFarm, scratch: &Scratch) -> sessionwatch_proxy::RunningProxy {
    proxy_with_sections(farm, &scratch.alert_log(), "off", "", &php_probe()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_probe_answers_422_with_the_lost_pairs_on_the_per_node_farm() {
    let scratch = Scratch::new("probe-endpoint-per-node");
    let farm = PhpFarm::start(&scratch, Store::PerNode, false);
    let proxy = php_proxy(&farm, &scratch).await;
    let admin = proxy.admin_addr().expect("admin listener");
    let (status, _, report) = post_probe(admin, http::Method::POST).await;
    assert_eq!(status, 422, "{report}\n{}", farm.logs());
    assert_store_not_shared(&report, "php-a", "php-b");
    // Only POST runs it.
    let (status, allow, _) = post_probe(admin, http::Method::GET).await;
    assert_eq!((status, allow.as_deref()), (405, Some("POST")));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_probe_answers_200_on_the_shared_farm_and_503_with_a_node_down() {
    let scratch = Scratch::new("probe-endpoint-shared");
    let mut farm = PhpFarm::start(&scratch, Store::Shared, false);
    let proxy = php_proxy(&farm, &scratch).await;
    let admin = proxy.admin_addr().expect("admin listener");
    let (status, _, report) = post_probe(admin, http::Method::POST).await;
    assert_eq!(status, 200, "{report}\n{}", farm.logs());
    assert_eq!(report["result"], "kept");
    assert_eq!(report["backends"], serde_json::json!(["php-a", "php-b"]));
    assert_eq!(lost_pairs(&report), Vec::<(String, String)>::new());

    farm.stop_node("php-b");
    let (status, _, report) = post_probe(admin, http::Method::POST).await;
    assert_eq!(status, 503, "{report}");
    assert_eq!(report["result"], "failed");
    assert!(
        report["error"]
            .as_str()
            .unwrap_or_default()
            .contains("php-b is unreachable"),
        "{report}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_probe_while_one_runs_is_answered_409_and_the_first_503_at_its_timeout() {
    let (hole, accepted) = black_hole().await;
    let toml = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n\
         [alerts]\nlog_file = \"\"\n{}",
        config(
            &[("hung".to_owned(), hole)],
            "php",
            "[probe]\ncheck = \"/me\"\ntimeout = \"2s\"\n"
        )
    );
    let proxy = start_proxy(&toml).await;
    let admin = proxy.admin_addr().expect("admin listener");
    let first = tokio::spawn(post_probe(admin, http::Method::POST));
    // The first probe is waiting on the hung backend (no health check connects: active checks
    // are off).
    tokio::time::timeout(ANSWER_WITHIN, accepted.notified())
        .await
        .expect("the probe reaches the hung backend");
    let (status, _, busy) = post_probe(admin, http::Method::POST).await;
    assert_eq!(status, 409, "{busy}");
    assert_eq!(busy["result"], "busy");
    let (status, _, report) = first.await.expect("first probe");
    assert_eq!(status, 503, "{report}");
    assert!(
        report["error"]
            .as_str()
            .unwrap_or_default()
            .contains("did not finish within 2s"),
        "{report}"
    );
    proxy.shutdown().await;
}

/// The Django sign-in: the form fetched, then posted with its token and the credentials the
/// environment holds.
fn django_probe(csrf: &str) -> String {
    format!(
        "[probe]\ncheck = \"/me\"\ntimeout = \"{PROBE_TIMEOUT}\"\n\
         [[probe.sign_in]]\npath = \"/accounts/login/\"\n\
         [[probe.sign_in]]\nmethod = \"POST\"\npath = \"/accounts/login/\"\n\
         form_env = {{ username = \"PROBE_USER\", password = \"PROBE_PASSWORD\" }}\n{csrf}\n"
    )
}

const FROM_FIELD: &str =
    "csrf = { from_field = \"csrfmiddlewaretoken\", to_field = \"csrfmiddlewaretoken\" }";
const PASSWORD: &str = "correct-horse-battery";
const CREDENTIALS: [(&str, &str); 2] = [("PROBE_USER", "probe"), ("PROBE_PASSWORD", PASSWORD)];

/// Nothing secret in what the command printed: not the password, not a session or CSRF value
/// (the farm's start `s0000…` and `c0000…`).
fn assert_no_secrets(run: &Run) {
    for out in [&run.stdout, &run.stderr] {
        assert!(!out.contains(PASSWORD), "{out}");
        assert!(!out.contains("s0000") && !out.contains("c0000"), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_csrf_sign_in_takes_the_token_from_the_form_and_the_credentials_from_the_environment() {
    let scratch = Scratch::new("probe-csrf");
    let farm = CsrfFarm::start(2, StoreMode::Shared, "probe", PASSWORD)
        .await
        .expect("farm");
    let file = write(
        &scratch,
        &config(&farm.backends(), "django", &django_probe(FROM_FIELD)),
    );
    let run = probe_async(&file, &["--json"], &CREDENTIALS).await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.json()["result"], "kept");
    assert_eq!(farm.refused_csrf(), 0);
    assert_no_secrets(&run);

    // The token from the cookie, sent in a header, works as well.
    let header = "csrf = { from_cookie = \"csrftoken\", to_header = \"X-CSRFToken\" }";
    let file = write(
        &scratch,
        &config(&farm.backends(), "django", &django_probe(header)),
    );
    let run = probe_async(&file, &["--json"], &CREDENTIALS).await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(farm.refused_csrf(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_csrf_sign_in_on_a_per_node_django_farm_shows_the_lost_pairs() {
    let scratch = Scratch::new("probe-csrf-per-node");
    let farm = CsrfFarm::start(2, StoreMode::PerNode, "probe", PASSWORD)
        .await
        .expect("farm");
    let file = write(
        &scratch,
        &config(&farm.backends(), "django", &django_probe(FROM_FIELD)),
    );
    let run = probe_async(&file, &["--json"], &CREDENTIALS).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert_store_not_shared(&run.json(), "django-a", "django-b");
    assert_no_secrets(&run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_sign_in_is_a_probe_that_could_not_run_with_why() {
    let scratch = Scratch::new("probe-csrf-refused");
    let farm = CsrfFarm::start(2, StoreMode::Shared, "probe", PASSWORD)
        .await
        .expect("farm");
    let error_of = |run: &Run| run.json()["error"].as_str().unwrap_or_default().to_owned();

    // Without the token the farm refuses the form.
    let file = write(
        &scratch,
        &config(&farm.backends(), "django", &django_probe("")),
    );
    let run = probe_async(&file, &["--json"], &CREDENTIALS).await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        error_of(&run).contains("sign-in step 2 (POST /accounts/login/) was answered 403"),
        "{run:#?}"
    );
    assert_eq!(farm.refused_csrf(), 1);

    // The wrong password: the form again, and no session.
    let file = write(
        &scratch,
        &config(&farm.backends(), "django", &django_probe(FROM_FIELD)),
    );
    let wrong = [
        ("PROBE_USER", "probe"),
        ("PROBE_PASSWORD", "wrong-password"),
    ];
    let run = probe_async(&file, &["--json"], &wrong).await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        error_of(&run).contains("the sign-in issued no session cookie (watched: sessionid)"),
        "{run:#?}"
    );
    assert!(!run.stdout.contains("wrong-password") && !run.stderr.contains("wrong-password"));
    assert_eq!(farm.refused_credentials(), 1);
    assert_eq!(farm.refused_csrf(), 1, "the token was right this time");

    // No credentials in the environment: said so, and nothing sent.
    let run = probe_async(&file, &["--json"], &[("PROBE_USER", "probe")]).await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        error_of(&run).contains("the environment variable PROBE_PASSWORD is not set"),
        "{run:#?}"
    );
    assert_eq!(farm.refused_credentials(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_probe_configuration_exits_64_as_for_serve() {
    let scratch = Scratch::new("probe-bad-config");
    let farm = CsrfFarm::start(1, StoreMode::Shared, "probe", PASSWORD)
        .await
        .expect("farm");
    let file = write(
        &scratch,
        &config(&farm.backends(), "django", "[probe]\ncheck = \"me\"\n"),
    );
    let run = probe_async(&file, &[], &[]).await;
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr.contains("probe.check: must start with '/'"),
        "{}",
        run.stderr
    );
    // check-config says the same of the same file.
    let out = Command::new(sessionwatch_binary())
        .arg("check-config")
        .arg(&file)
        .output()
        .expect("run check-config");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("probe.check: must start with '/'"));
    let file = write(&scratch, &config(&farm.backends(), "django", ""));
    let run = probe_async(&file, &[], &[]).await;
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(run.stderr.contains("no check path"), "{}", run.stderr);
    let run = probe_async(&file, &["--check", "/me", "--backend", "a=ftp://x"], &[]).await;
    assert_eq!(run.code, 64, "{run:#?}");
}

#[test]
fn through_the_front_door_the_probe_counts_the_losses_of_one_session() {
    let scratch = Scratch::new("probe-front-door");
    let farm = PhpFarm::start(&scratch, Store::PerNode, false);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let file = write(&scratch, &config(&farm.backends(), "php", &php_probe()));
    for (pin, lost_some) in [("off", true), ("learn", false)] {
        let log = scratch.path().join(format!("alerts-{pin}.jsonl"));
        let proxy = rt.block_on(proxy_with_sections(&farm, &log, pin, "", ""));
        let door = format!("http://{}", proxy.addr());
        let args = [
            "--json",
            "--mode",
            "front-door",
            "--front-door",
            &door,
            "--requests",
            "10",
        ];
        let run = probe(&file, &args, &[]);
        let report = run.json();
        let front = &report["front_door"];
        assert_eq!(front["requests"], 10, "{run:#?}");
        assert_eq!(
            report["pairs"],
            serde_json::json!([]),
            "no matrix in this mode"
        );
        if lost_some {
            // Round robin over a farm whose nodes do not share sessions: the one session is
            // lost on every request the other node serves.
            assert_eq!(run.code, 1, "{run:#?}");
            let lost = front["lost"].as_u64().unwrap_or(0);
            assert!((1..10).contains(&lost), "{front}");
            assert_eq!(front["signals"]["login_redirect"], lost, "{front}");
        } else {
            // Pinned to its issuer, the session survives the same farm.
            assert_eq!(run.code, 0, "{run:#?}");
            assert_eq!(front["lost"], 0, "{front}");
        }
        rt.block_on(proxy.shutdown());
    }
}

/// A backend that answers badly: garbage for a status line on one port; on the other, a
/// sign-in with no cookie (`/none`), a redirect to itself (`/loop`), and one with broken
/// `Set-Cookie`s, a large body and a session (`/login`, then `/me`).
async fn hostile_backends() -> (SocketAddr, SocketAddr, Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let garbage = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let garbage_addr = garbage.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = garbage.accept().await {
            let _ = tokio::io::AsyncWriteExt::write_all(&mut s, b"SSH-2.0-not-http\r\n\r\n").await;
        }
    });
    let loops = Arc::new(AtomicU64::new(0));
    let counted = loops.clone();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counted = counted.clone();
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let counted = counted.clone();
                    async move {
                        let b = http::Response::builder();
                        let resp = match req.uri().path() {
                            "/loop" => {
                                counted.fetch_add(1, Ordering::Relaxed);
                                b.status(302).header("location", "/loop")
                            }
                            "/login" => b
                                .status(200)
                                .header("set-cookie", "PHPSESSID")
                                .header("set-cookie", ";;;=")
                                .header(
                                    "set-cookie",
                                    http::HeaderValue::from_bytes(b"x=\xff\xfe").expect("value"),
                                )
                                .header("set-cookie", "PHPSESSID=hostile-session-value; Path=/"),
                            "/me" => b.status(200).header(
                                "set-cookie",
                                http::HeaderValue::from_bytes(b"PHPSESSID\xff").expect("value"),
                            ),
                            _ => b.status(200),
                        };
                        let body = if req.uri().path() == "/login" {
                            vec![b'<'; 1024 * 1024]
                        } else {
                            Vec::new()
                        };
                        Ok::<_, std::convert::Infallible>(
                            resp.body(http_body_util::Full::new(bytes::Bytes::from(body)))
                                .expect("response"),
                        )
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
            );
        }
    });
    (garbage_addr, addr, loops)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_answers_end_the_probe_with_why_and_never_crash_it() {
    use std::sync::atomic::Ordering;
    let scratch = Scratch::new("probe-hostile");
    let (garbage, odd, loops) = hostile_backends().await;
    let step = |path: &str, extra: &str| {
        format!(
            "[probe]\ncheck = \"/me\"\ntimeout = \"{PROBE_TIMEOUT}\"\n\
             [[probe.sign_in]]\nmethod = \"POST\"\npath = \"{path}\"\n{extra}\n"
        )
    };
    let error_of = |run: &Run| run.json()["error"].as_str().unwrap_or_default().to_owned();

    let file = write(
        &scratch,
        &config(&[("garbage".into(), garbage)], "php", &step("/login", "")),
    );
    let run = probe_async(&file, &["--json"], &[]).await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(error_of(&run).contains("no answer from"), "{run:#?}");

    let file = write(
        &scratch,
        &config(&[("odd".into(), odd)], "php", &step("/none", "")),
    );
    let run = probe_async(&file, &["--json"], &[]).await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        error_of(&run).contains("issued no session cookie"),
        "{run:#?}"
    );

    // A redirect loop is followed as far as the step says, then left.
    let file = write(
        &scratch,
        &config(
            &[("odd".into(), odd)],
            "php",
            &step("/loop", "follow_redirects = 4"),
        ),
    );
    let run = probe_async(&file, &["--json"], &[]).await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        error_of(&run).contains("issued no session cookie"),
        "{run:#?}"
    );
    assert_eq!(
        loops.load(Ordering::Relaxed),
        5,
        "the step and its four redirects"
    );

    // Broken Set-Cookies and a large body around a good session: minted and kept, and its
    // value shown nowhere.
    let file = write(
        &scratch,
        &config(&[("odd".into(), odd)], "php", &step("/login", "")),
    );
    let run = probe_async(&file, &["--json"], &[]).await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        !run.stdout.contains("hostile-session-value"),
        "{}",
        run.stdout
    );
    assert_eq!(pair(&run.json(), "odd", "odd")["kept"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backends_of_an_srv_entry_are_resolved_and_probed_by_address() {
    let scratch = Scratch::new("probe-srv");
    let farm = CsrfFarm::start(2, StoreMode::PerNode, "probe", PASSWORD)
        .await
        .expect("farm");
    let dns = sessionwatch_test_support::DnsServer::start()
        .await
        .expect("dns");
    let nodes = farm.backends();
    let mut targets = Vec::new();
    for (i, (_, addr)) in nodes.iter().enumerate() {
        let name = format!("node-{i}.app.test");
        dns.set_ips(&name, &[addr.ip()]);
        targets.push((name, addr.port()));
    }
    let targets: Vec<(&str, u16)> = targets.iter().map(|(n, p)| (n.as_str(), *p)).collect();
    dns.set_srv("_http._tcp.app.test", &targets);
    let toml = format!(
        "{}[[backends]]\nsrv = \"_http._tcp.app.test\"\nresolver = \"{}\"\n",
        config(&[], "django", &django_probe(FROM_FIELD)),
        dns.addr()
    );
    let file = write(&scratch, &toml);
    let run = probe_async(&file, &["--json"], &CREDENTIALS).await;
    assert_eq!(run.code, 1, "{run:#?}");
    let report = run.json();
    let mut names: Vec<String> = nodes.iter().map(|(_, a)| a.to_string()).collect();
    names.sort();
    assert_eq!(report["backends"], serde_json::json!(names), "{report}");
    assert_store_not_shared(&report, &names[0], &names[1]);
    assert!(dns.queries() > 0);
}
