//! What the soak counts: how each request ended, and the summary the run prints and judges.

use std::collections::BTreeMap;
use std::time::Duration;

/// How one request ended.
pub(crate) enum Outcome {
    /// The right answer.
    Ok,
    /// The end a backend fault should have (a 502, or an answer cut short).
    ExpectedFault(&'static str),
    /// An answer that is not this request's: the one thing that must never happen.
    Mismatch(String),
    /// Something went wrong without a wrong answer (a status, a cut, a timeout).
    Error(String),
}

/// Counts, for the summary.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    /// Requests by kind.
    pub(crate) by_kind: BTreeMap<&'static str, u64>,
    /// Right answers.
    pub(crate) ok: u64,
    /// Faults the backend caused, ended as they should be, by how.
    pub(crate) expected_faults: BTreeMap<&'static str, u64>,
    /// Answers that were not the request's own.
    pub(crate) mismatches: u64,
    /// The first few of them.
    pub(crate) mismatch_samples: Vec<String>,
    /// Everything else, by kind of request and what happened.
    pub(crate) errors: BTreeMap<String, u64>,
}

impl Summary {
    /// Count one request of kind `kind` (its name) and how it ended.
    pub(crate) fn record(&mut self, kind: &'static str, outcome: Outcome) {
        *self.by_kind.entry(kind).or_default() += 1;
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::ExpectedFault(how) => *self.expected_faults.entry(how).or_default() += 1,
            Outcome::Mismatch(what) => {
                self.mismatches += 1;
                if self.mismatch_samples.len() < 20 {
                    self.mismatch_samples.push(format!("{kind}: {what}"));
                }
            }
            Outcome::Error(what) => *self.errors.entry(format!("{kind}: {what}")).or_default() += 1,
        }
    }

    /// Add what another connection counted.
    pub(crate) fn merge(&mut self, other: Summary) {
        for (k, n) in other.by_kind {
            *self.by_kind.entry(k).or_default() += n;
        }
        self.ok += other.ok;
        for (k, n) in other.expected_faults {
            *self.expected_faults.entry(k).or_default() += n;
        }
        self.mismatches += other.mismatches;
        let room = 20usize.saturating_sub(self.mismatch_samples.len());
        self.mismatch_samples
            .extend(other.mismatch_samples.into_iter().take(room));
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
    }

    /// Requests made.
    pub(crate) fn requests(&self) -> u64 {
        self.by_kind.values().sum()
    }

    /// The summary as text, for a run of `connections` connections that took `elapsed`.
    pub(crate) fn render(&self, connections: usize, elapsed: Duration) -> String {
        let mut out = String::new();
        let requests = self.requests();
        let secs = elapsed.as_secs_f64().max(0.001);
        out.push_str(&format!(
            "soak client: {:.0} s, {} connections, {requests} requests ({:.0}/s)\n",
            secs,
            connections,
            requests as f64 / secs
        ));
        out.push_str("requests by kind:\n");
        for (k, n) in &self.by_kind {
            out.push_str(&format!("  {k:<28} {n}\n"));
        }
        out.push_str(&format!("right answers: {}\n", self.ok));
        out.push_str("backend faults ended as they should:\n");
        if self.expected_faults.is_empty() {
            out.push_str("  none\n");
        }
        for (k, n) in &self.expected_faults {
            out.push_str(&format!("  {k:<28} {n}\n"));
        }
        out.push_str(&format!("mismatches: {}\n", self.mismatches));
        for m in &self.mismatch_samples {
            out.push_str(&format!("  {m}\n"));
        }
        out.push_str("errors by kind:");
        if self.errors.is_empty() {
            out.push_str(" none\n");
        } else {
            out.push('\n');
            for (k, n) in &self.errors {
                out.push_str(&format!("  {k:<40} {n}\n"));
            }
        }
        out
    }
}
