//! Incidents: resets counted in a sliding window, opened and resolved on a share threshold, with
//! a root-cause hint read from the issuer x server matrix.

use std::time::Duration;

/// When an incident opens, updates and resolves.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentConfig {
    /// How far back resets and requests are counted.
    pub window: Duration,
    /// Requests with a known session needed in the window before a share means anything.
    pub min_requests: u64,
    /// Resets needed in the window to open an incident.
    pub min_resets: u64,
    /// Share of requests with a known session that were resets, at or above which an incident
    /// opens.
    pub threshold: f64,
    /// At most one `incident_updated` line this often while open.
    pub update_every: Duration,
    /// An open incident resolves once the share has stayed below the threshold this long.
    pub resolve_after: Duration,
    /// Per-event alert lines (`session_reset`, `session_rescued`) allowed per second while an
    /// incident is open; the rest are counted as suppressed.
    pub max_reset_lines_per_sec: u32,
}

impl Default for IncidentConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(30),
            min_requests: 20,
            min_resets: 5,
            threshold: 0.05,
            update_every: Duration::from_secs(10),
            resolve_after: Duration::from_secs(30),
            max_reset_lines_per_sec: 20,
        }
    }
}

use std::collections::VecDeque;

use crate::{BackendId, ShortFingerprint, Timestamp};

/// Requests and resets for one (issuer, server) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairCounts {
    /// The backend that issued the sessions.
    pub issuer: BackendId,
    /// The backend that served the requests.
    pub server: BackendId,
    /// Requests that carried a known, live session.
    pub requests: u64,
    /// Of those, the ones where the session was lost.
    pub resets: u64,
}

/// Which way a misconfigured backend fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// It rejects sessions issued by the others.
    RejectsOthers,
    /// The others reject sessions it issued.
    RejectedByOthers,
    /// Both.
    Both,
}

/// The likely cause, read from the pattern of losses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Hint {
    /// Losses only where issuer != server, across the farm: the store or keys are not shared.
    StoreNotShared,
    /// Losses only on pairs that involve one backend.
    BackendDiffers {
        /// The odd one out.
        backend: BackendId,
        /// How it fails.
        direction: Direction,
    },
    /// Losses on the issuing backend right after it came back: an in-process store.
    LostOnRestart {
        /// The backend that restarted.
        backend: BackendId,
    },
    /// Losses cluster at one idle time or session age: a timeout shorter than users expect.
    Timeout {
        /// The typical idle time or age at loss.
        at: Duration,
        /// Whether it is idle time (true) or total session age (false).
        idle: bool,
    },
    /// No pattern fits.
    Unclear {
        /// Cross-backend resets in the window.
        cross: u64,
        /// Same-backend resets in the window.
        same: u64,
    },
}

impl Hint {
    /// A stable identifier for machines (alert labels, tests).
    pub fn code(&self) -> &'static str {
        match self {
            Hint::StoreNotShared => "store_not_shared",
            Hint::BackendDiffers { .. } => "backend_differs",
            Hint::LostOnRestart { .. } => "lost_on_restart",
            Hint::Timeout { .. } => "timeout_too_short",
            Hint::Unclear { .. } => "unclear",
        }
    }

    /// The sentence for people; `name` maps backend ids to names.
    pub fn text(&self, name: &dyn Fn(BackendId) -> String) -> String {
        match *self {
            Hint::StoreNotShared => "every loss is a session issued by one backend and rejected by another: the session store or its keys are not shared across the farm".to_owned(),
            Hint::BackendDiffers { backend, direction } => {
                let b = name(backend);
                let how = match direction {
                    Direction::RejectsOthers => format!("{b} rejects sessions issued by the other backends"),
                    Direction::RejectedByOthers => format!("sessions issued by {b} are rejected by the other backends"),
                    Direction::Both => format!("{b} rejects the other backends' sessions and they reject its sessions"),
                };
                format!("{how}, while the others accept each other's: {b}'s configuration differs (session store, data-protection keys or secret)")
            }
            Hint::LostOnRestart { backend } => {
                let b = name(backend);
                format!("sessions are lost on the backend that issued them, right after {b} restarted: its session store is in-process and was lost on restart")
            }
            Hint::Timeout { at, idle } => {
                let what = if idle { "idle time" } else { "session age" };
                format!("losses cluster at about {}s of {what}: the application's timeout is shorter than users expect", at.as_secs())
            }
            Hint::Unclear { cross, same } => format!("no single pattern fits ({cross} cross-backend and {same} same-backend losses spread over several backends); look at the matrix"),
        }
    }
}

/// The state of an incident, for alert lines and sinks.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentSnapshot {
    /// When it opened.
    pub started: Timestamp,
    /// Share of requests with a known session that were resets, in the window.
    pub share: f64,
    /// Requests with a known session in the window.
    pub requests: u64,
    /// Resets in the window.
    pub resets: u64,
    /// Resets since the incident opened.
    pub total_resets: u64,
    /// Per-reset lines not written since it opened.
    pub suppressed: u64,
    /// Every pair seen in the window.
    pub matrix: Vec<PairCounts>,
    /// The likely cause.
    pub hint: Hint,
    /// The pair with most resets, when it holds most of them.
    pub dominant: Option<(BackendId, BackendId)>,
    /// A few fingerprints of lost sessions.
    pub samples: Vec<ShortFingerprint>,
}

/// A change in incident state.
#[derive(Debug, Clone, PartialEq)]
pub enum IncidentEvent {
    /// The share crossed the threshold.
    Opened(IncidentSnapshot),
    /// Still open; periodic update.
    Updated(IncidentSnapshot),
    /// Stayed below the threshold long enough.
    Resolved(IncidentSnapshot),
}

#[derive(Debug, Clone)]
struct Bucket {
    second: u64,
    requests: Vec<u32>,
    resets: Vec<u32>,
    /// (idle ms, age ms, server) of resets, capped.
    losses: Vec<(u64, u64, BackendId, BackendId)>,
}

const LOSS_SAMPLES_PER_SECOND: usize = 64;
const FINGERPRINT_SAMPLES: usize = 5;

#[derive(Debug, Clone)]
struct Open {
    started: Timestamp,
    last_update: Timestamp,
    below_since: Option<Timestamp>,
    total_resets: u64,
    suppressed: u64,
    line_second: u64,
    lines_this_second: u32,
}

/// Counts requests and resets per (issuer, server) pair in a sliding window of one-second
/// buckets and decides when an incident opens, updates and resolves. Sans-I/O: every method
/// takes the time.
#[derive(Debug, Clone)]
pub struct IncidentTracker {
    config: IncidentConfig,
    n: usize,
    buckets: VecDeque<Bucket>,
    restarts: Vec<Option<Timestamp>>,
    samples: VecDeque<ShortFingerprint>,
    open: Option<Open>,
}

impl IncidentTracker {
    /// A tracker for a farm of `backends` backends.
    pub fn new(config: IncidentConfig, backends: usize) -> Self {
        Self {
            config,
            n: backends.max(1),
            buckets: VecDeque::new(),
            restarts: vec![None; backends.max(1)],
            samples: VecDeque::new(),
            open: None,
        }
    }

    /// Whether an incident is open.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    fn slot(&self, issuer: BackendId, server: BackendId) -> Option<usize> {
        let (i, s) = (issuer.index(), server.index());
        (i < self.n && s < self.n).then_some(i * self.n + s)
    }

    fn bucket(&mut self, now: Timestamp) -> &mut Bucket {
        let second = now.as_secs();
        let window = self.config.window.as_secs().max(1);
        while self
            .buckets
            .front()
            .is_some_and(|b| b.second + window <= second)
        {
            self.buckets.pop_front();
        }
        if self.buckets.back().is_none_or(|b| b.second < second) {
            self.buckets.push_back(Bucket {
                second,
                requests: vec![0; self.n * self.n],
                resets: vec![0; self.n * self.n],
                losses: Vec::new(),
            });
        }
        // A late event (clock step back) lands in the newest bucket rather than being lost.
        let last = self.buckets.len() - 1;
        &mut self.buckets[last]
    }

    /// A request that carried a known, live session (reset or not).
    pub fn record_request(&mut self, issuer: BackendId, server: BackendId, now: Timestamp) {
        let Some(slot) = self.slot(issuer, server) else {
            return;
        };
        let b = self.bucket(now);
        b.requests[slot] = b.requests[slot].saturating_add(1);
    }

    /// A reset (call [`IncidentTracker::record_request`] for the same request too). Returns
    /// whether its alert line may be written: while an incident is open, lines are capped per
    /// second and the rest counted as suppressed.
    pub fn record_reset(
        &mut self,
        issuer: BackendId,
        server: BackendId,
        idle: Duration,
        age: Duration,
        fingerprint: ShortFingerprint,
        now: Timestamp,
    ) -> bool {
        if let Some(slot) = self.slot(issuer, server) {
            let b = self.bucket(now);
            b.resets[slot] = b.resets[slot].saturating_add(1);
            if b.losses.len() < LOSS_SAMPLES_PER_SECOND {
                b.losses.push((millis(idle), millis(age), issuer, server));
            }
        }
        if self.samples.len() == FINGERPRINT_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(fingerprint);
        if let Some(open) = self.open.as_mut() {
            open.total_resets += 1;
        }
        self.allow_line(now)
    }

    /// Whether one more per-event alert line (a reset or a rescue) may be written now: while an
    /// incident is open, lines are capped per second and the rest counted as suppressed.
    pub fn allow_line(&mut self, now: Timestamp) -> bool {
        let cap = self.config.max_reset_lines_per_sec;
        let Some(open) = self.open.as_mut() else {
            return true;
        };
        let second = now.as_secs();
        if open.line_second != second {
            open.line_second = second;
            open.lines_this_second = 0;
        }
        if open.lines_this_second < cap {
            open.lines_this_second += 1;
            true
        } else {
            open.suppressed += 1;
            false
        }
    }

    /// A backend came back after being down (restarted or flapped).
    pub fn note_restart(&mut self, backend: BackendId, now: Timestamp) {
        if let Some(r) = self.restarts.get_mut(backend.index()) {
            *r = Some(now);
        }
    }

    fn totals(&self, now: Timestamp) -> (Vec<u64>, Vec<u64>) {
        let window = self.config.window.as_secs().max(1);
        let second = now.as_secs();
        let mut req = vec![0u64; self.n * self.n];
        let mut res = vec![0u64; self.n * self.n];
        for b in self.buckets.iter().filter(|b| b.second + window > second) {
            for (t, v) in req.iter_mut().zip(&b.requests) {
                *t += u64::from(*v);
            }
            for (t, v) in res.iter_mut().zip(&b.resets) {
                *t += u64::from(*v);
            }
        }
        (req, res)
    }

    /// The current picture, whether or not an incident is open.
    pub fn snapshot(&self, now: Timestamp) -> IncidentSnapshot {
        let (req, res) = self.totals(now);
        let requests: u64 = req.iter().sum();
        let resets: u64 = res.iter().sum();
        let mut matrix = Vec::new();
        for i in 0..self.n {
            for s in 0..self.n {
                let k = i * self.n + s;
                if req[k] > 0 || res[k] > 0 {
                    matrix.push(PairCounts {
                        issuer: backend(i),
                        server: backend(s),
                        requests: req[k],
                        resets: res[k],
                    });
                }
            }
        }
        let dominant = matrix
            .iter()
            .max_by_key(|p| p.resets)
            .filter(|p| p.resets > 0 && p.resets * 2 > resets)
            .map(|p| (p.issuer, p.server));
        IncidentSnapshot {
            started: self.open.as_ref().map_or(now, |o| o.started),
            share: if requests == 0 {
                0.0
            } else {
                resets as f64 / requests as f64
            },
            requests,
            resets,
            total_resets: self.open.as_ref().map_or(resets, |o| o.total_resets),
            suppressed: self.open.as_ref().map_or(0, |o| o.suppressed),
            hint: self.hint(&matrix, now),
            matrix,
            dominant,
            samples: self.samples.iter().copied().collect(),
        }
    }

    fn above(&self, s: &IncidentSnapshot) -> bool {
        s.requests >= self.config.min_requests
            && s.resets >= self.config.min_resets
            && s.share >= self.config.threshold
    }

    /// Advance the state machine; call about once a second and after bursts of resets.
    pub fn evaluate(&mut self, now: Timestamp) -> Option<IncidentEvent> {
        let mut snap = self.snapshot(now);
        let above = self.above(&snap);
        let config = self.config.clone();
        match self.open.as_mut() {
            None if above => {
                self.open = Some(Open {
                    started: now,
                    last_update: now,
                    below_since: None,
                    total_resets: snap.resets,
                    suppressed: 0,
                    line_second: 0,
                    lines_this_second: 0,
                });
                snap.started = now;
                snap.total_resets = snap.resets;
                Some(IncidentEvent::Opened(snap))
            }
            None => None,
            Some(open) => {
                if above {
                    open.below_since = None;
                } else {
                    let since = *open.below_since.get_or_insert(now);
                    if now.since(since) >= config.resolve_after {
                        self.open = None;
                        return Some(IncidentEvent::Resolved(snap));
                    }
                }
                if now.since(open.last_update) >= config.update_every {
                    open.last_update = now;
                    return Some(IncidentEvent::Updated(snap));
                }
                None
            }
        }
    }

    fn losses(&self, now: Timestamp) -> Vec<(u64, u64, BackendId, BackendId)> {
        let window = self.config.window.as_secs().max(1);
        self.buckets
            .iter()
            .filter(|b| b.second + window > now.as_secs())
            .flat_map(|b| b.losses.iter().copied())
            .collect()
    }

    fn hint(&self, matrix: &[PairCounts], now: Timestamp) -> Hint {
        let cross: u64 = matrix
            .iter()
            .filter(|p| p.issuer != p.server)
            .map(|p| p.resets)
            .sum();
        let same: u64 = matrix
            .iter()
            .filter(|p| p.issuer == p.server)
            .map(|p| p.resets)
            .sum();
        let total = cross + same;
        let unclear = Hint::Unclear { cross, same };
        if total == 0 {
            return unclear;
        }
        let losses = self.losses(now);
        if let Some(h) = timeout_hint(&losses) {
            return h;
        }
        if same * 10 >= total * 8 {
            return self.restart_hint(&losses, now).unwrap_or(unclear);
        }
        if cross * 10 >= total * 9 {
            return cross_hint(matrix).unwrap_or(unclear);
        }
        unclear
    }

    fn restart_hint(
        &self,
        losses: &[(u64, u64, BackendId, BackendId)],
        now: Timestamp,
    ) -> Option<Hint> {
        // Same-backend losses of sessions issued before that backend last came back.
        let mut per_backend = vec![0u64; self.n];
        let mut same = 0u64;
        for &(_, age_ms, issuer, server) in losses {
            if issuer != server {
                continue;
            }
            same += 1;
            let restarted = self.restarts.get(server.index()).copied().flatten();
            let issued = Timestamp::from_millis(now.as_millis().saturating_sub(age_ms));
            if restarted.is_some_and(|r| issued <= r && now.since(r) <= Duration::from_secs(600)) {
                per_backend[server.index()] += 1;
            }
        }
        let (best, count) = per_backend.iter().enumerate().max_by_key(|(_, c)| **c)?;
        (same > 0 && *count * 10 >= same * 8).then_some(Hint::LostOnRestart {
            backend: backend(best),
        })
    }
}

fn backend(i: usize) -> BackendId {
    BackendId(u16::try_from(i).unwrap_or(u16::MAX))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Losses that cluster at one idle time or age, of at least a minute (shorter clusters are just
/// the users' request rhythm).
fn timeout_hint(losses: &[(u64, u64, BackendId, BackendId)]) -> Option<Hint> {
    if losses.len() < 5 {
        return None;
    }
    let cluster = |mut v: Vec<u64>| -> Option<u64> {
        v.sort_unstable();
        let median = v[v.len() / 2];
        if median < 60_000 {
            return None;
        }
        let near = v
            .iter()
            .filter(|x| x.abs_diff(median) * 10 <= median)
            .count();
        (near * 10 >= v.len() * 8).then_some(median)
    };
    if let Some(m) = cluster(losses.iter().map(|l| l.0).collect()) {
        return Some(Hint::Timeout {
            at: Duration::from_millis(m),
            idle: true,
        });
    }
    cluster(losses.iter().map(|l| l.1).collect()).map(|m| Hint::Timeout {
        at: Duration::from_millis(m),
        idle: false,
    })
}

/// Among cross-backend pairs with enough traffic, which lose most of their sessions.
fn cross_hint(matrix: &[PairCounts]) -> Option<Hint> {
    const MIN_REQUESTS: u64 = 3;
    let cross = || {
        matrix
            .iter()
            .filter(|p| p.issuer != p.server && p.requests >= MIN_REQUESTS)
    };
    let lossy: Vec<&PairCounts> = cross().filter(|p| p.resets * 2 >= p.requests).collect();
    let clean: Vec<&PairCounts> = cross().filter(|p| p.resets * 10 < p.requests).collect();
    if lossy.is_empty() {
        return None;
    }
    if clean.is_empty() && cross().count() == lossy.len() {
        return Some(Hint::StoreNotShared);
    }
    // One backend in every lossy pair, and clean traffic between the others.
    let candidates: Vec<BackendId> = lossy
        .iter()
        .flat_map(|p| [p.issuer, p.server])
        .filter(|b| lossy.iter().all(|p| p.issuer == *b || p.server == *b))
        .collect();
    let odd = *candidates.first()?;
    if !clean.iter().any(|p| p.issuer != odd && p.server != odd) {
        return None;
    }
    let rejects = lossy.iter().all(|p| p.server == odd);
    let rejected = lossy.iter().all(|p| p.issuer == odd);
    let direction = match (rejects, rejected) {
        (true, false) => Direction::RejectsOthers,
        (false, true) => Direction::RejectedByOthers,
        _ => Direction::Both,
    };
    Some(Hint::BackendDiffers {
        backend: odd,
        direction,
    })
}
