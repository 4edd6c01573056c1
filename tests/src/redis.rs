//! Real `redis-server` processes for the fleet tests: one server, a three-node cluster, or a
//! server that speaks only TLS, each on free loopback ports, without persistence (a restart
//! loses every key, as a Redis without `save` or AOF does), stopped when dropped.
//!
//! Needs Debian's `redis-server` (and its `redis-cli`); without them every test fails and says
//! so.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const READY_WITHIN: Duration = Duration::from_secs(10);

fn free_port() -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .stdin(Stdio::null())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -s {sig} {pid} failed");
}

/// Runs `redis-cli` with `args` against `port` and returns what it printed.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run redis-cli ({e}): install Debian's redis-server (redis-tools)")
        });
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One `redis-server`.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
    /// Whether it speaks TLS only (then `redis-cli` cannot ping it without certificates).
    tls: bool,
}

impl RedisServer {
    /// A server on a free port, keeping its files under `dir`.
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, free_port(), Vec::new(), false)
    }

    /// A server started with `args` too (such as `--requirepass`).
    pub fn start_with_args(dir: &Path, args: &[&str]) -> Self {
        let extra = args.iter().map(|a| (*a).to_owned()).collect();
        Self::start_with(dir, free_port(), extra, false)
    }

    /// A server that speaks only TLS, with this certificate and key (PEM files).
    pub fn start_tls(dir: &Path, cert: &Path, key: &Path) -> Self {
        let port = free_port();
        let extra = vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            cert.display().to_string(),
            "--tls-key-file".into(),
            key.display().to_string(),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        Self::start_with(dir, port, extra, true)
    }

    fn start_with(dir: &Path, port: u16, extra: Vec<String>, tls: bool) -> Self {
        std::fs::create_dir_all(dir).expect("create redis dir");
        let mut server = Self {
            port,
            dir: dir.to_owned(),
            extra,
            child: None,
            tls,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join(format!("redis-{}.log", self.port)))
            .expect("create redis log");
        let mut cmd = Command::new("redis-server");
        if !self.tls {
            cmd.args(["--port", &self.port.to_string()]);
        }
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start redis-server ({e}): the fleet tests need Debian's redis-server \
                 (apt-get install redis-server)"
            )
        });
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("redis-server exited with {status}:\n{}", self.log());
            }
            let up = if self.tls {
                TcpStream::connect(self.addr()).is_ok()
            } else {
                // A server that wants a password answers NOAUTH: it is up all the same.
                let answer = redis_cli(self.port, &["PING"]);
                answer.trim() == "PONG" || answer.contains("NOAUTH")
            };
            if up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {} not ready within {READY_WITHIN:?}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its server log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("redis-{}.log", self.port)))
            .unwrap_or_default()
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT` (or `rediss://localhost:PORT` for TLS, the name its test
    /// certificate carries).
    pub fn url(&self) -> String {
        if self.tls {
            format!("rediss://localhost:{}", self.port)
        } else {
            format!("redis://127.0.0.1:{}", self.port)
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: gone at once, with every key (no persistence).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Started again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGSTOP: connections stay open, nothing is answered.
    pub fn pause(&self) {
        signal(self.pid(), "STOP");
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&self) {
        signal(self.pid(), "CONT");
    }

    /// Keys held now.
    pub fn dbsize(&self) -> u64 {
        redis_cli(self.port, &["DBSIZE"])
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("DBSIZE did not answer a number"))
    }

    /// Keys held now, asked with `password`.
    pub fn dbsize_with_password(&self, password: &str) -> u64 {
        redis_cli(self.port, &["--no-auth-warning", "-a", password, "DBSIZE"])
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("DBSIZE did not answer a number"))
    }

    /// A field of `INFO memory` (e.g. `used_memory`).
    pub fn memory(&self, field: &str) -> u64 {
        let info = redis_cli(self.port, &["INFO", "memory"]);
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("INFO memory has no {field}:\n{info}"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused server ignores SIGTERM until continued; SIGKILL ends it either way.
            let _ = Command::new("kill")
                .args(["-s", "CONT", &child.id().to_string()])
                .stdin(Stdio::null())
                .status();
        }
        self.kill();
    }
}

/// Three cluster-enabled servers with the 16384 slots spread over them, no replicas.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the nodes under `dir` and joins them with `redis-cli --cluster create`.
    pub fn start(dir: &Path) -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|i| {
                let port = free_port();
                let extra = vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    format!("nodes-{port}.conf"),
                    "--cluster-node-timeout".into(),
                    "2000".into(),
                ];
                RedisServer::start_with(&dir.join(format!("node-{i}")), port, extra, false)
            })
            .collect();
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(|n| n.addr().to_string()));
        args.extend([
            "--cluster-replicas".into(),
            "0".into(),
            "--cluster-yes".into(),
        ]);
        let out = Command::new("redis-cli")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes };
        let deadline = Instant::now() + READY_WITHIN;
        while !cluster
            .nodes
            .iter()
            .all(|n| redis_cli(n.port(), &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        {
            assert!(
                Instant::now() < deadline,
                "the cluster never reached state ok"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// The nodes' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Keys held by each node.
    pub fn dbsizes(&self) -> Vec<u64> {
        self.nodes.iter().map(RedisServer::dbsize).collect()
    }
}
