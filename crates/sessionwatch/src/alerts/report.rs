//! `--report`: a postmortem draft for one incident, in Markdown, from its lines in the alert
//! log: duration and impact, a timeline, the cause with its evidence (the issuer x server
//! matrix over the whole incident), what the proxy did, and a chart of the share over time.
//!
//! Everything comes from the log, which carries short fingerprints only, so the draft can hold
//! no raw session id; it uses no per-session field at all.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use super::chart;
use super::line::{Event, Kind, parse_time};
use super::render::{duration, percent};

/// The lines a report needs, gathered in one pass over the log.
#[derive(Debug, Default)]
pub(crate) struct Gathered {
    /// Incident lines in log order.
    incidents: Vec<Event>,
    pinning: Vec<Event>,
    /// `session_rescued` lines: when, and how they ended.
    rescues: Vec<(SystemTime, Rescue)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rescue {
    Kept,
    StillLost,
    IssuerUnreachable,
}

/// A finished draft.
#[derive(Debug)]
pub(crate) struct Draft {
    /// The incident's id made safe for a file name.
    pub(crate) file_stem: String,
    pub(crate) markdown: String,
    pub(crate) svg: String,
}

impl Gathered {
    pub(crate) fn add(&mut self, event: Event) {
        match event.kind {
            k if k.is_incident() => self.incidents.push(event),
            Kind::PinningStarted | Kind::PinningStopped => self.pinning.push(event),
            Kind::SessionRescued => {
                let flag = |k: &str| event.fields.get(k).and_then(Value::as_bool);
                let outcome = if flag("reached_issuer") == Some(false) {
                    Rescue::IssuerUnreachable
                } else if flag("still_lost") == Some(true) {
                    Rescue::StillLost
                } else {
                    Rescue::Kept
                };
                if let Some(t) = event.time {
                    self.rescues.push((t, outcome));
                }
            }
            _ => {}
        }
    }

    /// The draft for `id`, or for the last incident in the log.
    pub(crate) fn draft(&self, id: Option<&str>, with_chart: bool) -> Result<Draft, String> {
        let id = match id {
            Some(id) => id.to_owned(),
            None => self
                .incidents
                .last()
                .map(|e| e.str("incident_id").to_owned())
                .ok_or("the log has no incident lines")?,
        };
        let lines: Vec<&Event> = self
            .incidents
            .iter()
            .filter(|e| e.str("incident_id") == id)
            .collect();
        let (Some(first), Some(last)) = (lines.first(), lines.last()) else {
            return Err(format!("the log has no lines of incident {id:?}"));
        };
        let file_stem: String = id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let incident = Incident {
            id: &id,
            opened: lines.iter().find(|e| e.kind == Kind::IncidentOpened),
            first,
            last,
            resolved: lines.iter().find(|e| e.kind == Kind::IncidentResolved),
            pinning: self
                .pinning
                .iter()
                .filter(|e| e.str("incident_id") == id)
                .collect(),
            line_count: lines.len(),
        };
        let points: Vec<chart::Point> = lines
            .iter()
            .filter_map(|e| e.time.map(|t| (t, e.f64("share"))))
            .collect();
        let svg_name = format!("postmortem-{file_stem}.svg");
        let mut markdown = String::new();
        incident.write(&mut markdown, &self.rescues);
        if with_chart {
            let _ = writeln!(
                markdown,
                "\n## Share of requests that lost their session\n\n\
                 From the incident lines' `share` (resets over requests with a known session, in \
                 the window):\n\n![share over time]({svg_name})"
            );
        }
        markdown.push_str(
            "\n## Action items\n\n\
             - [ ] _What was changed to end it, who noticed and how (the log cannot know)._\n\
             - [ ] _How to catch it before the next release (a check of the session configuration in the deployment)._\n",
        );
        let svg = chart::share_over_time(&format!("Share lost, incident {id}"), &points);
        Ok(Draft {
            file_stem,
            markdown,
            svg,
        })
    }
}

struct Incident<'a> {
    id: &'a str,
    opened: Option<&'a &'a Event>,
    first: &'a Event,
    /// The latest line: it carries the incident's totals so far.
    last: &'a Event,
    resolved: Option<&'a &'a Event>,
    pinning: Vec<&'a Event>,
    line_count: usize,
}

/// A timeline row: when (RFC 3339 as in the log), what.
type Row = (String, String);

impl Incident<'_> {
    fn life(&self) -> Option<&Map<String, Value>> {
        self.last.object("incident")
    }

    fn life_str(&self, name: &str) -> Option<String> {
        self.life()
            .and_then(|l| l.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    fn life_u64(&self, name: &str) -> u64 {
        self.life()
            .and_then(|l| l.get(name))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }

    fn write(&self, out: &mut String, rescues: &[(SystemTime, Rescue)]) {
        let _ = writeln!(
            out,
            "# Postmortem draft: sessions lost (incident {})\n",
            self.id
        );
        let _ = writeln!(
            out,
            "_Drafted by `sessionwatch alerts --report` from the alert log. Times are UTC._\n"
        );
        let _ = writeln!(out, "## Summary\n\n{}\n", self.last.str("summary"));
        self.impact(out);
        self.timeline(out);
        self.cause(out);
        self.actions(out, rescues);
    }

    fn impact(&self, out: &mut String) {
        let started = self.first.str("started");
        let _ = writeln!(out, "## Duration and impact\n");
        let _ = writeln!(out, "| | |\n| --- | --- |");
        let _ = writeln!(out, "| Started | {started} |");
        match self.resolved {
            Some(r) => {
                let _ = writeln!(out, "| Ended | {} |", r.str("ended"));
                let _ = writeln!(
                    out,
                    "| Duration | {} |",
                    duration(Duration::from_secs(r.u64("duration_s")))
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "| Ended | not yet: still open at the log's last line ({}) |",
                    self.last.str("time")
                );
            }
        }
        let requests = self.life_u64("requests");
        let resets = self.life_u64("resets").max(self.last.u64("total_resets"));
        let _ = writeln!(out, "| Requests with a known session | {requests} |");
        let share = if requests > 0 {
            format!(" ({} of them)", percent(resets as f64 / requests as f64))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| Requests that lost their session | {resets}{share} |"
        );
        let peak = self
            .life()
            .and_then(|l| l.get("peak_share"))
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        let peak_at = self.life_str("peak_at").unwrap_or_default();
        let _ = writeln!(out, "| Peak share lost | {} at {peak_at} |", percent(peak));
        let at_least = self
            .life()
            .and_then(|l| l.get("sessions_affected_at_least"))
            .and_then(Value::as_bool)
            == Some(true);
        let _ = writeln!(
            out,
            "| Sessions affected | {}{} |",
            if at_least { "at least " } else { "" },
            self.life_u64("sessions_affected")
        );
        let suppressed = self.last.u64("suppressed");
        if suppressed > 0 {
            let _ = writeln!(
                out,
                "| Reset lines not written (rate limit) | {suppressed} |"
            );
        }
        out.push('\n');
    }

    fn timeline(&self, out: &mut String) {
        let mut rows: Vec<Row> = Vec::new();
        if let Some(t) = self.life_str("first_loss") {
            rows.push((t, "First session lost".into()));
        }
        match self.opened {
            Some(o) => rows.push((
                o.str("time").into(),
                format!("Incident opened: {}", o.str("summary")),
            )),
            None => rows.push((
                self.first.str("started").into(),
                "Incident opened (its opening line is not in this log)".into(),
            )),
        }
        if let Some(t) = self.life_str("peak_at") {
            let peak = self
                .life()
                .and_then(|l| l.get("peak_share"))
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            rows.push((
                t,
                format!("Peak: {} of requests with a session lost", percent(peak)),
            ));
        }
        for p in &self.pinning {
            let what = match p.kind {
                Kind::PinningStarted => "Pinning started",
                _ => "Pinning stopped",
            };
            rows.push((
                p.str("time").into(),
                format!("{what} (policy `{}`)", p.str("policy")),
            ));
        }
        if let Some(r) = self.resolved {
            if let Some(t) = self.life_str("last_loss") {
                rows.push((t, "Losses stopped (the last session lost)".into()));
            }
            rows.push((
                r.str("ended").into(),
                format!("Resolved: {}", r.str("summary")),
            ));
        } else if let Some(t) = self.life_str("last_loss") {
            rows.push((t, "Last session lost so far".into()));
        }
        // By instant, not by text: the log writes some times with milliseconds and some
        // without, and `09:00:30Z` sorts after `09:00:30.100Z` as text. A stable sort keeps the
        // causal order of rows at the same instant; a row whose time does not parse goes last.
        rows.sort_by_key(|row| parse_time(&row.0).map_or((1, SystemTime::UNIX_EPOCH), |t| (0, t)));
        let _ = writeln!(out, "## Timeline\n\n| time | event |\n| --- | --- |");
        for (t, what) in &rows {
            let _ = writeln!(out, "| {t} | {} |", cell(what));
        }
        if self.pinning.is_empty() {
            let _ = writeln!(
                out,
                "\nThe proxy did not pin sessions during this incident (pin policy other than \
                 `on_incident`)."
            );
        }
        out.push('\n');
    }

    fn cause(&self, out: &mut String) {
        let _ = writeln!(out, "## Root cause (the proxy's hint)\n");
        let _ = writeln!(
            out,
            "**`{}`**: {}\n",
            self.last.hint_code(),
            cell(self.last.hint_text())
        );
        let matrix = self
            .life()
            .and_then(|l| l.get("matrix"))
            .or_else(|| self.last.fields.get("matrix"))
            .and_then(Value::as_array);
        let cells: Vec<(&str, &str, u64, u64)> = matrix
            .into_iter()
            .flatten()
            .filter_map(|c| {
                Some((
                    c.get("issuer")?.as_str()?,
                    c.get("server")?.as_str()?,
                    c.get("requests").and_then(Value::as_u64).unwrap_or(0),
                    c.get("resets").and_then(Value::as_u64).unwrap_or(0),
                ))
            })
            .collect();
        if cells.is_empty() {
            let _ = writeln!(out, "The log holds no issuer x server matrix for it.\n");
            return;
        }
        let _ = writeln!(
            out,
            "Evidence: sessions lost over the whole incident, by the backend that issued the \
             session (rows) and the backend that answered (columns), as lost / requests:\n"
        );
        let issuers: BTreeSet<&str> = cells.iter().map(|c| c.0).collect();
        let servers: BTreeSet<&str> = cells.iter().map(|c| c.1).collect();
        let _ = write!(out, "| issuer \\ server |");
        for s in &servers {
            let _ = write!(out, " {} |", cell(s));
        }
        let _ = write!(out, "\n| --- |");
        for _ in &servers {
            out.push_str(" ---: |");
        }
        out.push('\n');
        for i in &issuers {
            let _ = write!(out, "| {} |", cell(i));
            for s in &servers {
                match cells.iter().find(|c| c.0 == *i && c.1 == *s) {
                    Some(c) => {
                        let _ = write!(out, " {} / {} |", c.3, c.2);
                    }
                    None => out.push_str(" - |"),
                }
            }
            out.push('\n');
        }
        let (cross, same): (u64, u64) = cells.iter().fold((0, 0), |(x, s), c| {
            if c.0 == c.1 {
                (x, s + c.3)
            } else {
                (x + c.3, s)
            }
        });
        let _ = writeln!(
            out,
            "\n{cross} losses across backends (issued on one, lost on another), {same} on the \
             backend that issued the session."
        );
        let (di, ds) = (
            self.last.str("dominant_issuer"),
            self.last.str("dominant_server"),
        );
        if !di.is_empty() && !ds.is_empty() {
            let _ = writeln!(out, "Most losses in the last window: {di} -> {ds}.");
        }
        out.push('\n');
    }

    fn actions(&self, out: &mut String, rescues: &[(SystemTime, Rescue)]) {
        let _ = writeln!(out, "## What the proxy did\n");
        let start = humantime::parse_rfc3339_weak(self.first.str("started")).ok();
        let end = self
            .resolved
            .and_then(|r| humantime::parse_rfc3339_weak(r.str("ended")).ok())
            .or(self.last.time);
        let started = self.pinning.iter().find(|p| p.kind == Kind::PinningStarted);
        let stopped = self.pinning.iter().find(|p| p.kind == Kind::PinningStopped);
        match (started, stopped) {
            (Some(a), Some(b)) => {
                let _ = writeln!(
                    out,
                    "- **Pins**: pinned every session to the backend that issued it from {} to \
                     {} (policy `{}`).",
                    a.str("time"),
                    b.str("time"),
                    a.str("policy")
                );
            }
            (Some(a), None) => {
                let _ = writeln!(
                    out,
                    "- **Pins**: pinned every session to the backend that issued it from {} \
                     (policy `{}`); still pinning at the log's last line.",
                    a.str("time"),
                    a.str("policy")
                );
            }
            _ => {
                let _ = writeln!(out, "- **Pins**: none for this incident.");
            }
        }
        let during: Vec<Rescue> = rescues
            .iter()
            .filter(|(t, _)| start.is_none_or(|s| *t >= s) && end.is_none_or(|e| *t <= e))
            .map(|r| r.1)
            .collect();
        if during.is_empty() {
            let _ = writeln!(
                out,
                "- **Rescues**: none (no request was replayed on its session's issuer)."
            );
        } else {
            let n = |k: Rescue| during.iter().filter(|r| **r == k).count();
            let _ = writeln!(
                out,
                "- **Rescues**: {} requests that lost their session were replayed on the backend \
                 that issued it: {} kept the session, {} still lost it, {} found the issuer \
                 unreachable.",
                during.len(),
                n(Rescue::Kept),
                n(Rescue::StillLost),
                n(Rescue::IssuerUnreachable)
            );
        }
        let suppressed = self.last.u64("suppressed");
        let _ = writeln!(
            out,
            "- **Alerts**: {} incident lines written{}.",
            self.line_count,
            if suppressed > 0 {
                format!("; {suppressed} reset lines held back by the rate limit")
            } else {
                String::new()
            }
        );
    }
}

/// Text made safe for a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::super::line::{Line, parse};
    use super::*;

    fn gathered(lines: &[&str]) -> Gathered {
        let mut g = Gathered::default();
        for l in lines {
            if let Line::Event { event, .. } = parse(l.as_bytes().to_vec()) {
                g.add(event);
            }
        }
        g
    }

    #[test]
    fn the_timeline_is_in_time_order_whatever_the_precision_of_its_times() {
        let g = gathered(&[
            r#"{"type":"incident_opened","time":"2026-01-14T09:00:02.000Z","incident_id":"i","started":"2026-01-14T09:00:02Z","incident":{"first_loss":"2026-01-14T09:00:01Z"}}"#,
            r#"{"type":"incident_resolved","time":"2026-01-14T09:00:30.050Z","incident_id":"i","started":"2026-01-14T09:00:02Z","ended":"2026-01-14T09:00:30Z","duration_s":28,"incident":{"first_loss":"2026-01-14T09:00:01Z","last_loss":"2026-01-14T09:00:10Z"}}"#,
            r#"{"type":"pinning_stopped","time":"2026-01-14T09:00:30.100Z","incident_id":"i","policy":"on_incident"}"#,
        ]);
        let md = g.draft(None, false).unwrap().markdown;
        let resolved = md.find("| 2026-01-14T09:00:30Z | Resolved").unwrap();
        let unpinned = md
            .find("| 2026-01-14T09:00:30.100Z | Pinning stopped")
            .unwrap();
        assert!(resolved < unpinned, "{md}");
    }

    #[test]
    fn fields_of_the_wrong_type_make_a_thinner_draft_not_a_panic() {
        let g = gathered(&[
            r#"{"type":"incident_opened","time":5,"incident_id":"i","started":[],"share":"x","matrix":7,"hint":"h","incident":"no"}"#,
            r#"{"type":"incident_updated","time":"2026-01-14T09:00:02Z","incident_id":"i","share":1e308,"incident":{"matrix":[{"issuer":1},{"issuer":"a","server":"b","requests":-1,"resets":"x"}],"peak_share":"p","requests":0}}"#,
            r#"{"type":"pinning_started","time":null,"incident_id":"i"}"#,
            r#"{"type":"session_rescued","time":"not a time"}"#,
        ]);
        let draft = g.draft(Some("i"), true).unwrap();
        assert!(
            draft.markdown.contains("| a | 0 / 0 |"),
            "{}",
            draft.markdown
        );
        assert!(draft.svg.ends_with("</svg>\n"));
        assert!(g.draft(Some("other"), false).is_err());
        assert!(Gathered::default().draft(None, false).is_err());
    }
}
