//! The farm as the proxy sees it: each backend's address, weight, load and health, and which
//! backends are in the farm now.
//!
//! Backends are known for the life of the process: one configured or discovered (see
//! [`discovery`]) gets a [`BackendId`] that no other address will ever get, since the session
//! table's records refer to it. Their state lives in a grow-only table ([`slots`]), so it is read
//! without a lock and survives membership changes. Which of them are in the farm now is one
//! immutable [`Live`] picture, swapped whole when discovery changes it: a request reads it with one
//! atomic load, and never waits for a change being made.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use http::uri::Authority;
use sessionwatch_core::BackendId;
use sessionwatch_tower::{BackendDirectory, BackendHealth};

use crate::config::BackendConfig;
use crate::slots::Slots;
use crate::upstream::{Endpoint, TlsTarget};

pub(crate) mod discovery;
pub(crate) mod health;
pub(crate) mod stats;

/// The most backends in the farm at once (the incident matrix is members x members).
pub(crate) const MAX_LIVE: usize = 256;
/// The most backends one process ever knows: each costs the incident matrix a row and a column,
/// and ids are never reused. Addresses past it are refused (and counted) until a restart.
pub(crate) const MAX_KNOWN: usize = 1024;

/// One backend's live state.
#[derive(Debug)]
pub(crate) struct Backend {
    /// Its id, for as long as the process lives.
    pub id: BackendId,
    /// Its name: configured, or its address for a discovered one.
    pub name: Arc<str>,
    /// Its name's [`tag`], the same on every replica.
    pub tag: u32,
    /// Where it is, for the upstream client.
    pub endpoint: Endpoint,
    /// Relative share of new traffic (a reload may change it).
    weight: AtomicU32,
    healthy: AtomicBool,
    member: AtomicBool,
    /// Counts its joins, so that a health check started for an earlier membership stops.
    joins: AtomicU32,
    in_flight: AtomicUsize,
    passive_failures: AtomicU32,
    /// What it answered, for the status page.
    pub stats: stats::AnswerStats,
}

impl Backend {
    /// Whether it takes traffic: in the farm and healthy.
    pub(crate) fn is_healthy(&self) -> bool {
        self.member.load(Ordering::Relaxed) && self.healthy.load(Ordering::Relaxed)
    }

    /// Whether it is in the farm now (its health aside).
    pub(crate) fn is_member(&self) -> bool {
        self.member.load(Ordering::Relaxed)
    }

    /// How many times it has joined (1 for a configured backend).
    pub(crate) fn joins(&self) -> u32 {
        self.joins.load(Ordering::Relaxed)
    }

    /// Its relative share of new traffic.
    pub(crate) fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Requests being served now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// The stable 32-bit tag of a backend named `name`: the first four bytes of its BLAKE3 hash.
/// Replicas number their backends each in its own order, but name them alike, so the tag is how
/// one replica tells another (in the affinity cookie, in a shared store) which backend it means.
pub(crate) fn tag(name: &str) -> u32 {
    let hash = blake3::hash(name.as_bytes());
    let b = hash.as_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// A health transition, for logs and incident hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    /// The backend was taken out.
    Down,
    /// The backend was brought back.
    Up,
}

/// The farm now: an immutable picture, replaced whole on every membership change.
#[derive(Debug, Default)]
pub(crate) struct Live {
    /// The members, by name.
    pub members: Vec<BackendId>,
    /// Weighted round-robin order over the members, precomputed with the smooth weighted
    /// algorithm so heavy backends are interleaved rather than served in bursts.
    pub wheel: Vec<BackendId>,
    /// Every backend this process knows (member or not), by tag.
    by_tag: HashMap<u32, BackendId>,
}

/// What a membership change did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Change {
    /// Backends that are members now and were not.
    pub joined: Vec<BackendId>,
    /// Backends that were members and are not now.
    pub left: Vec<BackendId>,
}

/// Who may add backends: the name each has, its id, and the members now. Held only by changes.
#[derive(Debug, Default)]
struct Registry {
    by_name: HashMap<Arc<str>, BackendId>,
    by_tag: HashMap<u32, BackendId>,
    next: usize,
}

/// Why a backend could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AddError {
    /// [`MAX_KNOWN`] backends are known already.
    #[error("the proxy already knows {MAX_KNOWN} backends; restart it to forget those gone")]
    Full,
}

/// All backends, shared by the balancer, the health checker, discovery and the session layer.
pub(crate) struct Backends {
    slots: Slots<Backend>,
    live: ArcSwap<Live>,
    registry: Mutex<Registry>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("members", &self.live().members)
            .finish_non_exhaustive()
    }
}

impl Backends {
    /// The backends of the configuration, in its order (backend `i` is `[[backends]]` entry
    /// `i`), all members and healthy to begin with (so that traffic flows before the first check
    /// completes; a dead one is ejected on its first failure).
    pub(crate) fn new(configs: &[BackendConfig]) -> Self {
        let this = Self {
            slots: Slots::default(),
            live: ArcSwap::from_pointee(Live::default()),
            registry: Mutex::new(Registry::default()),
        };
        let ids: Vec<BackendId> = configs
            .iter()
            .filter_map(|c| {
                let tls = c.tls.as_ref().map(|t| Arc::new(TlsTarget::new(t)));
                this.add_with_tls(&c.name, c.authority.clone(), c.weight, tls)
                    .ok()
            })
            .collect();
        this.set_members(&ids);
        this
    }

    /// Backends named `names`, of weight 1, at unreachable loopback ports: for tests that need a
    /// farm's names, never its answers.
    #[cfg(test)]
    pub(crate) fn named(names: &[&str]) -> Self {
        let configs: Vec<BackendConfig> = names
            .iter()
            .enumerate()
            .map(|(i, name)| BackendConfig {
                name: (*name).into(),
                authority: format!("127.0.0.1:{}", i + 1).parse().unwrap(),
                weight: 1,
                tls: None,
            })
            .collect();
        Self::new(&configs)
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        // Every change to the registry is one insert: a panic cannot leave it half made.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// [`Backends::add_with_tls`] for a plain backend, as tests make them.
    #[cfg(test)]
    pub(crate) fn add(
        &self,
        name: &str,
        authority: Authority,
        weight: u32,
    ) -> Result<BackendId, AddError> {
        self.add_with_tls(name, authority, weight, None)
    }

    /// The id of the backend `name` at `authority` (over TLS when `tls` is given), known from
    /// now on (not yet a member). A name known already keeps its id, and the address, TLS and
    /// weight it was first known with.
    pub(crate) fn add_with_tls(
        &self,
        name: &str,
        authority: Authority,
        weight: u32,
        tls: Option<Arc<TlsTarget>>,
    ) -> Result<BackendId, AddError> {
        let mut reg = self.registry();
        if let Some(id) = reg.by_name.get(name) {
            return Ok(*id);
        }
        let index = reg.next;
        if index >= MAX_KNOWN {
            return Err(AddError::Full);
        }
        // MAX_KNOWN is far below u16::MAX, which stays BackendId::UNKNOWN.
        let id = BackendId(u16::try_from(index).map_err(|_| AddError::Full)?);
        let name: Arc<str> = Arc::from(name);
        let tag = tag(&name);
        self.slots.get_or_init(index, || Backend {
            id,
            name: name.clone(),
            tag,
            endpoint: Endpoint {
                slot: index,
                authority,
                tls,
            },
            weight: AtomicU32::new(weight),
            healthy: AtomicBool::new(true),
            member: AtomicBool::new(false),
            joins: AtomicU32::new(0),
            in_flight: AtomicUsize::new(0),
            passive_failures: AtomicU32::new(0),
            stats: stats::AnswerStats::default(),
        });
        reg.next += 1;
        reg.by_name.insert(name.clone(), id);
        // Two names whose tags collide (one pair in four billion): the first keeps the tag, and a
        // cookie naming the second reads as the first's, which only costs that session its pin.
        if let Some(other) = reg.by_tag.insert(tag, id) {
            reg.by_tag.insert(tag, other);
            tracing::warn!(backend = &*name, "backend tag collides with another's");
        }
        Ok(id)
    }

    /// Make `members` the farm: those that were not members join (healthy, their failure counts
    /// cleared), those missing leave. Ids this process does not know are ignored.
    pub(crate) fn set_members(&self, members: &[BackendId]) -> Change {
        let reg = self.registry();
        let mut next: Vec<&Backend> = members.iter().filter_map(|id| self.get(*id)).collect();
        next.sort_by(|a, b| a.name.cmp(&b.name));
        next.dedup_by_key(|b| b.id);
        let old = self.live();
        let mut change = Change::default();
        for b in &next {
            if !b.member.load(Ordering::Relaxed) {
                b.passive_failures.store(0, Ordering::Relaxed);
                b.healthy.store(true, Ordering::Relaxed);
                b.joins.fetch_add(1, Ordering::Relaxed);
                b.member.store(true, Ordering::Relaxed);
                change.joined.push(b.id);
            }
        }
        change.left = (old.members.iter())
            .filter(|id| !next.iter().any(|b| b.id == **id))
            .copied()
            .collect();
        // The new picture first, then the leavers out: a pick that finds every backend of the
        // picture it read gone finds the new one in place, and picks again over it.
        self.live.store(Arc::new(Live {
            members: next.iter().map(|b| b.id).collect(),
            wheel: smooth_wheel(&next),
            by_tag: reg.by_tag.clone(),
        }));
        for id in &change.left {
            if let Some(b) = self.get(*id) {
                b.member.store(false, Ordering::Relaxed);
            }
        }
        change
    }

    /// Give backend `id` the share `weight` of new traffic; the round-robin wheel follows at the
    /// next [`Backends::set_members`].
    pub(crate) fn set_weight(&self, id: BackendId, weight: u32) {
        if let Some(b) = self.get(id) {
            b.weight.store(weight, Ordering::Relaxed);
        }
    }

    /// The farm now.
    #[inline]
    pub(crate) fn live(&self) -> arc_swap::Guard<Arc<Live>> {
        self.live.load()
    }

    /// Copy each backend's request and answer counts into its `sessionwatch_requests_total`
    /// and `sessionwatch_responses_total` series: counted once on the request path (in
    /// [`stats::AnswerStats`]), written to the registry at each scrape.
    pub(crate) fn publish_counts(&self, metrics: &crate::metrics::Metrics) {
        for b in self.known() {
            if let Some(m) = metrics.backend(b.id) {
                let s = b.stats.snapshot();
                m.requests.absolute(s.requests);
                for (series, count) in m.responses.iter().zip(s.classes) {
                    series.absolute(count);
                }
            }
        }
    }

    /// Every backend this process knows, member or not, by id.
    pub(crate) fn known(&self) -> impl Iterator<Item = &Backend> {
        self.slots.iter().map(|(_, b)| b)
    }

    /// One backend.
    #[inline]
    pub(crate) fn get(&self, id: BackendId) -> Option<&Backend> {
        self.slots.get(id.index())
    }

    /// The id of the backend named `name`, if this process knows one.
    pub(crate) fn by_name(&self, name: &str) -> Option<BackendId> {
        self.registry().by_name.get(name).copied()
    }

    /// The name of a backend, `"unknown"` when it cannot be told.
    pub(crate) fn name(&self, id: BackendId) -> &str {
        self.get(id).map_or("unknown", |b| &b.name)
    }

    /// The tag of backend `id` (see [`tag`]); 0 for an id this process does not know.
    pub(crate) fn tag(&self, id: BackendId) -> u32 {
        self.get(id).map_or(0, |b| b.tag)
    }

    /// The backend whose tag is `tag`, if this process knows it (a member or one that left).
    pub(crate) fn by_tag(&self, tag: u32) -> Option<BackendId> {
        self.live().by_tag.get(&tag).copied()
    }

    /// Whether backend `id` takes traffic.
    #[inline]
    pub(crate) fn is_up(&self, id: BackendId) -> bool {
        self.get(id).is_some_and(Backend::is_healthy)
    }

    /// Whether any backend takes traffic (`/readyz`).
    pub(crate) fn any_healthy(&self) -> bool {
        self.live().members.iter().any(|id| self.is_up(*id))
    }

    /// Mark a backend up or down; returns the transition if its state changed.
    pub(crate) fn set_healthy(&self, id: BackendId, healthy: bool) -> Option<Transition> {
        let b = self.get(id)?;
        let was = b.healthy.swap(healthy, Ordering::Relaxed);
        match (was, healthy) {
            (false, true) => {
                b.passive_failures.store(0, Ordering::Relaxed);
                Some(Transition::Up)
            }
            (true, false) => Some(Transition::Down),
            _ => None,
        }
    }

    /// Count a connect error or timeout on live traffic; true once `fall` have come in a row.
    pub(crate) fn passive_failure(&self, id: BackendId, fall: u32) -> bool {
        self.get(id)
            .is_some_and(|b| b.passive_failures.fetch_add(1, Ordering::Relaxed) + 1 >= fall)
    }

    /// A success on live traffic resets the passive failure count.
    pub(crate) fn passive_success(&self, id: BackendId) {
        if let Some(b) = self.get(id)
            && b.passive_failures.load(Ordering::Relaxed) != 0
        {
            b.passive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Count a request in flight on `id` until the guard drops.
    pub(crate) fn start_request(self: &Arc<Self>, id: BackendId) -> InFlight {
        if let Some(b) = self.get(id) {
            b.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        InFlight {
            backends: self.clone(),
            id,
        }
    }
}

impl BackendHealth for Backends {
    fn is_healthy(&self, backend: BackendId) -> bool {
        self.is_up(backend)
    }
}

impl BackendDirectory for Backends {
    fn tag(&self, backend: BackendId) -> u32 {
        Backends::tag(self, backend)
    }

    fn resolve(&self, tag: u32) -> Option<BackendId> {
        self.by_tag(tag)
    }
}

fn smooth_wheel(members: &[&Backend]) -> Vec<BackendId> {
    let total: i64 = members.iter().map(|b| i64::from(b.weight())).sum();
    let mut current = vec![0i64; members.len()];
    let mut wheel = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        for (c, b) in current.iter_mut().zip(members) {
            *c += i64::from(b.weight());
        }
        let Some((best, _)) = current
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, -(*i as i64)))
        else {
            break;
        };
        current[best] -= total;
        wheel.push(members[best].id);
    }
    wheel
}

/// Counts one request in flight (for `least_requests`) until dropped.
#[derive(Debug)]
pub(crate) struct InFlight {
    backends: Arc<Backends>,
    id: BackendId,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(b) = self.backends.get(self.id) {
            b.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority(port: u16) -> Authority {
        format!("127.0.0.1:{port}").parse().unwrap()
    }

    #[test]
    fn an_address_keeps_its_id_across_leaving_and_joining_and_no_other_gets_it() {
        let b = Backends::named(&["a"]);
        let x = b.add("10.0.0.7:80", authority(7), 1).unwrap();
        let y = b.add("10.0.0.8:80", authority(8), 1).unwrap();
        assert_ne!(x, y);
        let change = b.set_members(&[BackendId(0), x, y]);
        assert_eq!(change.joined, [x, y]);
        assert!(b.is_up(x));
        let change = b.set_members(&[BackendId(0), y]);
        assert_eq!(
            change,
            Change {
                joined: vec![],
                left: vec![x]
            }
        );
        assert!(!b.is_up(x), "a backend that left takes no traffic");
        assert!(!b.live().wheel.contains(&x));
        assert_eq!(b.add("10.0.0.7:80", authority(9), 1), Ok(x));
        assert_eq!(b.get(x).unwrap().endpoint.authority, authority(7));
        let z = b.add("10.0.0.9:80", authority(9), 1).unwrap();
        assert!(z.0 > y.0, "a new address never takes an old id");
        b.set_members(&[x]);
        assert_eq!(b.get(x).unwrap().joins(), 2);
        assert_eq!(b.live().members, [x]);
    }

    #[test]
    fn a_backend_that_rejoins_comes_back_healthy() {
        let b = Backends::named(&["a", "b"]);
        b.set_healthy(BackendId(1), false);
        b.set_members(&[BackendId(0)]);
        b.set_members(&[BackendId(0), BackendId(1)]);
        assert!(b.is_up(BackendId(1)));
    }

    #[test]
    fn tags_follow_names_and_resolve_to_this_replicas_ids() {
        // Two replicas that learnt the same addresses in other orders number them otherwise.
        let one = Backends::named(&[]);
        let two = Backends::named(&[]);
        let a1 = one.add("10.0.0.1:80", authority(1), 1).unwrap();
        let b1 = one.add("10.0.0.2:80", authority(2), 1).unwrap();
        let b2 = two.add("10.0.0.2:80", authority(2), 1).unwrap();
        let a2 = two.add("10.0.0.1:80", authority(1), 1).unwrap();
        assert_ne!(a1, a2);
        assert_eq!(one.tag(a1), two.tag(a2));
        assert_eq!(one.tag(a1), tag("10.0.0.1:80"));
        assert_ne!(one.tag(a1), one.tag(b1));
        // A tag resolves once the registry is published by a membership change.
        one.set_members(&[a1, b1]);
        two.set_members(&[a2, b2]);
        assert_eq!(two.by_tag(one.tag(a1)), Some(a2));
        assert_eq!(two.by_tag(one.tag(b1)), Some(b2));
        assert_eq!(two.by_tag(tag("10.0.0.3:80")), None);
        // One that left still resolves: its sessions are pinned to it, and go where
        // pin.when_unhealthy says.
        two.set_members(&[b2]);
        assert_eq!(two.by_tag(one.tag(a1)), Some(a2));
    }

    #[test]
    fn the_live_set_is_ordered_by_name_whatever_the_order_given() {
        let b = Backends::named(&[]);
        let x = b.add("10.0.0.9:80", authority(9), 1).unwrap();
        let y = b.add("10.0.0.10:80", authority(10), 1).unwrap();
        b.set_members(&[x, y]);
        assert_eq!(b.live().members, [y, x]);
    }
}
