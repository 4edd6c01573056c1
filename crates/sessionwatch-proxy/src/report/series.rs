//! What the status page draws beside the incident window: the share of known-session requests
//! that lost their session over the last 15 minutes, one point per 10 seconds, and the last
//! resets seen (fingerprints only).
//!
//! Both are fixed-size rings fed under the incident watch's lock, with the time given by the
//! caller (an observation's own time), so they hold at most [`POINTS`] buckets and
//! [`RECENT_RESETS`] resets whatever the traffic, and a test moves time by hand.

use std::collections::VecDeque;

use serde::Serialize;
use sessionwatch_core::{ShortFingerprint, Timestamp};

/// How long one point of the series covers.
pub(crate) const STEP_MS: u64 = 10_000;
/// Points in the series: 15 minutes of them.
pub(crate) const POINTS: usize = 90;
/// Resets kept for the status page.
pub(crate) const RECENT_RESETS: usize = 20;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which step since the epoch it counts (`at / STEP_MS`); a slot holding an older step is
    /// stale and read as empty.
    step: u64,
    requests: u64,
    resets: u64,
}

/// One point of the series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct SharePoint {
    /// Start of the step, in milliseconds since the Unix epoch.
    pub t: u64,
    /// Requests with a known session in the step (those that count in the share).
    pub requests: u64,
    /// Those whose session was lost.
    pub resets: u64,
    /// `resets / requests` (0 for a step without requests), to four places.
    pub share: f64,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct ShareSeries {
    buckets: [Bucket; POINTS],
}

impl Default for ShareSeries {
    fn default() -> Self {
        Self {
            buckets: [Bucket::default(); POINTS],
        }
    }
}

impl ShareSeries {
    /// Count one request with a known session `at`, `lost` or not.
    pub(crate) fn record(&mut self, at: Timestamp, lost: bool) {
        let step = at.as_millis() / STEP_MS;
        // The modulo keeps the index below POINTS.
        let slot = &mut self.buckets[(step % POINTS as u64) as usize];
        if slot.step != step {
            *slot = Bucket {
                step,
                ..Bucket::default()
            };
        }
        slot.requests += 1;
        slot.resets += u64::from(lost);
    }

    /// The last [`POINTS`] steps up to the one `now` falls in, oldest first; steps without
    /// traffic are points of zero.
    pub(crate) fn points(&self, now: Timestamp) -> Vec<SharePoint> {
        let last = now.as_millis() / STEP_MS;
        let first = last.saturating_sub(POINTS as u64 - 1);
        (first..=last)
            .map(|step| {
                let b = self.buckets[(step % POINTS as u64) as usize];
                let (requests, resets) = if b.step == step {
                    (b.requests, b.resets)
                } else {
                    (0, 0)
                };
                let share = if requests == 0 {
                    0.0
                } else {
                    (resets as f64 / requests as f64 * 10_000.0).round() / 10_000.0
                };
                SharePoint {
                    t: step * STEP_MS,
                    requests,
                    resets,
                    share,
                }
            })
            .collect()
    }
}

/// One reset as the status page lists it: no raw session id, only its short fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct RecentReset {
    /// When it was seen (RFC 3339).
    pub time: String,
    /// The session's short fingerprint.
    pub session: String,
    /// What showed the loss.
    pub signal: &'static str,
    /// The backend that issued the session.
    pub issuer: String,
    /// The backend that answered it lost.
    pub server: String,
}

/// The last [`RECENT_RESETS`] resets, newest last.
#[derive(Debug, Default)]
pub(crate) struct RecentResets {
    resets: VecDeque<(Timestamp, ShortFingerprint, &'static str, u16, u16)>,
}

impl RecentResets {
    /// Keep one reset (issuer and server as backend indexes), dropping the oldest past the
    /// bound.
    pub(crate) fn push(
        &mut self,
        at: Timestamp,
        session: ShortFingerprint,
        signal: &'static str,
        issuer: u16,
        server: u16,
    ) {
        if self.resets.len() == RECENT_RESETS {
            self.resets.pop_front();
        }
        self.resets.push_back((at, session, signal, issuer, server));
    }

    /// The resets kept, newest first, with backend names from `name`.
    pub(crate) fn list(&self, name: &dyn Fn(u16) -> String) -> Vec<RecentReset> {
        self.resets
            .iter()
            .rev()
            .map(|&(at, session, signal, issuer, server)| RecentReset {
                time: humantime::format_rfc3339_millis(std::time::SystemTime::from(at)).to_string(),
                session: session.to_string(),
                signal,
                issuer: name(issuer),
                server: name(server),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use sessionwatch_core::Fingerprint;

    use super::*;

    /// 2100-01-01T00:00:00Z, a whole step.
    const T0: u64 = 4_102_444_800_000;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(T0 + ms)
    }

    #[test]
    fn the_series_counts_per_step_and_forgets_what_is_older_than_fifteen_minutes() {
        let mut s = ShareSeries::default();
        // Step 0: 4 requests, 1 lost; step 2: 2 requests, both lost.
        for lost in [false, true, false, false] {
            s.record(at(1_000), lost);
        }
        s.record(at(20_000), true);
        s.record(at(29_999), true);
        let p = s.points(at(29_999));
        assert_eq!(p.len(), POINTS);
        let last = &p[POINTS - 3..];
        assert_eq!(last[0].t, T0);
        assert_eq!(
            (last[0].requests, last[0].resets, last[0].share),
            (4, 1, 0.25)
        );
        assert_eq!((last[1].requests, last[1].share), (0, 0.0));
        assert_eq!(last[2].t, T0 + 20_000);
        assert_eq!(
            (last[2].requests, last[2].resets, last[2].share),
            (2, 2, 1.0)
        );
        assert!(p[..POINTS - 3].iter().all(|p| p.requests == 0));

        // 15 minutes on, step 0 has just left the series; step 2 is its oldest point.
        let p = s.points(at(20_000 + (POINTS as u64 - 1) * STEP_MS));
        assert_eq!(p[0].t, T0 + 20_000);
        assert_eq!(p[0].resets, 2);
        assert_eq!(p.iter().map(|p| p.requests).sum::<u64>(), 2);
        // A request in a slot that held step 0 starts it again instead of adding to it.
        s.record(at(POINTS as u64 * STEP_MS), false);
        let p = s.points(at(POINTS as u64 * STEP_MS));
        assert_eq!((p[POINTS - 1].requests, p[POINTS - 1].resets), (1, 0));
    }

    #[test]
    fn recent_resets_keep_the_last_twenty_newest_first() {
        let mut r = RecentResets::default();
        for i in 0..25u64 {
            r.push(
                at(i),
                Fingerprint(u128::from(i)).short(),
                "login_redirect",
                0,
                1,
            );
        }
        let name = |i: u16| format!("node-{i}");
        let list = r.list(&name);
        assert_eq!(list.len(), RECENT_RESETS);
        assert_eq!(list[0].session, Fingerprint(24).short().to_string());
        assert_eq!(list[19].session, Fingerprint(5).short().to_string());
        assert_eq!(
            (list[0].issuer.as_str(), list[0].server.as_str()),
            ("node-0", "node-1")
        );
        assert_eq!(list[0].time, "2100-01-01T00:00:00.024Z");
    }
}
