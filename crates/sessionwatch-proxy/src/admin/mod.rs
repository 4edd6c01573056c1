//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process is up), `/readyz`
//! (at least one backend is healthy, and the proxy is not draining), `/status` (the live
//! incident picture as JSON), `/`, the status page that draws it, and `POST /probe`, the deploy
//! gate; with `[admin] token`, every path but the first two asks for it (`auth`).

use std::convert::Infallible;
use std::sync::Arc;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceBuilder;

use crate::backends::Backends;
use crate::config::AdminAuth;
use crate::metrics::Metrics;
use crate::report::incidents::IncidentWatch;
use crate::sensitive;
use crate::shutdown::DrainWatch;
use crate::upstream::body::ResponseBody;
use sessionwatch_tower::SessionStore;

mod auth;
mod probe;
mod status;

pub(crate) use probe::ProbeGate;

/// What the admin endpoints read.
#[derive(Clone)]
pub(crate) struct AdminState {
    /// Backend health.
    pub backends: Arc<Backends>,
    /// The registry.
    pub metrics: Arc<Metrics>,
    /// Session table, for the tracked-sessions gauge.
    pub store: Arc<dyn SessionStore>,
    /// Incident picture.
    pub incidents: Arc<IncidentWatch>,
    /// Whether the proxy is draining (then it is not ready, whatever the backends).
    pub drain: DrainWatch,
    /// What every path but `/healthz` and `/readyz` asks for, when set.
    pub token: Option<AdminAuth>,
    /// `POST /probe`.
    pub probe: Arc<ProbeGate>,
}

fn text(
    status: StatusCode,
    body: impl Into<bytes::Bytes>,
    content_type: &'static str,
) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Answer one admin request. Async because some answers (a probe run) wait on the network.
pub(crate) async fn handle(state: &AdminState, req: Request<Incoming>) -> Response<ResponseBody> {
    if let Some(refused) = auth::refuse(state.token.as_ref(), req.uri().path(), req.headers()) {
        return refused;
    }
    match req.uri().path() {
        "/metrics" => {
            state.metrics.sessions_tracked.set(state.store.len() as f64);
            // The store counts evictions itself (moka reports them to a listener of its own);
            // the scrape copies the totals.
            let evicted = state.store.evictions();
            let m = &state.metrics;
            m.sessions_evicted_presented.absolute(evicted.presented);
            m.sessions_evicted_unpresented.absolute(evicted.unpresented);
            state.backends.publish_counts(m);
            state.metrics.upkeep();
            text(
                StatusCode::OK,
                state.metrics.render(),
                "text/plain; version=0.0.4; charset=utf-8",
            )
        }
        "/healthz" => text(StatusCode::OK, "ok\n", "text/plain"),
        "/readyz" => {
            if state.drain.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n", "text/plain")
            } else if state.backends.any_healthy() {
                text(StatusCode::OK, "ready\n", "text/plain")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no healthy backend\n",
                    "text/plain",
                )
            }
        }
        "/status" => status::json(state),
        "/" => status::page(),
        "/probe" => probe::handle(&state.probe, req.method()).await,
        _ => text(StatusCode::NOT_FOUND, "not found\n", "text/plain"),
    }
}

/// Serve the admin endpoints until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    state: AdminState,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = ServiceBuilder::new()
                .layer(sensitive::layer())
                .service(tower::service_fn(move |req: Request<Incoming>| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(&state, req).await) }
                }));
            let svc = TowerToHyperService::new(svc);
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
