//! The background work `start` sets going beside the listeners: the incident watch that feeds
//! the sinks, the backends' health checks, and the discovery of DNS entries.

use std::sync::Arc;
use std::time::Duration;

use sessionwatch_tower::PinSwitch;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backends::discovery::Discovery;
use crate::backends::health::Health;
use crate::backends::{Backends, Transition};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::report::alert_log::AlertLog;
use crate::report::incidents::{Clock, IncidentWatch};
use crate::report::sinks::SinkHandle;
use crate::upstream::{Pool, Upstream};

use super::farm;
use super::workers::sweep_idle;

/// The incident watch that feeds the sinks; its task goes to `tasks`.
#[allow(clippy::too_many_arguments)]
pub(super) fn spawn_incidents(
    config: &Config,
    backends: &Arc<Backends>,
    log: &AlertLog,
    metrics: &Arc<Metrics>,
    pin_switch: &PinSwitch,
    tick: Option<Duration>,
    sink_handles: Vec<SinkHandle>,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Arc<IncidentWatch> {
    let incidents = Arc::new(IncidentWatch::new(
        config.incident.clone(),
        backends.clone(),
        log.clone(),
        metrics.clone(),
        config.pin.policy,
        pin_switch.clone(),
        sink_handles,
        Clock::system(),
    ));
    tasks.push(tokio::spawn(
        incidents
            .clone()
            .run(tick.unwrap_or(Duration::from_millis(500)), shutdown.clone()),
    ));
    incidents
}

/// Health for the backends, its active checks' tasks pushed to `tasks`. A backend that comes
/// back up is told to the incident watch as a restart.
pub(super) fn spawn_health(
    config: &Config,
    backends: &Arc<Backends>,
    metrics: &Arc<Metrics>,
    incidents: &Arc<IncidentWatch>,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Arc<Health> {
    let watch_for_restarts = incidents.clone();
    let health = Arc::new(Health::new(
        backends.clone(),
        config.health.clone(),
        metrics.clone(),
        Some(Arc::new(move |id, t| {
            if t == Transition::Up {
                watch_for_restarts.note_restart(id);
            }
        })),
    ));
    // The checks' own pool, on this runtime: a check travels the path traffic takes.
    let probe_pool = Pool::new(
        &config.upstream,
        metrics.poisoned_counters(),
        metrics.connection_gauges(),
    );
    tasks.push(tokio::spawn(sweep_idle(
        probe_pool.clone(),
        shutdown.clone(),
    )));
    let probes = Upstream::new(probe_pool, config.upstream.clone());
    tasks.extend(health.spawn_checks(probes, shutdown.clone()));
    health
}

/// Discovery of the configured DNS entries, if there are any: resolved once before the proxy
/// listens (so the farm it starts with is there), then on its schedule, its tasks in `tasks`.
pub(super) async fn start_discovery(
    config: &Config,
    backends: &Arc<Backends>,
    metrics: &Arc<Metrics>,
    hooks: &Arc<farm::FarmHooks>,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Option<Arc<Discovery>> {
    if config.discovery.is_empty() {
        return None;
    }
    let discovery = Arc::new(Discovery::new(
        &config.discovery,
        backends.clone(),
        metrics.clone(),
        hooks.clone(),
        None,
    ));
    discovery.resolve_all().await;
    tasks.extend(discovery.spawn(shutdown));
    Some(discovery)
}
