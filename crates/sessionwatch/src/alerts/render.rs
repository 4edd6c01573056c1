//! The one-line rendering of an event for a person at a terminal: the time, the type, then what
//! matters for that type (issuer -> server and the signal for a reset, the share and the hint for
//! an incident). Only fields the log carries are shown, so no raw session id can appear: the log
//! has short fingerprints only.

use std::fmt::Write as _;
use std::time::Duration;

use super::line::{BadLine, Event, Kind};

/// `event` as one line, without a newline.
pub(crate) fn event(event: &Event) -> String {
    let mut out = String::with_capacity(160);
    let time = event.str("time");
    let _ = write!(
        out,
        "{} {:<17} ",
        if time.is_empty() { "-" } else { time },
        event.str("type")
    );
    match event.kind {
        Kind::SessionReset => {
            let _ = write!(
                out,
                "{} -> {}  {} ({})  {} {} -> {}  session {}",
                event.str("issuer"),
                event.str("server"),
                event.str("signal"),
                event.str("attribution"),
                event.str("method"),
                event.str("path"),
                event.u64("status"),
                event.str("session"),
            );
            if event.fields.get("rescue").and_then(|v| v.as_bool()) == Some(true) {
                out.push_str("  (rescue)");
            }
        }
        Kind::SessionRescued => {
            let outcome =
                if event.fields.get("reached_issuer").and_then(|v| v.as_bool()) == Some(false) {
                    "issuer unreachable"
                } else if event.fields.get("still_lost").and_then(|v| v.as_bool()) == Some(true) {
                    "still lost"
                } else {
                    "kept"
                };
            let _ = write!(
                out,
                "{} -> replayed on {}  {}  {} {} -> {}  session {}",
                event.str("server"),
                event.str("issuer"),
                outcome,
                event.str("method"),
                event.str("path"),
                event.u64("status"),
                event.str("session"),
            );
        }
        Kind::IncidentOpened | Kind::IncidentUpdated | Kind::IncidentResolved => {
            incident(&mut out, event);
        }
        Kind::PinningStarted | Kind::PinningStopped => {
            let _ = write!(
                out,
                "policy {}  ({})  incident {}",
                event.str("policy"),
                event.str("reason"),
                event.str("incident_id"),
            );
        }
        Kind::BackendJoined | Kind::BackendLeft => {
            let _ = write!(
                out,
                "{}  ({} members)",
                event.str("backend"),
                event.u64("members")
            );
        }
        Kind::StoreDegraded | Kind::StoreRecovered => {
            let _ = write!(out, "{}: {}", event.str("store"), event.str("reason"));
            if let Some(ms) = event.fields.get("down_ms").and_then(|v| v.as_u64()) {
                let _ = write!(out, " after {}", duration(Duration::from_millis(ms)));
            }
            if let Some(n) = event.fields.get("rewritten").and_then(|v| v.as_u64()) {
                let _ = write!(out, ", {n} sessions written back");
            }
            let error = event.str("error");
            if !error.is_empty() {
                let _ = write!(out, "  ({error})");
            }
        }
    }
    strip_controls(out)
}

fn incident(out: &mut String, event: &Event) {
    let _ = write!(
        out,
        "{}  share {}  ({}/{} in the window)",
        event.str("incident_id"),
        percent(event.f64("share")),
        event.u64("resets"),
        event.u64("requests"),
    );
    let (issuer, server) = (event.str("dominant_issuer"), event.str("dominant_server"));
    if !issuer.is_empty() || !server.is_empty() {
        let _ = write!(out, "  most {issuer} -> {server}");
    }
    if event.kind == Kind::IncidentResolved {
        let _ = write!(
            out,
            "  lasted {}",
            duration(Duration::from_secs(event.u64("duration_s")))
        );
    }
    if let Some(life) = event.object("incident") {
        let n = |k: &str| life.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        let at_least = life
            .get("sessions_affected_at_least")
            .and_then(|v| v.as_bool())
            == Some(true);
        let _ = write!(
            out,
            "  in all {} resets, {}{} sessions",
            n("resets"),
            if at_least { "at least " } else { "" },
            n("sessions_affected"),
        );
    }
    let _ = write!(out, "  hint {}: {}", event.hint_code(), event.hint_text());
}

/// A line that could not be read as an event.
pub(crate) fn bad(number: u64, why: &BadLine) -> String {
    format!("line {number}: {why}")
}

/// A share of 0..1 as a percentage with one decimal.
pub(crate) fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// A duration as `3m 20s`, to the second.
pub(crate) fn duration(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// A field with a newline or an escape sequence in it must not break the one-line rendering or
/// drive the terminal.
fn strip_controls(text: String) -> String {
    if text.chars().any(char::is_control) {
        text.chars().filter(|c| !c.is_control()).collect()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::super::line::{Line, parse};
    use super::*;

    fn one(json: &str) -> String {
        match parse(json.as_bytes().to_vec()) {
            Line::Event { event: e, .. } => event(&e),
            other => panic!("not an event: {other:?}"),
        }
    }

    #[test]
    fn a_reset_shows_issuer_server_signal_and_fingerprint() {
        let text = one(
            r#"{"type":"session_reset","time":"2025-01-14T09:21:07.412Z","issuer":"php-1","server":"php-2","signal":"login_redirect","attribution":"cross_backend","method":"GET","path":"/account","status":302,"session":"3f9c0a1b2c4d","rescue":false}"#,
        );
        assert_eq!(
            text,
            "2025-01-14T09:21:07.412Z session_reset     php-1 -> php-2  login_redirect (cross_backend)  GET /account -> 302  session 3f9c0a1b2c4d"
        );
    }

    #[test]
    fn control_characters_in_a_field_do_not_reach_the_terminal() {
        let text = one(
            r#"{"type":"backend_joined","time":"2025-01-14T09:21:07.412Z","backend":"a\u001b[2Jb\nc","members":3}"#,
        );
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert!(text.contains("a[2Jbc"), "{text}");
    }
}
