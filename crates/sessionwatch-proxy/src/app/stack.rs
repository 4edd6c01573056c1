//! The request stack, assembled here and nowhere else. Every request, on the plain HTTP/1.1
//! path and on hyper's path alike, goes through these steps in this order (outermost first):
//!
//! 1. prepare (`prepare.rs`): refuse what may not pass, strip hop-by-hop fields, set
//!    `X-Forwarded-*` and the request id;
//! 2. respond (`respond.rs`): the steps below fail with an error, or panic; here that becomes
//!    the client's answer, logged once;
//! 3. session (`sessionwatch-tower`): read the session cookies, attach a pin, classify the
//!    answer, learn, report, and maybe rescue;
//! 4. route (`route/`): choose the backend (rescue, pin, balancer) and judge its answer;
//! 5. upstream (`upstream/`): send to that backend on the worker's pool.

use std::sync::Arc;

use arc_swap::ArcSwap;
use sessionwatch_tower::{SessionLayer, SessionService};
use tower::ServiceBuilder;

use crate::backends::Backends;
use crate::backends::health::Health;
use crate::config::PinConfig;
use crate::listen::Peer;
use crate::metrics::Metrics;
use crate::prepare::{Prepare, RequestIds};
use crate::respond::RespondLayer;
use crate::route::Route;
use crate::route::balancer::Balancer;
use crate::upstream::Upstream;

use super::access::AccessLogged;

/// What one worker's stack is built from.
pub(super) struct Parts {
    pub(super) session: SessionLayer,
    pub(super) backends: Arc<Backends>,
    pub(super) balancer: Arc<Balancer>,
    pub(super) pin: Arc<ArcSwap<PinConfig>>,
    pub(super) health: Arc<Health>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) upstream: Upstream,
    pub(super) request_ids: RequestIds,
    /// `[log] access`.
    pub(super) access_log: bool,
}

/// The steps below respond, shared by every connection of a worker.
type Shared = SessionService<Route>;

/// One worker's stack: given a connection's peer, the handler its requests go through.
pub(super) fn build(p: Parts) -> impl Fn(Peer) -> AccessLogged<Prepare<Shared>> {
    // Outside everything, so a line tells what the client was answered.
    let access = p.access_log.then(|| p.backends.clone());
    let shared = ServiceBuilder::new()
        // Errors and panics below become answers here, and nowhere else.
        .layer(RespondLayer)
        // Sessions are read from what the backend will see, and judged from what it answered.
        .layer(p.session)
        // The backend is chosen last, so a rescue replay can choose again.
        .service(Route::new(
            p.backends, p.balancer, p.pin, p.health, p.metrics, p.upstream,
        ));
    let ids = p.request_ids;
    // Prepared first, so that nothing below sees what the backend will not.
    move |peer| AccessLogged {
        inner: Prepare::new(shared.clone(), ids.clone(), peer),
        on: access.clone(),
    }
}
