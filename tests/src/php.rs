//! A real PHP farm: two `php -S` nodes serving `tests/php/app/router.php` with native PHP
//! sessions, each its own `session.save_path` (the broken farm) or one shared by both, and the
//! proxy in front of it with the `php` preset.
//!
//! Needs the `php` command line (Debian's `php-cli`); without it [`PhpFarm::start`] panics and
//! says so.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sessionwatch_proxy::RunningProxy;

use crate::{Scratch, config_toml, start_proxy};

/// The session cookie of PHP's `php` preset.
pub const COOKIE: &str = "PHPSESSID";
/// The names of the farm's nodes, as they report themselves in `X-Served-By`.
pub const NODE_NAMES: [&str; 2] = ["php-a", "php-b"];
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
pub enum Store {
    /// Each node its own directory: the broken farm.
    PerNode,
    /// One directory for all: the healthy farm.
    Shared,
}

/// Two PHP nodes.
#[derive(Debug)]
pub struct PhpFarm {
    nodes: Vec<PhpNode>,
}

impl PhpFarm {
    /// Starts both nodes, each with `store`'s session directory and `session.use_strict_mode`
    /// set to `strict`.
    pub fn start(scratch: &Scratch, store: Store, strict: bool) -> Self {
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

    /// The nodes as (name, address), for [`crate::config_toml`].
    pub fn backends(&self) -> Vec<(String, SocketAddr)> {
        self.nodes
            .iter()
            .map(|n| (n.name.to_owned(), n.addr))
            .collect()
    }

    /// Stops node `name` and its workers: its port refuses connections from now on.
    pub fn stop_node(&mut self, name: &str) {
        // Dropping a node stops it.
        self.nodes.retain(|n| n.name != name);
    }

    /// Every node's server log, for failure messages.
    pub fn logs(&self) -> String {
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
pub async fn proxy_for(farm: &PhpFarm, alert_log: &Path, pin: &str) -> RunningProxy {
    proxy_with(farm, alert_log, pin, "").await
}

/// [`proxy_for`] with `session_extra` (more `[session]` keys, one a line) appended to its
/// `[session]` table.
pub async fn proxy_with(
    farm: &PhpFarm,
    alert_log: &Path,
    pin: &str,
    session_extra: &str,
) -> RunningProxy {
    proxy_with_sections(farm, alert_log, pin, session_extra, "").await
}

/// [`proxy_with`] with `sections` added after the `[incident]` table's own keys: more `[incident]`
/// keys first, then whole tables (such as `[redis]`).
pub async fn proxy_with_sections(
    farm: &PhpFarm,
    alert_log: &Path,
    pin: &str,
    session_extra: &str,
    sections: &str,
) -> RunningProxy {
    // Every reset gets its own line (no rate limit), so lines can be counted against what the
    // users saw. Health checks are lenient: `php -S` serves a few requests at a time.
    let extra = format!(
        "[session]\npreset = \"php\"\nfingerprint_key = \"php-farm-fingerprint-key-0123456789\"\n\
         {session_extra}\n\
         [pin]\npolicy = \"{pin}\"\n\
         [health]\ninterval = \"100ms\"\ntimeout = \"2s\"\nrise = 1\nfall = 3\n\
         [incident]\nmax_reset_lines_per_sec = 1000000\n{sections}\n"
    );
    start_proxy(&config_toml(&farm.backends(), COOKIE, alert_log, &extra)).await
}
