//! Backend health: active HTTP checks with rise/fall thresholds, and passive ejection on connect
//! errors and timeouts seen on live traffic. Active checks go through the same upstream path
//! as traffic ([`Upstream`]), so a check passes only if a request would.

use std::sync::Arc;

use http::header::HOST;
use http::{HeaderValue, Request};
use http_body_util::BodyExt;
use sessionwatch_core::BackendId;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backends::{Backends, Transition};
use crate::config::{ActiveHealth, HealthConfig};
use crate::metrics::Metrics;
use crate::upstream::body::RequestBody;
use crate::upstream::{Endpoint, Upstream};

/// Told of every health transition (the incident tracker uses "came back up" as a restart).
pub(crate) type TransitionListener = Arc<dyn Fn(BackendId, Transition) + Send + Sync>;

/// Owns the health state changes of every backend.
pub(crate) struct Health {
    backends: Arc<Backends>,
    config: HealthConfig,
    metrics: Arc<Metrics>,
    listener: Option<TransitionListener>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Health {
    /// Health for `backends`.
    pub(crate) fn new(
        backends: Arc<Backends>,
        config: HealthConfig,
        metrics: Arc<Metrics>,
        listener: Option<TransitionListener>,
    ) -> Self {
        Self {
            backends,
            config,
            metrics,
            listener,
        }
    }

    /// Mark a backend up or down; true when this call changed its state.
    fn set(&self, id: BackendId, healthy: bool, why: &str) -> bool {
        let Some(t) = self.backends.set_healthy(id, healthy) else {
            return false;
        };
        let name = self.backends.name(id);
        match t {
            Transition::Down => tracing::warn!(backend = name, reason = why, "backend marked down"),
            Transition::Up => tracing::info!(backend = name, reason = why, "backend back up"),
        }
        if let Some(m) = self.metrics.backends.get(id.index()) {
            m.up.set(if healthy { 1.0 } else { 0.0 });
        }
        if let Some(l) = &self.listener {
            l(id, t);
        }
        true
    }

    /// A connect error or response timeout on live traffic.
    pub(crate) fn passive_failure(self: &Arc<Self>, id: BackendId) {
        if !self.backends.is_up(id) {
            return;
        }
        // Two workers may cross the threshold at once; only the one whose call took the
        // backend down schedules its return.
        // Without active checks nothing else would bring it back: retry after a while.
        if self.backends.passive_failure(id, self.config.passive_fall)
            && self.set(id, false, "connect errors or timeouts on live traffic")
            && self.config.active.is_none()
        {
            let this = self.clone();
            let eject_for = self.config.eject_for;
            tokio::spawn(async move {
                tokio::time::sleep(eject_for).await;
                this.set(id, true, "ejection period over");
            });
        }
    }

    /// A successful exchange on live traffic.
    pub(crate) fn passive_success(&self, id: BackendId) {
        self.backends.passive_success(id);
    }

    /// Start one active checker per backend; they stop when `shutdown` turns true.
    pub(crate) fn spawn_checks(
        self: &Arc<Self>,
        upstream: Upstream,
        shutdown: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        let Some(active) = self.config.active.clone() else {
            return Vec::new();
        };
        self.backends
            .all()
            .iter()
            .map(|b| {
                let this = self.clone();
                let upstream = upstream.clone();
                let active = active.clone();
                let id = b.id;
                let endpoint = b.endpoint.clone();
                let mut shutdown = shutdown.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = this.check_loop(id, endpoint, upstream, active) => {}
                        _ = crate::shutdown::stopped(&mut shutdown) => {}
                    }
                })
            })
            .collect()
    }

    async fn check_loop(
        &self,
        id: BackendId,
        endpoint: Endpoint,
        upstream: Upstream,
        active: ActiveHealth,
    ) {
        let (mut ok_run, mut fail_run) = (0u32, 0u32);
        let mut ticker = tokio::time::interval(active.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let healthy = probe(&upstream, &endpoint, &active).await;
            if healthy {
                ok_run = ok_run.saturating_add(1);
                fail_run = 0;
                if ok_run >= active.rise && !self.backends.is_up(id) {
                    self.set(id, true, "health checks pass");
                }
            } else {
                fail_run = fail_run.saturating_add(1);
                ok_run = 0;
                if fail_run >= active.fall && self.backends.is_up(id) {
                    self.set(id, false, "health checks fail");
                }
            }
        }
    }
}

/// One check: `GET` of the health path, passed on a 2xx or 3xx answer within the timeout. The
/// answer's body is read to its end (within the same timeout) so its connection can be reused.
async fn probe(upstream: &Upstream, endpoint: &Endpoint, active: &ActiveHealth) -> bool {
    let check = async {
        let host = HeaderValue::from_str(endpoint.authority.as_str()).ok()?;
        let req = Request::get(active.path.as_str())
            .header(HOST, host)
            .body(RequestBody::Empty)
            .ok()?;
        let resp = upstream.send(endpoint, req).await.ok()?;
        let s = resp.status();
        let _ = resp.into_body().collect().await;
        Some(s.is_success() || s.is_redirection())
    };
    matches!(
        tokio::time::timeout(active.timeout, check).await,
        Ok(Some(true))
    )
}
