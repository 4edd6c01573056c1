//! The `sessionwatch` binary as an operator runs it: `check-config` on the shipped examples and
//! on a broken file, `serve` refusing a bad configuration before it binds and failing clearly on
//! a taken port, and `demo` on a broken and a fixed farm, with pinning, and refusing a pin policy
//! it does not know. Every process runs under a deadline and is killed if it overruns.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sessionwatch");
/// Generous for a debug build on a busy two-core machine; the commands take well under a second.
const DEADLINE: Duration = Duration::from_secs(60);
const KEY: &str = "cli-test-key-0123456789abcdef";

/// A directory for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sessionwatch-cli-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills the child when dropped, so a failing assertion never leaves a server running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

fn drain(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// The exit status of `child`, waiting until the deadline; past it, kill it and fail the test.
fn exit_status(child: &mut Child, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`sessionwatch {what}` still running after {DEADLINE:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait for `child` (under the deadline) and collect what it printed.
fn wait(mut child: Child, what: &str) -> Output {
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let status = exit_status(&mut child, what);
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn command(args: &[&str], cwd: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(cwd)
        .env("SESSIONWATCH_KEY", KEY)
        .env("TMPDIR", cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn run(cmd: &mut Command) -> Output {
    let what = format!("{:?}", cmd.get_args().collect::<Vec<_>>());
    wait(cmd.spawn().unwrap(), &what)
}

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/configs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_config_checks_out() {
    let scratch = Scratch::new("examples");
    let files = examples();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for preset in ["aspnetcore", "php", "django", "express", "java", "custom"] {
        assert!(
            names.iter().any(|n| n == preset),
            "no {preset}.toml in {names:?}"
        );
    }
    for file in &files {
        let path = file.to_str().unwrap();
        let out = run(&mut command(&["check-config", path], &scratch.0));
        assert!(
            out.status.success(),
            "{path}: {:?}\n{}",
            out.status,
            out.stderr
        );
        assert_eq!(out.stdout, format!("{path}: ok\n"));
        assert_eq!(out.stderr, "");
    }
}

#[test]
fn the_fingerprint_key_comes_from_the_environment() {
    let scratch = Scratch::new("key-env");
    let file = examples()
        .into_iter()
        .find(|p| p.ends_with("php.toml"))
        .unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    let (line, col) = text
        .lines()
        .enumerate()
        .find_map(|(n, l)| {
            l.starts_with("fingerprint_key_env")
                .then(|| (n + 1, l.find('"').unwrap() + 1))
        })
        .unwrap();
    let path = file.to_str().unwrap();
    let out = run(command(&["check-config", path], &scratch.0).env_remove("SESSIONWATCH_KEY"));
    assert_eq!(out.status.code(), Some(64), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        format!(
            "{path}:{line}:{col}: session.fingerprint_key_env: environment variable SESSIONWATCH_KEY is not set\n"
        )
    );
    let out = run(command(&["check-config", path], &scratch.0).env("SESSIONWATCH_KEY", "short"));
    assert_eq!(out.status.code(), Some(64));
    assert!(out.stderr.contains("must hold at least 16 characters"));
}

/// Ten lines of configuration whose places the tests below know by heart.
const BAD: &str = r#"[listen]
address = "LISTEN"

[[backends]]
name = "a"
url = "http://127.0.0.1:8081"

[[backends]]
name = "b"
url = "ftp://x"

[session]
preset = "php"
colour = "blue"

[health]
interval = "5 parsecs"

[pin]
policy = "sometimes"
"#;

/// Each stderr line as (`FILE:LINE:COL`, field path, message), checking the shape on the way.
fn issues(stderr: &str) -> Vec<(String, String, String)> {
    stderr
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, ": ");
            let place = parts.next().unwrap_or_default().to_owned();
            let field = parts.next().unwrap_or_default().to_owned();
            let message = parts.next().unwrap_or_default().to_owned();
            let mut p = place.rsplitn(3, ':');
            let col = p.next().unwrap_or_default();
            let line = p.next().unwrap_or_default();
            assert!(
                col.parse::<u32>().is_ok() && line.parse::<u32>().is_ok(),
                "not FILE:LINE:COL: {l:?}"
            );
            assert!(
                !field.is_empty()
                    && field
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.[]".contains(c)),
                "no field path: {l:?}"
            );
            assert!(!message.is_empty(), "no message: {l:?}");
            (place, field, message)
        })
        .collect()
}

#[test]
fn check_config_reports_every_problem_with_its_place() {
    let scratch = Scratch::new("bad");
    let file = scratch.write("bad.toml", &BAD.replace("LISTEN", "127.0.0.1:0"));
    let f = file.to_str().unwrap();
    let out = run(&mut command(&["check-config", f], &scratch.0));
    assert_eq!(out.status.code(), Some(64), "{}", out.stderr);
    assert_eq!(out.stdout, "");
    let found = issues(&out.stderr);
    let places: Vec<(&str, &str)> = found
        .iter()
        .map(|(p, f, _)| (p.as_str(), f.as_str()))
        .collect();
    assert_eq!(
        places,
        [
            (format!("{f}:10:7").as_str(), "backends[1].url"),
            (format!("{f}:14:1").as_str(), "session.colour"),
            (format!("{f}:17:12").as_str(), "health.interval"),
            (format!("{f}:20:10").as_str(), "pin.policy"),
        ],
        "{}",
        out.stderr
    );
    assert_eq!(
        found[0].2,
        "\"ftp://x\" is not an http://host:port or https://host:port URL"
    );
    assert!(
        found[1]
            .2
            .starts_with("unknown field `colour`, expected one of `preset`")
    );
    assert!(found[2].2.contains("unknown time unit \"parsecs\""));
    assert_eq!(
        found[3].2,
        "unknown value \"sometimes\"; expected one of: off, learn, on_reset, on_incident"
    );

    let missing = scratch.0.join("missing.toml");
    let out = run(&mut command(
        &["check-config", missing.to_str().unwrap()],
        &scratch.0,
    ));
    assert_eq!(out.status.code(), Some(64));
    assert!(
        out.stderr
            .starts_with(&format!("{}: cannot read: ", missing.display())),
        "{}",
        out.stderr
    );
}

#[test]
fn check_config_warns_of_an_admin_listener_open_to_the_network_without_a_token() {
    let scratch = Scratch::new("admin-warning");
    let base = "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:8081\"\n[admin]\n";
    let open = scratch.write("open.toml", &format!("{base}address = \"0.0.0.0:9090\"\n"));
    let out = run(&mut command(
        &["check-config", open.to_str().unwrap()],
        &scratch.0,
    ));
    assert_eq!(
        out.status.code(),
        Some(0),
        "a warning is not an error: {}",
        out.stderr
    );
    assert!(out.stdout.ends_with(": ok\n"), "{}", out.stdout);
    assert_eq!(
        out.stderr,
        format!(
            "{}: warning: admin.address: 0.0.0.0:9090 is reachable from other hosts and no token \
             is set: anyone who reaches it can read /status and /metrics; set [admin] token_env \
             (or token), or listen on 127.0.0.1\n",
            open.display()
        )
    );
    for quiet in [
        format!("{base}address = \"0.0.0.0:9090\"\ntoken_env = \"SESSIONWATCH_KEY\"\n"),
        format!("{base}address = \"127.0.0.1:9090\"\n"),
    ] {
        let f = scratch.write("quiet.toml", &quiet);
        let out = run(&mut command(
            &["check-config", f.to_str().unwrap()],
            &scratch.0,
        ));
        assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
        assert_eq!(out.stderr, "", "{quiet}");
    }
}

fn good_config(listen: SocketAddr, scratch: &Scratch) -> String {
    format!(
        "[listen]\naddress = \"{listen}\"\n[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n\
         [session]\npreset = \"php\"\nfingerprint_key_env = \"SESSIONWATCH_KEY\"\n\
         [health]\nactive = false\n[alerts]\nlog_file = {:?}\n",
        scratch.0.join("alerts.jsonl").display().to_string()
    )
}

#[test]
fn serve_refuses_a_bad_config_before_binding() {
    let scratch = Scratch::new("serve-bad");
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap();
    let file = scratch.write("bad.toml", &BAD.replace("LISTEN", &taken.to_string()));
    let out = run(&mut command(
        &["serve", "--config", file.to_str().unwrap()],
        &scratch.0,
    ));
    // Binding would have failed on the held port; exit 64 shows the configuration was refused
    // first.
    assert_eq!(out.status.code(), Some(64), "{}", out.stderr);
    assert!(!out.stderr.contains("cannot listen"), "{}", out.stderr);
    assert_eq!(issues(&out.stderr).len(), 4, "{}", out.stderr);
    assert!(!scratch.0.join("sessionwatch-alerts.jsonl").exists());
}

#[test]
fn serve_refuses_more_connections_than_the_open_files_limit_allows() {
    let scratch = Scratch::new("serve-fds");
    let file = scratch.write(
        "fds.toml",
        &good_config("127.0.0.1:0".parse().unwrap(), &scratch).replace(
            "[listen]\n",
            "[listen]\nworkers = 1\nmax_connections = 5000\n",
        ),
    );
    // The hard limit lowered too: the proxy raises the soft one to the hard one first.
    let mut cmd = Command::new("bash");
    cmd.args([
        "-c",
        &format!(
            "ulimit -Sn 1024 && ulimit -Hn 1024 && exec {BIN} serve --config {}",
            file.display()
        ),
    ])
    .current_dir(&scratch.0)
    .env("SESSIONWATCH_KEY", KEY)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(64), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("listen.max_connections = 5000 needs about"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("the limit is 1024"), "{}", out.stderr);
}

#[test]
fn serve_fails_clearly_on_a_taken_port() {
    let scratch = Scratch::new("serve-taken");
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap();
    let file = scratch.write("good.toml", &good_config(taken, &scratch));
    let out = run(&mut command(
        &["serve", "--config", file.to_str().unwrap()],
        &scratch.0,
    ));
    assert!(!out.status.success());
    assert_ne!(out.status.code(), Some(64), "not a configuration problem");
    assert!(
        out.stderr.contains(&format!("cannot listen on {taken}: ")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.to_lowercase().contains("in use"),
        "{}",
        out.stderr
    );
}

#[test]
fn serve_starts_answers_and_stops_on_sigterm() {
    let scratch = Scratch::new("serve-ok");
    let file = scratch.write(
        "good.toml",
        &good_config(SocketAddr::from(([127, 0, 0, 1], 0)), &scratch),
    );
    let mut guard = KillOnDrop(
        command(&["serve", "--config", file.to_str().unwrap()], &scratch.0)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .spawn()
            .unwrap(),
    );
    let child = &mut guard.0;
    let _stdout = drain(child.stdout.take().unwrap());
    // The listening address is in a log line: read stderr on a thread, line by line, and wait
    // (under the deadline) for that line.
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let addr: SocketAddr = loop {
        match rx.recv_timeout(DEADLINE) {
            Ok(line) => {
                let addr = line
                    .contains("sessionwatch listening")
                    .then(|| line.split_once("addr=").map(|(_, rest)| rest.to_owned()))
                    .flatten();
                seen.push(line);
                if let Some(rest) = addr {
                    break rest.split_whitespace().next().unwrap().parse().unwrap();
                }
            }
            Err(_) => {
                panic!("serve did not start:\n{}", seen.join("\n"));
            }
        }
    };

    // The only backend refuses connections: the proxy answers 502 itself.
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = exit_status(child, "serve");
    reader.join().unwrap();
    seen.extend(rx.try_iter());
    let stderr = seen.join("\n");
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(stderr.contains("shutting down"), "{stderr}");
    assert!(scratch.0.join("alerts.jsonl").exists());
}

fn summary_count(stdout: &str) -> u64 {
    let at = stdout
        .find("resets detected: ")
        .unwrap_or_else(|| panic!("no summary:\n{stdout}"));
    stdout[at + "resets detected: ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn demo_on_a_per_node_store_shows_resets_and_who_lost_them() {
    let scratch = Scratch::new("demo");
    let out = run(&mut command(
        &["demo", "--users", "4", "--requests", "6"],
        &scratch.0,
    ));
    assert!(out.status.success(), "{:?}\n{}", out.status, out.stderr);
    assert!(out.stdout.contains("\nsummary\n"), "{}", out.stdout);
    assert!(summary_count(&out.stdout) > 0, "{}", out.stdout);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("issued by node-")),
        "{}",
        out.stdout
    );
    // The alert log went to the temp dir, one session_reset line per reset shown.
    let log = std::fs::read_to_string(scratch.0.join("sessionwatch-demo-alerts.jsonl")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("\"type\":\"session_reset\""))
    );
}

#[test]
fn demo_on_a_shared_store_shows_no_resets() {
    let scratch = Scratch::new("demo-shared");
    let out = run(&mut command(
        &["demo", "--shared-store", "--users", "4", "--requests", "6"],
        &scratch.0,
    ));
    assert!(out.status.success(), "{:?}\n{}", out.status, out.stderr);
    assert!(out.stdout.contains("resets detected: 0"), "{}", out.stdout);
    assert!(!out.stdout.contains("issued by node-"), "{}", out.stdout);
}

#[test]
fn demo_with_learned_pinning_logs_nobody_out_on_a_per_node_store() {
    let scratch = Scratch::new("demo-learn");
    let out = run(&mut command(
        &["demo", "--pin", "learn", "--users", "4", "--requests", "6"],
        &scratch.0,
    ));
    assert!(out.status.success(), "{:?}\n{}", out.status, out.stderr);
    assert!(out.stdout.contains("logged out: 0 "), "{}", out.stdout);
    assert!(out.stdout.contains("resets detected: 0"), "{}", out.stdout);
}

#[test]
fn demo_refuses_an_unknown_pin_policy_naming_the_accepted_ones() {
    let scratch = Scratch::new("demo-bad-pin");
    let out = run(&mut command(&["demo", "--pin", "sometimes"], &scratch.0));
    assert_eq!(out.status.code(), Some(64), "{}", out.stderr);
    assert_eq!(
        out.stderr.trim(),
        "unknown pin policy \"sometimes\"; expected one of: off, learn, on_reset, on_incident"
    );
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}

/// The `sessionwatch.toml` the single overlay's ConfigMap is generated from
/// (`deploy/kubernetes/overlays/single/kustomization.yaml`), as the pod reads it.
fn manifest_config() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/kubernetes/overlays/single/sessionwatch.toml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_manifests_config_starts_without_writing_a_file() {
    // The pod's root filesystem is read-only: an alert log file in the working directory made it
    // crash-loop. Run the ConfigMap's own configuration (its cluster names swapped for local
    // ones, its listeners moved to free loopback ports) in an empty directory, and check that
    // it serves and leaves the directory empty.
    let scratch = Scratch::new("manifest");
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = backend.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in backend.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    let free = || {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (listen, admin) = (free(), free());
    let config = manifest_config()
        .replace("0.0.0.0:8080", &listen.to_string())
        .replace("0.0.0.0:9090", &admin.to_string())
        .replace(
            "alertmanager.monitoring.svc.cluster.local:9093",
            "127.0.0.1:1",
        )
        .replace(
            "dns = \"shop-headless.shop.svc.cluster.local:8080\"",
            &format!("name = \"shop-0\"\nurl = \"http://{backend_addr}\""),
        );
    assert!(!config.contains("svc.cluster.local:8080\""), "{config}");
    let dir = scratch.0.join("config");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sessionwatch.toml");
    std::fs::write(&file, &config).unwrap();
    let cwd = scratch.0.join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let mut guard = KillOnDrop(
        command(&["serve", "--config", file.to_str().unwrap()], &cwd)
            .env("SESSIONWATCH_FINGERPRINT_KEY", KEY)
            .env("SESSIONWATCH_ADMIN_TOKEN", "cli-test-admin-token-0123")
            .spawn()
            .unwrap(),
    );
    let child = &mut guard.0;
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let start = Instant::now();
    let answer = loop {
        let mut answer = String::new();
        if let Ok(mut conn) = TcpStream::connect(listen) {
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let _ = conn.write_all(b"GET / HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n");
            let _ = conn.read_to_string(&mut answer);
        }
        if answer.starts_with("HTTP/1.1 200") || start.elapsed() > DEADLINE {
            break answer;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("serve exited with {status}: {}", err.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = exit_status(child, "serve");
    let (_, stderr) = (out.join().unwrap(), err.join().unwrap());
    assert!(status.success(), "{status:?}\n{stderr}");
    let left: Vec<_> = std::fs::read_dir(&cwd)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        left.is_empty(),
        "the pod would write {left:?} on its read-only filesystem"
    );
}
