//! `sessionwatch serve` as a container runtime drives it: SIGTERM drains (still serving for
//! `drain.delay`) and exits 0 with the alert log written out, to standard output alone when
//! configured so; SIGHUP reloads the configuration file, refusing by name what cannot change
//! while the proxy runs and keeping the running configuration when the file is broken; log lines on stderr carry no colour codes
//! when stderr is not a terminal, and with `--log-format json` each is one JSON object. Every
//! process runs under a deadline and is killed if it overruns.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sessionwatch");
/// Generous for a debug build on a busy two-core machine.
const DEADLINE: Duration = Duration::from_secs(60);
const KEY: &str = "signals-test-key-0123456789abcdef";
/// For the tests that are not about the drain's delay.
const NO_DELAY: &str = "[drain]\ndelay = \"0s\"\n";

/// A directory for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sessionwatch-signals-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `sessionwatch serve`: its stderr lines as they come, its stdout collected on a
/// thread, killed when dropped so a failing assertion never leaves it running.
struct Server {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Option<JoinHandle<()>>,
    stdout: Option<JoinHandle<String>>,
}

impl Server {
    fn start(config: &str, scratch: &Scratch, args: &[&str]) -> Server {
        let file = scratch.0.join("sessionwatch.toml");
        std::fs::write(&file, config).unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--config", file.to_str().unwrap()])
            .args(args)
            .current_dir(&scratch.0)
            .env("SESSIONWATCH_KEY", KEY)
            .env("RUST_LOG", "info")
            // Whatever the caller's terminal says: the point is what a pipe gets.
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let (tx, lines) = channel();
        let err = BufReader::new(child.stderr.take().unwrap());
        let stderr = std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Server {
            child,
            lines,
            seen: Vec::new(),
            stderr: Some(stderr),
            stdout: Some(stdout),
        }
    }

    /// The first stderr line (from now) that `want` accepts; fails the test at the deadline.
    fn wait_for(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("no {what} line:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{name}");
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Wait for the exit (under the deadline): its status, every stderr line, and stdout.
    fn exit(mut self) -> (ExitStatus, Vec<String>, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "still running after {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let _ = self.stderr.take().unwrap().join();
        let mut seen = std::mem::take(&mut self.seen);
        seen.extend(self.lines.try_iter());
        let stdout = self.stdout.take().unwrap().join().unwrap();
        (status, seen, stdout)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The listening address in the text-format start line.
fn text_addr(line: &str) -> SocketAddr {
    let (_, rest) = line.split_once("addr=").unwrap();
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// A backend that hands out a new `PHPSESSID` with every answer: a session presented to it is
/// replaced, which the proxy reports as a reset.
fn forgetful_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut n = 0u64;
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            n += 1;
            let first = n;
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let mut issued = first * 1000;
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    issued += 1;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\
                         Set-Cookie: PHPSESSID=s{issued:025}; path=/\r\n\r\nok"
                    );
                    if conn.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn config(backend: SocketAddr, alerts: &str, extra: &str) -> String {
    format!(
        "[listen]\naddress = \"127.0.0.1:0\"\nworkers = 1\n[[backends]]\nname = \"a\"\nurl = \"http://{backend}\"\n\
         [session]\npreset = \"php\"\nfingerprint_key_env = \"SESSIONWATCH_KEY\"\n\
         [health]\nactive = false\n[alerts]\n{alerts}\n{extra}"
    )
}

/// One request on a new connection; the status and the `Set-Cookie` value, if any.
fn get(addr: SocketAddr, cookie: Option<&str>) -> (u16, Option<String>) {
    get_target(addr, "/page", cookie)
}

fn get_target(addr: SocketAddr, target: &str, cookie: Option<&str>) -> (u16, Option<String>) {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let cookie = cookie.map_or(String::new(), |c| format!("Cookie: PHPSESSID={c}\r\n"));
    let req = format!("GET {target} HTTP/1.1\r\nHost: test\r\n{cookie}Connection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let set = answer.lines().find_map(|l| {
        let v = l.strip_prefix("set-cookie: PHPSESSID=")?;
        Some(v.split(';').next()?.to_owned())
    });
    (status, set)
}

#[test]
fn sigterm_drains_then_exits_0_with_the_alert_log_written_to_stdout_alone() {
    let scratch = Scratch::new("sigterm");
    let backend = forgetful_backend();
    let mut server = Server::start(
        &config(
            backend,
            "log_file = \"\"\nstdout = true",
            "[drain]\ndelay = \"3s\"\ntimeout = \"10s\"\n",
        ),
        &scratch,
        &[],
    );
    let addr = text_addr(&server.wait_for("listening", |l| l.contains("sessionwatch listening")));
    let (status, issued) = get(addr, None);
    assert_eq!(status, 200);
    let issued = issued.expect("the backend issued a session");
    // Presented back, the session is replaced: a reset, written to the alert log.
    let (status, _) = get(addr, Some(&issued));
    assert_eq!(status, 200);

    server.signal("TERM");
    server.wait_for("shutting down", |l| l.contains("shutting down"));
    // Inside the delay the proxy still serves.
    assert_eq!(get(addr, None).0, 200);
    assert!(server.running());
    let (status, stderr, stdout) = server.exit();
    let stderr = stderr.join("\n");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("drained; exiting"), "{stderr}");
    let resets: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|l: &serde_json::Value| l["type"] == "session_reset")
        .collect();
    assert_eq!(resets.len(), 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(!stdout.contains(&issued), "a raw session id on stdout");
    // Standard output alone: no file anywhere in the working directory.
    let files: Vec<_> = std::fs::read_dir(&scratch.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, [std::ffi::OsString::from("sessionwatch.toml")]);
}

/// A backend that answers every request 200 and counts them.
fn counting_backend() -> (SocketAddr, std::sync::Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let served = std::sync::Arc::new(AtomicU64::new(0));
    let counted = served.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let counted = counted.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    counted.fetch_add(1, Ordering::SeqCst);
                    if conn
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, served)
}

#[test]
fn sighup_reloads_the_file_refusing_what_cannot_change_and_keeping_it_when_broken() {
    let scratch = Scratch::new("sighup");
    let (b, served_by_b) = counting_backend();
    let alerts = format!("log_file = {:?}", Path::new(&scratch.0).join("a.jsonl"));
    let first = config(forgetful_backend(), &alerts, NO_DELAY);
    let mut server = Server::start(&first, &scratch, &[]);
    let addr = text_addr(&server.wait_for("listening", |l| l.contains("sessionwatch listening")));
    assert_eq!(get(addr, None).0, 200);
    assert_eq!(served_by_b.load(Ordering::SeqCst), 0);

    // A second backend, and a listen address the running proxy cannot move to.
    let file = scratch.0.join("sessionwatch.toml");
    let second = first.replace("address = \"127.0.0.1:0\"", "address = \"127.0.0.2:0\"")
        + &format!("[[backends]]\nname = \"b\"\nurl = \"http://{b}\"\n");
    std::fs::write(&file, &second).unwrap();
    server.signal("HUP");
    let refused = server.wait_for("refused key", |l| {
        l.contains("config reload: listen.address")
    });
    assert!(
        refused.contains("WARN") && refused.contains("keeping its old value"),
        "{refused}"
    );
    let applied = server.wait_for("reloaded", |l| l.contains("configuration reloaded"));
    assert!(applied.contains("changed=backends"), "{applied}");
    for _ in 0..4 {
        assert_eq!(get(addr, None).0, 200, "the old listener serves");
    }
    assert_eq!(
        served_by_b.load(Ordering::SeqCst),
        2,
        "round robin over a and b"
    );

    // A broken file: the error, and the running configuration serves on.
    std::fs::write(&file, "[[backends]\n").unwrap();
    server.signal("HUP");
    let failed = server.wait_for("failure", |l| l.contains("config reload failed: "));
    assert!(
        failed.contains("ERROR") && failed.contains("sessionwatch.toml:1:"),
        "{failed}"
    );
    for _ in 0..4 {
        assert_eq!(get(addr, None).0, 200);
    }
    assert_eq!(served_by_b.load(Ordering::SeqCst), 4);
    assert!(server.running());
    server.signal("TERM");
    let (status, stderr, _) = server.exit();
    assert_eq!(status.code(), Some(0), "{}", stderr.join("\n"));
}

#[test]
fn log_lines_to_a_pipe_carry_no_colour_codes() {
    let scratch = Scratch::new("no-colour");
    let alerts = format!("log_file = {:?}", Path::new(&scratch.0).join("a.jsonl"));
    let mut server = Server::start(
        &config(forgetful_backend(), &alerts, NO_DELAY),
        &scratch,
        &[],
    );
    server.wait_for("listening", |l| l.contains("sessionwatch listening"));
    server.signal("TERM");
    let (status, stderr, _) = server.exit();
    assert_eq!(status.code(), Some(0));
    assert!(stderr.len() >= 3, "{stderr:?}");
    for line in &stderr {
        assert!(!line.contains('\x1b'), "colour codes in {line:?}");
    }
}

#[test]
fn json_logs_are_one_object_a_line_with_level_message_and_fields() {
    let scratch = Scratch::new("json");
    let alerts = format!("log_file = {:?}", Path::new(&scratch.0).join("a.jsonl"));
    let mut server = Server::start(
        &config(forgetful_backend(), &alerts, NO_DELAY),
        &scratch,
        &["--log-format", "json"],
    );
    let listening = server.wait_for("listening", |l| l.contains("sessionwatch listening"));
    let listening: serde_json::Value = serde_json::from_str(&listening).unwrap();
    let addr: SocketAddr = listening["addr"].as_str().unwrap().parse().unwrap();
    assert_eq!(get(addr, None).0, 200);
    server.signal("HUP");
    server.wait_for("reloaded", |l| l.contains("configuration reloaded"));
    server.signal("TERM");
    let (status, stderr, _) = server.exit();
    assert_eq!(status.code(), Some(0), "{}", stderr.join("\n"));
    let lines: Vec<serde_json::Value> = stderr
        .iter()
        .map(|l| {
            assert!(!l.contains('\x1b'), "colour codes in {l:?}");
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
        })
        .collect();
    for line in &lines {
        assert!(line["timestamp"].is_string(), "{line}");
        assert!(line["level"].is_string(), "{line}");
        assert!(line["message"].is_string(), "{line}");
    }
    let reloaded = lines
        .iter()
        .find(|l| l["message"] == "configuration reloaded")
        .unwrap();
    assert_eq!(reloaded["level"], "INFO");
    assert_eq!(reloaded["trigger"], "signal");
    let stop = lines
        .iter()
        .find(|l| l["message"] == "shutting down")
        .unwrap();
    assert_eq!(stop["signal"], "SIGTERM");
    // The access log is off unless asked for.
    assert!(lines.iter().all(|l| l["target"] != "sessionwatch::access"));
}

#[test]
fn the_access_log_says_what_each_request_got_and_nothing_secret() {
    let scratch = Scratch::new("access");
    let alerts = format!("log_file = {:?}", Path::new(&scratch.0).join("a.jsonl"));
    let mut server = Server::start(
        &config(
            forgetful_backend(),
            &alerts,
            &format!("{NO_DELAY}[log]\naccess = true\n"),
        ),
        &scratch,
        &["--log-format", "json"],
    );
    let listening = server.wait_for("listening", |l| l.contains("sessionwatch listening"));
    let listening: serde_json::Value = serde_json::from_str(&listening).unwrap();
    let addr: SocketAddr = listening["addr"].as_str().unwrap().parse().unwrap();
    let target = "/cart;jsessionid=RAWSESSIONID0123456789?token=QUERYSECRET";
    let (status, issued) = get_target(addr, target, None);
    assert_eq!(status, 200);
    let line = server.wait_for("access", |l| l.contains("sessionwatch::access"));
    // The session the first answer issued, then carried back: one short fingerprint for both,
    // and another for a session the proxy never saw.
    let issued = issued.expect("the backend issues a session");
    assert_eq!(get_target(addr, "/again", Some(&issued)).0, 200);
    let again = server.wait_for("access", |l| l.contains("sessionwatch::access"));
    assert_eq!(
        get_target(addr, "/other", Some("UNSEENSESSION0123456789")).0,
        200
    );
    let other = server.wait_for("access", |l| l.contains("sessionwatch::access"));
    server.signal("TERM");
    let (status, stderr, _) = server.exit();
    assert_eq!(status.code(), Some(0));
    let access: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(access["method"], "GET", "{access}");
    assert_eq!(access["path"], "/cart", "{access}");
    assert_eq!(access["status"], 200, "{access}");
    assert_eq!(access["backend"], "a", "{access}");
    assert!(access["duration_ms"].as_f64().is_some(), "{access}");
    assert!(
        !access["request_id"].as_str().unwrap().is_empty(),
        "{access}"
    );
    let session = |line: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["session"].as_str().unwrap_or_default().to_owned()
    };
    let (first, again, other) = (session(&line), session(&again), session(&other));
    assert_eq!(first.len(), 12, "{line}");
    assert!(first.bytes().all(|b| b.is_ascii_hexdigit()), "{line}");
    assert_eq!(
        first, again,
        "the issued session and the same one carried back"
    );
    assert_ne!(first, other, "another session's fingerprint");
    assert_eq!(other.len(), 12, "{other}");
    let all = stderr.join("\n");
    assert!(
        !all.contains("RAWSESSIONID")
            && !all.contains("QUERYSECRET")
            && !all.contains(&issued)
            && !all.contains("UNSEENSESSION"),
        "{all}"
    );
}

#[test]
fn json_log_lines_name_each_field_once() {
    // A discovery entry whose resolver fails: its warning carries the entry, which must not
    // take the name of the line's own `target`.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dns = rt
        .block_on(sessionwatch_test_support::DnsServer::start())
        .unwrap();
    dns.set_failing(true);
    let scratch = Scratch::new("json-fields");
    let alerts = format!("log_file = {:?}", Path::new(&scratch.0).join("a.jsonl"));
    let extra = format!(
        "{NO_DELAY}[[backends]]\ndns = \"app.test:80\"\nresolver = \"{}\"\n",
        dns.addr()
    );
    let mut server = Server::start(
        &config(forgetful_backend(), &alerts, &extra),
        &scratch,
        &["--log-format", "json"],
    );
    let failed = server.wait_for("discovery failed", |l| {
        l.contains("backend discovery failed")
    });
    server.signal("TERM");
    let (status, stderr, _) = server.exit();
    assert_eq!(status.code(), Some(0), "{}", stderr.join("\n"));
    for line in stderr.iter().chain([&failed]) {
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in object.keys() {
            let quoted = format!("\"{key}\":");
            assert_eq!(line.matches(&quoted).count(), 1, "{key} twice in {line}");
        }
    }
    let failed: serde_json::Value = serde_json::from_str(&failed).unwrap();
    assert_eq!(failed["entry"], "app.test:80", "{failed}");
    assert_eq!(
        failed["target"], "sessionwatch_proxy::backends::discovery",
        "{failed}"
    );
}
