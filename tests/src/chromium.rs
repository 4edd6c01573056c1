//! Headless Chromium for page tests, driven through Debian's `chromedriver` over WebDriver.
//!
//! WebDriver is plain HTTP and JSON, which the tests already speak (hyper's client and
//! `serde_json`): no browser-automation crate, no WebSocket client. chromedriver also gives what
//! the DevTools protocol would: the browser's console log (console errors and uncaught
//! exceptions, with `goog:loggingPrefs`), script evaluation for reading the DOM, and screenshots.
//!
//! The browser runs with `--headless=new --disable-gpu`, a profile directory of its own that is
//! removed at the end, and `--no-sandbox` only when the test runs as root (as in CI containers,
//! where Chromium's sandbox cannot start). chromedriver and the browser it starts share a
//! process group the test created; dropping [`Chromium`] ends that group, so a failing test
//! leaves no browser behind.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use sessionwatch_test_support::{SharedClient, shared_client};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::Scratch;

/// Where Debian's `chromium` package puts the browser (`CHROMIUM` overrides it).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Where Debian's `chromium-driver` package puts chromedriver (`CHROMEDRIVER` overrides it).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One browser session; see the module docs.
pub struct Chromium {
    driver: Child,
    /// chromedriver's process group, which the browser joins.
    group: Option<u32>,
    base: String,
    session: String,
    client: SharedClient,
    _profile: Scratch,
}

fn tool(var: &str, default: &str, package: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.exists(),
        "{} not found: the status page test needs Debian's `{package}` package \
         (apt-get install chromium chromium-driver), or {var} naming the binary",
        path.display()
    );
    path
}

/// Whether this process runs as root (its effective uid, from `/proc/self/status`).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

impl Chromium {
    /// Start chromedriver and a headless browser, `width` x `height` pixels. Panics naming the
    /// missing package when either binary is not installed.
    pub async fn start(width: u32, height: u32) -> Self {
        let browser = tool("CHROMIUM", CHROMIUM, "chromium");
        let driver_path = tool("CHROMEDRIVER", CHROMEDRIVER, "chromium-driver");
        let profile = Scratch::new("chromium-profile");
        let mut driver = Command::new(&driver_path)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver_path.display()));
        let group = driver.id();
        let stdout = driver
            .stdout
            .take()
            .expect("chromedriver's stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let port = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    return rest.trim_end_matches('.').trim().parse::<u16>().ok();
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .expect("chromedriver says which port it listens on");
        // Its later output is drained so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let mut args = vec![
            "--headless=new".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        if running_as_root() {
            args.push("--no-sandbox".to_owned());
        }
        let mut this = Self {
            driver,
            group,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            client: shared_client(),
            _profile: profile,
        };
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": browser, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let created = this.call(Method::POST, "/session", Some(caps)).await;
        this.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver made no session: {created}"))
            .to_owned();
        this
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let uri = format!("{}{path}", self.base);
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let req = Request::builder()
            .method(method)
            .uri(&uri)
            .header("content-type", "application/json")
            .body(Full::new(body))
            .expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(60), self.client.request(req))
            .await
            .unwrap_or_else(|_| panic!("chromedriver did not answer {uri} in 60 s"))
            .unwrap_or_else(|e| panic!("chromedriver: {uri}: {e}"));
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert!(status.is_success(), "chromedriver: {uri}: {status}: {v}");
        v.get("value").cloned().unwrap_or(Value::Null)
    }

    fn at(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    /// Load `url` and wait for its load event.
    pub async fn open(&self, url: &str) {
        self.call(Method::POST, &self.at("/url"), Some(json!({"url": url})))
            .await;
    }

    /// Run `script` (a function body; `return` gives its value) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        let body = json!({"script": script, "args": []});
        self.call(Method::POST, &self.at("/execute/sync"), Some(body))
            .await
    }

    /// The browser's console log since the last call: console messages and uncaught
    /// exceptions, each with its `level` (`SEVERE` for errors) and `message`.
    pub async fn console(&self) -> Vec<Value> {
        let body = json!({"type": "browser"});
        match self
            .call(Method::POST, &self.at("/se/log"), Some(body))
            .await
        {
            Value::Array(entries) => entries,
            other => panic!("chromedriver gave no log: {other}"),
        }
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let shot = self.call(Method::GET, &self.at("/screenshot"), None).await;
        let text = shot.as_str().expect("the screenshot is base64 text");
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .expect("valid base64")
    }

    /// Close the browser and chromedriver.
    pub async fn quit(mut self) {
        let _ = self.call(Method::DELETE, &self.at(""), None).await;
        let _ = self.driver.kill().await;
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // The browser chromedriver started is in its group: end them both, by the group's id.
        if let Some(group) = self.group {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{group}")])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.driver.start_kill();
    }
}

/// Where test artefacts go: `target/test-artefacts/` (or under `CARGO_TARGET_DIR`).
pub fn artefact_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let dir = target.join("test-artefacts");
    std::fs::create_dir_all(&dir).expect("create the artefact directory");
    dir.join(name)
}
