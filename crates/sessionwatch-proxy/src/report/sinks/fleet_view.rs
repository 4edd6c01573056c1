//! What the Alertmanager sink asks before it ends the farm's alert: does another replica still
//! see the incident?
//!
//! Every replica in front of one farm posts the same alert (see [`super::alertmanager`]), so the
//! replica whose incident closes first must not resolve it while another still sees the incident:
//! the alert would end, then fire again at that replica's next re-send, a notification each time.
//! At resolution time the sink asks a [`FleetIncidents`]; a shared store (Redis) answers for a
//! fleet, [`InProcessFleet`] for replicas in one process, and [`NoSharedView`] says it cannot
//! tell, which leaves the choice to `[alertmanager] fleet`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The answer of [`FleetIncidents::others_open`], as a boxed future so that a shared store can
/// ask over the network.
pub type OthersOpen<'a> = Pin<Box<dyn Future<Output = Option<bool>> + Send + 'a>>;

/// A view of the other replicas' incidents, asked by the Alertmanager sink.
pub trait FleetIncidents: Send + Sync {
    /// This replica's incident opened (`true`) or closed (`false`). The sink says so before it
    /// asks [`others_open`](Self::others_open); a view that learns it elsewhere (from shared
    /// window counts, say) may ignore it.
    fn own_incident(&self, open: bool) {
        let _ = open;
    }

    /// Whether a replica other than this one still sees an incident: `Some(false)` lets this one
    /// resolve the alert, `Some(true)` leaves it to the others, `None` means there is no shared
    /// view (the sink then follows `[alertmanager] fleet`). The sink waits for the answer at most
    /// its `timeout`, and takes a late one as `None`.
    fn others_open(&self) -> OthersOpen<'_>;
}

impl fmt::Debug for dyn FleetIncidents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FleetIncidents")
    }
}

/// No view of other replicas: a single proxy, or a fleet without a shared store.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSharedView;

impl FleetIncidents for NoSharedView {
    fn others_open(&self) -> OthersOpen<'_> {
        Box::pin(std::future::ready(None))
    }
}

/// A shared view for replicas that run in one process (tests, an embedding that starts several):
/// each takes its [`member`](Self::member), and the fleet counts the members whose incident is
/// open.
#[derive(Debug, Clone, Default)]
pub struct InProcessFleet {
    open: Arc<AtomicUsize>,
}

impl InProcessFleet {
    /// A fleet with no incident open.
    pub fn new() -> Self {
        Self::default()
    }

    /// The view one replica is started with.
    pub fn member(&self) -> Arc<dyn FleetIncidents> {
        Arc::new(Member {
            open: self.open.clone(),
            mine: AtomicBool::new(false),
        })
    }

    /// How many members see an incident now.
    pub fn open_count(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
struct Member {
    open: Arc<AtomicUsize>,
    /// Whether this member is counted in `open`, so that a repeated notice counts once.
    mine: AtomicBool,
}

impl FleetIncidents for Member {
    fn own_incident(&self, open: bool) {
        if self.mine.swap(open, Ordering::SeqCst) != open {
            if open {
                self.open.fetch_add(1, Ordering::SeqCst);
            } else {
                self.open.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    fn others_open(&self) -> OthersOpen<'_> {
        // Each member counts itself out before it reads, so of two closing at once the one that
        // reads last reads no other: at least one resolves (both may, which is harmless).
        let mine = usize::from(self.mine.load(Ordering::SeqCst));
        let others = self.open.load(Ordering::SeqCst).saturating_sub(mine);
        Box::pin(std::future::ready(Some(others > 0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_last_member_to_close_is_the_one_that_sees_no_other_open() {
        let fleet = InProcessFleet::new();
        let (a, b) = (fleet.member(), fleet.member());
        assert_eq!(a.others_open().await, Some(false));
        a.own_incident(true);
        b.own_incident(true);
        // A repeated notice counts once.
        b.own_incident(true);
        assert_eq!(fleet.open_count(), 2);
        assert_eq!(a.others_open().await, Some(true));
        a.own_incident(false);
        assert_eq!(a.others_open().await, Some(true), "b still sees it");
        b.own_incident(false);
        assert_eq!(b.others_open().await, Some(false));
        assert_eq!(a.others_open().await, Some(false));
        a.own_incident(false);
        assert_eq!(
            fleet.open_count(),
            0,
            "a repeated close does not go below zero"
        );
        assert_eq!(NoSharedView.others_open().await, None);
    }
}
