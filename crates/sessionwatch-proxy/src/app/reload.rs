//! Live reload: the configuration file read again, on demand (SIGHUP, through
//! [`crate::RunningProxy::reload`]) or when its content changes, and applied to the running
//! proxy without dropping a connection, the session table or the open incident.
//!
//! A reload reads and validates the file as `check-config` does. A file that does not validate
//! changes nothing: the error is logged (`config reload failed: ...`) and counted. One that
//! does is compared with the running configuration ([`crate::config::reload::plan`]): what was
//! fixed at start keeps its old value, each such key logged by name, and the rest applies:
//!
//! - the configured backends (joins and leaves as discovery's, with health checks, alert lines
//!   and the incident tracker told), their weights, the DNS entries (a new discovery resolves
//!   them first and only then takes over, so the farm never goes without their backends; an
//!   entry it cannot resolve but the old one had keeps the old one's last known set) and the
//!   balancing policy;
//! - the session cookies, paths and markers, the pin policy and what happens to a pin whose
//!   backend is down, rescue, and the affinity cookie;
//! - the incident thresholds (the window's counts and an open incident are kept);
//! - the alert log's file and standard output (the new file is opened first: one that cannot
//!   be opened is refused, and the log stays where it is), and the Alertmanager and webhook
//!   sinks (one whose settings change is replaced; the new one is told of an open incident at
//!   once).
//!
//! Everything a request reads of this sits behind an atomic pointer swap (the session layer's
//! settings, the farm's [`crate::backends::Live`] picture) or an atomic (weights, the balancing
//! policy); no request waits for a reload, and one under way finishes with the settings it
//! started with.
//!
//! The file is watched by polling its content every couple of seconds, by the path it was
//! given: a Kubernetes ConfigMap volume swaps a `..data` symlink to a new directory, so the
//! file's own inode and a watch on it (inotify) miss the change, while reading the path again
//! sees the new content. A hash of the content, not the modification time, says whether it
//! changed: the swap may keep the time, and a file saved again unchanged reloads nothing. A
//! change is acted on once two looks in a row read the same new content, so that a file caught
//! half written (an editor that truncates, then writes) is not reloaded, and counted as
//! broken, in between.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use metrics::{Counter, Gauge};
use sessionwatch_tower::{BackendHealth, LayerSettings, SessionLayer};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::farm::Directory;
use crate::backends::Backends;
use crate::backends::discovery::Discovery;
use crate::config::reload::{Plan, plan};
use crate::config::{AlertmanagerConfig, Config, ConfigError, PinConfig, SinkConfig};
use crate::metrics::Metrics;
use crate::report::alert_log::{AlertLog, AlertTargets};
use crate::report::incidents::IncidentWatch;
use crate::report::sinks::{self, FleetIncidents, Sink, SinkHandle};
use crate::route::balancer::Balancer;
use crate::upstream::TlsTarget;

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// The sections that changed (`backends`, `incident`, ...), in file order; empty when the
    /// new file changes nothing that may change live.
    pub changed: Vec<String>,
    /// The keys the new file changes that the running proxy cannot: each kept its old value.
    pub refused: Vec<String>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The proxy was started without a configuration file to read again.
    #[error("the proxy was not started from a configuration file")]
    NoFile,
    /// The new file cannot be read or does not validate; the running configuration stays.
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    /// The proxy is stopping.
    #[error("the proxy is stopping")]
    Stopping,
}

/// A request for a reload, answered when it is done.
pub(super) type Request = oneshot::Sender<Result<ReloadReport, ReloadError>>;

/// What a trigger is called in the log.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    Asked,
    FileChanged,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Asked => "signal",
            Trigger::FileChanged => "file changed",
        }
    }
}

/// A sink as it runs: its settings and its handle (dropping the handle ends its task).
struct Running<C> {
    config: C,
    handle: SinkHandle,
}

/// The sinks as they run, and what a new one needs.
pub(super) struct Sinks {
    alertmanager: Option<Running<AlertmanagerConfig>>,
    webhook: Option<Running<SinkConfig>>,
    fleet: Arc<dyn FleetIncidents>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
    /// Tasks of the sinks started here, awaited when the proxy stops.
    tasks: Vec<JoinHandle<()>>,
}

impl Sinks {
    /// Start the sinks `config` asks for; their tasks go to `tasks`.
    pub(super) fn start(
        config: &Config,
        fleet: Arc<dyn FleetIncidents>,
        metrics: &Arc<Metrics>,
        shutdown: &watch::Receiver<bool>,
        tasks: &mut Vec<JoinHandle<()>>,
    ) -> Self {
        let mut this = Self {
            alertmanager: None,
            webhook: None,
            fleet,
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
            tasks: Vec::new(),
        };
        this.set(config);
        tasks.append(&mut this.tasks);
        this
    }

    /// The handles incidents go to.
    pub(super) fn handles(&self) -> Vec<SinkHandle> {
        let am = self.alertmanager.as_ref().map(|r| r.handle.clone());
        let hook = self.webhook.as_ref().map(|r| r.handle.clone());
        am.into_iter().chain(hook).collect()
    }

    fn spawn(&mut self, sink: Sink) -> SinkHandle {
        let (handle, task) = sinks::spawn(sink, self.metrics.clone(), self.shutdown.clone());
        self.tasks.push(task);
        handle
    }

    /// Make the sinks those of `config`: one whose settings are unchanged keeps running; one
    /// that changed is replaced (the old one's task ends when its handle is dropped here).
    /// Whether any changed.
    fn set(&mut self, config: &Config) -> bool {
        let mut changed = false;
        if self.alertmanager.as_ref().map(|r| &r.config) != config.alertmanager.as_ref() {
            self.alertmanager = config.alertmanager.clone().map(|am| Running {
                handle: self.spawn(Sink::Alertmanager(am.clone(), self.fleet.clone())),
                config: am,
            });
            changed = true;
        }
        if self.webhook.as_ref().map(|r| &r.config) != config.webhook.as_ref() {
            self.webhook = config.webhook.clone().map(|hook| Running {
                handle: self.spawn(Sink::Webhook(hook.clone())),
                config: hook,
            });
            changed = true;
        }
        changed
    }
}

/// What a reload changes in the running proxy.
pub(super) struct Parts {
    pub(super) backends: Arc<Backends>,
    pub(super) metrics: Arc<Metrics>,
    /// Publishes the farm: the started discovery, or one with no DNS entries that only
    /// publishes the configured backends; replaced when the entries change.
    pub(super) membership: Arc<ArcSwap<Discovery>>,
    /// Where the session layer asks discovery for a fresh look.
    pub(super) directory: Arc<Directory>,
    /// What a new discovery's tasks stop on.
    pub(super) shutdown: watch::Receiver<bool>,
    pub(super) balancer: Arc<Balancer>,
    pub(super) pin: Arc<ArcSwap<PinConfig>>,
    /// One per worker thread: each shares its settings with that thread's services.
    pub(super) layers: Vec<SessionLayer>,
    pub(super) incidents: Arc<IncidentWatch>,
    pub(super) log: AlertLog,
    pub(super) sinks: Sinks,
}

/// The reload counters.
struct Counters {
    applied: Counter,
    failed: Counter,
    failures: Counter,
    refused: Counter,
    /// 1 while the last reload applied (or none was tried), 0 after one failed: the file on
    /// disk is then not what runs.
    last_successful: Gauge,
}

impl Counters {
    fn new(metrics: &Metrics) -> Self {
        let reloads =
            |result| metrics.counter("sessionwatch_config_reloads_total", &[("result", result)]);
        Self {
            applied: reloads("applied"),
            failed: reloads("failed"),
            failures: metrics.counter("sessionwatch_config_reload_failures_total", &[]),
            refused: metrics.counter("sessionwatch_config_reload_refused_keys_total", &[]),
            last_successful: {
                let g = metrics.gauge("sessionwatch_config_last_reload_successful");
                g.set(1.0);
                g
            },
        }
    }
}

/// Owns the running configuration; one at a time, so two reloads never interleave.
pub(super) struct Reloader {
    file: Option<PathBuf>,
    running: Config,
    parts: Parts,
    counters: Counters,
    /// The hash of the content last read from the file (applied or not), so a change is acted
    /// on once.
    seen: Option<blake3::Hash>,
    /// New content the watch read at its last look, acted on if the next look reads it again.
    settling: Option<blake3::Hash>,
    /// Tasks of the discoveries started here.
    tasks: Vec<JoinHandle<()>>,
    /// Counts changes of the DNS entries: a successor whose first resolution ends after a later
    /// change was made does not take over.
    generation: Arc<Mutex<u64>>,
}

impl Reloader {
    pub(super) fn new(file: Option<PathBuf>, running: Config, parts: Parts) -> Self {
        let counters = Counters::new(&parts.metrics);
        let seen = file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .map(|bytes| blake3::hash(&bytes));
        Self {
            file,
            running,
            parts,
            counters,
            seen,
            settling: None,
            tasks: Vec::new(),
            generation: Arc::default(),
        }
    }

    /// Serve reload requests, and with `watch_every`, read the file that often and reload when
    /// its content changed, until `shutdown` turns true; then wait for the sinks it started.
    pub(super) async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        watch_every: Option<Duration>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval(watch_every.unwrap_or(Duration::from_secs(3600)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                Some(done) = requests.recv() => {
                    let result = self.reload(Trigger::Asked, None);
                    let _ = done.send(result);
                }
                _ = ticker.tick(), if watch_every.is_some() => {
                    if let Some(bytes) = self.changed_file() {
                        let _ = self.reload(Trigger::FileChanged, Some(bytes));
                    }
                }
                _ = crate::shutdown::stopped(&mut shutdown) => break,
            }
        }
        let tasks = std::mem::take(&mut self.parts.sinks.tasks);
        for task in tasks.into_iter().chain(std::mem::take(&mut self.tasks)) {
            let _ = task.await;
        }
    }

    /// The file's content, if it differs from what was last read and the previous look read
    /// it too. A file that cannot be read now (in the middle of a swap, say) is looked at again
    /// at the next tick.
    fn changed_file(&mut self) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.file.as_ref()?).ok()?;
        let hash = blake3::hash(&bytes);
        if self.seen == Some(hash) {
            self.settling = None;
            return None;
        }
        let settled = self.settling == Some(hash);
        self.settling = Some(hash);
        settled.then_some(bytes)
    }

    fn reload(
        &mut self,
        trigger: Trigger,
        bytes: Option<Vec<u8>>,
    ) -> Result<ReloadReport, ReloadError> {
        let result = self
            .read(bytes)
            .map(|new| self.apply(plan(&self.running, new)));
        match &result {
            Ok(report) => {
                self.counters.applied.increment(1);
                self.counters.last_successful.set(1.0);
                self.counters.refused.increment(report.refused.len() as u64);
                tracing::info!(
                    trigger = trigger.as_str(),
                    changed = %report.changed.join(","),
                    refused = %report.refused.join(","),
                    "configuration reloaded"
                );
            }
            Err(ReloadError::NoFile) => {}
            Err(e) => {
                self.counters.failed.increment(1);
                self.counters.failures.increment(1);
                self.counters.last_successful.set(0.0);
                // One line: the problems, each `file:line:column: field: message`.
                let why = e.to_string().replace('\n', "; ");
                tracing::error!(
                    trigger = trigger.as_str(),
                    "config reload failed: {why}; the running configuration is kept"
                );
            }
        }
        result
    }

    /// Read and validate the file (or `bytes`, its content just read) as `check-config` does.
    fn read(&mut self, bytes: Option<Vec<u8>>) -> Result<Config, ReloadError> {
        let file = self.file.clone().ok_or(ReloadError::NoFile)?;
        let cannot_read =
            |e: &dyn std::fmt::Display| ConfigError::whole_file(&file, format!("cannot read: {e}"));
        let bytes = match bytes {
            Some(bytes) => bytes,
            None => std::fs::read(&file).map_err(|e| cannot_read(&e))?,
        };
        self.seen = Some(blake3::hash(&bytes));
        let text = String::from_utf8(bytes).map_err(|e| cannot_read(&e))?;
        Ok(Config::parse(&text, &file)?)
    }

    fn apply(&mut self, plan: Plan) -> ReloadReport {
        let Plan {
            mut next,
            mut refused,
            mut changes,
        } = plan;
        if changes.contains(&"alerts") {
            let targets = AlertTargets {
                file: next.alerts.log_file.clone(),
                stdout: next.alerts.stdout,
            };
            if let Err(e) = self.parts.log.retarget(targets) {
                let path = next.alerts.log_file.clone().unwrap_or_default();
                tracing::error!(
                    path = %path.display(),
                    error = %e,
                    "config reload: cannot open the alert log {}; keeping the old one",
                    path.display()
                );
                next.alerts = self.running.alerts.clone();
                changes.retain(|c| *c != "alerts");
                refused.push(crate::config::reload::Refused {
                    key: "alerts.log_file".into(),
                    why: "the file cannot be opened",
                });
            }
        }
        for r in &refused {
            tracing::warn!(
                key = %r.key,
                "config reload: {} refused ({}); keeping its old value",
                r.key,
                r.why
            );
        }
        let p = &mut self.parts;
        if changes.contains(&"backends") {
            let ids: Vec<_> = next
                .backends
                .iter()
                .filter_map(|b| {
                    let tls = b.tls.as_ref().map(|t| Arc::new(TlsTarget::new(t)));
                    match p
                        .backends
                        .add_with_tls(&b.name, b.authority.clone(), b.weight, tls)
                    {
                        Ok(id) => {
                            // A name known before (removed, now back) keeps its id: its weight
                            // is the new file's.
                            p.backends.set_weight(id, b.weight);
                            p.metrics.add_backend(id, &b.name);
                            Some(id)
                        }
                        Err(e) => {
                            tracing::error!(backend = b.name, error = %e, "config reload: backend not added");
                            None
                        }
                    }
                })
                .collect();
            // At once, whatever the DNS entries do: a successor takes these over. Under the
            // lock a successor takes over with, so they go to the discovery in charge.
            let _g = self
                .generation
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            p.membership.load().set_configured(ids);
        }
        if next.discovery != self.running.discovery {
            let mine = {
                let mut g = self
                    .generation
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                *g += 1;
                *g
            };
            self.tasks.retain(|t| !t.is_finished());
            self.tasks.push(tokio::spawn(replace_discovery(
                p.membership.load_full().successor(&next.discovery),
                mine,
                p.membership.clone(),
                p.directory.clone(),
                self.generation.clone(),
                p.shutdown.clone(),
            )));
        }
        p.balancer.set_policy(next.balance);
        p.pin.store(Arc::new(next.pin.clone()));
        let settings = LayerSettings {
            profile: next.session.profile.clone(),
            policy: next.pin.policy,
            rescue: next
                .rescue
                .then(|| -> Arc<dyn BackendHealth> { p.backends.clone() }),
            affinity: next
                .session
                .affinity
                .as_ref()
                .map(|a| (a.name.clone(), a.secure)),
        };
        for layer in &p.layers {
            layer.reconfigure(&settings);
        }
        let sinks = p.sinks.set(&next).then(|| p.sinks.handles());
        p.incidents
            .reconfigure(next.incident.clone(), next.pin.policy, sinks);
        self.running = next;
        ReloadReport {
            changed: changes.iter().map(|c| (*c).to_owned()).collect(),
            refused: refused.into_iter().map(|r| r.key).collect(),
        }
    }
}

/// Resolve `next`'s entries, then let it take over the farm from the discovery in `membership`,
/// unless another change of the entries (counted past `mine`) came meanwhile; it runs until the proxy stops or a
/// later one takes over from it.
async fn replace_discovery(
    next: Discovery,
    mine: u64,
    membership: Arc<ArcSwap<Discovery>>,
    directory: Arc<Directory>,
    generation: Arc<Mutex<u64>>,
    shutdown: watch::Receiver<bool>,
) {
    let next = Arc::new(next);
    next.prime().await;
    let loops = {
        // Held while taking over, so that two successors cannot both take over.
        let g = generation.lock().unwrap_or_else(PoisonError::into_inner);
        if *g != mine {
            return;
        }
        next.take_over(&membership.load());
        membership.store(next.clone());
        directory.discovery.store(Some(next.clone()));
        next.spawn(&shutdown)
    };
    for task in loops {
        let _ = task.await;
    }
}
