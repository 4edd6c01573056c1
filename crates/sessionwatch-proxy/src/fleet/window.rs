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

use sessionwatch_core::WindowCounts;
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
    backends: usize,
    others: AtomicU8,
    last_exchange: Mutex<Option<Instant>>,
}

impl FleetWindow {
    /// The part of a replica with a random id, over a farm of `backends` backends.
    pub(crate) fn new(store: RedisStore, backends: usize) -> Arc<Self> {
        Arc::new(Self {
            store,
            id: format!("{:016x}", rand::random::<u64>()),
            backends,
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
            .arg(encode(own, open, self.backends))
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
        let pairs = self.backends * self.backends;
        let mut sum = WindowCounts {
            requests: vec![0; pairs],
            resets: vec![0; pairs],
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
            if let Some((counts, open)) = decode(&value, self.backends) {
                any_open |= open;
                for (t, v) in sum.requests.iter_mut().zip(&counts.requests) {
                    *t += v;
                }
                for (t, v) in sum.resets.iter_mut().zip(&counts.resets) {
                    *t += v;
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

/// `version || open || backends (u16) || per pair: requests (u32) || resets (u32)`.
fn encode(counts: &WindowCounts, open: bool, backends: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + counts.requests.len() * 8);
    out.push(VERSION);
    out.push(u8::from(open));
    out.extend_from_slice(&u16::try_from(backends).unwrap_or(u16::MAX).to_le_bytes());
    for (req, res) in counts.requests.iter().zip(&counts.resets) {
        out.extend_from_slice(&u32::try_from(*req).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&u32::try_from(*res).unwrap_or(u32::MAX).to_le_bytes());
    }
    out
}

/// Another replica's entry, if it is of this version and for a farm of this size.
fn decode(value: &[u8], backends: usize) -> Option<(WindowCounts, bool)> {
    let (head, body) = value.split_at_checked(4)?;
    if head[0] != VERSION || usize::from(u16::from_le_bytes([head[2], head[3]])) != backends {
        return None;
    }
    let pairs = backends * backends;
    if body.len() != pairs * 8 {
        return None;
    }
    let mut counts = WindowCounts {
        requests: Vec::with_capacity(pairs),
        resets: Vec::with_capacity(pairs),
    };
    for pair in body.chunks_exact(8) {
        counts.requests.push(u64::from(u32::from_le_bytes([
            pair[0], pair[1], pair[2], pair[3],
        ])));
        counts.resets.push(u64::from(u32::from_le_bytes([
            pair[4], pair[5], pair[6], pair[7],
        ])));
    }
    Some((counts, head[1] == 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back_and_one_for_another_farm_does_not() {
        let counts = WindowCounts {
            requests: vec![4, 3, 0, 9],
            resets: vec![0, 3, 0, 1],
        };
        let value = encode(&counts, true, 2);
        assert_eq!(decode(&value, 2), Some((counts.clone(), true)));
        assert_eq!(decode(&encode(&counts, false, 2), 2), Some((counts, false)));
        assert_eq!(decode(&value, 3), None);
        assert_eq!(decode(&value[..value.len() - 1], 2), None);
        assert_eq!(decode(b"", 2), None);
    }
}
