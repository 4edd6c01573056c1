//! `--summary`: what the log says over a period, in a few lines: resets by signal and by
//! issuer -> server, rescues, and each incident with its hint and duration.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use super::line::{Event, Kind};
use super::render::{duration, percent};

/// `--since`: a duration back from now (`15m`) or an RFC 3339 time.
pub(crate) fn parse_since(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    if let Ok(back) = humantime::parse_duration(text) {
        return Ok(now.checked_sub(back).unwrap_or(SystemTime::UNIX_EPOCH));
    }
    humantime::parse_rfc3339_weak(text).map_err(|_| {
        format!(
            "--since {text:?}: expected a duration back from now (such as 15m or 2h) or a UTC \
             time (such as 2026-01-14T09:00:00Z)"
        )
    })
}

#[derive(Debug, Default)]
struct IncidentSeen {
    id: String,
    started: String,
    ended: Option<String>,
    duration_s: Option<u64>,
    last_time: Option<SystemTime>,
    hint_code: String,
    hint_text: String,
    peak_share: f64,
    resets: u64,
    sessions: u64,
    sessions_at_least: bool,
}

/// The totals, fed one event at a time.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    since: Option<SystemTime>,
    events: u64,
    first: Option<String>,
    last: Option<String>,
    by_signal: BTreeMap<String, u64>,
    by_attribution: BTreeMap<String, u64>,
    pairs: BTreeMap<(String, String), u64>,
    rescued: u64,
    rescues_kept: u64,
    suppressed: BTreeMap<String, u64>,
    incidents: Vec<IncidentSeen>,
    other: BTreeMap<&'static str, u64>,
}

impl Summary {
    pub(crate) fn new(since: Option<SystemTime>) -> Self {
        Self {
            since,
            ..Self::default()
        }
    }

    pub(crate) fn add(&mut self, event: &Event) {
        if let Some(since) = self.since {
            // A line without a readable time cannot be placed in the period.
            if event.time.is_none_or(|t| t < since) {
                return;
            }
        }
        self.events += 1;
        let time = event.str("time").to_owned();
        if self.first.is_none() {
            self.first = Some(time.clone());
        }
        self.last = Some(time);
        match event.kind {
            Kind::SessionReset => {
                *self
                    .by_signal
                    .entry(event.str("signal").into())
                    .or_default() += 1;
                *self
                    .by_attribution
                    .entry(event.str("attribution").into())
                    .or_default() += 1;
                *self
                    .pairs
                    .entry((event.str("issuer").into(), event.str("server").into()))
                    .or_default() += 1;
            }
            Kind::SessionRescued => {
                self.rescued += 1;
                let bool_of = |k: &str| event.fields.get(k).and_then(|v| v.as_bool());
                if bool_of("reached_issuer") != Some(false) && bool_of("still_lost") != Some(true) {
                    self.rescues_kept += 1;
                }
            }
            kind if kind.is_incident() => self.incident(event),
            Kind::PinningStarted => *self.other.entry("pinning started").or_default() += 1,
            Kind::PinningStopped => *self.other.entry("pinning stopped").or_default() += 1,
            Kind::BackendJoined => *self.other.entry("backends joined").or_default() += 1,
            Kind::BackendLeft => *self.other.entry("backends left").or_default() += 1,
            Kind::StoreDegraded => *self.other.entry("store degraded").or_default() += 1,
            Kind::StoreRecovered => *self.other.entry("store recovered").or_default() += 1,
            _ => {}
        }
    }

    fn incident(&mut self, event: &Event) {
        let id = event.str("incident_id");
        let at = match self.incidents.iter().position(|i| i.id == id) {
            Some(at) => at,
            None => {
                self.incidents.push(IncidentSeen {
                    id: id.to_owned(),
                    started: event.str("started").to_owned(),
                    ..IncidentSeen::default()
                });
                self.incidents.len() - 1
            }
        };
        let seen = &mut self.incidents[at];
        seen.last_time = event.time;
        seen.hint_code = event.hint_code().to_owned();
        seen.hint_text = event.hint_text().to_owned();
        seen.resets = event.u64("total_resets");
        self.suppressed
            .insert(id.to_owned(), event.u64("suppressed"));
        if let Some(life) = event.object("incident") {
            let n = |k: &str| life.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
            seen.resets = n("resets").max(seen.resets);
            seen.sessions = n("sessions_affected");
            seen.sessions_at_least = life
                .get("sessions_affected_at_least")
                .and_then(|v| v.as_bool())
                == Some(true);
            seen.peak_share = life
                .get("peak_share")
                .and_then(|v| v.as_f64())
                .unwrap_or(0.0);
        }
        if event.kind == Kind::IncidentResolved {
            seen.ended = Some(event.str("ended").to_owned());
            seen.duration_s = Some(event.u64("duration_s"));
        }
    }

    /// The summary for a person.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let since = self
            .since
            .map(|t| format!(" since {}", humantime::format_rfc3339_seconds(t)))
            .unwrap_or_default();
        match (&self.first, &self.last) {
            (Some(first), Some(last)) => {
                let _ = writeln!(
                    out,
                    "Alert log{since}: {} events, {first} to {last}",
                    self.events
                );
            }
            _ => {
                let _ = writeln!(out, "Alert log{since}: no events");
                return out;
            }
        }
        let resets: u64 = self.by_signal.values().sum();
        let _ = writeln!(out, "\nResets: {resets}");
        if resets > 0 {
            let _ = writeln!(out, "  by signal:       {}", counts(&self.by_signal));
            let _ = writeln!(out, "  by attribution:  {}", counts(&self.by_attribution));
            let _ = writeln!(out, "  issuer -> server:");
            let mut pairs: Vec<_> = self.pairs.iter().collect();
            pairs.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            for ((issuer, server), n) in pairs {
                let _ = writeln!(out, "    {issuer} -> {server}  {n}");
            }
        }
        let suppressed: u64 = self.suppressed.values().sum();
        if suppressed > 0 {
            let _ = writeln!(
                out,
                "  ({suppressed} more reset lines were not written: rate-limited during incidents)"
            );
        }
        if self.rescued > 0 {
            let _ = writeln!(
                out,
                "\nRescues: {} ({} kept the session)",
                self.rescued, self.rescues_kept
            );
        }
        let _ = writeln!(out, "\nIncidents: {}", self.incidents.len());
        for i in &self.incidents {
            let span = match (&i.ended, i.duration_s) {
                (Some(ended), Some(s)) => {
                    format!(
                        "{} to {ended} ({})",
                        i.started,
                        duration(Duration::from_secs(s))
                    )
                }
                _ => {
                    let so_far = i
                        .last_time
                        .zip(humantime::parse_rfc3339_weak(&i.started).ok())
                        .and_then(|(last, start)| last.duration_since(start).ok())
                        .map(|d| format!(", {} so far", duration(d)))
                        .unwrap_or_default();
                    format!("{} to now (open{so_far})", i.started)
                }
            };
            let _ = writeln!(out, "  {}  {span}", i.id);
            let _ = writeln!(
                out,
                "    peak {}, {} resets, {}{} sessions affected",
                percent(i.peak_share),
                i.resets,
                if i.sessions_at_least { "at least " } else { "" },
                i.sessions
            );
            let _ = writeln!(out, "    hint {}: {}", i.hint_code, i.hint_text);
        }
        if !self.other.is_empty() {
            let other: BTreeMap<String, u64> = self
                .other
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect();
            let _ = writeln!(out, "\nOther events: {}", counts(&other));
        }
        out
    }
}

/// `a 3, b 1`, largest first.
fn counts(map: &BTreeMap<String, u64>) -> String {
    let mut items: Vec<_> = map.iter().collect();
    items.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    items
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_duration_back_or_a_time() {
        let now = humantime::parse_rfc3339("2026-01-14T09:15:00Z").unwrap();
        assert_eq!(
            parse_since("15m", now).unwrap(),
            humantime::parse_rfc3339("2026-01-14T09:00:00Z").unwrap()
        );
        assert_eq!(
            parse_since("2026-01-14T09:00:00Z", now).unwrap(),
            humantime::parse_rfc3339("2026-01-14T09:00:00Z").unwrap()
        );
        assert!(parse_since("yesterday", now).is_err());
    }
}
