//! Which backend serves a request, and what its answer says about that backend.
//!
//! In order: a rescue replay goes to the backend that issued its session; a pinned session goes
//! to its backend while that one is up (and, when it is down or has left the farm,
//! `pin.when_unhealthy` says whether to fail or to redistribute); anything else goes to the [`balancer`]. The chosen backend's
//! answer is marked [`ServedBy`] for the session layer, and its failures count against it
//! (passive health, per-backend metrics) unless they are the client's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use arc_swap::ArcSwap;
use http::{Request, Response};
use sessionwatch_core::{BackendId, RouteDecision};
use sessionwatch_tower::{RescueAttempt, ServedBy, SessionRoute};
use tower::Service;

use crate::backends::Backends;
use crate::backends::health::Health;
use crate::config::{PinConfig, WhenUnhealthy};
use crate::metrics::Metrics;
use crate::respond::ForwardError;
use crate::upstream::body::{RequestBody, ResponseBody};
use crate::upstream::{self, Upstream};
use balancer::Balancer;

pub(crate) mod balancer;

/// Routes requests to the farm; a request that cannot be served fails with a [`ForwardError`]
/// (the respond step makes the answer).
#[derive(Clone)]
pub(crate) struct Route {
    inner: Arc<Inner>,
}

struct Inner {
    backends: Arc<Backends>,
    balancer: Arc<Balancer>,
    /// Read only when a pinned backend is down; a reload may change it.
    pin: Arc<ArcSwap<PinConfig>>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    upstream: Upstream,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route").finish_non_exhaustive()
    }
}

impl Route {
    /// Routing over `backends`, sending through `upstream`.
    pub(crate) fn new(
        backends: Arc<Backends>,
        balancer: Arc<Balancer>,
        pin: Arc<ArcSwap<PinConfig>>,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
        upstream: Upstream,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                backends,
                balancer,
                pin,
                health,
                metrics,
                upstream,
            }),
        }
    }
}

impl Service<Request<RequestBody>> for Route {
    type Response = Response<ResponseBody>;
    type Error = ForwardError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ForwardError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ForwardError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<RequestBody>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move { inner.route(req).await })
    }
}

impl Inner {
    fn choose(&self, req: &Request<RequestBody>) -> Result<BackendId, ForwardError> {
        if let Some(RescueAttempt(id)) = req.extensions().get::<RescueAttempt>() {
            return Ok(*id);
        }
        if let Some(SessionRoute {
            decision: RouteDecision::Pin(id),
        }) = req.extensions().get::<SessionRoute>()
        {
            if self.backends.is_up(*id) {
                self.metrics.pins.increment(1);
                if let Some(b) = self.backends.get(*id) {
                    b.stats.pinned();
                }
                return Ok(*id);
            }
            // A backend that left the farm is down for good, as far as its sessions go.
            if self.backends.get(*id).is_some_and(|b| !b.is_member()) {
                self.metrics.pin_left.increment(1);
            }
            let pin = self.pin.load();
            match pin.when_unhealthy {
                WhenUnhealthy::Fail => {
                    self.metrics.pin_failed.increment(1);
                    return Err(ForwardError::PinnedBackendDown {
                        backend: self.backends.name(*id).to_owned(),
                        retry_after: pin.retry_after,
                    });
                }
                WhenUnhealthy::Redistribute => {
                    self.metrics.pin_broken.increment(1);
                    tracing::debug!(
                        backend = self.backends.name(*id),
                        "pinned backend down; redistributing (pin_broken)"
                    );
                }
            }
        }
        self.balancer.pick().ok_or_else(|| {
            self.metrics.no_backend.increment(1);
            ForwardError::NoHealthyBackend
        })
    }

    async fn route(
        &self,
        req: Request<RequestBody>,
    ) -> Result<Response<ResponseBody>, ForwardError> {
        let id = self.choose(&req)?;
        let backend = self
            .backends
            .get(id)
            .ok_or(ForwardError::NoHealthyBackend)?;
        let metrics = self.metrics.backend(id);
        // Also `sessionwatch_requests_total` and `_responses_total`, copied at each scrape.
        backend.stats.request();
        let _in_flight = self.backends.start_request(id);
        let started = Instant::now();
        // Both the plain HTTP/1.1 exchange and hyper's come back here with the answer's head,
        // so this is the one place answers are counted.
        let failure = match self.upstream.send(&backend.endpoint, req).await {
            Ok(mut resp) => {
                let took = started.elapsed();
                if let Some(m) = metrics {
                    m.duration.record(took);
                }
                backend.stats.answered(resp.status(), took);
                self.health.passive_success(id);
                resp.extensions_mut().insert(ServedBy(id));
                return Ok(resp);
            }
            Err(e) => e,
        };
        // The failures below that are the backend's are answered by the proxy for it (502,
        // 504); those are counted apart from the backend's own answers.
        let stats = &backend.stats;
        let backend = backend.name.to_string();
        Err(match failure {
            // The client's fault: counted as such, never against the backend.
            upstream::Error::ClientBody { stalled } => {
                if stalled {
                    self.metrics.client_body_timeout.increment(1);
                } else {
                    self.metrics.client_body_invalid.increment(1);
                }
                ForwardError::RequestBody { timed_out: stalled }
            }
            // Out of descriptors or local ports: nothing the backend did, so it is neither
            // counted nor ejected for it.
            upstream::Error::Exchange(source) if source.is_local_exhaustion() => {
                ForwardError::Overloaded(source)
            }
            upstream::Error::Exchange(source) if source.is_connect() => {
                if let Some(m) = metrics {
                    m.connect_errors.increment(1);
                }
                stats.proxy_answered();
                self.health.passive_failure(id);
                ForwardError::Connect { backend, source }
            }
            upstream::Error::Exchange(source) => {
                stats.proxy_answered();
                ForwardError::Upstream { backend, source }
            }
            upstream::Error::Timeout(timeout) => {
                if let Some(m) = metrics {
                    m.timeouts.increment(1);
                }
                stats.proxy_answered();
                self.health.passive_failure(id);
                ForwardError::Timeout { backend, timeout }
            }
        })
    }
}
