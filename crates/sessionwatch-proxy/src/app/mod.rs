//! Building and running the whole proxy from a validated [`Config`]: the shared state, the
//! background tasks, the per-core [`workers`] and the request [`stack`] they serve.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use sessionwatch_core::BackendId;
use sessionwatch_tower::{PinSwitch, SessionEvents, SessionStore};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState};
use crate::backends::Backends;
use crate::backends::discovery::Discovery;
use crate::config::Config;
use crate::fleet::window::FleetWindow;
use crate::metrics::Metrics;
use crate::prepare::RequestIds;
use crate::report::alert_log::{AlertLog, AlertLogWriter, AlertTargets};
use crate::report::incidents::IncidentWatch;
use crate::report::reporter::Reporter;
use crate::report::sinks::{FleetIncidents, NoSharedView};
use crate::route::balancer::Balancer;
use crate::shutdown::{Drain, DrainTimes, Drained};
use tasks::{spawn_health, spawn_incidents, start_discovery};
use workers::{Worker, bind_workers};

pub use reload::{ReloadError, ReloadReport};

mod access;
mod farm;
pub(crate) mod fd_limit;
mod reload;
mod session;
mod stack;
mod tasks;
mod workers;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener address is taken or not allowed.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `listen.max_connections` is more than the file-descriptor limit allows.
    #[error("{0}")]
    ConnectionLimit(#[from] fd_limit::TooManyConnections),
    /// The alert log file cannot be opened.
    #[error("cannot open the alert log {}", path.display())]
    AlertLog {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The shared session store's settings cannot make a client (a URL or certificate the
    /// Redis client refuses).
    #[error("cannot use the Redis store: {0}")]
    Store(String),
    /// A `[listen.tls]` certificate no longer checks out (it changed since the configuration
    /// was read), or rustls refuses the settings.
    #[error("cannot serve TLS: {0}")]
    Tls(String),
}

impl StartError {
    /// Whether the configuration is at fault (the exit code says EX_USAGE), not the system.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            StartError::ConnectionLimit(_) | StartError::Store(_) | StartError::Tls(_)
        )
    }

    /// The underlying cause, for one-line messages.
    pub fn source_text(&self) -> String {
        match self {
            StartError::Bind { source, .. } | StartError::AlertLog { source, .. } => {
                source.to_string()
            }
            StartError::ConnectionLimit(_) => "the configuration cannot be honoured here".into(),
            StartError::Store(why) | StartError::Tls(why) => why.clone(),
        }
    }
}

/// Extras for embedding (the demo, tests).
#[derive(Clone, Default)]
pub struct StartOptions {
    /// Also receives every observation.
    pub extra_events: Option<Arc<dyn SessionEvents>>,
    /// How often the incident watch evaluates (default 500 ms).
    pub incident_tick: Option<Duration>,
    /// What the Alertmanager sink asks before it resolves the farm's alert: whether other
    /// replicas still see the incident (default: no shared view).
    pub fleet_incidents: Option<Arc<dyn FleetIncidents>>,
    /// The file the configuration was read from, read again by [`RunningProxy::reload`].
    pub config_file: Option<PathBuf>,
    /// With `config_file`: how often to read it and reload when its content changed (`None`:
    /// only when asked).
    pub watch_config: Option<Duration>,
    /// The commit the embedding binary was built from, for `sessionwatch_build_info`
    /// (default `unknown`).
    pub commit: Option<String>,
}

/// A running proxy: where it listens, a few questions about its state, and its shutdown.
pub struct RunningProxy {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    store: Arc<dyn SessionStore>,
    metrics: Arc<Metrics>,
    backends: Arc<Backends>,
    incidents: Arc<IncidentWatch>,
    log: AlertLog,
    _writer: AlertLogWriter,
    shutdown: watch::Sender<bool>,
    drain: Drain,
    drain_times: DrainTimes,
    reload: mpsc::Sender<reload::Request>,
    /// Each ends when its worker has closed its connections.
    workers: Vec<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for RunningProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningProxy")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RunningProxy {
    /// Where clients connect (the bound address, so port 0 in the configuration is resolved).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the admin listener (`/metrics`, `/healthz`, `/readyz`, `/status`) is bound, if
    /// one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The Prometheus exposition that `/metrics` serves, without needing the admin listener.
    pub fn metrics_text(&self) -> String {
        self.backends.publish_counts(&self.metrics);
        self.metrics.render()
    }

    /// Whether backend `id` (its index in `[[backends]]`) takes traffic now.
    pub fn backend_is_up(&self, id: BackendId) -> bool {
        self.backends.is_up(id)
    }

    /// The names of the farm's members now (a discovered backend is named by its address), in
    /// name order.
    pub fn members(&self) -> Vec<String> {
        let live = self.backends.live();
        live.members
            .iter()
            .map(|id| self.backends.name(*id).to_owned())
            .collect()
    }

    /// The id this proxy gave the backend `name`, if it knows one (member or gone).
    pub fn backend_id(&self, name: &str) -> Option<BackendId> {
        self.backends.by_name(name)
    }

    /// Whether any backend takes traffic (what `/readyz` answers).
    pub fn any_backend_up(&self) -> bool {
        self.backends.any_healthy()
    }

    /// Whether an incident is open.
    pub fn incident_open(&self) -> bool {
        self.incidents.is_open()
    }

    /// The open incident's one-line summary, or `None` when no incident is open.
    pub fn incident_summary(&self) -> Option<String> {
        self.incidents
            .is_open()
            .then(|| self.incidents.snapshot().summary)
    }

    /// How many sessions the table tracks (the store's count, which may lag behind evictions
    /// until [`RunningProxy::maintain_sessions`] runs).
    pub fn session_count(&self) -> u64 {
        self.store.len()
    }

    /// Run the session table's housekeeping now (idle sweeps, pending evictions) instead of at
    /// the next periodic tick. It blocks for as long as a sweep of the table takes.
    pub fn maintain_sessions(&self) {
        self.store.maintain();
    }

    /// Read the configuration file again and apply it (see [`ReloadReport`] for what may
    /// change while the proxy runs). A file that cannot be read or does not validate changes
    /// nothing; it is logged and counted as a failed reload.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let (done, result) = oneshot::channel();
        self.reload
            .send(done)
            .await
            .map_err(|_| ReloadError::Stopping)?;
        result.await.map_err(|_| ReloadError::Stopping)?
    }

    /// Wait until every alert line emitted so far is written.
    pub fn flush_alerts(&self) {
        self.log.flush();
    }

    /// Stop accepting now, let requests in flight finish (for up to `drain.timeout`), stop the
    /// background tasks and write out every queued alert line.
    pub async fn shutdown(self) {
        let times = DrainTimes {
            delay: Duration::ZERO,
            ..self.drain_times
        };
        self.stop(times).await;
    }

    /// Drain as a pod that Kubernetes stops should: `/readyz` answers 503 at once and every
    /// HTTP/1.1 answer says `Connection: close`, while new connections are still accepted for
    /// `drain.delay`; then accepting stops, idle connections close (HTTP/2 ones are sent
    /// GOAWAY), and requests in flight get `drain.timeout` to finish. Then as
    /// [`RunningProxy::shutdown`]: the background tasks stop and the alert log is flushed.
    pub async fn drain(self) {
        let times = self.drain_times;
        tracing::info!(
            delay = ?times.delay,
            timeout = ?times.timeout,
            "draining: not ready, still accepting for the delay"
        );
        self.stop(times).await;
    }

    async fn stop(mut self, times: DrainTimes) {
        let workers = std::mem::take(&mut self.workers);
        let closed = async {
            for w in workers {
                let _ = w.await;
            }
        };
        if self.drain.run(times, closed).await == Drained::Abandoned {
            tracing::warn!(
                timeout = ?times.timeout,
                "connections still open after the drain timeout; closing them"
            );
        }
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let log = self.log.clone();
        let _ = tokio::task::spawn_blocking(move || log.flush()).await;
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Fold the histograms' recorded samples into their buckets every second. The recorder keeps
/// every sample until then; if only a scrape of `/metrics` did this, a proxy nobody scrapes
/// (or one without an admin listener) would grow by every request it served.
async fn metrics_upkeep(metrics: Arc<Metrics>, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => metrics.upkeep(),
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        }
    }
}

/// Start the proxy: bind, spawn the server, health checks, incident watch, sinks and admin.
pub async fn start(config: Config, options: StartOptions) -> Result<RunningProxy, StartError> {
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    let per_worker = connections_per_worker(&config)?;
    let listeners =
        bind_workers(config.listen, config.workers).map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listeners
        .first()
        .and_then(|l| l.local_addr().ok())
        .unwrap_or(config.listen);
    let admin_listener = match config.admin {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());

    let backends = Arc::new(Backends::new(&config.backends));
    let metrics = Arc::new(Metrics::new(
        config.backends.iter().map(|b| b.name.as_str()),
    ));
    metrics.build_info(options.commit.as_deref().unwrap_or("unknown"));
    let (log, writer) = AlertLog::start(
        AlertTargets {
            file: config.alerts.log_file.clone(),
            stdout: config.alerts.stdout,
        },
        metrics.alert_lines_dropped.clone(),
    )
    .map_err(|source| StartError::AlertLog {
        path: config.alerts.log_file.clone().unwrap_or_default(),
        source,
    })?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (drain, drain_watch) = Drain::new();
    let mut tasks = Vec::new();
    let tls = match &config.tls {
        Some(t) => {
            let (listener, watch) = crate::listen::tls::start(t, &metrics, shutdown_rx.clone())
                .map_err(|e| StartError::Tls(e.to_string()))?;
            tasks.push(watch);
            Some(listener)
        }
        None => None,
    };
    // How this replica names its backends to the others (cookies, Redis records, the shared
    // incident window); discovery, once started, is woken by a name it does not know yet.
    let directory = Arc::new(farm::Directory {
        backends: backends.clone(),
        discovery: arc_swap::ArcSwapOption::empty(),
    });
    let session::Tables { store, fleet } = session::store(
        &config,
        &directory,
        &metrics,
        &log,
        &shutdown_rx,
        &mut tasks,
    )?;
    tasks.push(tokio::spawn(session::maintain(
        store.clone(),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(metrics_upkeep(
        metrics.clone(),
        shutdown_rx.clone(),
    )));
    let pin_switch = PinSwitch::default();

    // With a shared store, the replicas share their incident windows too.
    let window = fleet
        .as_ref()
        .map(|store| FleetWindow::new((**store).clone(), directory.clone()));
    let fleet_incidents = options
        .fleet_incidents
        .or_else(|| window.clone().map(|w| -> Arc<dyn FleetIncidents> { w }))
        .unwrap_or_else(|| Arc::new(NoSharedView));
    let sinks = reload::Sinks::start(&config, fleet_incidents, &metrics, &shutdown_rx, &mut tasks);
    let incidents = spawn_incidents(
        &config,
        &backends,
        &log,
        &metrics,
        &pin_switch,
        options.incident_tick,
        sinks.handles(),
        &shutdown_rx,
        &mut tasks,
    );
    if let Some(window) = window {
        tasks.push(tokio::spawn(
            window.run(incidents.clone(), shutdown_rx.clone()),
        ));
    }

    let hooks = Arc::new(farm::FarmHooks {
        backends: backends.clone(),
        incidents: incidents.clone(),
        log: log.clone(),
        health: OnceLock::new(),
    });
    let discovery = start_discovery(
        &config,
        &backends,
        &metrics,
        &hooks,
        &shutdown_rx,
        &mut tasks,
    )
    .await;

    let health = spawn_health(
        &config,
        &backends,
        &metrics,
        &incidents,
        &shutdown_rx,
        &mut tasks,
    );

    let reporter = Reporter::new(
        backends.clone(),
        metrics.clone(),
        log.clone(),
        incidents.clone(),
        options.extra_events,
    );
    let _ = hooks.health.set(health.clone());
    // Without DNS entries, one with none publishes the configured backends a reload changes.
    let membership = match discovery {
        Some(discovery) => {
            directory.discovery.store(Some(discovery.clone()));
            discovery
        }
        None => Arc::new(Discovery::new(
            &[],
            backends.clone(),
            metrics.clone(),
            hooks.clone(),
            None,
        )),
    };
    let mut session = session::layer(
        &config,
        store.clone(),
        reporter,
        pin_switch,
        &backends,
        directory.clone(),
    );
    if let Some(fleet) = fleet {
        session = session.with_fleet_store(fleet);
    }
    // Each worker numbers its own requests under its own prefix: no counter shared across cores.
    let id_prefix: u32 = rand::random();
    let balancer = Arc::new(Balancer::new(config.balance, backends.clone()));
    let pin = Arc::new(ArcSwap::from_pointee(config.pin.clone()));
    let mut workers = Vec::with_capacity(listeners.len());
    let mut layers = Vec::with_capacity(listeners.len());
    for (i, listener) in listeners.into_iter().enumerate() {
        let layer = session.for_thread();
        layers.push(layer.clone());
        let worker = Worker {
            listener,
            session: layer,
            request_ids: RequestIds::new(id_prefix.wrapping_add(i as u32)),
            backends: backends.clone(),
            balancer: balancer.clone(),
            upstream: config.upstream.clone(),
            send_timeout: config.send_timeout,
            max_header_bytes: config.max_header_bytes,
            max_connections: per_worker,
            forwarded: config.forwarded.clone(),
            tls: tls.clone(),
            pin: pin.clone(),
            health: health.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown_rx.clone(),
            drain: drain_watch.clone(),
            access_log: config.access_log,
        };
        workers.push(worker.spawn(i).map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?);
    }

    if let Some(l) = admin_listener {
        let state = AdminState {
            backends: backends.clone(),
            metrics: metrics.clone(),
            store: store.clone(),
            incidents: incidents.clone(),
            drain: drain_watch.clone(),
            token: config.admin_auth.clone(),
            probe: Arc::new(admin::ProbeGate::new(config.clone(), backends.clone())),
        };
        tasks.push(tokio::spawn(admin::serve(l, state, shutdown_rx.clone())));
    }
    let (reload_tx, reload_rx) = mpsc::channel(4);
    let reloader = reload::Reloader::new(
        options.config_file,
        config.clone(),
        reload::Parts {
            backends: backends.clone(),
            metrics: metrics.clone(),
            membership: Arc::new(ArcSwap::new(membership)),
            directory,
            shutdown: shutdown_rx.clone(),
            balancer,
            pin,
            layers,
            incidents: incidents.clone(),
            log: log.clone(),
            sinks,
        },
    );
    tasks.push(tokio::spawn(reloader.run(
        reload_rx,
        options.watch_config,
        shutdown_rx.clone(),
    )));
    tracing::info!(%addr, backends = backends.live().members.len(), pin = config.pin.policy.as_str(), "sessionwatch listening");

    Ok(RunningProxy {
        addr,
        admin_addr,
        store,
        metrics,
        backends,
        incidents,
        log,
        _writer: writer,
        shutdown: shutdown_tx,
        drain,
        drain_times: config.drain,
        reload: reload_tx,
        workers,
        tasks,
    })
}

/// `listen.max_connections` as the file-descriptor limit allows it, shared out over the workers
/// (each stops accepting at its share).
fn connections_per_worker(config: &Config) -> Result<usize, StartError> {
    // Each worker keeps two idle lists per backend (its own HTTP/1.1 connections, hyper's). A
    // discovered farm's size is not known yet: each entry is taken for a few backends.
    let backends = config.backends.len() + 4 * config.discovery.len();
    let pooled = (2 * config.workers * backends * config.upstream.pool_max_idle_per_host) as u64;
    let max_connections = fd_limit::connection_cap(
        config.max_connections,
        fd_limit::raise_open_files_limit(),
        pooled,
    )?;
    Ok(max_connections.div_ceil(config.workers.max(1)).max(1))
}
