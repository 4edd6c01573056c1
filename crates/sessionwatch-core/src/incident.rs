//! Incidents: resets counted in a sliding window, opened and resolved on a share threshold, with
//! a root-cause hint (see [`crate::hint`]) read from the issuer x server matrix.

use std::collections::VecDeque;
use std::time::Duration;

use crate::hint::{self, History, Loss, pairs};
use crate::life::{IncidentLife, Life};
use crate::{BackendId, Hint, PairCounts, ShortFingerprint, Timestamp};

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
    /// The likely cause: judged over the incident's whole life while one is open (see
    /// [`IncidentLife`]), over the window otherwise.
    pub hint: Hint,
    /// What the open incident has seen since its first window; `None` when none is open.
    pub life: Option<IncidentLife>,
    /// When the incident ended (on the event that resolves it).
    pub ended: Option<Timestamp>,
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
    /// Resets, capped.
    losses: Vec<Loss>,
    /// The lost sessions, capped.
    lost: Vec<ShortFingerprint>,
    /// Whether more resets came in this second than `lost` keeps.
    overflowed: bool,
}

const LOSS_SAMPLES_PER_SECOND: usize = 64;
/// Lost sessions a second keeps, for the count of sessions an incident affected.
const LOST_PER_SECOND: usize = 1024;
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
    life: Life,
}

/// Counts requests and resets per (issuer, server) pair in a sliding window of one-second
/// buckets and decides when an incident opens, updates and resolves. Sans-I/O: every method
/// takes the time.
#[derive(Debug, Clone)]
pub struct IncidentTracker {
    config: IncidentConfig,
    n: usize,
    buckets: VecDeque<Bucket>,
    history: History,
    samples: VecDeque<ShortFingerprint>,
    open: Option<Open>,
    /// The other replicas' window counts, per pair, when a fleet shares them.
    peers: Option<WindowCounts>,
}

/// Requests with a known session and resets per (issuer, server) pair over a window, issuer
/// major: pair `(i, s)` is at `i * backends + s`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowCounts {
    /// Requests per pair.
    pub requests: Vec<u64>,
    /// Resets per pair.
    pub resets: Vec<u64>,
}

impl IncidentTracker {
    /// A tracker for a farm of `backends` backends.
    pub fn new(config: IncidentConfig, backends: usize) -> Self {
        Self {
            config,
            n: backends.max(1),
            buckets: VecDeque::new(),
            history: History::new(backends.max(1)),
            samples: VecDeque::new(),
            open: None,
            peers: None,
        }
    }

    /// This tracker's own counts in the window ending `now`, for a fleet to share.
    pub fn own_counts(&self, now: Timestamp) -> WindowCounts {
        let (requests, resets) = self.own_totals(now);
        WindowCounts { requests, resets }
    }

    /// The sum of the other replicas' window counts, added to this tracker's own from now on, so
    /// that every replica of a fleet decides on the traffic of all (`None`: no peers, or their
    /// counts are stale). Counts for another number of backends are ignored: replicas that
    /// disagree on the farm cannot add up.
    pub fn set_peer_counts(&mut self, peers: Option<WindowCounts>) {
        let pairs = self.n * self.n;
        self.peers = peers.filter(|p| p.requests.len() == pairs && p.resets.len() == pairs);
    }

    /// Judge by `config` from now on (a configuration reload): the window's counts and an open
    /// incident are kept, so a longer window reaches back no further than the counts kept, and
    /// an open incident resolves, or not, by the new thresholds.
    pub fn set_config(&mut self, config: IncidentConfig) {
        self.config = config;
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
                lost: Vec::new(),
                overflowed: false,
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
        if let Some(open) = self.open.as_mut() {
            open.life.record_request(slot);
        }
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
            let loss = (millis(idle), millis(age), issuer, server);
            let b = self.bucket(now);
            b.resets[slot] = b.resets[slot].saturating_add(1);
            if b.losses.len() < LOSS_SAMPLES_PER_SECOND {
                b.losses.push(loss);
            }
            if b.lost.len() < LOST_PER_SECOND {
                b.lost.push(fingerprint);
            } else {
                b.overflowed = true;
            }
            self.history.note_reset(issuer, server, now);
            if let Some(open) = self.open.as_mut() {
                open.life.record_reset(slot, loss);
                open.life.note_session(fingerprint, now);
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
        self.history.note_restart(backend, now);
    }

    /// A backend joined the farm (a new pod, a new address): resets of the older backends'
    /// sessions that it serves soon after read as a rollout whose new backends differ. A backend
    /// past the farm the tracker was made for grows it (see [`IncidentTracker::grow`]).
    pub fn note_joined(&mut self, backend: BackendId, now: Timestamp) {
        if backend != BackendId::UNKNOWN {
            self.grow(backend.index() + 1);
        }
        self.history.note_joined(backend, now);
    }

    /// Make room for `backends` backends (ids `0..backends`), keeping every count: a farm that
    /// gains backends at run time calls this (or [`IncidentTracker::note_joined`]) before their
    /// traffic comes, since requests of backends past the size are not counted. It never shrinks.
    pub fn grow(&mut self, backends: usize) {
        let (old, new) = (self.n, backends);
        if new <= old {
            return;
        }
        let relay = |v: &mut Vec<u32>| {
            let mut grown = vec![0; new * new];
            for i in 0..old {
                grown[i * new..i * new + old].copy_from_slice(&v[i * old..(i + 1) * old]);
            }
            *v = grown;
        };
        for b in &mut self.buckets {
            relay(&mut b.requests);
            relay(&mut b.resets);
        }
        if let Some(open) = self.open.as_mut() {
            open.life.grow(new);
        }
        self.history.grow(new);
        self.n = new;
    }

    fn totals(&self, now: Timestamp) -> (Vec<u64>, Vec<u64>) {
        let (mut req, mut res) = self.own_totals(now);
        if let Some(peers) = &self.peers {
            for (t, v) in req.iter_mut().zip(&peers.requests) {
                *t += v;
            }
            for (t, v) in res.iter_mut().zip(&peers.resets) {
                *t += v;
            }
        }
        (req, res)
    }

    fn own_totals(&self, now: Timestamp) -> (Vec<u64>, Vec<u64>) {
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
        let matrix = pairs(self.n, &req, &res);
        // An open incident's cause is what its whole life shows: a window that empties while
        // the farm recovers must not turn it into `unclear`.
        let (hint, life) = match &self.open {
            Some(open) => (
                open.life.hint(&self.history, now),
                Some(open.life.summary()),
            ),
            None => (
                hint::hint(&matrix, &self.losses(now), &self.history, now),
                None,
            ),
        };
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
            hint,
            life,
            ended: None,
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
        self.follow_life(now);
        let mut snap = self.snapshot(now);
        let above = self.above(&snap);
        let config = self.config.clone();
        match self.open.as_mut() {
            None if above => {
                let life = self.first_life(snap.share, now);
                self.open = Some(Open {
                    started: now,
                    last_update: now,
                    below_since: None,
                    total_resets: snap.resets,
                    suppressed: 0,
                    line_second: 0,
                    lines_this_second: 0,
                    life,
                });
                snap.started = now;
                snap.total_resets = snap.resets;
                snap.life = self.open.as_ref().map(|o| o.life.summary());
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
                        snap.ended = Some(now);
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

    /// Bring an open incident's life up to `now`: its peak, the requests its cause is judged on,
    /// and the window's cause when the window shows one.
    fn follow_life(&mut self, now: Timestamp) {
        if self.open.is_none() {
            return;
        }
        let (req, res) = self.totals(now);
        let (requests, resets) = (req.iter().sum::<u64>(), res.iter().sum::<u64>());
        let window_hint = (resets > 0)
            .then(|| {
                hint::hint(
                    &pairs(self.n, &req, &res),
                    &self.losses(now),
                    &self.history,
                    now,
                )
            })
            .filter(|h| !matches!(h, Hint::Unclear { .. }));
        if let Some(open) = self.open.as_mut() {
            let share = if requests == 0 {
                0.0
            } else {
                resets as f64 / requests as f64
            };
            open.life.note_share(share, now);
            open.life.settle();
            if let Some(h) = window_hint {
                open.life.note_cause(h);
            }
        }
    }

    /// The life of an incident opening now: the window that opens it, with its lost sessions.
    fn first_life(&self, share: f64, now: Timestamp) -> Life {
        let (req, res) = self.totals(now);
        let mut life = Life::open(self.n, req, res, self.losses(now), share, now);
        let window = self.config.window.as_secs().max(1);
        for b in self
            .buckets
            .iter()
            .filter(|b| b.second + window > now.as_secs())
        {
            let at = Timestamp::from_millis(b.second.saturating_mul(1000));
            for f in &b.lost {
                life.note_session(*f, at);
            }
            if b.overflowed {
                life.note_uncounted();
            }
        }
        life
    }

    fn losses(&self, now: Timestamp) -> Vec<Loss> {
        let window = self.config.window.as_secs().max(1);
        self.buckets
            .iter()
            .filter(|b| b.second + window > now.as_secs())
            .flat_map(|b| b.losses.iter().copied())
            .collect()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
