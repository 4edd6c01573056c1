//! Backend health: active HTTP checks with rise/fall thresholds, and passive ejection on connect
//! errors and timeouts seen on live traffic. Active checks go through the same upstream path
//! as traffic ([`Upstream`]), so a check passes only if a request would.
//!
//! A backend that joins at run time gets its checker when it joins; a checker stops when its
//! backend leaves (or leaves and joins again, which starts another).

use std::sync::{Arc, OnceLock};

use http::header::HOST;
use http::{HeaderValue, Request};
use http_body_util::BodyExt;
use sessionwatch_core::{BackendId, Timestamp};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backends::stats::CheckResult;
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
    /// What each active checker needs, once [`Health::spawn_checks`] has run.
    checks: OnceLock<Checks>,
}

#[derive(Clone)]
struct Checks {
    upstream: Upstream,
    active: ActiveHealth,
    shutdown: watch::Receiver<bool>,
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
            checks: OnceLock::new(),
        }
    }

    /// Mark a backend up or down; true when this call changed its state.
    fn set(&self, id: BackendId, healthy: bool, why: &'static str) -> bool {
        let Some(t) = self.backends.set_healthy(id, healthy) else {
            return false;
        };
        if let Some(b) = self.backends.get(id) {
            b.stats.health_changed(Timestamp::now(), why);
        }
        let name = self.backends.name(id);
        match t {
            Transition::Down => tracing::warn!(backend = name, reason = why, "backend marked down"),
            Transition::Up => tracing::info!(backend = name, reason = why, "backend back up"),
        }
        if let Some(m) = self.metrics.backend(id) {
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

    /// Start one active checker per member; they stop when `shutdown` turns true. Backends that
    /// join later get theirs from [`Health::check_joined`].
    pub(crate) fn spawn_checks(
        self: &Arc<Self>,
        upstream: Upstream,
        shutdown: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        let Some(active) = self.config.active.clone() else {
            return Vec::new();
        };
        let checks = self.checks.get_or_init(|| Checks {
            upstream,
            active,
            shutdown,
        });
        let members = self.backends.live().members.clone();
        members
            .into_iter()
            .filter_map(|id| self.spawn_check(id, checks.clone()))
            .collect()
    }

    /// Start the active checker of `id`, which has just joined (nothing without active checks).
    pub(crate) fn check_joined(self: &Arc<Self>, id: BackendId) {
        if let Some(checks) = self.checks.get() {
            self.spawn_check(id, checks.clone());
        }
    }

    fn spawn_check(self: &Arc<Self>, id: BackendId, checks: Checks) -> Option<JoinHandle<()>> {
        let b = self.backends.get(id)?;
        let (endpoint, joins) = (b.endpoint.clone(), b.joins());
        let this = self.clone();
        let Checks {
            upstream,
            active,
            mut shutdown,
        } = checks;
        Some(tokio::spawn(async move {
            tokio::select! {
                _ = this.check_loop(id, joins, endpoint, upstream, active) => {}
                _ = crate::shutdown::stopped(&mut shutdown) => {}
            }
        }))
    }

    /// Check `id` every interval while it is the member that joined for the `joins`th time.
    async fn check_loop(
        &self,
        id: BackendId,
        joins: u32,
        endpoint: Endpoint,
        upstream: Upstream,
        active: ActiveHealth,
    ) {
        let (mut ok_run, mut fail_run) = (0u32, 0u32);
        let mut ticker = tokio::time::interval(active.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let still_ours = || {
            self.backends
                .get(id)
                .is_some_and(|b| b.is_member() && b.joins() == joins)
        };
        loop {
            ticker.tick().await;
            if !still_ours() {
                return;
            }
            let result = probe(&upstream, &endpoint, &active).await;
            if let Some(b) = self.backends.get(id) {
                b.stats.checked(result, Timestamp::now());
            }
            if result.passed() {
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
/// answer's body is read to its end (within the same timeout) and dropped as it comes, so its
/// connection can be reused; a body longer than [`PROBE_BODY_LIMIT`] is abandoned instead, and
/// its connection closed, rather than read on.
/// The most of a check answer's body read on its way to the end.
const PROBE_BODY_LIMIT: usize = 64 * 1024;

async fn probe(upstream: &Upstream, endpoint: &Endpoint, active: &ActiveHealth) -> CheckResult {
    let check = async {
        let host = HeaderValue::from_str(endpoint.authority.as_str()).ok()?;
        let req = Request::get(active.path.as_str())
            .header(HOST, host)
            .body(RequestBody::Empty)
            .ok()?;
        let resp = upstream.send(endpoint, req).await.ok()?;
        let s = resp.status();
        let mut body = resp.into_body();
        let mut read = 0;
        while read <= PROBE_BODY_LIMIT {
            match body.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
        Some(if s.is_success() || s.is_redirection() {
            CheckResult::Passed(s)
        } else {
            CheckResult::Failed(s)
        })
    };
    match tokio::time::timeout(active.timeout, check).await {
        Ok(Some(result)) => result,
        Ok(None) => CheckResult::Unreachable,
        Err(_) => CheckResult::TimedOut,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use tokio::time::{Instant, sleep};

    use super::*;

    const A: BackendId = BackendId(0);
    const B: BackendId = BackendId(1);

    /// The transitions a [`Health`] reported, each with the (paused) time it came.
    type Seen = Arc<Mutex<Vec<(BackendId, Transition, Duration)>>>;

    /// Health over node-a and node-b, without active checks unless `active`, and what it
    /// reports.
    fn health(active: Option<ActiveHealth>) -> (Arc<Health>, Seen) {
        let backends = Arc::new(Backends::named(&["node-a", "node-b"]));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (log, start) = (seen.clone(), Instant::now());
        let listener: TransitionListener = Arc::new(move |id, t| {
            log.lock().unwrap().push((id, t, start.elapsed()));
        });
        let config = HealthConfig {
            active,
            passive_fall: 3,
            eject_for: Duration::from_secs(10),
        };
        let metrics = Arc::new(Metrics::new(["node-a", "node-b"]));
        (
            Arc::new(Health::new(backends, config, metrics, Some(listener))),
            seen,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn passive_ejection_takes_a_backend_out_for_eject_for_then_brings_it_back() {
        let (h, seen) = health(None);
        // Failures must come in a row: a success in between starts the count again.
        h.passive_failure(A);
        h.passive_failure(A);
        h.passive_success(A);
        h.passive_failure(A);
        h.passive_failure(A);
        assert!(h.backends.is_up(A), "two in a row are under passive_fall");
        h.passive_failure(A);
        assert!(!h.backends.is_up(A));
        assert!(h.backends.is_up(B), "only the failing backend is ejected");
        // The status page's health history: when it changed, and why.
        let changed = |id| h.backends.get(id).unwrap().stats.health().changed;
        let (at, why) = changed(A).expect("the ejection is recorded");
        assert_eq!(why, "connect errors or timeouts on live traffic");
        assert!(
            at.since(Timestamp::now()) == Duration::ZERO,
            "stamped now, not later"
        );
        assert_eq!(changed(B), None, "node-b never changed");
        let up = |v: u8| format!("sessionwatch_backend_up{{backend=\"node-a\"}} {v}");
        assert!(h.metrics.render().contains(&up(0)));
        // More failures while it is out schedule no second return.
        h.passive_failure(A);
        sleep(Duration::from_millis(9_999)).await;
        assert!(!h.backends.is_up(A), "still out just before eject_for");
        sleep(Duration::from_millis(1)).await;
        // The return runs on the next turn of the runtime.
        tokio::task::yield_now().await;
        assert!(h.backends.is_up(A), "back once eject_for has passed");
        assert_eq!(changed(A).map(|c| c.1), Some("ejection period over"));
        assert_eq!(
            *seen.lock().unwrap(),
            [
                (A, Transition::Down, Duration::ZERO),
                (A, Transition::Up, Duration::from_secs(10))
            ]
        );
        assert!(h.metrics.render().contains(&up(1)));
        // Back with a clean count: it takes passive_fall failures again to eject it.
        h.passive_failure(A);
        h.passive_failure(A);
        assert!(h.backends.is_up(A));
    }

    #[tokio::test(start_paused = true)]
    async fn with_active_checks_an_ejected_backend_waits_for_them() {
        let (h, seen) = health(Some(ActiveHealth {
            path: "/health".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(200),
            rise: 2,
            fall: 2,
        }));
        for _ in 0..3 {
            h.passive_failure(A);
        }
        assert!(!h.backends.is_up(A));
        // No checker runs here, and the ejection period does not bring it back by itself.
        sleep(Duration::from_secs(60)).await;
        assert!(!h.backends.is_up(A));
        assert_eq!(
            *seen.lock().unwrap(),
            [(A, Transition::Down, Duration::ZERO)]
        );
    }
}
