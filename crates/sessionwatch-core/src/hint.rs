//! The root-cause hint: which pattern of losses the window shows, read from the issuer x server
//! matrix, the losses' idle times and ages, and what happened to the backends (restarts, joins).
//!
//! The patterns are tried in this order and the first that fits wins:
//!
//! 1. `new_backends_differ`: the resets began within 60 s after backends joined, and at least
//!    80% of them are sessions issued by the older backends and rejected by the new ones. A
//!    rollout is the most specific explanation there is (it names the change that started the
//!    losses), and its losses would otherwise read as `store_not_shared` or `backend_differs`.
//! 2. `timeout_too_short`: the losses cluster at one idle time or age of a minute or more.
//! 3. `lost_on_restart`: at least 80% of the losses are on the issuer, of sessions issued before
//!    it last came back.
//! 4. `store_not_shared` or `backend_differs`: at least 90% of the losses are across backends.
//! 5. `unclear`.

use std::time::Duration;

use crate::{BackendId, Timestamp};

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
#[derive(Debug, Clone, PartialEq)]
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
    /// Losses of the older backends' sessions on backends that joined just before: a rollout
    /// whose new pods do not share the session store or keys.
    NewBackendsDiffer {
        /// The backends that joined, in id order.
        joined: Vec<BackendId>,
        /// From the last of those joins to the first reset.
        after: Duration,
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
            Hint::NewBackendsDiffer { .. } => "new_backends_differ",
            Hint::Timeout { .. } => "timeout_too_short",
            Hint::Unclear { .. } => "unclear",
        }
    }

    /// The hint for an issuer x server matrix alone, with no history (restarts, joins) and no
    /// idle times: what a deliberate test of every pair, such as `sessionwatch probe`, can say.
    /// The same rules as an incident's, so the same words: only `store_not_shared`,
    /// `backend_differs` and `unclear` can fit without history. Backends are numbered by their
    /// position in the list the matrix speaks of.
    pub fn of_matrix(matrix: &[PairCounts]) -> Hint {
        let backends = matrix
            .iter()
            .flat_map(|p| [p.issuer.index(), p.server.index()])
            .filter(|&i| i != BackendId::UNKNOWN.index())
            .max()
            .map_or(0, |i| i + 1);
        hint(
            matrix,
            &[],
            &History::new(backends),
            Timestamp::from_millis(0),
        )
    }

    /// The sentence for people; `name` maps backend ids to names.
    pub fn text(&self, name: &dyn Fn(BackendId) -> String) -> String {
        match self {
            Hint::StoreNotShared => "every loss is a session issued by one backend and rejected by another: the session store or its keys are not shared across the farm".to_owned(),
            Hint::BackendDiffers { backend, direction } => {
                let b = name(*backend);
                let how = match direction {
                    Direction::RejectsOthers => format!("{b} rejects sessions issued by the other backends"),
                    Direction::RejectedByOthers => format!("sessions issued by {b} are rejected by the other backends"),
                    Direction::Both => format!("{b} rejects the other backends' sessions and they reject its sessions"),
                };
                format!("{how}, while the others accept each other's: {b}'s configuration differs (session store, data-protection keys or secret)")
            }
            Hint::LostOnRestart { backend } => {
                let b = name(*backend);
                format!("sessions are lost on the backend that issued them, right after {b} restarted: its session store is in-process and was lost on restart")
            }
            Hint::NewBackendsDiffer { joined, after } => {
                let names: Vec<String> = joined.iter().map(|b| name(*b)).collect();
                let (them, pods) = if names.len() == 1 {
                    ("it", "pod does")
                } else {
                    ("them", "pods do")
                };
                format!(
                    "resets began {} s after {} joined; sessions issued by the other backends are rejected by {them}: the new {pods} not share the session store or keys",
                    after.as_secs(),
                    and_list(&names)
                )
            }
            Hint::Timeout { at, idle } => {
                let what = if *idle { "idle time" } else { "session age" };
                format!("losses cluster at about {}s of {what}: the application's timeout is shorter than users expect", at.as_secs())
            }
            Hint::Unclear { cross, same } => format!("no single pattern fits ({cross} cross-backend and {same} same-backend losses spread over several backends); look at the matrix"),
        }
    }
}

/// "a", "a and b", "a, b and c".
fn and_list(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// One sampled reset: idle ms, age ms, issuer, server.
pub(crate) type Loss = (u64, u64, BackendId, BackendId);

/// How long after a restart or a join its losses are still put down to it.
const MEMORY: Duration = Duration::from_secs(600);
/// Resets that begin later than this after a join are not the join's doing.
const ROLLOUT_WITHIN: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Join {
    at: Timestamp,
    /// The first reset this backend served, since it joined, of a session another issued.
    first_rejection: Option<Timestamp>,
}

/// What happened to each backend lately, as the hints need it: when it last came back and when
/// it last joined.
#[derive(Debug, Clone)]
pub(crate) struct History {
    restarts: Vec<Option<Timestamp>>,
    joins: Vec<Option<Join>>,
}

impl History {
    pub(crate) fn new(backends: usize) -> Self {
        Self {
            restarts: vec![None; backends],
            joins: vec![None; backends],
        }
    }

    pub(crate) fn grow(&mut self, backends: usize) {
        if backends > self.restarts.len() {
            self.restarts.resize(backends, None);
            self.joins.resize(backends, None);
        }
    }

    pub(crate) fn note_restart(&mut self, backend: BackendId, now: Timestamp) {
        if let Some(r) = self.restarts.get_mut(backend.index()) {
            *r = Some(now);
        }
    }

    pub(crate) fn note_joined(&mut self, backend: BackendId, now: Timestamp) {
        if let Some(j) = self.joins.get_mut(backend.index()) {
            *j = Some(Join {
                at: now,
                first_rejection: None,
            });
        }
    }

    /// A reset of a session issued by `issuer`, on `server`, at `now`. Kept apart from the
    /// window's samples because the moment a rollout's resets began must outlive the window.
    pub(crate) fn note_reset(&mut self, issuer: BackendId, server: BackendId, now: Timestamp) {
        if issuer == server {
            return;
        }
        if let Some(Some(j)) = self.joins.get_mut(server.index()) {
            if j.first_rejection.is_none() && now >= j.at {
                j.first_rejection = Some(now);
            }
        }
    }

    /// `new_backends_differ`, when it fits. Each recently joined backend that began rejecting
    /// within a minute of its join proposes a start for the resets; the backends that joined in
    /// the minute before that start are the new ones, and the hint holds when at least 80% of
    /// the window's resets are theirs, on sessions the others issued. Trying every start, the
    /// earliest first, keeps one stray reset after an older join from hiding a rollout.
    fn rollout_hint(&self, matrix: &[PairCounts], total: u64, now: Timestamp) -> Option<Hint> {
        let recent = |j: &Join| now.since(j.at) <= MEMORY;
        let mut starts: Vec<Timestamp> = self
            .joins
            .iter()
            .flatten()
            .filter(|j| recent(j))
            .filter_map(|j| {
                j.first_rejection
                    .filter(|f| f.since(j.at) <= ROLLOUT_WITHIN)
            })
            .collect();
        starts.sort_unstable();
        starts.dedup();
        for began in starts {
            let joined: Vec<(BackendId, Timestamp)> = self
                .joins
                .iter()
                .enumerate()
                .filter_map(|(i, j)| j.map(|j| (BackendId::from_index(i), j.at)))
                .filter(|&(_, at)| at <= began && began.since(at) <= ROLLOUT_WITHIN)
                .collect();
            let is_new = |b: BackendId| joined.iter().any(|&(n, _)| n == b);
            let rejected: u64 = matrix
                .iter()
                .filter(|p| is_new(p.server) && !is_new(p.issuer))
                .map(|p| p.resets)
                .sum();
            let Some(last_join) = joined.iter().map(|&(_, at)| at).max() else {
                continue;
            };
            if rejected * 10 >= total * 8 {
                return Some(Hint::NewBackendsDiffer {
                    joined: joined.into_iter().map(|(b, _)| b).collect(),
                    after: began.since(last_join),
                });
            }
        }
        None
    }

    fn restart_hint(&self, losses: &[Loss], now: Timestamp) -> Option<Hint> {
        // Same-backend losses of sessions issued before that backend last came back.
        let mut per_backend = vec![0u64; self.restarts.len()];
        let mut same = 0u64;
        for &(_, age_ms, issuer, server) in losses {
            if issuer != server {
                continue;
            }
            same += 1;
            let restarted = self.restarts.get(server.index()).copied().flatten();
            let issued = Timestamp::from_millis(now.as_millis().saturating_sub(age_ms));
            if restarted.is_some_and(|r| issued <= r && now.since(r) <= MEMORY) {
                if let Some(c) = per_backend.get_mut(server.index()) {
                    *c += 1;
                }
            }
        }
        let (best, count) = per_backend.iter().enumerate().max_by_key(|(_, c)| **c)?;
        (same > 0 && *count * 10 >= same * 8).then_some(Hint::LostOnRestart {
            backend: BackendId::from_index(best),
        })
    }
}

/// The hint for the window's `matrix` and sampled `losses`, in the order of the module docs.
pub(crate) fn hint(
    matrix: &[PairCounts],
    losses: &[Loss],
    history: &History,
    now: Timestamp,
) -> Hint {
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
    if let Some(h) = history.rollout_hint(matrix, total, now) {
        return h;
    }
    if let Some(h) = timeout_hint(losses) {
        return h;
    }
    if same * 10 >= total * 8 {
        return history.restart_hint(losses, now).unwrap_or(unclear);
    }
    if cross * 10 >= total * 9 {
        return cross_hint(matrix).unwrap_or(unclear);
    }
    unclear
}

/// Losses that cluster at one idle time or age, of at least a minute (shorter clusters are just
/// the users' request rhythm).
fn timeout_hint(losses: &[Loss]) -> Option<Hint> {
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

/// The pairs with any traffic, issuer major.
pub(crate) fn pairs(n: usize, req: &[u64], res: &[u64]) -> Vec<PairCounts> {
    let mut matrix = Vec::new();
    for i in 0..n {
        for s in 0..n {
            let k = i * n + s;
            if req[k] > 0 || res[k] > 0 {
                matrix.push(PairCounts {
                    issuer: BackendId::from_index(i),
                    server: BackendId::from_index(s),
                    requests: req[k],
                    resets: res[k],
                });
            }
        }
    }
    matrix
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(issuer: u16, server: u16, requests: u64, resets: u64) -> PairCounts {
        PairCounts {
            issuer: BackendId(issuer),
            server: BackendId(server),
            requests,
            resets,
        }
    }

    /// Every pair of `n` backends with 3 requests; the cross pairs in `lossy` lose all three.
    fn matrix(n: u16, lossy: &[(u16, u16)]) -> Vec<PairCounts> {
        let mut m = Vec::new();
        for i in 0..n {
            for s in 0..n {
                let lost = if lossy.contains(&(i, s)) { 3 } else { 0 };
                m.push(pair(i, s, 3, lost));
            }
        }
        m
    }

    #[test]
    fn a_tested_matrix_reads_as_an_incident_would() {
        assert_eq!(
            Hint::of_matrix(&matrix(2, &[(0, 1), (1, 0)])),
            Hint::StoreNotShared
        );
        // Backend 2 rejects the others' sessions and the others reject its own.
        let odd = matrix(3, &[(0, 2), (1, 2), (2, 0), (2, 1)]);
        assert_eq!(
            Hint::of_matrix(&odd),
            Hint::BackendDiffers {
                backend: BackendId(2),
                direction: Direction::Both,
            }
        );
        assert_eq!(
            Hint::of_matrix(&matrix(2, &[])),
            Hint::Unclear { cross: 0, same: 0 }
        );
        assert_eq!(Hint::of_matrix(&[]), Hint::Unclear { cross: 0, same: 0 });
    }
}
