//! `sessionwatch alerts` on crafted logs and on a log the real proxy writes: the one-line
//! rendering, `--json` passing lines through unchanged, standard input, `--summary` over
//! `--since`, every part of the `--report` postmortem draft, and `--follow` across rotation
//! (renamed and recreated, or truncated) with every line read exactly once, in order. Every
//! process runs under a deadline and is killed if it overruns.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_sessionwatch");
/// Generous for a debug build on a busy two-core machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// A directory for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sessionwatch-alerts-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills the child if a test fails before it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn alerts(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("alerts").args(args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Run to the end, under the deadline.
fn run(mut cmd: Command, stdin: Option<&[u8]>) -> Output {
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("spawn sessionwatch");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(bytes).unwrap();
    }
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < DEADLINE, "sessionwatch alerts overran");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// --- a crafted log: one incident on a broken two-node farm --------------------------------------

fn matrix() -> Value {
    serde_json::json!([
        {"issuer": "php-a", "server": "php-a", "requests": 120, "resets": 0},
        {"issuer": "php-a", "server": "php-b", "requests": 95, "resets": 90},
        {"issuer": "php-b", "server": "php-a", "requests": 88, "resets": 85},
        {"issuer": "php-b", "server": "php-b", "requests": 110, "resets": 0},
    ])
}

fn incident_line(kind: &str, time: &str, share: f64, extra: Value) -> Value {
    let mut line = serde_json::json!({
        "type": kind, "time": time, "incident_id": "0193a5f27c1e7b8e9d2c4f6a1b3c5d7e",
        "started": "2026-01-14T09:00:02.000Z",
        "summary": format!("{kind} summary"),
        "share": share, "requests": 100, "resets": (share * 100.0) as u64,
        "total_resets": 175, "suppressed": 3, "matrix": matrix(),
        "hint": {"code": "store_not_shared", "text": "every one of 175 losses was cross-backend: the session store is not shared"},
        "dominant_issuer": "php-a", "dominant_server": "php-b",
        "samples": ["3f9c0a1b2c4d"],
        "incident": {
            "requests": 413, "resets": 175, "sessions_affected": 80,
            "first_loss": "2026-01-14T09:00:01.000Z",
            "last_loss": "2026-01-14T09:00:40.000Z",
            "peak_share": 0.51, "peak_at": "2026-01-14T09:00:12.000Z",
            "matrix": matrix(),
        },
    });
    if let (Some(obj), Value::Object(extra)) = (line.as_object_mut(), extra) {
        obj.extend(extra);
    }
    line
}

fn reset(time: &str, issuer: &str, server: &str, signal: &str, session: &str) -> Value {
    serde_json::json!({
        "type": "session_reset", "time": time, "signal": signal,
        "attribution": if issuer == server { "same_backend" } else { "cross_backend" },
        "issuer": issuer, "server": server, "session": session, "session_age_ms": 1000,
        "idle_ms": 10, "method": "GET", "path": "/me", "status": 302, "request_id": "r-1",
        "rescue": false,
    })
}

/// The crafted log's lines in order.
fn crafted() -> Vec<Value> {
    vec![
        reset(
            "2026-01-14T09:00:01.000Z",
            "php-a",
            "php-b",
            "login_redirect",
            "3f9c0a1b2c4d",
        ),
        reset(
            "2026-01-14T09:00:01.500Z",
            "php-b",
            "php-a",
            "reissued",
            "0a1b2c3d4e5f",
        ),
        incident_line(
            "incident_opened",
            "2026-01-14T09:00:02.000Z",
            0.4,
            Value::Null,
        ),
        serde_json::json!({"type": "pinning_started", "time": "2026-01-14T09:00:02.001Z",
            "policy": "on_incident", "reason": "incident_opened",
            "incident_id": "0193a5f27c1e7b8e9d2c4f6a1b3c5d7e"}),
        serde_json::json!({"type": "session_rescued", "time": "2026-01-14T09:00:03.000Z",
            "session": "3f9c0a1b2c4d", "server": "php-b", "issuer": "php-a", "status": 200,
            "still_lost": false, "reached_issuer": true, "method": "GET", "path": "/me",
            "request_id": "r-2"}),
        serde_json::json!({"type": "session_rescued", "time": "2026-01-14T09:00:04.000Z",
            "session": "0a1b2c3d4e5f", "server": "php-a", "issuer": "php-b", "status": 302,
            "still_lost": true, "reached_issuer": true, "method": "GET", "path": "/me",
            "request_id": "r-3"}),
        incident_line(
            "incident_updated",
            "2026-01-14T09:00:12.000Z",
            0.51,
            Value::Null,
        ),
        incident_line(
            "incident_updated",
            "2026-01-14T09:00:22.000Z",
            0.2,
            Value::Null,
        ),
        incident_line(
            "incident_resolved",
            "2026-01-14T09:01:10.000Z",
            0.0,
            serde_json::json!({"ended": "2026-01-14T09:01:10.000Z", "duration_s": 68}),
        ),
        serde_json::json!({"type": "pinning_stopped", "time": "2026-01-14T09:01:10.001Z",
            "policy": "on_incident", "reason": "incident_resolved",
            "incident_id": "0193a5f27c1e7b8e9d2c4f6a1b3c5d7e"}),
    ]
}

fn crafted_text() -> String {
    crafted()
        .iter()
        .map(|l| format!("{l}\n"))
        .collect::<String>()
}

// --- rendering, --json, stdin -------------------------------------------------------------------

#[test]
fn each_event_is_one_readable_line_and_bad_lines_are_named_not_fatal() {
    let dir = Scratch::new("render");
    let log = dir.path("alerts.jsonl");
    let mut body = crafted_text();
    body.push_str("this is not json\n{\"type\":\"from_a_newer_proxy\"}\n");
    std::fs::write(&log, &body).unwrap();
    let out = run(alerts(&[log.to_str().unwrap()]), None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), crafted().len() + 2, "{shown}");
    assert!(lines[0].starts_with("2026-01-14T09:00:01.000Z session_reset"));
    assert!(lines[0].contains("php-a -> php-b"), "{}", lines[0]);
    assert!(
        lines[0].contains("login_redirect (cross_backend)"),
        "{}",
        lines[0]
    );
    assert!(lines[2].contains("incident_opened"), "{}", lines[2]);
    assert!(lines[2].contains("share 40.0%"), "{}", lines[2]);
    assert!(lines[2].contains("hint store_not_shared"), "{}", lines[2]);
    assert!(lines[3].contains("policy on_incident"), "{}", lines[3]);
    assert!(
        lines[4].contains("php-b -> replayed on php-a  kept"),
        "{}",
        lines[4]
    );
    assert!(lines[5].contains("still lost"), "{}", lines[5]);
    assert!(lines[8].contains("lasted 1m 8s"), "{}", lines[8]);
    assert_eq!(lines[10], "line 11: not a JSON object (16 bytes)");
    assert_eq!(lines[11], "line 12: unknown type \"from_a_newer_proxy\"");
}

#[test]
fn json_passes_alert_lines_through_unchanged_and_counts_what_it_leaves_out() {
    let dir = Scratch::new("json");
    let log = dir.path("alerts.jsonl");
    let good = crafted_text();
    let newer = "{\"type\":\"from_a_newer_proxy\",\"x\":1}\n";
    std::fs::write(&log, format!("{good}garbage\n{newer}\u{0}\u{1}\n")).unwrap();
    let out = run(alerts(&["--json", log.to_str().unwrap()]), None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{good}{newer}"));
    assert!(
        text(&out.stderr).contains("skipped 2 lines"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn standard_input_reads_the_same_as_a_file() {
    let dir = Scratch::new("stdin");
    let log = dir.path("alerts.jsonl");
    std::fs::write(&log, crafted_text()).unwrap();
    let from_file = run(alerts(&[log.to_str().unwrap()]), None);
    let from_stdin = run(alerts(&["-"]), Some(crafted_text().as_bytes()));
    assert!(from_stdin.status.success(), "{}", text(&from_stdin.stderr));
    assert_eq!(text(&from_stdin.stdout), text(&from_file.stdout));
    assert_eq!(text(&from_stdin.stdout).lines().count(), crafted().len());
}

// --- --summary ----------------------------------------------------------------------------------

#[test]
fn summary_counts_resets_pairs_and_incidents_since_a_time() {
    let dir = Scratch::new("summary");
    let log = dir.path("alerts.jsonl");
    let mut lines = vec![
        // Before --since: left out.
        reset(
            "2026-01-14T08:59:00.000Z",
            "php-b",
            "php-b",
            "cleared",
            "aaaaaaaaaaaa",
        ),
    ];
    lines.extend(crafted());
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&log, body).unwrap();
    let out = run(
        alerts(&[
            "--summary",
            "--since",
            "2026-01-14T09:00:00Z",
            log.to_str().unwrap(),
        ]),
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("Resets: 2\n"), "{s}");
    assert!(
        s.contains("by signal:       login_redirect 1, reissued 1"),
        "{s}"
    );
    assert!(s.contains("by attribution:  cross_backend 2"), "{s}");
    assert!(s.contains("php-a -> php-b  1"), "{s}");
    assert!(s.contains("php-b -> php-a  1"), "{s}");
    assert!(
        !s.contains("cleared") && !s.contains("php-b -> php-b"),
        "{s}"
    );
    assert!(s.contains("Rescues: 2 (1 kept the session)"), "{s}");
    assert!(s.contains("Incidents: 1\n"), "{s}");
    assert!(
        s.contains(
            "0193a5f27c1e7b8e9d2c4f6a1b3c5d7e  2026-01-14T09:00:02.000Z to 2026-01-14T09:01:10.000Z (1m 8s)"
        ),
        "{s}"
    );
    assert!(
        s.contains("peak 51.0%, 175 resets, 80 sessions affected"),
        "{s}"
    );
    assert!(s.contains("hint store_not_shared: every one of 175"), "{s}");

    // Without --since, the early reset counts too.
    let all = text(&run(alerts(&["--summary", log.to_str().unwrap()]), None).stdout);
    assert!(all.contains("Resets: 3\n"), "{all}");
}

#[test]
fn summary_since_a_duration_counts_back_from_now() {
    let dir = Scratch::new("summary-ago");
    let log = dir.path("alerts.jsonl");
    let at = |ago: u64| {
        humantime::format_rfc3339_millis(SystemTime::now() - Duration::from_secs(ago)).to_string()
    };
    let body = [
        reset(&at(3600), "php-a", "php-b", "cleared", "aaaaaaaaaaaa"),
        reset(&at(600), "php-a", "php-b", "login_redirect", "bbbbbbbbbbbb"),
        reset(&at(60), "php-b", "php-a", "login_redirect", "cccccccccccc"),
    ]
    .iter()
    .map(|l| format!("{l}\n"))
    .collect::<String>();
    std::fs::write(&log, body).unwrap();
    let out = run(
        alerts(&["--summary", "--since", "15m", log.to_str().unwrap()]),
        None,
    );
    let s = text(&out.stdout);
    assert!(s.contains("Resets: 2\n"), "{s}");
    assert!(s.contains("by signal:       login_redirect 2\n"), "{s}");
    assert!(s.contains("Incidents: 0"), "{s}");

    let bad = run(
        alerts(&[
            "--summary",
            "--since",
            "last tuesday",
            log.to_str().unwrap(),
        ]),
        None,
    );
    assert_eq!(bad.status.code(), Some(64), "{}", text(&bad.stderr));
}

// --- --report -----------------------------------------------------------------------------------

#[test]
fn report_has_every_part_of_a_postmortem_and_its_chart() {
    let dir = Scratch::new("report");
    let log = dir.path("alerts.jsonl");
    std::fs::write(&log, crafted_text()).unwrap();
    let out_dir = dir.path("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = run(
        alerts(&[
            "--report",
            "--out",
            out_dir.to_str().unwrap(),
            log.to_str().unwrap(),
        ]),
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = "0193a5f27c1e7b8e9d2c4f6a1b3c5d7e";
    let md = std::fs::read_to_string(out_dir.join(format!("postmortem-{id}.md"))).unwrap();
    let svg = std::fs::read_to_string(out_dir.join(format!("postmortem-{id}.svg"))).unwrap();

    assert!(md.starts_with(&format!(
        "# Postmortem draft: sessions lost (incident {id})"
    )));
    assert!(
        md.contains("## Summary\n\nincident_resolved summary"),
        "{md}"
    );
    // Duration and impact, from the resolved line's `incident` object.
    for row in [
        "| Started | 2026-01-14T09:00:02.000Z |",
        "| Ended | 2026-01-14T09:01:10.000Z |",
        "| Duration | 1m 8s |",
        "| Requests with a known session | 413 |",
        "| Requests that lost their session | 175 (42.4% of them) |",
        "| Peak share lost | 51.0% at 2026-01-14T09:00:12.000Z |",
        "| Sessions affected | 80 |",
    ] {
        assert!(md.contains(row), "missing {row:?} in\n{md}");
    }
    // The timeline, in time order.
    let timeline = [
        "| 2026-01-14T09:00:01.000Z | First session lost |",
        "| 2026-01-14T09:00:02.000Z | Incident opened: incident_opened summary |",
        "| 2026-01-14T09:00:02.001Z | Pinning started (policy `on_incident`) |",
        "| 2026-01-14T09:00:12.000Z | Peak: 51.0% of requests with a session lost |",
        "| 2026-01-14T09:00:40.000Z | Losses stopped (the last session lost) |",
        "| 2026-01-14T09:01:10.000Z | Resolved: incident_resolved summary |",
        "| 2026-01-14T09:01:10.001Z | Pinning stopped (policy `on_incident`) |",
    ];
    let at: Vec<usize> = timeline
        .iter()
        .map(|row| {
            md.find(row)
                .unwrap_or_else(|| panic!("missing {row:?} in\n{md}"))
        })
        .collect();
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "timeline out of order:\n{md}"
    );
    // The cause and its evidence.
    assert!(
        md.contains("**`store_not_shared`**: every one of 175 losses was cross-backend"),
        "{md}"
    );
    for row in [
        "| issuer \\ server | php-a | php-b |",
        "| php-a | 0 / 120 | 90 / 95 |",
        "| php-b | 85 / 88 | 0 / 110 |",
        "175 losses across backends (issued on one, lost on another), 0 on the backend",
    ] {
        assert!(md.contains(row), "missing {row:?} in\n{md}");
    }
    // What the proxy did.
    assert!(
        md.contains("**Pins**: pinned every session to the backend that issued it from 2026-01-14T09:00:02.001Z to 2026-01-14T09:01:10.001Z"),
        "{md}"
    );
    assert!(
        md.contains("**Rescues**: 2 requests that lost their session were replayed on the backend that issued it: 1 kept the session, 1 still lost it"),
        "{md}"
    );
    assert!(
        md.contains(&format!("![share over time](postmortem-{id}.svg)")),
        "{md}"
    );
    // No fingerprint, let alone a raw id: the draft has no per-session field.
    for fp in ["3f9c0a1b2c4d", "0a1b2c3d4e5f"] {
        assert!(!md.contains(fp) && !svg.contains(fp), "{fp} in the report");
    }
    // The chart: one point per incident line, the peak at 51%.
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{svg}"
    );
    assert_eq!(svg.matches("<circle").count(), 4, "{svg}");
    assert!(svg.contains("09:00:12 51.0%"), "{svg}");
    assert!(svg.contains("<polyline"), "{svg}");
}

#[test]
fn report_without_out_writes_markdown_to_stdout_and_picks_the_incident_asked_for() {
    let dir = Scratch::new("report-id");
    let log = dir.path("alerts.jsonl");
    let mut body = crafted_text();
    // A later, still open incident: the default report is about it.
    let mut later = incident_line(
        "incident_opened",
        "2026-01-14T10:00:00.000Z",
        0.3,
        Value::Null,
    );
    later["incident_id"] = "later".into();
    later["hint"] =
        serde_json::json!({"code": "backend_differs", "text": "one backend loses them"});
    body.push_str(&format!("{later}\n"));
    std::fs::write(&log, &body).unwrap();

    let default = text(&run(alerts(&["--report", log.to_str().unwrap()]), None).stdout);
    assert!(
        default.starts_with("# Postmortem draft: sessions lost (incident later)"),
        "{default}"
    );
    assert!(
        default.contains("not yet: still open at the log's last line"),
        "{default}"
    );
    assert!(default.contains("**`backend_differs`**"), "{default}");
    assert!(!default.contains("![share over time]"), "{default}");

    let chosen = run(
        alerts(&[
            "--report",
            "0193a5f27c1e7b8e9d2c4f6a1b3c5d7e",
            log.to_str().unwrap(),
        ]),
        None,
    );
    assert!(text(&chosen.stdout).contains("**`store_not_shared`**"));

    let missing = run(alerts(&["--report", "nope", log.to_str().unwrap()]), None);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("no lines of incident \"nope\""));
}

// --- --follow across rotation -------------------------------------------------------------------

/// A running `alerts --follow --json`: its stdout lines and its stderr notices as they come.
struct Follower {
    child: Guard,
    lines: Receiver<String>,
    notices: Receiver<String>,
    got: Vec<String>,
    stdout: Option<JoinHandle<()>>,
}

impl Follower {
    fn start(log: &Path) -> Self {
        let mut child = alerts(&[
            "--follow",
            "--json",
            "--poll",
            "20ms",
            log.to_str().unwrap(),
        ])
        .spawn()
        .expect("spawn sessionwatch");
        let out: ChildStdout = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        let stdout = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (tx, notices) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self {
            child: Guard(child),
            lines,
            notices,
            got: Vec::new(),
            stdout: Some(stdout),
        }
    }

    /// Wait (under the deadline) until `n` lines have been read in all.
    fn wait_for_lines(&mut self, n: usize) {
        let start = Instant::now();
        while self.got.len() < n {
            let left = DEADLINE.saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.got.push(line),
                Err(_) => panic!("read {} lines of {n}", self.got.len()),
            }
        }
    }

    /// Wait (under the deadline) for a notice on stderr containing `what`.
    fn wait_for_notice(&mut self, what: &str) {
        let start = Instant::now();
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            match self.notices.recv_timeout(left) {
                Ok(line) if line.contains(what) => return,
                Ok(_) => {}
                Err(_) => panic!("no notice {what:?}"),
            }
        }
    }

    /// SIGTERM, then every line read up to the end; the exit must be a clean one.
    fn stop(mut self) -> Vec<String> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.0.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.0.try_wait().unwrap() {
                break s;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "--follow did not end on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(status.success(), "{status}");
        let _ = self.stdout.take().unwrap().join();
        self.got.extend(self.lines.try_iter());
        self.got
    }
}

fn numbered(n: u64) -> String {
    format!(
        "{{\"type\":\"backend_joined\",\"seq\":{n},\"backend\":\"10.0.0.1:80\",\"members\":2}}\n"
    )
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn seqs(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            v["seq"].as_u64().unwrap()
        })
        .collect()
}

#[test]
fn follow_reads_every_line_once_across_renames_and_truncations() {
    let dir = Scratch::new("follow");
    let log = dir.path("alerts.jsonl");
    let mut n = 0;
    let mut write = |count: u64, log: &Path| {
        for _ in 0..count {
            n += 1;
            append(log, &numbered(n));
        }
        n
    };
    write(20, &log);
    let mut follower = Follower::start(&log);
    follower.wait_for_lines(20);
    for round in 0..6 {
        if round % 2 == 0 {
            // As logrotate's default: the file renamed away, a new one created at the path. The
            // lines written just before are still in the old file when the reader learns of the
            // new one; it must read them first.
            write(30, &log);
            std::fs::rename(&log, dir.path(&format!("alerts.jsonl.{round}"))).unwrap();
            let last = write(10, &log);
            follower.wait_for_notice("has been replaced");
            follower.wait_for_lines(last as usize);
        } else {
            // As logrotate's copytruncate: the same file cut to nothing. A reader must have read
            // what was there before (the lines are gone otherwise, for any reader), and must
            // then read the new lines from the start.
            let last = write(30, &log);
            follower.wait_for_lines(last as usize);
            std::fs::OpenOptions::new()
                .write(true)
                .open(&log)
                .unwrap()
                .set_len(0)
                .unwrap();
            write(5, &log);
            follower.wait_for_notice("was truncated");
        }
    }
    let last = write(7, &log);
    follower.wait_for_lines(last as usize);
    let got = follower.stop();
    assert_eq!(seqs(&got), (1..=last).collect::<Vec<_>>());
}

#[test]
fn follow_passes_lines_of_a_file_that_appears_later_and_ends_on_sigterm() {
    let dir = Scratch::new("follow-later");
    let log = dir.path("alerts.jsonl");
    let mut follower = Follower::start(&log);
    follower.wait_for_notice("does not exist yet");
    append(&log, &numbered(1));
    // A line written in two pieces is one line, passed on when it is whole.
    let line = numbered(2);
    let (a, b) = line.split_at(10);
    append(&log, a);
    std::thread::sleep(Duration::from_millis(100));
    append(&log, b);
    follower.wait_for_lines(2);
    assert_eq!(seqs(&follower.stop()), [1, 2]);
}

/// Lines in every file of a rotated log.
fn lines_in(files: &[PathBuf]) -> usize {
    files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .count()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_reads_every_line_the_proxy_writes_while_its_log_is_rotated() {
    use sessionwatch_test_support::{Farm, FarmConfig, StoreMode, UserClient};

    let dir = Scratch::new("follow-proxy");
    let log = dir.path("alerts.jsonl");
    // A broken farm: every `GET /me` on the node that did not sign the user in is a reset line.
    let farm = Farm::start(FarmConfig::new(2, StoreMode::PerNode))
        .await
        .unwrap();
    let mut toml = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[alerts]\nlog_file = {:?}\n\
         [session]\ncookies = [{{ name = \"{}\" }}]\nfingerprint_key = \"alerts-test-key-0123456789abcdef\"\n\
         [pin]\npolicy = \"off\"\n[incident]\nmax_reset_lines_per_sec = 1000000\n",
        log.display().to_string(),
        farm.cookie_name()
    );
    for (name, addr) in farm.names().into_iter().zip(farm.addrs()) {
        toml.push_str(&format!(
            "[[backends]]\nname = \"{name}\"\nurl = \"http://{addr}\"\n"
        ));
    }
    let config = sessionwatch_proxy::Config::parse(&toml, Path::new("test.toml")).unwrap();
    let proxy = sessionwatch_proxy::start(config, sessionwatch_proxy::StartOptions::default())
        .await
        .unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let users: Vec<_> = (0..4)
        .map(|i| {
            let stop = stop.clone();
            let mut user =
                UserClient::new(proxy.addr(), farm.cookie_name()).with_user(format!("u{i}"));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = user.login().await;
                    let _ = user.me().await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();

    let mut follower = tokio::task::block_in_place(|| Follower::start(&log));
    let mut files = Vec::new();
    for round in 0..5 {
        // Let the proxy write a good many lines, then rotate under it while it goes on.
        let enough = lines_in(&files) + 30 * (round + 1);
        let deadline = Instant::now() + DEADLINE;
        while lines_in(&files) + lines_in(std::slice::from_ref(&log)) < enough {
            assert!(Instant::now() < deadline, "the proxy wrote too few lines");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rotated = dir.path(&format!("alerts.jsonl.{round}"));
        std::fs::rename(&log, &rotated).unwrap();
        files.push(rotated);
        tokio::task::block_in_place(|| follower.wait_for_notice("has been replaced"));
    }
    stop.store(true, Ordering::Relaxed);
    for u in users {
        u.await.unwrap();
    }
    tokio::task::block_in_place(|| proxy.flush_alerts());
    files.push(log.clone());
    let written = lines_in(&files);
    tokio::task::block_in_place(|| follower.wait_for_lines(written));
    let got = tokio::task::block_in_place(|| follower.stop());
    proxy.shutdown().await;
    // `seq` counts the proxy's lines from 1 with no gap (none was dropped): every one read,
    // once, in order, across five rotations.
    assert!(written > 150, "{written}");
    assert_eq!(seqs(&got), (1..=written as u64).collect::<Vec<_>>());
}

#[test]
fn standard_input_shows_each_line_as_it_comes_from_a_pipe_that_stays_open() {
    let mut child = Guard(
        alerts(&["-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn sessionwatch"),
    );
    let mut stdin = child.0.stdin.take().unwrap();
    let (tx, lines) = channel();
    let out = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    for (i, line) in crafted().iter().take(3).enumerate() {
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
        // The pipe stays open: the line must come out before any more input, or the end.
        let shown = lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("line {i} not shown while the pipe is open"));
        assert!(shown.starts_with(line["time"].as_str().unwrap()), "{shown}");
    }
    drop(stdin);
}
