//! The fleet's incident window, shared through Redis: every second each replica publishes its
//! own window counts (requests and resets per issuer x server pair) and whether its incident is
//! open, and reads the others'. Its tracker adds their sum to its own, so an incident opens on
//! the whole fleet's traffic as fast as on one replica's, and the Alertmanager sink asks it
//! whether another replica still sees the incident before it resolves the farm's alert.
//!
//! The keys share one hash tag, so that a Redis Cluster keeps them in one slot: a sorted set of
//! members scored by when their entry expires, and one entry per replica that expires on its own
//! when the replica stops publishing (a replica that dies leaves the sum within seconds). A
//! replica whose exchange fails decides on its own traffic alone until the next one succeeds.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sessionwatch_core::{BackendId, WindowCounts};
use sessionwatch_tower::BackendDirectory;
use tokio::sync::watch;

use super::redis::RedisStore;
use crate::report::incidents::IncidentWatch;
use crate::report::sinks::{FleetIncidents, OthersOpen};

/// How often a replica publishes and reads.
const EVERY: Duration = Duration::from_secs(1);
/// An entry not refreshed for this long is gone: three missed publications.
const ENTRY_TTL: Duration = Duration::from_secs(3);
/// The others' state is trusted this long after the last exchange that succeeded.
const FRESH_FOR: Duration = Duration::from_secs(3);
const VERSION: u8 = 1;

/// What the others said at the last exchange.
const UNKNOWN: u8 = 0;
const NONE_OPEN: u8 = 1;
const SOME_OPEN: u8 = 2;

/// One replica's part in the shared window; see the module docs.
pub(crate) struct FleetWindow {
    store: RedisStore,
    id: String,
    /// Names backends across replicas: each numbers its own, in the order it learnt them.
    directory: Arc<dyn BackendDirectory>,
    others: AtomicU8,
    last_exchange: Mutex<Option<Instant>>,
}

impl FleetWindow {
    /// The part of a replica with a random id, naming backends through `directory`.
    pub(crate) fn new(store: RedisStore, directory: Arc<dyn BackendDirectory>) -> Arc<Self> {
        Arc::new(Self {
            store,
            id: format!("{:016x}", rand::random::<u64>()),
            directory,
            others: AtomicU8::new(UNKNOWN),
            last_exchange: Mutex::new(None),
        })
    }

    fn key(&self, what: &str) -> Vec<u8> {
        let mut key = self.store.prefix().to_vec();
        key.extend_from_slice(b"{fleet}:");
        key.extend_from_slice(what.as_bytes());
        key
    }

    /// Publishes `incidents`' counts and feeds it the others' sum, once a second until shutdown.
    pub(crate) async fn run(
        self: Arc<Self>,
        incidents: Arc<IncidentWatch>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval(EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = crate::shutdown::stopped(&mut shutdown) => {
                    self.leave().await;
                    return;
                }
            }
            let (own, open) = incidents.own_counts();
            match tokio::time::timeout(EVERY, self.exchange(&own, open)).await {
                Ok(Some((peers, others_open))) => {
                    incidents.set_peer_counts(Some(peers));
                    let state = if others_open { SOME_OPEN } else { NONE_OPEN };
                    self.others.store(state, Ordering::Relaxed);
                    if let Ok(mut at) = self.last_exchange.lock() {
                        *at = Some(Instant::now());
                    }
                }
                _ => {
                    incidents.set_peer_counts(None);
                    self.others.store(UNKNOWN, Ordering::Relaxed);
                }
            }
        }
    }

    /// One round: publish, prune, read the others. `None` when Redis did not answer.
    async fn exchange(&self, own: &WindowCounts, open: bool) -> Option<(WindowCounts, bool)> {
        let mut link = self.store.link()?;
        let now = now_ms();
        let expires = now + ENTRY_TTL.as_millis() as u64;
        let members = self.key("members");
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.key(&format!("w:{}", self.id)))
            .arg(encode(own, open, &*self.directory))
            .arg("PX")
            .arg(ENTRY_TTL.as_millis() as u64)
            .ignore()
            .cmd("ZADD")
            .arg(&members)
            .arg(expires)
            .arg(&self.id)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&members)
            .arg("-inf")
            .arg(now)
            .ignore()
            .cmd("ZRANGE")
            .arg(&members)
            .arg(0)
            .arg(-1);
        let (ids,): (Vec<String>,) = link.pipe(&pipe).await.ok()?;
        let others: Vec<Vec<u8>> = ids
            .iter()
            .filter(|id| **id != self.id)
            .map(|id| self.key(&format!("w:{id}")))
            .collect();
        // The others' pairs, in this replica's own numbering, as wide as its own matrix.
        let n = side(own);
        let mut sum = WindowCounts {
            requests: vec![0; n * n],
            resets: vec![0; n * n],
        };
        if others.is_empty() {
            return Some((sum, false));
        }
        let mut mget = redis::cmd("MGET");
        for key in &others {
            mget.arg(key);
        }
        let values: Vec<Option<Vec<u8>>> = link.query(&mget).await.ok()?;
        let mut any_open = false;
        for value in values.into_iter().flatten() {
            let Some((pairs, open)) = decode(&value) else {
                continue;
            };
            any_open |= open;
            for pair in pairs {
                // A backend this replica does not know (yet) has no place in its matrix.
                let (Some(i), Some(s)) = (
                    self.directory.resolve(pair.issuer),
                    self.directory.resolve(pair.server),
                ) else {
                    continue;
                };
                if i.index() < n && s.index() < n {
                    let k = i.index() * n + s.index();
                    sum.requests[k] += u64::from(pair.requests);
                    sum.resets[k] += u64::from(pair.resets);
                }
            }
        }
        Some((sum, any_open))
    }

    /// Takes this replica out of the sum at shutdown, so the others do not count it for
    /// another three seconds.
    async fn leave(&self) {
        let Some(mut link) = self.store.link() else {
            return;
        };
        let mut pipe = redis::pipe();
        pipe.cmd("DEL")
            .arg(self.key(&format!("w:{}", self.id)))
            .ignore()
            .cmd("ZREM")
            .arg(self.key("members"))
            .arg(&self.id)
            .ignore();
        let _ = tokio::time::timeout(EVERY, link.pipe::<()>(&pipe)).await;
    }
}

impl FleetIncidents for FleetWindow {
    fn others_open(&self) -> OthersOpen<'_> {
        let fresh = self
            .last_exchange
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| at.elapsed() < FRESH_FOR);
        let answer = match self.others.load(Ordering::Relaxed) {
            NONE_OPEN if fresh => Some(false),
            SOME_OPEN if fresh => Some(true),
            _ => None,
        };
        Box::pin(std::future::ready(answer))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The side of a square matrix of counts.
fn side(counts: &WindowCounts) -> usize {
    counts.requests.len().isqrt()
}

/// One pair of another replica's window, named by tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pair {
    issuer: u32,
    server: u32,
    requests: u32,
    resets: u32,
}

/// `version || open || per pair with any count: issuer tag, server tag, requests, resets (u32
/// each)`, little-endian.
fn encode(counts: &WindowCounts, open: bool, directory: &dyn BackendDirectory) -> Vec<u8> {
    let n = side(counts);
    let mut out = vec![VERSION, u8::from(open)];
    for (k, (req, res)) in counts.requests.iter().zip(&counts.resets).enumerate() {
        if *req == 0 && *res == 0 {
            continue;
        }
        let id = |i: usize| BackendId(u16::try_from(i).unwrap_or(u16::MAX));
        let (i, s) = (id(k / n), id(k % n));
        for v in [
            directory.tag(i),
            directory.tag(s),
            u32::try_from(*req).unwrap_or(u32::MAX),
            u32::try_from(*res).unwrap_or(u32::MAX),
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// Another replica's entry, if it is of this version.
fn decode(value: &[u8]) -> Option<(Vec<Pair>, bool)> {
    let (head, body) = value.split_at_checked(2)?;
    if head[0] != VERSION || body.len() % 16 != 0 {
        return None;
    }
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let pairs = body
        .chunks_exact(16)
        .map(|p| Pair {
            issuer: word(&p[0..4]),
            server: word(&p[4..8]),
            requests: word(&p[8..12]),
            resets: word(&p[12..16]),
        })
        .collect();
    Some((pairs, head[1] == 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tags are the index plus 100.
    struct Tags;

    impl BackendDirectory for Tags {
        fn tag(&self, id: BackendId) -> u32 {
            u32::from(id.0) + 100
        }

        fn resolve(&self, tag: u32) -> Option<BackendId> {
            tag.checked_sub(100)
                .and_then(|i| u16::try_from(i).ok())
                .map(BackendId)
        }
    }

    #[test]
    fn an_entry_names_its_pairs_by_tag_and_carries_only_those_with_counts() {
        let counts = WindowCounts {
            requests: vec![4, 3, 0, 9],
            resets: vec![0, 3, 0, 1],
        };
        let value = encode(&counts, true, &Tags);
        let (pairs, open) = decode(&value).unwrap();
        assert!(open);
        assert_eq!(
            pairs,
            [
                Pair {
                    issuer: 100,
                    server: 100,
                    requests: 4,
                    resets: 0
                },
                Pair {
                    issuer: 100,
                    server: 101,
                    requests: 3,
                    resets: 3
                },
                Pair {
                    issuer: 101,
                    server: 101,
                    requests: 9,
                    resets: 1
                },
            ]
        );
        assert!(!decode(&encode(&counts, false, &Tags)).unwrap().1);
        assert_eq!(decode(&value[..value.len() - 1]), None);
        assert_eq!(decode(b""), None);
        assert_eq!(decode(&[2, 0]), None, "another version");
    }
}
