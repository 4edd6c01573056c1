//! The deploy gate, `sessionwatch probe` and `POST /probe`, against real farms: the PHP farm
//! with one session directory per node (the broken farm: exit 1, 422, with the lost pairs),
//! with one shared directory (exit 0, 200), with a node stopped (exit 2, 503); a farm that never
//! answers (the time limit) and a second probe asked while one runs (409); and the Django-style
//! CSRF sign-in on an in-process farm whose login form carries a token.
//!
//! The command is the built binary, run as a deploy job would run it; the endpoint is the admin
//! listener of a proxy started from the same kind of file. Real time, generous bounds, outcomes
//! asserted, never durations. The PHP farm's cases are in `probe/php.rs`, the CSRF sign-in's in
//! `probe/csrf.rs`, hung and hostile backends' in `probe/hostile.rs`; what they share is here.

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

#[path = "probe/csrf.rs"]
mod csrf;
#[path = "probe/hostile.rs"]
mod hostile;
#[path = "probe/php.rs"]
mod php;

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
