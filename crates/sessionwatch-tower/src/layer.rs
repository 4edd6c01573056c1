//! The layer: builds the shared configuration and wraps services in [`crate::SessionService`].

use std::sync::Arc;

use arc_swap::ArcSwap;
use sessionwatch_core::{AffinityKey, BackendId, Fingerprinter, PinPolicy, SessionProfile};
use tower::Layer;

use crate::shared::{
    AffinityCookie, BackendDirectory, BackendHealth, PinSwitch, SameOrder, Shared,
};
use crate::{FleetStore, SessionEvents, SessionService, SessionStore};

/// Learns sessions and classifies responses for the service it wraps. See the crate docs.
///
/// Clones of a layer share its settings: [`SessionLayer::reconfigure`] on one is seen by every
/// service made from any of them. [`SessionLayer::for_thread`] makes a layer with settings of its
/// own.
#[derive(Clone)]
pub struct SessionLayer {
    shared: Arc<ArcSwap<Shared>>,
}

/// What may change in a running layer (see [`SessionLayer::reconfigure`]): the rest (the
/// fingerprint key, the store, the events, the fleet store) is the layer's for its life.
pub struct LayerSettings {
    /// Cookies, paths, markers and the idle timeout.
    pub profile: SessionProfile,
    /// When sessions are pinned.
    pub policy: PinPolicy,
    /// Rescue lost GET and HEAD requests on their issuer when it is healthy (`None`: no rescue).
    pub rescue: Option<Arc<dyn BackendHealth>>,
    /// The signed affinity cookie's name and whether it is `Secure` (`None`: no cookie).
    pub affinity: Option<(String, bool)>,
}

impl std::fmt::Debug for LayerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerSettings")
            .field("profile", &self.profile)
            .field("policy", &self.policy)
            .field("rescue", &self.rescue.is_some())
            .field("affinity", &self.affinity)
            .finish()
    }
}

impl std::fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLayer")
            .field("policy", &self.shared.load().policy)
            .field("rescue", &self.shared.load().rescue.is_some())
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
            shared: Arc::new(ArcSwap::from_pointee(Shared {
                profile,
                fingerprinter,
                store,
                events: Arc::new(()),
                policy: PinPolicy::Off,
                pin_switch: PinSwitch::default(),
                rescue: None,
                default_server: BackendId::UNKNOWN,
                affinity: None,
                fleet: None,
                directory: Arc::new(SameOrder),
                mark_sessions: false,
            })),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Shared)) -> Self {
        // LayerSettings of its own, so that a layer built from a clone does not change the original.
        let mut copy = self.shared.load().copy();
        f(&mut copy);
        self.shared = Arc::new(ArcSwap::from_pointee(copy));
        self
    }

    /// Change the settings of this layer (and its clones) while it runs: each service made from
    /// it reads them from its next request on, and a request under way keeps those it began
    /// with. Sessions already learnt stay in the store, whatever the new cookies.
    pub fn reconfigure(&self, settings: &LayerSettings) {
        let mut next = self.shared.load().copy();
        next.profile = settings.profile.clone();
        next.policy = settings.policy;
        next.rescue = settings.rescue.clone();
        next.affinity = settings
            .affinity
            .as_ref()
            .map(|(name, secure)| AffinityCookie {
                key: AffinityKey::derive(&next.fingerprinter),
                name: name.clone(),
                secure: *secure,
                max_age: next.profile.idle_timeout(),
            });
        self.shared.store(Arc::new(next));
    }

    /// The same layer (same store, events, policy and switch) with its own copy of the
    /// configuration, for one thread of a thread-per-core server: the reference counts that
    /// every request takes and drops then stay in that core's cache instead of bouncing between
    /// cores.
    pub fn for_thread(&self) -> Self {
        let mut shared = self.shared.load().copy();
        if let Some(own) = shared.fleet.as_ref().and_then(|f| f.for_thread()) {
            shared.fleet = Some(own);
        }
        Self {
            shared: Arc::new(ArcSwap::from_pointee(shared)),
        }
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

    /// Mint a signed affinity cookie named `name` on every answer that issues a session, and take
    /// the record of a session this table misses from a valid one (see
    /// [`sessionwatch_core::AffinityKey`]); the cookie is removed from every request before it is
    /// forwarded. `secure` adds the `Secure` attribute (the client side is TLS).
    pub fn with_affinity_cookie(self, name: impl Into<String>, secure: bool) -> Self {
        let name = name.into();
        self.edit(|s| {
            s.affinity = Some(AffinityCookie {
                key: AffinityKey::derive(&s.fingerprinter),
                name,
                secure,
                max_age: s.profile.idle_timeout(),
            })
        })
    }

    /// Share session records with other replicas through `fleet`: the layer's own store becomes
    /// its near cache, and a session it misses is looked up in `fleet` (once per request, within
    /// the fleet store's timeout) before the request is classified or routed. An answer that
    /// issues a session goes to the client once `fleet` has it.
    pub fn with_fleet_store(self, fleet: Arc<dyn FleetStore>) -> Self {
        self.edit(|s| s.fleet = Some(fleet))
    }

    /// Name backends to other replicas through `directory` (in the affinity cookie) instead of
    /// by their index, for replicas that number their backends each in its own order (backends
    /// discovered at run time).
    pub fn with_backend_directory(self, directory: Arc<dyn BackendDirectory>) -> Self {
        self.edit(|s| s.directory = directory)
    }

    /// Mark every answer about a session with [`crate::SessionSeen`], the session's short
    /// fingerprint, for an access log below or above the layer to read. Off by default: the mark
    /// costs an extension on every such answer.
    pub fn with_session_marks(self) -> Self {
        self.edit(|s| s.mark_sessions = true)
    }

    /// The store the layer uses.
    pub fn store(&self) -> Arc<dyn SessionStore> {
        self.shared.load().store.clone()
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService::new(inner, self.shared.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sessionwatch_core::{CookieSpec, Fingerprint, SessionRecord, Timestamp};

    use super::*;
    use crate::MokaStore;
    use crate::shared::pinning_all;

    #[test]
    fn a_layer_for_a_thread_shares_the_store_and_the_switch_but_not_its_counts() {
        let store: Arc<dyn SessionStore> = Arc::new(MokaStore::new(10, Duration::from_secs(60)));
        let switch = PinSwitch::default();
        let layer = SessionLayer::new(
            SessionProfile::custom(vec![CookieSpec::new("SID")]),
            Fingerprinter::from_secret(b"t"),
            store,
        )
        .with_pin_policy(PinPolicy::Learn)
        .with_pin_switch(switch.clone());
        let per_thread = layer.for_thread();
        assert!(!Arc::ptr_eq(&layer.shared, &per_thread.shared));
        assert!(Arc::ptr_eq(&layer.store(), &per_thread.store()));
        assert_eq!(per_thread.shared.load().policy, PinPolicy::Learn);
        layer.store().put(
            Fingerprint(1),
            SessionRecord::issued(BackendId(0), Timestamp::from_millis(0)),
        );
        assert!(per_thread.store().get(Fingerprint(1)).is_some());
        switch.set(true);
        assert!(pinning_all(&per_thread.shared.load()));
    }

    #[test]
    fn a_reconfigured_layer_changes_its_clones_and_keeps_its_store_but_not_other_threads() {
        let store: Arc<dyn SessionStore> = Arc::new(MokaStore::new(10, Duration::from_secs(60)));
        let layer = SessionLayer::new(
            SessionProfile::custom(vec![CookieSpec::new("SID")]),
            Fingerprinter::from_secret(b"t"),
            store.clone(),
        );
        let one = layer.for_thread();
        let clone_of_one = one.clone();
        let other = layer.for_thread();
        one.reconfigure(&LayerSettings {
            profile: SessionProfile::custom(vec![CookieSpec::new("NEWSID")]),
            policy: PinPolicy::OnReset,
            rescue: None,
            affinity: Some(("aff".into(), true)),
        });
        let seen = clone_of_one.shared.load();
        assert_eq!(seen.profile.cookies()[0].name(), "NEWSID");
        assert_eq!(seen.policy, PinPolicy::OnReset);
        assert_eq!(seen.affinity.as_ref().map(|a| a.name.as_str()), Some("aff"));
        assert!(Arc::ptr_eq(&seen.store, &store));
        assert_eq!(other.shared.load().profile.cookies()[0].name(), "SID");
    }
}
