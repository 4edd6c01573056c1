//! The innermost service: picks the backend (pin, rescue or balancer), rewrites the request for
//! the upstream, sends it through the worker's connection pool, and passes the answer back, WebSocket
//! upgrades included.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use sessionwatch_core::{BackendId, RouteDecision};
use sessionwatch_tower::{RescueAttempt, ServedBy, SessionRoute};
use tower::Service;

use crate::backends::Backends;
use crate::balancer::Balancer;
use crate::body::{BodyState, BodyWatch, RequestBody, ResponseBody};
use crate::config::{PinConfig, UpstreamConfig, WhenUnhealthy};
use crate::errors::ForwardError;
use crate::extensions::ClientConnection;
use crate::headers::{is_upgrade, strip_hop_by_hop};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::reporter::report_path;
use crate::upstream::Pool;

/// The response timeout ran out.
#[derive(Debug)]
struct Elapsed;

/// A request body of at most this many bytes, with its length known up front, is read whole
/// before the request goes to the farm (as NGINX buffers request bodies): the backend never
/// waits on a slow client, and the request can be sent again if a pooled connection fails.
pub const BUFFER_BODY_LIMIT: u64 = 64 * 1024;

/// Forwards requests to the farm. Never fails: errors become answers (see [`ForwardError`]).
#[derive(Clone)]
pub struct Forward {
    inner: Arc<Inner>,
}

struct Inner {
    backends: Arc<Backends>,
    balancer: Arc<Balancer>,
    pool: Pool,
    upstream: UpstreamConfig,
    pin: PinConfig,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forward").finish_non_exhaustive()
    }
}

impl Forward {
    /// A forwarder over `backends`.
    pub fn new(
        backends: Arc<Backends>,
        balancer: Arc<Balancer>,
        pool: Pool,
        upstream: UpstreamConfig,
        pin: PinConfig,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                backends,
                balancer,
                pool,
                upstream,
                pin,
                health,
                metrics,
            }),
        }
    }
}

impl Service<Request<RequestBody>> for Forward {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<RequestBody>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            // Kept for the log line of a failure; a clone of a `Uri` shares its bytes.
            let uri = req.uri().clone();
            match inner.forward(req).await {
                Ok(resp) => Ok(resp),
                Err(e) => {
                    let status = e.status();
                    match &e {
                        ForwardError::PinnedBackendDown { .. }
                        | ForwardError::NoHealthyBackend
                        | ForwardError::RequestBody { .. } => {
                            tracing::debug!(%status, path = report_path(uri.path()), error = %e, "refused");
                        }
                        _ => {
                            tracing::warn!(%status, path = report_path(uri.path()), error = %error_chain(&e), "upstream failure")
                        }
                    }
                    Ok(e.into_response())
                }
            }
        })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
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
                return Ok(*id);
            }
            match self.pin.when_unhealthy {
                WhenUnhealthy::Fail => {
                    self.metrics.pin_failed.increment(1);
                    return Err(ForwardError::PinnedBackendDown {
                        backend: self.backends.name(*id).to_owned(),
                        retry_after: self.pin.retry_after,
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

    /// A streamed body short enough (see [`BUFFER_BODY_LIMIT`]) read whole, each frame due
    /// within `upstream.request_body_timeout` of the last; any other body as it is.
    async fn read_small_body(&self, body: RequestBody) -> Result<RequestBody, ForwardError> {
        let RequestBody::Incoming { mut body } = body else {
            return Ok(body);
        };
        let short = http_body::Body::size_hint(&body)
            .exact()
            .is_some_and(|n| n <= BUFFER_BODY_LIMIT);
        if !short {
            return Ok(RequestBody::Incoming { body });
        }
        let mut whole = bytes::BytesMut::new();
        loop {
            match tokio::time::timeout(self.upstream.request_body_timeout, body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        whole.extend_from_slice(&data);
                    }
                }
                Ok(None) => break,
                Ok(Some(Err(_))) => return Err(self.client_body_fault(false)),
                Err(_) => return Err(self.client_body_fault(true)),
            }
        }
        Ok(RequestBody::Buffered {
            data: Some(whole.freeze()),
        })
    }

    /// The answer for a body the client broke (`stalled`: stopped sending), counted as the
    /// client's fault, not the backend's.
    fn client_body_fault(&self, stalled: bool) -> ForwardError {
        if stalled {
            self.metrics.client_body_timeout.increment(1);
        } else {
            self.metrics.client_body_invalid.increment(1);
        }
        ForwardError::RequestBody { timed_out: stalled }
    }

    async fn forward(
        &self,
        mut req: Request<RequestBody>,
    ) -> Result<Response<ResponseBody>, ForwardError> {
        let id = self.choose(&req)?;
        let backend = self
            .backends
            .get(id)
            .ok_or(ForwardError::NoHealthyBackend)?;
        let upgrade = req.version() == Version::HTTP_11 && is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let client_connection = upgrade
            .then(|| req.extensions().get::<ClientConnection>().cloned())
            .flatten();

        // The upstream request carries its target in origin form; the authority goes in `Host`.
        let path_and_query = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        // Hop-by-hop headers were removed and the forwarding headers set by the accept loop,
        // before the session layer read the cookies (see server.rs).
        let (mut parts, body) = req.into_parts();
        parts.uri = Uri::from(path_and_query);
        parts.version = Version::HTTP_11;
        // Only a body hyper streams needs reading here; the front reads plain requests' bodies
        // itself. Boxed, so that this rarer path does not enlarge every request's future.
        let body = match body {
            RequestBody::Incoming { .. } if !upgrade => {
                Box::pin(self.read_small_body(body)).await?
            }
            other => other,
        };
        // A body still streaming from the client is watched: if it breaks or stalls, the
        // exchange's failure is the client's, not the backend's.
        let (body, watch) = match body {
            RequestBody::Incoming { body } if !upgrade => {
                let (body, watch) = RequestBody::watched(body, self.upstream.request_body_timeout);
                (body, Some(watch))
            }
            other => (other, None),
        };
        let upstream_req = Request::from_parts(parts, body);

        let metrics = self.metrics.backends.get(id.index());
        if let Some(m) = metrics {
            m.requests.increment(1);
        }
        let _in_flight = self.backends.start_request(id);
        let started = Instant::now();
        let send = self.pool.send(backend, upstream_req);
        let sent = match &watch {
            None => tokio::time::timeout(self.upstream.response_timeout, send)
                .await
                .map_err(|_| Elapsed),
            // The response timeout runs from the end of the client's body: a long upload is
            // not the backend's slowness, and a stalled one is cut by the body's own timer.
            Some(watch) => Box::pin(self.send_streamed(send, watch)).await,
        };
        if let Some(watch) = &watch {
            match (watch.state(), &sent) {
                (_, Ok(Ok(_))) | (BodyState::Streaming | BodyState::Ended, _) => {}
                (state, _) => return Err(self.client_body_fault(state == BodyState::Stalled)),
            }
        }
        let mut resp = match sent {
            Ok(Ok(resp)) => resp,
            Ok(Err(source)) if source.is_local_exhaustion() => {
                // Out of descriptors or local ports: nothing the backend did, so it is neither
                // counted nor ejected for it.
                tracing::warn!(error = %error_chain(&source), "cannot open an upstream connection: out of local resources");
                return Err(ForwardError::Overloaded);
            }
            Ok(Err(source)) if source.is_connect() => {
                if let Some(m) = metrics {
                    m.connect_errors.increment(1);
                }
                self.health.passive_failure(id);
                return Err(ForwardError::Connect {
                    backend: backend.name.to_string(),
                    source,
                });
            }
            Ok(Err(source)) => {
                return Err(ForwardError::Upstream {
                    backend: backend.name.to_string(),
                    source,
                });
            }
            Err(_) => {
                if let Some(m) = metrics {
                    m.timeouts.increment(1);
                }
                self.health.passive_failure(id);
                return Err(ForwardError::Timeout {
                    backend: backend.name.to_string(),
                    timeout: self.upstream.response_timeout,
                });
            }
        };
        if let Some(m) = metrics {
            m.duration.record(started.elapsed().as_secs_f64());
        }
        self.health.passive_success(id);

        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if let (true, Some(client_upgrade)) = (switching, client_upgrade) {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                let _counted = client_connection;
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((client_io, upstream_io)) => {
                        let mut c = TokioIo::new(client_io);
                        let mut u = TokioIo::new(upstream_io);
                        let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                }
            });
        }
        strip_hop_by_hop(resp.headers_mut(), switching);
        resp.extensions_mut().insert(ServedBy(id));
        Ok(resp)
    }

    /// `send` for a request whose body streams from the client: the response timeout starts
    /// once the body has been read to its end, or runs out while the backend takes none of it
    /// (hyper asks for more of the body only as the backend reads it).
    async fn send_streamed<F, T>(&self, send: F, watch: &BodyWatch) -> Result<T, Elapsed>
    where
        F: Future<Output = T>,
    {
        let limit = self.upstream.response_timeout;
        let deadline = async {
            while watch.state() == BodyState::Streaming {
                let quiet = watch.since_asked();
                if quiet >= limit {
                    return;
                }
                tokio::select! {
                    () = watch.settled() => break,
                    () = tokio::time::sleep(limit - quiet) => {}
                }
            }
            tokio::time::sleep(limit).await;
        };
        tokio::select! {
            sent = send => Ok(sent),
            () = deadline => Err(Elapsed),
        }
    }
}
