//! The layer and its shared state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sessionwatch_core::{BackendId, Fingerprinter, PinPolicy, SessionProfile};
use tower::Layer;

use crate::{SessionEvents, SessionService, SessionStore};

/// Tells the layer whether a backend can take a rescue replay right now.
pub trait BackendHealth: Send + Sync + 'static {
    /// Whether `backend` is healthy.
    fn is_healthy(&self, backend: BackendId) -> bool;
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

pub(crate) struct Shared {
    pub(crate) profile: SessionProfile,
    pub(crate) fingerprinter: Fingerprinter,
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) events: Arc<dyn SessionEvents>,
    pub(crate) policy: PinPolicy,
    pub(crate) pin_switch: PinSwitch,
    pub(crate) rescue: Option<Arc<dyn BackendHealth>>,
    pub(crate) default_server: BackendId,
}

/// Learns sessions and classifies responses for the service it wraps. See the crate docs.
#[derive(Clone)]
pub struct SessionLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLayer")
            .field("policy", &self.shared.policy)
            .field("rescue", &self.shared.rescue.is_some())
            .finish_non_exhaustive()
    }
}

impl SessionLayer {
    /// A layer for `profile`, fingerprinting with `fingerprinter` and remembering sessions in
    /// `store`; no pinning, no rescue, no reporting until configured.
    pub fn new(
        profile: SessionProfile,
        fingerprinter: Fingerprinter,
        store: Arc<dyn SessionStore>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                profile,
                fingerprinter,
                store,
                events: Arc::new(()),
                policy: PinPolicy::Off,
                pin_switch: PinSwitch::default(),
                rescue: None,
                default_server: BackendId::UNKNOWN,
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Shared)) -> Self {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => f(shared),
            None => {
                // Built from a clone: copy the shared state rather than change the original's.
                let s = &self.shared;
                let mut copy = Shared {
                    profile: s.profile.clone(),
                    fingerprinter: s.fingerprinter.clone(),
                    store: s.store.clone(),
                    events: s.events.clone(),
                    policy: s.policy,
                    pin_switch: s.pin_switch.clone(),
                    rescue: s.rescue.clone(),
                    default_server: s.default_server,
                };
                f(&mut copy);
                self.shared = Arc::new(copy);
            }
        }
        self
    }

    /// Report observations to `events`.
    pub fn with_events(self, events: Arc<dyn SessionEvents>) -> Self {
        self.edit(|s| s.events = events)
    }

    /// Route sessions under `policy`.
    pub fn with_pin_policy(self, policy: PinPolicy) -> Self {
        self.edit(|s| s.policy = policy)
    }

    /// Use `switch` to pin every known session on demand (the `on_incident` policy).
    pub fn with_pin_switch(self, switch: PinSwitch) -> Self {
        self.edit(|s| s.pin_switch = switch)
    }

    /// Rescue lost GET and HEAD requests on their issuer when `health` says it is healthy.
    pub fn with_rescue(self, health: Arc<dyn BackendHealth>) -> Self {
        self.edit(|s| s.rescue = Some(health))
    }

    /// The backend to attribute responses to when they carry no [`crate::ServedBy`] (an
    /// application that wraps itself in the layer is its own single backend).
    pub fn with_default_server(self, server: BackendId) -> Self {
        self.edit(|s| s.default_server = server)
    }

    /// The store the layer uses.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.shared.store
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService::new(inner, self.shared.clone())
    }
}

pub(crate) fn pinning_all(shared: &Shared) -> bool {
    shared.pin_switch.is_on()
}
