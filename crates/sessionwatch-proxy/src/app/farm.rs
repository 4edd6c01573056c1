//! What a membership change means for the rest of the proxy: the incident tracker grows and
//! hears of joins (a rollout's hint), a backend that joins gets its health checker, and each
//! change is an alert line. And the directory other replicas' cookies are read through, which
//! asks discovery for a fresh look when a cookie names a backend this replica has not resolved.

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;

use sessionwatch_core::BackendId;
use sessionwatch_tower::BackendDirectory;

use crate::backends::discovery::{Discovery, Hooks};
use crate::backends::health::Health;
use crate::backends::{Backends, Change};
use crate::report::alert_log::AlertLog;
use crate::report::incidents::IncidentWatch;
use crate::report::lines::{AlertLine, BackendLine, LineKind};

/// The [`Hooks`] of the running proxy.
pub(super) struct FarmHooks {
    pub(super) backends: Arc<Backends>,
    pub(super) incidents: Arc<IncidentWatch>,
    pub(super) log: AlertLog,
    /// Set once health exists (it starts after the first resolution, which needs no checker:
    /// the farm the proxy starts with gets its checkers with the configured backends').
    pub(super) health: OnceLock<Arc<Health>>,
}

impl Hooks for FarmHooks {
    fn joining(&self, id: BackendId, initial: bool) {
        if initial {
            self.incidents.make_room(id);
        } else {
            self.incidents.note_joined(id);
        }
    }

    fn changed(&self, change: &Change, at: SystemTime) {
        let members = self.backends.live().members.len();
        for (kind, ids) in [
            (LineKind::BackendJoined, &change.joined),
            (LineKind::BackendLeft, &change.left),
        ] {
            for id in ids {
                self.log.emit(AlertLine::new(
                    kind,
                    at,
                    &BackendLine {
                        backend: self.backends.name(*id),
                        members,
                    },
                ));
            }
        }
        if let Some(health) = self.health.get() {
            for id in &change.joined {
                health.check_joined(*id);
            }
        }
    }
}

/// The proxy's [`BackendDirectory`]: backend tags, and a fresh resolution when one is unknown.
pub(super) struct Directory {
    pub(super) backends: Arc<Backends>,
    /// Set once discovery has started (the directory is made before it); a reload that
    /// changes the DNS entries puts their new discovery here.
    pub(super) discovery: ArcSwapOption<Discovery>,
}

impl BackendDirectory for Directory {
    fn tag(&self, backend: BackendId) -> u32 {
        self.backends.tag(backend)
    }

    fn resolve(&self, tag: u32) -> Option<BackendId> {
        let found = self.backends.by_tag(tag);
        if found.is_none()
            && let Some(d) = self.discovery.load().as_ref()
        {
            d.wake();
        }
        found
    }
}
