//! Helpers shared by the black-box tests: start the real proxy in front of a farm with a
//! configuration written as TOML (the same path `sessionwatch serve` takes), and read its alert
//! log back.

pub mod binary;
pub mod browser;
pub mod chromium;
pub mod h2wire;
pub mod log;
pub mod raw;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use sessionwatch_proxy::{Config, RunningProxy, StartOptions};

pub mod php;
pub mod raw_http;
pub mod redis;

/// A scratch directory for one test, removed when dropped.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// A fresh directory under the system temp dir.
    pub fn new(name: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sessionwatch-test-{}-{}-{}",
            name,
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Self(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The alert log path inside it.
    pub fn alert_log(&self) -> PathBuf {
        self.0.join("alerts.jsonl")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// TOML for a proxy on 127.0.0.1:0 with these backends (name, address), cookie `cookie`, an
/// alert log at `alert_log`, an admin listener (unless `extra` has its own `[admin]`), and
/// `extra` appended (more sections). Fast health checks so tests do not wait.
pub fn config_toml(
    backends: &[(String, SocketAddr)],
    cookie: &str,
    alert_log: &Path,
    extra: &str,
) -> String {
    let admin = if extra.contains("[admin]") {
        ""
    } else {
        "[admin]\naddress = \"127.0.0.1:0\"\n"
    };
    let mut toml = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n{admin}[alerts]\nlog_file = {:?}\n",
        alert_log.display().to_string()
    );
    if !extra.contains("[session]") {
        toml.push_str(&format!(
            "[session]\ncookies = [{{ name = \"{cookie}\" }}]\nfingerprint_key = \"integration-test-key-0123456789\"\n"
        ));
    }
    if !extra.contains("[health]") {
        toml.push_str("[health]\ninterval = \"50ms\"\ntimeout = \"200ms\"\nrise = 2\nfall = 2\n");
    }
    toml.push_str(extra);
    toml.push('\n');
    for (name, addr) in backends {
        toml.push_str(&format!(
            "[[backends]]\nname = \"{name}\"\nurl = \"http://{addr}\"\n"
        ));
    }
    toml
}

/// Parse `toml` as `serve` would and start the proxy.
pub async fn start_proxy(toml: &str) -> RunningProxy {
    let config = Config::parse(toml, Path::new("test.toml"))
        .unwrap_or_else(|e| panic!("bad test config:\n{e}\n---\n{toml}"));
    sessionwatch_proxy::start(
        config,
        StartOptions {
            extra_events: None,
            incident_tick: Some(Duration::from_millis(100)),
            ..StartOptions::default()
        },
    )
    .await
    .expect("proxy starts")
}

/// Every line of the alert log, parsed (panics on a line that is not a complete JSON object).
pub fn alert_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("alert line is not JSON ({e}): {l}"))
        })
        .collect()
}

/// The alert lines of one type.
pub fn lines_of(path: &Path, kind: &str) -> Vec<Value> {
    alert_lines(path)
        .into_iter()
        .filter(|l| l["type"] == kind)
        .collect()
}

/// Backends (name, address) of a farm.
pub fn farm_backends(farm: &sessionwatch_test_support::Farm) -> Vec<(String, SocketAddr)> {
    farm.names().into_iter().zip(farm.addrs()).collect()
}

/// GET `path` on `addr` with a plain client; returns status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let client = sessionwatch_test_support::shared_client();
    let uri: http::Uri = format!("http://{addr}{path}").parse().expect("uri");
    let req = http::Request::get(uri)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
        Ok(Ok(resp)) => {
            let status = resp.status().as_u16();
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                .unwrap_or_default();
            (status, body)
        }
        _ => (0, String::new()),
    }
}

/// Sum of every sample of metric `name` in a Prometheus text exposition whose labels contain
/// all of `labels` (each as `key="value"`).
pub fn metric_sum(exposition: &str, name: &str, labels: &[&str]) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, r)) => (m, r),
                None => (series, ""),
            };
            (metric == name && labels.iter().all(|want| rest.contains(want)))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// A farm, the proxy in front of it and a scratch directory for its alert log: the setup of
/// almost every test here.
pub struct Harness {
    /// Holds the alert log.
    pub scratch: Scratch,
    /// The farm.
    pub farm: sessionwatch_test_support::Farm,
    /// The proxy.
    pub proxy: RunningProxy,
}

impl Harness {
    /// Start `farm` and a proxy in front of it configured with `extra` (see [`config_toml`]).
    pub async fn start(farm: sessionwatch_test_support::FarmConfig, extra: &str) -> Self {
        Self::start_with(farm, extra, Some(Duration::from_millis(100))).await
    }

    /// As [`Harness::start`], with the incident tick of `serve` (`None`) or a given one.
    pub async fn start_with(
        farm: sessionwatch_test_support::FarmConfig,
        extra: &str,
        incident_tick: Option<Duration>,
    ) -> Self {
        let scratch = Scratch::new("harness");
        let farm = sessionwatch_test_support::Farm::start(farm)
            .await
            .expect("farm starts");
        let toml = config_toml(
            &farm_backends(&farm),
            farm.cookie_name(),
            &scratch.alert_log(),
            extra,
        );
        let config = Config::parse(&toml, Path::new("test.toml"))
            .unwrap_or_else(|e| panic!("bad test config:\n{e}\n---\n{toml}"));
        let proxy = sessionwatch_proxy::start(
            config,
            StartOptions {
                extra_events: None,
                incident_tick,
                ..StartOptions::default()
            },
        )
        .await
        .expect("proxy starts");
        Self {
            scratch,
            farm,
            proxy,
        }
    }

    /// The alert log.
    pub fn log(&self) -> PathBuf {
        self.scratch.alert_log()
    }

    /// The alert lines of one type, after writing out every queued line.
    pub fn lines(&self, kind: &str) -> Vec<Value> {
        self.proxy.flush_alerts();
        lines_of(&self.log(), kind)
    }

    /// Drive `users` simulated users making `requests` requests each through the proxy.
    pub async fn drive(
        &self,
        users: usize,
        requests: usize,
        concurrency: usize,
    ) -> sessionwatch_test_support::DriveReport {
        sessionwatch_test_support::drive_users(
            self.proxy.addr(),
            self.farm.cookie_name(),
            sessionwatch_test_support::DriveConfig::new(users, requests)
                .with_concurrency(concurrency),
        )
        .await
    }

    /// A user talking to the proxy.
    pub fn user(&self) -> sessionwatch_test_support::UserClient {
        sessionwatch_test_support::UserClient::new(self.proxy.addr(), self.farm.cookie_name())
    }

    /// The proxy's metrics exposition.
    pub fn metrics(&self) -> String {
        self.proxy.metrics_text()
    }

    /// Stop the proxy (writing out every alert line) and the farm; the scratch directory lives
    /// as long as the caller keeps it.
    pub async fn stop(self) -> Scratch {
        self.proxy.shutdown().await;
        self.farm.shutdown().await;
        self.scratch
    }
}
