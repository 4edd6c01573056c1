//! One backend's answer statistics, as an operator reads them on the status page (HAProxy's
//! stats page, Envoy's `/clusters`): requests, answers by status class, answers the proxy had to
//! make itself, pins, total answer time, sessions issued and lost, and its health checks.
//!
//! Counting costs the request path a few relaxed atomic adds, made where the answer's head is
//! known (the route step, which both the plain HTTP/1.1 path and hyper's path go through).
//! The counters only ever grow and are read apart from each other, so a reader may see a request
//! counted a moment before its answer is: nothing here needs the counts to agree to the unit.
//!
//! Health is written by the checker and by transitions only (once a check interval at most), so
//! it sits behind a small lock that the request path never takes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;
use sessionwatch_core::Timestamp;

use crate::metrics::class_index;

/// What the last active health check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CheckResult {
    /// A 2xx or 3xx answer, read whole in time.
    Passed(StatusCode),
    /// An answer of another status.
    Failed(StatusCode),
    /// No answer (or not its whole body) within the check's timeout.
    TimedOut,
    /// The exchange failed: no connection, or a broken answer.
    Unreachable,
}

impl CheckResult {
    /// Whether the check passed.
    pub(crate) fn passed(self) -> bool {
        matches!(self, CheckResult::Passed(_))
    }

    /// The result in words, for `/status` (`"passed: 200"`, `"failed: 503"`, `"timed out"`, ...).
    pub(crate) fn describe(self) -> String {
        match self {
            CheckResult::Passed(s) => format!("passed: {}", s.as_u16()),
            CheckResult::Failed(s) => format!("failed: {}", s.as_u16()),
            CheckResult::TimedOut => "timed out".to_owned(),
            CheckResult::Unreachable => "unreachable".to_owned(),
        }
    }
}

/// The health history the status page shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HealthRecord {
    /// The last active check, and when it finished.
    pub last_check: Option<(CheckResult, Timestamp)>,
    /// When the backend's health last changed, and why (none since it was added).
    pub changed: Option<(Timestamp, &'static str)>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct AnswerStats {
    requests: AtomicU64,
    classes: [AtomicU64; 5],
    proxy_answered: AtomicU64,
    answer_micros: AtomicU64,
    pins: AtomicU64,
    sessions_issued: AtomicU64,
    sessions_lost: AtomicU64,
    issued_lost: AtomicU64,
    health: Mutex<HealthRecord>,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct StatsSnapshot {
    /// Requests sent to the backend.
    pub requests: u64,
    /// Answers it gave, by class (see [`crate::metrics::CLASSES`]).
    pub classes: [u64; 5],
    /// Requests it failed (no connection, a timeout, a broken answer) that the proxy answered
    /// itself, with a 502 or 504: never in `classes`, which count the backend's own answers.
    pub proxy_answered: u64,
    /// Microseconds from sending each answered request to its answer's head, summed.
    pub answer_micros: u64,
    /// Requests routed to it because their session was pinned to it.
    pub pins: u64,
    /// Sessions its answers issued (new session cookies; a renewal of a known one is not a new
    /// session).
    pub sessions_issued: u64,
    /// Sessions it answered as lost (whoever issued them).
    pub sessions_lost: u64,
    /// Sessions it issued that a backend (itself or another) answered as lost.
    pub issued_lost: u64,
}

impl StatsSnapshot {
    /// Answers the backend gave (every class).
    pub(crate) fn answers(&self) -> u64 {
        self.classes.iter().sum()
    }

    /// The mean time to an answer's head, in milliseconds (none before an answer).
    pub(crate) fn average_answer_ms(&self) -> Option<f64> {
        let answers = self.answers();
        (answers > 0).then(|| self.answer_micros as f64 / answers as f64 / 1000.0)
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl AnswerStats {
    /// A request was sent to the backend.
    #[inline]
    pub(crate) fn request(&self) {
        add(&self.requests, 1);
    }

    /// The backend answered `status` after `took`.
    #[inline]
    pub(crate) fn answered(&self, status: StatusCode, took: Duration) {
        add(&self.classes[class_index(status)], 1);
        add(
            &self.answer_micros,
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        );
    }

    /// The exchange failed and the proxy answered for the backend.
    pub(crate) fn proxy_answered(&self) {
        add(&self.proxy_answered, 1);
    }

    /// A pinned session's request was routed here.
    pub(crate) fn pinned(&self) {
        add(&self.pins, 1);
    }

    /// An answer of the backend issued `n` sessions.
    pub(crate) fn issued(&self, n: u64) {
        add(&self.sessions_issued, n);
    }

    /// The backend answered a session as lost.
    pub(crate) fn lost_here(&self) {
        add(&self.sessions_lost, 1);
    }

    /// A session the backend issued was lost.
    pub(crate) fn issued_was_lost(&self) {
        add(&self.issued_lost, 1);
    }

    /// The counters now.
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            requests: load(&self.requests),
            classes: self.classes.each_ref().map(load),
            proxy_answered: load(&self.proxy_answered),
            answer_micros: load(&self.answer_micros),
            pins: load(&self.pins),
            sessions_issued: load(&self.sessions_issued),
            sessions_lost: load(&self.sessions_lost),
            issued_lost: load(&self.issued_lost),
        }
    }

    fn health_lock(&self) -> std::sync::MutexGuard<'_, HealthRecord> {
        // The record is two plain values: a panic while writing it cannot leave it unusable.
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An active check finished `at` with `result`.
    pub(crate) fn checked(&self, result: CheckResult, at: Timestamp) {
        self.health_lock().last_check = Some((result, at));
    }

    /// The backend's health changed `at`, for `why`.
    pub(crate) fn health_changed(&self, at: Timestamp, why: &'static str) {
        self.health_lock().changed = Some((at, why));
    }

    /// Its health history.
    pub(crate) fn health(&self) -> HealthRecord {
        *self.health_lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_falls_in_one_class_and_answers_add_up() {
        let s = AnswerStats::default();
        for (code, took) in [(101, 1), (200, 2), (204, 3), (302, 4), (404, 5), (503, 6)] {
            s.request();
            s.answered(
                StatusCode::from_u16(code).unwrap(),
                Duration::from_millis(took),
            );
        }
        s.request();
        s.proxy_answered();
        let snap = s.snapshot();
        assert_eq!(snap.requests, 7);
        assert_eq!(snap.classes, [1, 2, 1, 1, 1]);
        assert_eq!(snap.answers(), 6);
        assert_eq!(
            snap.proxy_answered, 1,
            "the proxy's own answer is no class's"
        );
        assert_eq!(snap.answer_micros, 21_000);
        assert_eq!(snap.average_answer_ms(), Some(3.5));
        assert_eq!(class_index(StatusCode::from_u16(999).unwrap()), 4);
        assert_eq!(AnswerStats::default().snapshot().average_answer_ms(), None);
    }

    #[test]
    fn the_health_record_keeps_the_last_check_and_the_last_change() {
        let s = AnswerStats::default();
        assert_eq!(s.health(), HealthRecord::default());
        let (t1, t2) = (Timestamp::from_millis(1_000), Timestamp::from_millis(2_000));
        s.checked(CheckResult::Failed(StatusCode::SERVICE_UNAVAILABLE), t1);
        s.health_changed(t1, "health checks fail");
        s.checked(CheckResult::TimedOut, t2);
        let h = s.health();
        assert_eq!(h.last_check, Some((CheckResult::TimedOut, t2)));
        assert_eq!(h.changed, Some((t1, "health checks fail")));
        assert_eq!(
            CheckResult::Failed(StatusCode::SERVICE_UNAVAILABLE).describe(),
            "failed: 503"
        );
        assert!(!CheckResult::TimedOut.passed());
    }
}
