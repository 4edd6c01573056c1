//! The store a fleet of replicas shares, behind each replica's own table.
//!
//! Every replica keeps its [`crate::SessionStore`] as a near cache. A [`FleetStore`] is asked
//! only when that cache misses a session a request carries, and told what the replica learns, so
//! that a session one replica saw issued is known to all of them. The layer stays sans-I/O about
//! it: a lookup or a write the answer waits for is a future the store hands back, already bound
//! by the store's own timeout, and everything else is fire-and-forget. A store that cannot answer
//! now (down, over its lookup budget, or sure the fleet does not know the session) returns
//! `None`, and the request goes on with what the near cache knows.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sessionwatch_core::{Fingerprint, SessionRecord};

/// A lookup in flight: the records the fleet knows, among those asked for.
pub type Lookup = Pin<Box<dyn Future<Output = Found> + Send + 'static>>;

/// A write an answer waits for.
pub type Publish = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What a lookup found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// The records of the sessions the fleet knows, by fingerprint.
    pub records: Vec<(Fingerprint, SessionRecord)>,
    /// The store did not answer within its timeout: the request has had its one wait, and a
    /// session its answer issues is written without holding the answer back.
    pub waited_out: bool,
}

/// The records several replicas share (the proxy's Redis store).
pub trait FleetStore: Send + Sync + 'static {
    /// The records of `misses`, the sessions a request carries that the near cache does not
    /// know. `None` when the store will not be asked for any of them; the future resolves within
    /// the store's timeout, to nothing if the store did not answer in time.
    fn lookup(&self, misses: &[Fingerprint]) -> Option<Lookup>;
    /// A session a backend has just issued: the answer that issued it waits for this write, so
    /// that the client's next request finds the session on any replica (unless the request
    /// already waited out a lookup: then the layer calls [`FleetStore::update`] instead). `None`
    /// when there is nothing to wait for (the store is down: the write is kept for when it is
    /// back).
    fn publish(&self, fingerprint: Fingerprint, record: SessionRecord) -> Option<Publish>;
    /// Any other change to a record (last seen, lost, pinned): written in batches, never waited
    /// on.
    fn update(&self, fingerprint: Fingerprint, record: SessionRecord);
    /// A session that ended or was replaced.
    fn remove(&self, fingerprint: Fingerprint);
    /// The same store for one thread of a thread-per-core server, which may keep its own
    /// connection there so that a request's round trip never wakes another thread (see
    /// [`crate::SessionLayer::for_thread`]). `None`: the thread shares this one.
    fn for_thread(&self) -> Option<Arc<dyn FleetStore>> {
        None
    }
}
