//! What an open incident has seen in all, from the window that opened it to its end: the
//! issuer x server matrix, a sample of the losses, the sessions affected, when the losses began
//! and stopped, and the peak share. The cause of an incident is judged on this, not on the last
//! window alone, so that an incident that is recovering (its window empties as the farm is fixed)
//! keeps the cause it had, and the line that resolves it tells the whole story.
//!
//! The cause is judged on the losses and on the requests up to the last second with a loss:
//! the clean traffic after a fix would otherwise dilute every pair's losses until no pattern
//! fits. When even that fits no pattern (the fix came pair by pair, say), the last cause a
//! window showed while the incident was open stands.

use std::collections::HashSet;

use crate::hint::{self, History, Loss};
use crate::{Hint, PairCounts, ShortFingerprint, Timestamp};

/// Losses kept as a sample for the cause: a reservoir, so a long incident's early losses weigh
/// as much as its late ones.
const LOSS_SAMPLE: usize = 4096;
/// Distinct lost sessions counted exactly up to this many; past it the count is a floor.
const SESSIONS_COUNTED: usize = 100_000;

/// An incident's whole life, for its lines and its postmortem.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentLife {
    /// Requests with a known session since the incident's first window.
    pub requests: u64,
    /// Resets since the incident's first window.
    pub resets: u64,
    /// The issuer x server matrix over the whole incident.
    pub matrix: Vec<PairCounts>,
    /// Distinct sessions lost (a floor once `sessions_capped`).
    pub sessions: u64,
    /// Whether more sessions were lost than are counted one by one.
    pub sessions_capped: bool,
    /// The first loss this tracker saw in the incident's first window, or after.
    pub first_loss: Option<Timestamp>,
    /// The last loss so far: once the losses stop, when they stopped.
    pub last_loss: Option<Timestamp>,
    /// The highest share the incident's window reached.
    pub peak_share: f64,
    /// When it reached it.
    pub peak_at: Timestamp,
}

/// The running totals behind [`IncidentLife`].
#[derive(Debug, Clone)]
pub(crate) struct Life {
    n: usize,
    requests: Vec<u64>,
    resets: Vec<u64>,
    /// `requests` as they were at the end of the last second with a loss.
    settled: Vec<u64>,
    /// Whether a loss came since the last [`Life::settle`].
    lost_since_settled: bool,
    /// The last cause a window showed while the incident was open.
    cause: Option<Hint>,
    losses: Vec<Loss>,
    seen_losses: u64,
    sessions: HashSet<ShortFingerprint>,
    sessions_capped: bool,
    first_loss: Option<Timestamp>,
    last_loss: Option<Timestamp>,
    peak_share: f64,
    peak_at: Timestamp,
}

impl Life {
    /// A life that starts with the window that opened the incident.
    pub(crate) fn open(
        n: usize,
        requests: Vec<u64>,
        resets: Vec<u64>,
        losses: Vec<Loss>,
        share: f64,
        now: Timestamp,
    ) -> Self {
        let seen_losses = losses.len() as u64;
        let mut losses = losses;
        losses.truncate(LOSS_SAMPLE);
        Self {
            n,
            settled: requests.clone(),
            lost_since_settled: false,
            cause: None,
            requests,
            resets,
            losses,
            seen_losses,
            sessions: HashSet::new(),
            sessions_capped: false,
            first_loss: None,
            last_loss: None,
            peak_share: share,
            peak_at: now,
        }
    }

    /// A lost session the window that opens the incident holds, or one lost since.
    pub(crate) fn note_session(&mut self, fingerprint: ShortFingerprint, at: Timestamp) {
        if self.sessions.len() < SESSIONS_COUNTED {
            self.sessions.insert(fingerprint);
        } else if !self.sessions.contains(&fingerprint) {
            self.sessions_capped = true;
        }
        self.first_loss = Some(self.first_loss.map_or(at, |f| f.min(at)));
        self.last_loss = Some(self.last_loss.map_or(at, |l| l.max(at)));
    }

    pub(crate) fn record_request(&mut self, slot: usize) {
        self.requests[slot] = self.requests[slot].saturating_add(1);
    }

    pub(crate) fn record_reset(&mut self, slot: usize, loss: Loss) {
        self.resets[slot] = self.resets[slot].saturating_add(1);
        self.lost_since_settled = true;
        self.seen_losses += 1;
        if self.losses.len() < LOSS_SAMPLE {
            self.losses.push(loss);
        } else {
            // Reservoir sampling (Algorithm R), with a hash of the count for its randomness:
            // the core reads no clock and no random source, and its results repeat.
            let j = mix(self.seen_losses) % self.seen_losses;
            if let Some(slot) = usize::try_from(j).ok().and_then(|j| self.losses.get_mut(j)) {
                *slot = loss;
            }
        }
    }

    pub(crate) fn note_share(&mut self, share: f64, now: Timestamp) {
        if share > self.peak_share {
            self.peak_share = share;
            self.peak_at = now;
        }
    }

    /// Once a second: the requests so far count toward the cause if a loss came with them.
    pub(crate) fn settle(&mut self) {
        if std::mem::take(&mut self.lost_since_settled) {
            self.settled.clone_from(&self.requests);
        }
    }

    /// A cause a window showed while the incident was open.
    pub(crate) fn note_cause(&mut self, cause: Hint) {
        self.cause = Some(cause);
    }

    /// The incident's cause, judged over its life.
    pub(crate) fn hint(&self, history: &History, now: Timestamp) -> Hint {
        let judged = hint::pairs(self.n, &self.settled, &self.resets);
        match hint::hint(&judged, &self.losses, history, now) {
            unclear @ Hint::Unclear { .. } => self.cause.clone().unwrap_or(unclear),
            h => h,
        }
    }

    /// Make room for `new` backends, keeping every count (see `IncidentTracker::grow`).
    pub(crate) fn grow(&mut self, new: usize) {
        let old = self.n;
        if new <= old {
            return;
        }
        for v in [&mut self.requests, &mut self.resets, &mut self.settled] {
            let mut grown = vec![0; new * new];
            for i in 0..old {
                grown[i * new..i * new + old].copy_from_slice(&v[i * old..(i + 1) * old]);
            }
            *v = grown;
        }
        self.n = new;
    }

    /// Some of the window's lost sessions were not kept one by one: the count is a floor.
    pub(crate) fn note_uncounted(&mut self) {
        self.sessions_capped = true;
    }

    pub(crate) fn summary(&self) -> IncidentLife {
        let matrix = hint::pairs(self.n, &self.requests, &self.resets);
        IncidentLife {
            requests: self.requests.iter().sum(),
            resets: self.resets.iter().sum(),
            matrix,
            sessions: self.sessions.len() as u64,
            sessions_capped: self.sessions_capped,
            first_loss: self.first_loss,
            last_loss: self.last_loss,
            peak_share: self.peak_share,
            peak_at: self.peak_at,
        }
    }
}

/// SplitMix64's finaliser: a well-spread hash of a counter.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
