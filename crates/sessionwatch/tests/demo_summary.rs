//! The demo's summary speaks with one voice: the share it prints is the incident's, counted over
//! the same requests.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sessionwatch");
/// Generous for a debug build on a busy machine; the demo takes a few seconds.
const DEADLINE: Duration = Duration::from_secs(120);

/// The number before `%` after `marker` on the line that holds it.
fn percent_after(stdout: &str, marker: &str) -> u64 {
    let at = stdout
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in:\n{stdout}"));
    let rest = &stdout[at + marker.len()..];
    let end = rest
        .find('%')
        .unwrap_or_else(|| panic!("no % after {marker:?}"));
    let digits: String = rest[..end]
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().unwrap_or_else(|_| panic!("{rest}"))
}

#[test]
fn the_summary_share_is_the_incident_share() {
    let dir =
        std::env::temp_dir().join(format!("sessionwatch-demo-summary-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(BIN)
        .args(["demo", "--users", "8", "--requests", "10"])
        .current_dir(&dir)
        .env("TMPDIR", &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("the demo ran past {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    let summary = &stdout[stdout.find("\nsummary\n").expect("a summary")..];
    // A per-node store on two nodes loses about half the known sessions: an incident is open.
    let proxy = percent_after(summary, "resets detected: ");
    let incident = percent_after(summary, "incident since ");
    assert!(proxy > 0, "{summary}");
    assert_eq!(proxy, incident, "{summary}");
}
