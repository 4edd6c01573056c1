//! Backend health: active HTTP checks with rise/fall thresholds, and passive ejection on connect
//! errors and timeouts seen on live traffic.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Uri};
use sessionwatch_core::BackendId;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backends::{Backends, Transition};
use crate::body::RequestBody;
use crate::config::{ActiveHealth, HealthConfig};
use crate::metrics::Metrics;
use crate::upstream::UpstreamClient;

/// Told of every health transition (the incident tracker uses "came back up" as a restart).
pub type TransitionListener = Arc<dyn Fn(BackendId, Transition) + Send + Sync>;

/// Owns the health state changes of every backend.
pub struct Health {
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
    pub fn new(
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
    pub fn passive_failure(self: &Arc<Self>, id: BackendId) {
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
    pub fn passive_success(&self, id: BackendId) {
        self.backends.passive_success(id);
    }

    /// Start one active checker per backend; they stop when `shutdown` turns true.
    pub fn spawn_checks(
        self: &Arc<Self>,
        client: UpstreamClient,
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
                let client = client.clone();
                let active = active.clone();
                let id = b.id;
                let uri = Uri::builder()
                    .scheme("http")
                    .authority(b.authority.clone())
                    .path_and_query(active.path.as_str())
                    .build();
                let mut shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let Ok(uri) = uri else {
                        tracing::error!(
                            backend = this.backends.name(id),
                            "health check path is not a valid URI path"
                        );
                        return;
                    };
                    tokio::select! {
                        _ = this.check_loop(id, uri, client, active) => {}
                        _ = crate::server::stopped(&mut shutdown) => {}
                    }
                })
            })
            .collect()
    }

    async fn check_loop(
        &self,
        id: BackendId,
        uri: Uri,
        client: UpstreamClient,
        active: ActiveHealth,
    ) {
        let (mut ok_run, mut fail_run) = (0u32, 0u32);
        let mut ticker = tokio::time::interval(active.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let healthy = probe(&client, &uri, active.timeout).await;
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

async fn probe(client: &UpstreamClient, uri: &Uri, timeout: Duration) -> bool {
    let Ok(req) = Request::get(uri.clone()).body(RequestBody::Empty) else {
        return false;
    };
    match tokio::time::timeout(timeout, client.request(req)).await {
        Ok(Ok(resp)) => {
            let s = resp.status();
            s.is_success() || s.is_redirection()
        }
        _ => false,
    }
}
