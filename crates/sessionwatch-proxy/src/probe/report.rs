//! What a probe found: the matrix, the front door's count, the hint, or why it could not run;
//! as JSON (the shape the README documents) and as a table for people.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};
use sessionwatch_core::{BackendId, Hint, PairCounts, ResetSignal, ShortFingerprint};

/// The gate's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// Every session was kept everywhere (exit 0, HTTP 200).
    Kept,
    /// A session was lost (exit 1, HTTP 422).
    Lost,
    /// The probe could not run to the end (exit 2, HTTP 503).
    Failed,
}

impl ProbeOutcome {
    /// `kept`, `lost` or `failed`, as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeOutcome::Kept => "kept",
            ProbeOutcome::Lost => "lost",
            ProbeOutcome::Failed => "failed",
        }
    }
}

/// One issuer x server pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairResult {
    /// The backend the session was minted on.
    pub issuer: String,
    /// The backend it was replayed on.
    pub server: String,
    /// The session's short fingerprint.
    pub session: Option<ShortFingerprint>,
    /// Check requests sent.
    pub requests: u32,
    /// Of those, the ones whose answer showed the session lost.
    pub lost: u32,
    /// What showed the first loss.
    pub signal: Option<ResetSignal>,
    /// The status of the last answer.
    pub status: u16,
}

/// The front door's run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontDoorResult {
    /// Its URL.
    pub url: String,
    /// The session's short fingerprint.
    pub session: Option<ShortFingerprint>,
    /// Check requests sent with the one session.
    pub requests: u32,
    /// Of those, the ones whose answer showed the session lost.
    pub lost: u32,
    /// Losses by signal.
    pub signals: BTreeMap<&'static str, u32>,
    /// Answers by status.
    pub statuses: BTreeMap<u16, u32>,
}

/// What one run found.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// The check path.
    pub check: String,
    /// The backends probed, in order.
    pub backends: Vec<String>,
    /// The session minted on each backend.
    pub sessions: Vec<(String, Option<ShortFingerprint>)>,
    /// Every pair asked, issuer major.
    pub pairs: Vec<PairResult>,
    /// The front door's run, if it ran.
    pub front_door: Option<FrontDoorResult>,
    /// Why the probe could not run to the end.
    pub error: Option<String>,
    /// The hint, when a pair lost its session.
    pub hint: Option<Hint>,
    /// The run's time limit.
    pub timeout: Duration,
    /// How long it took.
    pub elapsed: Duration,
}

impl ProbeReport {
    pub(super) fn new(check: &str, timeout: Duration) -> Self {
        Self {
            check: check.to_owned(),
            backends: Vec::new(),
            sessions: Vec::new(),
            pairs: Vec::new(),
            front_door: None,
            error: None,
            hint: None,
            timeout,
            elapsed: Duration::ZERO,
        }
    }

    /// Reads the hint off the matrix, once the run is over.
    pub(super) fn finish(&mut self, elapsed: Duration) {
        self.elapsed = elapsed;
        if !self.pairs.iter().any(|p| p.lost > 0) {
            return;
        }
        let index = |name: &str| {
            self.backends
                .iter()
                .position(|b| b == name)
                .map_or(BackendId::UNKNOWN, super::id)
        };
        let matrix: Vec<PairCounts> = self
            .pairs
            .iter()
            .map(|p| PairCounts {
                issuer: index(&p.issuer),
                server: index(&p.server),
                requests: u64::from(p.requests),
                resets: u64::from(p.lost),
            })
            .collect();
        self.hint = Some(Hint::of_matrix(&matrix));
    }

    /// The gate's answer: could not run, else lost if any session was, else kept.
    pub fn outcome(&self) -> ProbeOutcome {
        let lost = self.pairs.iter().any(|p| p.lost > 0)
            || self.front_door.as_ref().is_some_and(|f| f.lost > 0);
        match (&self.error, lost) {
            (Some(_), _) => ProbeOutcome::Failed,
            (None, true) => ProbeOutcome::Lost,
            (None, false) => ProbeOutcome::Kept,
        }
    }

    /// The hint's sentence, naming backends as the report does.
    pub fn hint_text(&self) -> Option<String> {
        let names = &self.backends;
        self.hint.as_ref().map(|h| {
            h.text(&|b: BackendId| {
                names
                    .get(b.index())
                    .cloned()
                    .unwrap_or_else(|| "unknown".into())
            })
        })
    }

    /// The report as JSON (documented in the README, "The deploy gate").
    pub fn to_json(&self) -> Value {
        let fp = |f: &Option<ShortFingerprint>| f.map(|f| f.to_string());
        let pairs: Vec<Value> = self
            .pairs
            .iter()
            .map(|p| {
                json!({
                    "issuer": p.issuer,
                    "server": p.server,
                    "kept": p.lost == 0,
                    "requests": p.requests,
                    "lost": p.lost,
                    "signal": p.signal.map(ResetSignal::as_str),
                    "status": p.status,
                    "session": fp(&p.session),
                })
            })
            .collect();
        let lost_pairs: Vec<Value> = self
            .pairs
            .iter()
            .filter(|p| p.lost > 0)
            .map(|p| json!([p.issuer, p.server]))
            .collect();
        let front_door = self.front_door.as_ref().map(|f| {
            json!({
                "url": f.url,
                "session": fp(&f.session),
                "requests": f.requests,
                "lost": f.lost,
                "signals": f.signals,
                "statuses": f.statuses.iter().map(|(s, n)| (s.to_string(), *n)).collect::<BTreeMap<_, _>>(),
            })
        });
        json!({
            "result": self.outcome().as_str(),
            "check": self.check,
            "backends": self.backends,
            "pairs": pairs,
            "lost_pairs": lost_pairs,
            "hint": self.hint.as_ref().map(|h| json!({"code": h.code(), "text": self.hint_text()})),
            "front_door": front_door,
            "error": self.error,
            "timeout_ms": self.timeout.as_millis() as u64,
            "elapsed_ms": self.elapsed.as_millis() as u64,
        })
    }

    /// The report for people: the matrix as a table, then the verdict and the hint.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_table(&mut out);
        out.lines().map(|l| format!("{}\n", l.trim_end())).collect()
    }

    fn write_table(&self, out: &mut String) -> std::fmt::Result {
        if !self.backends.is_empty() {
            writeln!(
                out,
                "GET {} with a session minted on each of {} backends, {} times on each:",
                self.check,
                self.backends.len(),
                super::run::ROUNDS
            )?;
            let cell = |issuer: &str, server: &str| match self
                .pairs
                .iter()
                .find(|p| p.issuer == issuer && p.server == server)
            {
                None => "-".to_owned(),
                Some(p) if p.lost == 0 => "kept".to_owned(),
                Some(p) => format!(
                    "LOST {}/{} ({})",
                    p.lost,
                    p.requests,
                    p.signal.map_or("?", ResetSignal::as_str)
                ),
            };
            let corner = "issuer \\ server";
            let first = self.backends.iter().map(String::len).max().unwrap_or(0);
            let mut widths: Vec<usize> = vec![first.max(corner.len())];
            for server in &self.backends {
                let w = self
                    .backends
                    .iter()
                    .map(|i| cell(i, server).len())
                    .max()
                    .unwrap_or(0)
                    .max(server.len());
                widths.push(w);
            }
            write!(out, "  {corner:<w$}", w = widths[0])?;
            for (server, w) in self.backends.iter().zip(&widths[1..]) {
                write!(out, "  {server:<w$}")?;
            }
            writeln!(out)?;
            for issuer in &self.backends {
                write!(out, "  {issuer:<w$}", w = widths[0])?;
                for (server, w) in self.backends.iter().zip(&widths[1..]) {
                    write!(out, "  {:<w$}", cell(issuer, server))?;
                }
                writeln!(out)?;
            }
            for (backend, session) in &self.sessions {
                if let Some(fp) = session {
                    writeln!(out, "  session minted on {backend}: {fp}")?;
                }
            }
        }
        if let Some(f) = &self.front_door {
            writeln!(
                out,
                "through {}: {} of {} requests lost the session{}",
                f.url,
                f.lost,
                f.requests,
                if f.signals.is_empty() {
                    String::new()
                } else {
                    let by: Vec<String> =
                        f.signals.iter().map(|(s, n)| format!("{s} {n}")).collect();
                    format!(" ({})", by.join(", "))
                }
            )?;
        }
        let lost = self.pairs.iter().filter(|p| p.lost > 0).count();
        match self.outcome() {
            ProbeOutcome::Kept => {
                writeln!(out, "kept: every session survived everywhere it was tried")?
            }
            ProbeOutcome::Lost => {
                writeln!(
                    out,
                    "LOST: {lost} of {} pairs lose the session",
                    self.pairs.len()
                )?;
            }
            ProbeOutcome::Failed => writeln!(
                out,
                "the probe could not run: {}",
                self.error.as_deref().unwrap_or("unknown")
            )?,
        }
        if let (Some(h), Some(text)) = (&self.hint, self.hint_text()) {
            writeln!(out, "hint ({}): {text}", h.code())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(issuer: &str, server: &str, lost: u32) -> PairResult {
        PairResult {
            issuer: issuer.into(),
            server: server.into(),
            session: None,
            requests: 3,
            lost,
            signal: (lost > 0).then_some(ResetSignal::Reissued),
            status: if lost > 0 { 302 } else { 200 },
        }
    }

    fn report(lost_across: bool) -> ProbeReport {
        let mut r = ProbeReport::new("/me", Duration::from_secs(30));
        r.backends = vec!["a".into(), "b".into()];
        let l = u32::from(lost_across) * 3;
        r.pairs = vec![
            pair("a", "a", 0),
            pair("a", "b", l),
            pair("b", "a", l),
            pair("b", "b", 0),
        ];
        r.finish(Duration::from_millis(5));
        r
    }

    #[test]
    fn the_outcome_is_failed_over_lost_over_kept_and_the_hint_comes_with_a_loss() {
        let kept = report(false);
        assert_eq!(kept.outcome(), ProbeOutcome::Kept);
        assert_eq!(kept.hint, None);
        assert_eq!(kept.to_json()["lost_pairs"], serde_json::json!([]));

        let mut lost = report(true);
        assert_eq!(lost.outcome(), ProbeOutcome::Lost);
        assert_eq!(lost.hint, Some(Hint::StoreNotShared));
        let json = lost.to_json();
        assert_eq!(json["result"], "lost");
        assert_eq!(
            json["lost_pairs"],
            serde_json::json!([["a", "b"], ["b", "a"]])
        );
        assert_eq!(json["pairs"][1]["signal"], "reissued");
        let table = lost.to_table();
        assert!(table.contains("LOST 3/3 (reissued)"), "{table}");
        assert!(
            table.contains("hint (store_not_shared): every loss"),
            "{table}"
        );
        assert!(table.lines().all(|l| l == l.trim_end()), "{table}");

        lost.error = Some("b is unreachable".into());
        assert_eq!(lost.outcome(), ProbeOutcome::Failed);
        assert_eq!(lost.to_json()["result"], "failed");
    }
}
