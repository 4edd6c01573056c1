//! Prometheus metrics, one registry per proxy.
//!
//! Each proxy owns its recorder instead of installing a process-wide one, so several proxies in
//! one process (tests, the demo) keep separate figures. Handles are registered once and kept, so
//! counting on the request path is an atomic add, not a registry lookup. Every label is bounded:
//! backend names (configured, or a discovered backend's address: at most the 1024 backends the
//! backend set knows in a process's life), discovery targets from the configuration and fixed
//! enums, never a session id or fingerprint. A backend that joins at run time gets its series when
//! it is added ([`Metrics::add_backend`]); they stay after it leaves, as its id does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Key, Label, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use sessionwatch_core::{Attribution, BackendId, ResetSignal};

use crate::slots::Slots;
use describe::describe;

mod describe;
mod histogram;
mod process;

pub(crate) use histogram::DurationHistogram;

const META: Metadata<'static> = Metadata::new("sessionwatch", metrics::Level::INFO, None);

/// The status classes of `sessionwatch_responses_total` (and of the status page's counts), in
/// the order of [`class_index`].
pub(crate) const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index in [`CLASSES`] of `status`'s class. Codes past 599 (valid in `http`, in no RFC)
/// count as 5xx, so that every answer is counted in some class.
#[inline]
pub(crate) fn class_index(status: http::StatusCode) -> usize {
    usize::from(status.as_u16() / 100).clamp(1, 5) - 1
}

/// Per-backend handles.
#[derive(Debug)]
pub(crate) struct BackendMetrics {
    /// Requests sent to the backend.
    pub requests: Counter,
    /// Time to the response head (counted here, written beside the registry's families: the
    /// exporter's histograms cost about 440 instructions a sample).
    pub duration: DurationHistogram,
    /// Connect errors.
    pub connect_errors: Counter,
    /// Response timeouts.
    pub timeouts: Counter,
    /// Backend health (1 up, 0 down).
    pub up: Gauge,
    /// Connections to the backend open now (in use and idle, every worker's pool and the
    /// health checks').
    pub connections: Gauge,
    /// Connections closed because the backend sent bytes past the end of an answer, or while
    /// the connection was idle.
    pub poisoned: Counter,
    /// The backend's answers by status class (see [`CLASSES`]).
    pub responses: [Counter; 5],
    name: SharedString,
}

/// The proxy's metrics.
pub(crate) struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    backends: Slots<BackendMetrics>,
    /// Requests that carried a known, live session.
    pub session_requests: Counter,
    /// Requests routed to a pinned backend.
    pub pins: Counter,
    /// Pinned requests whose backend was down, sent elsewhere.
    pub pin_broken: Counter,
    /// Pinned requests answered 503 because their backend was down.
    pub pin_failed: Counter,
    /// Pinned requests whose backend left the farm (also counted as broken or failed).
    pub pin_left: Counter,
    /// Backends in the farm now, and known but gone.
    pub backends_live: Gauge,
    /// Backends known but no longer in the farm.
    pub backends_left: Gauge,
    /// Backends that joined, and that left, since start (configured ones not counted).
    pub backend_changes: [Counter; 2],
    /// Discovered addresses refused because the proxy knows too many backends already.
    pub backends_refused: Counter,
    /// Rescues whose replay kept the user signed in.
    pub rescues_ok: Counter,
    /// Rescues whose replay still showed the session lost.
    pub rescues_still_lost: Counter,
    /// Rescues whose replay could not reach the issuer.
    pub rescues_failed: Counter,
    /// Sessions in the table.
    pub sessions_tracked: Gauge,
    /// Presented sessions the full table evicted (set from the store's count at each scrape).
    pub sessions_evicted_presented: Counter,
    /// Never-presented sessions evicted from probation (set like the presented count).
    pub sessions_evicted_unpresented: Counter,
    /// 1 while an incident is open.
    pub incident_open: Gauge,
    /// Per-reset alert lines not written because of the rate limit.
    pub resets_suppressed: Counter,
    /// Requests answered 503 because no backend was healthy.
    pub no_backend: Counter,
    /// Client connections open now.
    pub client_connections: Gauge,
    /// Time from a client request's head read to its answer's last byte sent.
    pub client_request_duration: Arc<DurationHistogram>,
    /// Times a worker stopped accepting because it held its share of `listen.max_connections`.
    pub connection_limit_reached: Counter,
    /// Requests whose body the client sent malformed (400).
    pub client_body_invalid: Counter,
    /// Requests whose body the client stopped sending (408).
    pub client_body_timeout: Counter,
    /// Alert lines the alert log file could not take (disk full, I/O error).
    pub alert_lines_dropped: Counter,
    /// Affinity cookies a session's record was taken from.
    pub affinity_adopted: Counter,
    /// Authentic affinity cookies whose issuer this replica has not resolved (yet).
    pub affinity_unresolved: Counter,
    /// Affinity cookies ignored, by why: malformed, forged, stale (that order).
    pub affinity_rejected: [Counter; 3],
    resets: Mutex<HashMap<(ResetSignal, Attribution, u16, u16), Counter>>,
    sink_failures: Mutex<HashMap<&'static str, Counter>>,
}

/// One discovery target's handles.
#[derive(Debug, Clone)]
pub(crate) struct DiscoveryMetrics {
    /// Resolutions that failed (the last known set was kept).
    pub failures: Counter,
    /// 1 while the last resolution succeeded, 0 while the last known set is kept.
    pub up: Gauge,
    /// Addresses the last successful resolution gave.
    pub addresses: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

const UPSTREAM_DURATION: &str = "sessionwatch_upstream_request_duration_seconds";
const UPSTREAM_DURATION_HELP: &str =
    "Time from sending a request upstream to its response head, by backend.";

const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    /// Register every metric, with one set of per-backend series for each of `backend_names`
    /// (in the backends' order: series `i` belong to backend `i`).
    pub(crate) fn new<'a>(backend_names: impl IntoIterator<Item = &'a str>) -> Self {
        let m = Self::empty();
        for (i, name) in backend_names.into_iter().enumerate() {
            m.add_backend(BackendId(u16::try_from(i).unwrap_or(u16::MAX)), name);
        }
        m
    }

    fn empty() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        describe(&recorder);
        let counter = |name: &'static str| recorder.register_counter(&Key::from_name(name), &META);
        let gauge = |name: &'static str| recorder.register_gauge(&Key::from_name(name), &META);
        let evicted = |kind: &'static str| {
            recorder.register_counter(
                &Key::from_parts(
                    "sessionwatch_sessions_evicted_total",
                    vec![Label::new("kind", kind)],
                ),
                &META,
            )
        };
        let affinity = |result: &'static str| {
            recorder.register_counter(
                &Key::from_parts(
                    "sessionwatch_affinity_cookies_total",
                    vec![Label::new("result", result)],
                ),
                &META,
            )
        };
        let m = Self {
            session_requests: counter("sessionwatch_session_requests_total"),
            pins: counter("sessionwatch_pins_total"),
            pin_broken: counter("sessionwatch_pin_broken_total"),
            pin_failed: counter("sessionwatch_pin_failed_total"),
            pin_left: counter("sessionwatch_pins_left_total"),
            backends_live: recorder.register_gauge(
                &Key::from_parts("sessionwatch_backends", vec![Label::new("state", "live")]),
                &META,
            ),
            backends_left: recorder.register_gauge(
                &Key::from_parts("sessionwatch_backends", vec![Label::new("state", "left")]),
                &META,
            ),
            backend_changes: ["joined", "left"].map(|change| {
                recorder.register_counter(
                    &Key::from_parts(
                        "sessionwatch_backend_changes_total",
                        vec![Label::new("change", change)],
                    ),
                    &META,
                )
            }),
            backends_refused: counter("sessionwatch_backends_refused_total"),
            rescues_ok: recorder.register_counter(
                &Key::from_parts(
                    "sessionwatch_rescues_total",
                    vec![Label::new("result", "rescued")],
                ),
                &META,
            ),
            rescues_still_lost: recorder.register_counter(
                &Key::from_parts(
                    "sessionwatch_rescues_total",
                    vec![Label::new("result", "still_lost")],
                ),
                &META,
            ),
            rescues_failed: recorder.register_counter(
                &Key::from_parts(
                    "sessionwatch_rescues_total",
                    vec![Label::new("result", "failed")],
                ),
                &META,
            ),
            sessions_tracked: gauge("sessionwatch_sessions_tracked"),
            sessions_evicted_presented: evicted("presented"),
            sessions_evicted_unpresented: evicted("unpresented"),
            incident_open: gauge("sessionwatch_incident_open"),
            resets_suppressed: counter("sessionwatch_reset_lines_suppressed_total"),
            no_backend: counter("sessionwatch_no_healthy_backend_total"),
            client_connections: gauge("sessionwatch_client_connections"),
            // Not the exporter's: a sample of every request must be cheap (see `histogram`).
            client_request_duration: Arc::new(DurationHistogram::new(
                "sessionwatch_client_request_duration_seconds",
                "Time from a client request's head having been read to the last byte of its \
                 answer handed to the connection (or the answer given up).",
                DURATION_BUCKETS,
            )),
            connection_limit_reached: counter("sessionwatch_connection_limit_reached_total"),
            client_body_invalid: recorder.register_counter(
                &Key::from_parts(
                    "sessionwatch_client_body_errors_total",
                    vec![Label::new("kind", "invalid")],
                ),
                &META,
            ),
            client_body_timeout: recorder.register_counter(
                &Key::from_parts(
                    "sessionwatch_client_body_errors_total",
                    vec![Label::new("kind", "timeout")],
                ),
                &META,
            ),
            alert_lines_dropped: counter("sessionwatch_alert_lines_dropped_total"),
            affinity_adopted: affinity("adopted"),
            affinity_unresolved: affinity("unresolved"),
            affinity_rejected: [affinity("malformed"), affinity("forged"), affinity("stale")],
            backends: Slots::default(),
            resets: Mutex::new(HashMap::new()),
            sink_failures: Mutex::new(HashMap::new()),
            handle,
            recorder,
        };
        m.incident_open.set(0.0);
        m.client_connections.set(0.0);
        m
    }

    /// Register backend `id`'s series under `name` (a second call for the same id does
    /// nothing). Its health gauge starts at 1, as the backend does.
    pub(crate) fn add_backend(&self, id: BackendId, name: &str) {
        let recorder = &self.recorder;
        self.backends.get_or_init(id.index(), || {
            let name = SharedString::from(name.to_owned());
            let labels = || vec![Label::new("backend", name.clone())];
            let key = |n: &'static str| Key::from_parts(n, labels());
            let kind = |k: &'static str| {
                Key::from_parts(
                    "sessionwatch_upstream_errors_total",
                    vec![Label::new("backend", name.clone()), Label::new("kind", k)],
                )
            };
            let b = BackendMetrics {
                requests: recorder.register_counter(&key("sessionwatch_requests_total"), &META),
                duration: DurationHistogram::new(
                    UPSTREAM_DURATION,
                    UPSTREAM_DURATION_HELP,
                    DURATION_BUCKETS,
                ),
                connect_errors: recorder.register_counter(&kind("connect"), &META),
                timeouts: recorder.register_counter(&kind("timeout"), &META),
                up: recorder.register_gauge(&key("sessionwatch_backend_up"), &META),
                connections: recorder
                    .register_gauge(&key("sessionwatch_upstream_connections"), &META),
                poisoned: recorder
                    .register_counter(&key("sessionwatch_upstream_poisoned_total"), &META),
                responses: CLASSES.map(|class| {
                    let labels = vec![
                        Label::new("backend", name.clone()),
                        Label::new("class", class),
                    ];
                    recorder.register_counter(
                        &Key::from_parts("sessionwatch_responses_total", labels),
                        &META,
                    )
                }),
                name: name.clone(),
            };
            b.up.set(1.0);
            b.connections.set(0.0);
            b
        });
    }

    /// Backend `id`'s handles, once it has been added.
    #[inline]
    pub(crate) fn backend(&self, id: BackendId) -> Option<&BackendMetrics> {
        self.backends.get(id.index())
    }

    /// The handles of the discovery target `target` (its text in the configuration).
    pub(crate) fn discovery(&self, target: &str) -> DiscoveryMetrics {
        let key =
            |n: &'static str| Key::from_parts(n, vec![Label::new("target", target.to_owned())]);
        DiscoveryMetrics {
            failures: self
                .recorder
                .register_counter(&key("sessionwatch_discovery_failures_total"), &META),
            up: self
                .recorder
                .register_gauge(&key("sessionwatch_discovery_up"), &META),
            addresses: self
                .recorder
                .register_gauge(&key("sessionwatch_discovery_addresses"), &META),
        }
    }

    /// Each backend's counter of poisoned upstream connections, for a worker's pool.
    pub(crate) fn poisoned_counters(self: &Arc<Self>) -> crate::upstream::PoisonedCounters {
        let this = self.clone();
        Arc::new(move |slot| {
            let id = BackendId(u16::try_from(slot).ok()?);
            this.backend(id).map(|b| b.poisoned.clone())
        })
    }

    /// Each backend's gauge of open upstream connections, for a pool (by the backend's slot).
    pub(crate) fn connection_gauges(
        self: &Arc<Self>,
    ) -> Arc<dyn Fn(usize) -> Option<Gauge> + Send + Sync> {
        let this = self.clone();
        Arc::new(move |slot| {
            let id = BackendId(u16::try_from(slot).ok()?);
            this.backend(id).map(|b| b.connections.clone())
        })
    }

    /// `sessionwatch_build_info{version,commit} 1`: this crate's version (the workspace's, so
    /// the binary's) and the commit the embedding binary says it was built from.
    pub(crate) fn build_info(&self, commit: &str) {
        let key = Key::from_parts(
            "sessionwatch_build_info",
            vec![
                Label::new("version", env!("CARGO_PKG_VERSION")),
                Label::new("commit", commit.to_owned()),
            ],
        );
        self.recorder.register_gauge(&key, &META).set(1.0);
    }

    fn backend_label(&self, id: u16) -> SharedString {
        self.backend(BackendId(id))
            .map(|b| b.name.clone())
            .unwrap_or_else(|| SharedString::from("unknown"))
    }

    /// Count one reset.
    pub(crate) fn reset(
        &self,
        signal: ResetSignal,
        attribution: Attribution,
        issuer: u16,
        server: u16,
    ) {
        let mut map = self.resets.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((signal, attribution, issuer, server))
            .or_insert_with(|| {
                let key = Key::from_parts(
                    "sessionwatch_session_resets_total",
                    vec![
                        Label::new("signal", signal.as_str()),
                        Label::new("attribution", attribution.as_str()),
                        Label::new("issuer", self.backend_label(issuer)),
                        Label::new("server", self.backend_label(server)),
                    ],
                );
                self.recorder.register_counter(&key, &META)
            })
            .increment(1);
    }

    /// Count one failed delivery to an alert sink.
    pub(crate) fn sink_failure(&self, sink: &'static str) {
        let mut map = self.sink_failures.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(sink)
            .or_insert_with(|| {
                let key = Key::from_parts(
                    "sessionwatch_alert_sink_failures_total",
                    vec![Label::new("sink", sink)],
                );
                self.recorder.register_counter(&key, &META)
            })
            .increment(1);
    }

    /// A counter of this registry outside the fixed set (the fleet store's), with fixed labels.
    pub(crate) fn counter(
        &self,
        name: &'static str,
        labels: &[(&'static str, &'static str)],
    ) -> Counter {
        let labels: Vec<Label> = labels.iter().map(|(k, v)| Label::new(*k, *v)).collect();
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &META)
    }

    /// A gauge of this registry outside the fixed set.
    pub(crate) fn gauge(&self, name: &'static str) -> Gauge {
        self.recorder.register_gauge(&Key::from_name(name), &META)
    }

    /// The Prometheus text exposition: this registry's families, the client request
    /// durations, then the process's own (`process_*`, read from `/proc` now; see [`process`]).
    pub(crate) fn render(&self) -> String {
        let mut text = self.handle.render();
        let mut backends = self.backends.iter().peekable();
        if let Some((_, first)) = backends.peek() {
            first.duration.render_header(&mut text);
        }
        for (_, b) in backends {
            b.duration
                .render_series(&mut text, Some(("backend", &b.name)));
        }
        self.client_request_duration.render(&mut text);
        process::render(&mut text);
        text
    }

    /// Drain histogram samples into their buckets (call periodically).
    pub(crate) fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}
