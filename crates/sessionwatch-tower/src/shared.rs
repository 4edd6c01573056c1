//! What a layer shares with every service it makes and every response future: its
//! configuration, and the two handles its owner keeps to steer it at run time (the pin switch,
//! the backends' health). A leaf, so the layer, the service and the future all read it without
//! reading each other.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::Duration;

use sessionwatch_core::{AffinityKey, BackendId, Fingerprinter, PinPolicy, SessionProfile};

use crate::{FleetStore, SessionEvents, SessionStore};

/// Tells the layer whether a backend can take a rescue replay right now.
pub trait BackendHealth: Send + Sync + 'static {
    /// Whether `backend` is healthy.
    fn is_healthy(&self, backend: BackendId) -> bool;
}

/// Tells the layer how other replicas name this replica's backends. Each replica numbers its
/// backends in its own order ([`BackendId`] is an index), so what crosses replicas (the affinity
/// cookie) carries a tag that every replica derives alike from the backend's name instead.
pub trait BackendDirectory: Send + Sync + 'static {
    /// The tag other replicas know `backend` by.
    fn tag(&self, backend: BackendId) -> u32;
    /// This replica's backend for `tag`, if it knows one. `None` makes the cookie that carried it
    /// count as unknown: a replica that has not yet learnt a backend gives no verdict on it.
    fn resolve(&self, tag: u32) -> Option<BackendId>;
}

/// The directory of a farm whose every replica numbers its backends alike (one static list):
/// the tag is the index.
#[derive(Debug, Clone, Copy, Default)]
pub struct SameOrder;

impl BackendDirectory for SameOrder {
    fn tag(&self, backend: BackendId) -> u32 {
        u32::from(backend.0)
    }

    fn resolve(&self, tag: u32) -> Option<BackendId> {
        u16::try_from(tag).ok().map(BackendId)
    }
}

/// Turns "pin every known session" on and off for the `on_incident` policy, from whatever
/// watches the reset rate.
#[derive(Debug, Clone, Default)]
pub struct PinSwitch(Arc<AtomicBool>);

impl PinSwitch {
    /// Pin every known session (`true`) or only those the policy pins anyway (`false`).
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::Relaxed);
    }

    /// Whether every known session is pinned now.
    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The affinity cookie's settings (see [`crate::SessionLayer::with_affinity_cookie`]).
#[derive(Clone)]
pub(crate) struct AffinityCookie {
    pub(crate) key: AffinityKey,
    pub(crate) name: String,
    pub(crate) secure: bool,
    /// The session idle timeout: the cookie's `Max-Age`, and the age past which it is stale.
    pub(crate) max_age: Duration,
}

pub(crate) struct Shared {
    pub(crate) profile: SessionProfile,
    pub(crate) fingerprinter: Fingerprinter,
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) events: Arc<dyn SessionEvents>,
    pub(crate) policy: PinPolicy,
    pub(crate) pin_switch: PinSwitch,
    pub(crate) rescue: Option<Arc<dyn BackendHealth>>,
    pub(crate) default_server: BackendId,
    pub(crate) affinity: Option<AffinityCookie>,
    /// The store the fleet shares, asked when `store` misses.
    pub(crate) fleet: Option<Arc<dyn FleetStore>>,
    pub(crate) directory: Arc<dyn BackendDirectory>,
    /// Whether answers carry [`crate::SessionSeen`] (for an access log).
    pub(crate) mark_sessions: bool,
}

impl Shared {
    /// A copy of the configuration with the same store, events, switch and health.
    pub(crate) fn copy(&self) -> Self {
        Shared {
            profile: self.profile.clone(),
            fingerprinter: self.fingerprinter.clone(),
            store: self.store.clone(),
            events: self.events.clone(),
            policy: self.policy,
            pin_switch: self.pin_switch.clone(),
            rescue: self.rescue.clone(),
            default_server: self.default_server,
            affinity: self.affinity.clone(),
            fleet: self.fleet.clone(),
            directory: self.directory.clone(),
            mark_sessions: self.mark_sessions,
        }
    }
}

pub(crate) fn pinning_all(shared: &Shared) -> bool {
    shared.pin_switch.is_on()
}
