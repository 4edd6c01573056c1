//! The incident watch: feeds the core tracker from live observations, writes incident and
//! pinning lines, drives the `on_incident` pin switch and hands incidents to the sinks.
//!
//! The watch reads the time from the [`Clock`] it is given, never from the system itself:
//! observations carry their own time, and its ticks and snapshots ask the clock, so a test can
//! run an incident's whole life (opening, updates, resolving 30 s later) on paused time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sessionwatch_core::{
    BackendId, IncidentConfig, IncidentEvent, IncidentSnapshot, IncidentTracker, Outcome,
    PairCounts, PinPolicy, Timestamp, WindowCounts,
};
use sessionwatch_tower::{Observed, PinSwitch};
use tokio::sync::watch;

use crate::backends::Backends;
use crate::metrics::Metrics;
use crate::report::alert_log::AlertLog;
use crate::report::lines::{
    AlertLine, HintLine, IncidentLine, IncidentTotals, LineKind, MatrixCell, PinningLine,
};
use crate::report::series::{RecentReset, RecentResets, SharePoint, ShareSeries};
use crate::report::sinks::{IncidentNotice, NoticeKind, SinkHandle};

/// Where the watch reads the time: [`Clock::system`] in the proxy; a test passes one that
/// follows tokio's paused time, so that ticks and timestamps move together.
#[derive(Clone)]
pub(crate) struct Clock(Arc<dyn Fn() -> Timestamp + Send + Sync>);

impl Clock {
    /// The system's wall clock (what the session layer stamps observations with).
    pub(crate) fn system() -> Self {
        Self(Arc::new(Timestamp::now))
    }

    /// A clock that reads `now` (the tests' paused time).
    #[cfg(test)]
    pub(crate) fn from_fn(now: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        Self(Arc::new(now))
    }

    /// The time now.
    pub(crate) fn now(&self) -> Timestamp {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

struct State {
    tracker: IncidentTracker,
    incident_id: Option<String>,
    labels: Option<(String, String)>,
    /// The pin policy and the sinks: here rather than beside the lock, since a reload changes
    /// them.
    policy: PinPolicy,
    sinks: Vec<SinkHandle>,
    /// The share over the last 15 minutes, and the last resets, for the status page.
    series: ShareSeries,
    recent: RecentResets,
}

/// See the module docs.
pub(crate) struct IncidentWatch {
    state: Mutex<State>,
    backends: Arc<Backends>,
    log: AlertLog,
    metrics: Arc<Metrics>,
    pin_switch: PinSwitch,
    clock: Clock,
}

impl std::fmt::Debug for IncidentWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncidentWatch").finish_non_exhaustive()
    }
}

fn rfc3339(t: Timestamp) -> String {
    humantime::format_rfc3339_seconds(SystemTime::from(t)).to_string()
}

impl IncidentWatch {
    /// A watch over `backends`, reading the time from `clock`.
    // One argument per collaborator, each given once at start: a builder would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: IncidentConfig,
        backends: Arc<Backends>,
        log: AlertLog,
        metrics: Arc<Metrics>,
        policy: PinPolicy,
        pin_switch: PinSwitch,
        sinks: Vec<SinkHandle>,
        clock: Clock,
    ) -> Self {
        let tracker = IncidentTracker::new(config, backends.known().count());
        Self {
            state: Mutex::new(State {
                tracker,
                incident_id: None,
                labels: None,
                policy,
                sinks,
                series: ShareSeries::default(),
                recent: RecentResets::default(),
            }),
            backends,
            log,
            metrics,
            pin_switch,
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave counters inconsistent enough to matter.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This replica's own window counts, and whether its incident is open, for the fleet.
    pub(crate) fn own_counts(&self) -> (WindowCounts, bool) {
        let now = self.clock.now();
        let st = self.lock();
        (st.tracker.own_counts(now), st.tracker.is_open())
    }

    /// The other replicas' summed window counts (`None` when not known now).
    pub(crate) fn set_peer_counts(&self, peers: Option<WindowCounts>) {
        self.lock().tracker.set_peer_counts(peers);
    }

    /// Count one observation; for a reset, whether its alert line may be written.
    pub(crate) fn observe(&self, e: &Observed<'_>, reset: bool) -> bool {
        let mut st = self.lock();
        st.tracker.record_request(e.record.issuer, e.server, e.at);
        st.series.record(e.at, reset);
        if !reset {
            return true;
        }
        if let Outcome::Reset { signal, .. } = e.outcome {
            let short = e.fingerprint.short();
            st.recent
                .push(e.at, short, signal.as_str(), e.record.issuer.0, e.server.0);
        }
        st.tracker.record_reset(
            e.record.issuer,
            e.server,
            e.at.since(e.record.last_seen),
            e.at.since(e.record.issued_at),
            e.fingerprint.short(),
            e.at,
        )
    }

    /// Whether one more per-event alert line, for an event `at`, may be written (the incident
    /// rate limit).
    pub(crate) fn allow_line(&self, at: Timestamp) -> bool {
        self.lock().tracker.allow_line(at)
    }

    /// A backend came back up (now).
    pub(crate) fn note_restart(&self, backend: BackendId) {
        let now = self.clock.now();
        self.lock().tracker.note_restart(backend, now);
    }

    /// A backend joined the farm (now); call it before the backend takes traffic, so that the
    /// tracker counts it from its first request.
    pub(crate) fn note_joined(&self, backend: BackendId) {
        let now = self.clock.now();
        self.lock().tracker.note_joined(backend, now);
    }

    /// Make room for backend `backend`, part of the farm the proxy starts with (not a join).
    pub(crate) fn make_room(&self, backend: BackendId) {
        self.lock().tracker.grow(backend.index() + 1);
    }

    /// Whether an incident is open.
    pub(crate) fn is_open(&self) -> bool {
        self.lock().tracker.is_open()
    }

    /// The current picture (for the status page and tests).
    pub(crate) fn snapshot(&self) -> IncidentLine {
        let now = self.clock.now();
        let st = self.lock();
        let snap = st.tracker.snapshot(now);
        self.line(&snap, st.incident_id.clone().unwrap_or_default())
    }

    /// The share of known-session requests lost over the last 15 minutes, one point per step,
    /// and the last resets, newest first (for the status page).
    pub(crate) fn recent(&self) -> (Vec<SharePoint>, Vec<RecentReset>) {
        let now = self.clock.now();
        let st = self.lock();
        let name = |b: u16| self.name(BackendId(b));
        (st.series.points(now), st.recent.list(&name))
    }

    fn name(&self, b: BackendId) -> String {
        self.backends.name(b).to_owned()
    }

    fn line(&self, s: &IncidentSnapshot, id: String) -> IncidentLine {
        let hint_text = s.hint.text(&|b| self.name(b));
        let started = rfc3339(s.started);
        let clock = |t: &str| t.get(11..19).unwrap_or(t).to_owned();
        let summary = match (&s.life, s.ended) {
            (None, _) => format!(
                "no incident: {:.0}% of requests with a live session are logged out",
                s.share * 100.0
            ),
            (Some(life), Some(ended)) => format!(
                "incident from {} to {} UTC ({}): {} of {} requests with a live session logged out, {}{} sessions affected, {:.0}% at the peak; {}",
                clock(&started),
                clock(&rfc3339(ended)),
                humantime::format_duration(Duration::from_secs(ended.since(s.started).as_secs())),
                life.resets,
                life.requests,
                if life.sessions_capped {
                    "at least "
                } else {
                    ""
                },
                life.sessions,
                life.peak_share * 100.0,
                hint_text
            ),
            (Some(_), None) => format!(
                "incident since {} UTC: {:.0}% of requests with a live session are logged out; {}",
                clock(&started),
                s.share * 100.0,
                hint_text
            ),
        };
        let cells = |matrix: &[PairCounts]| -> Vec<MatrixCell> {
            matrix
                .iter()
                .map(|p| MatrixCell {
                    issuer: self.name(p.issuer),
                    server: self.name(p.server),
                    requests: p.requests,
                    resets: p.resets,
                })
                .collect()
        };
        let incident = s.life.as_ref().map(|l| IncidentTotals {
            requests: l.requests,
            resets: l.resets,
            sessions_affected: l.sessions,
            sessions_affected_at_least: l.sessions_capped,
            first_loss: l.first_loss.map(rfc3339),
            last_loss: l.last_loss.map(rfc3339),
            peak_share: (l.peak_share * 10_000.0).round() / 10_000.0,
            peak_at: rfc3339(l.peak_at),
            matrix: cells(&l.matrix),
        });
        IncidentLine {
            incident_id: id,
            started,
            summary,
            share: (s.share * 10_000.0).round() / 10_000.0,
            requests: s.requests,
            resets: s.resets,
            total_resets: s.total_resets,
            suppressed: s.suppressed,
            matrix: cells(&s.matrix),
            hint: HintLine {
                code: s.hint.code(),
                text: hint_text,
            },
            dominant_issuer: s.dominant.map(|(i, _)| self.name(i)),
            dominant_server: s.dominant.map(|(_, sv)| self.name(sv)),
            samples: s.samples.iter().map(|f| f.to_string()).collect(),
            ended: s.ended.map(rfc3339),
            duration_s: s.ended.map(|e| e.since(s.started).as_secs()),
            incident,
        }
    }

    /// Advance the tracker and act on what changed.
    pub(crate) fn tick(&self) {
        let now = self.clock.now();
        let mut st = self.lock();
        let Some(event) = st.tracker.evaluate(now) else {
            return;
        };
        let (kind, snap) = match &event {
            IncidentEvent::Opened(s) => {
                st.incident_id = Some(uuid::Uuid::now_v7().simple().to_string());
                st.labels = s.dominant.map(|(i, sv)| (self.name(i), self.name(sv)));
                (NoticeKind::Opened, s)
            }
            IncidentEvent::Updated(s) => (NoticeKind::Updated, s),
            IncidentEvent::Resolved(s) => (NoticeKind::Resolved, s),
        };
        let id = st.incident_id.clone().unwrap_or_default();
        let labels = st.labels.clone();
        let policy = st.policy;
        let sinks = st.sinks.clone();
        if kind == NoticeKind::Resolved {
            st.incident_id = None;
            st.labels = None;
        }
        drop(st);

        let line = self.line(snap, id.clone());
        let at = SystemTime::from(now);
        self.log.emit(AlertLine::new(kind.line_kind(), at, &line));
        match kind {
            NoticeKind::Opened => {
                tracing::warn!(
                    incident = id,
                    summary = line.summary,
                    "session-loss incident opened"
                );
                self.metrics.incident_open.set(1.0);
                if policy == PinPolicy::OnIncident {
                    self.pin_switch.set(true);
                    self.log.emit(AlertLine::new(
                        LineKind::PinningStarted,
                        at,
                        &PinningLine {
                            policy: policy.as_str(),
                            reason: LineKind::IncidentOpened.as_str(),
                            incident_id: &id,
                        },
                    ));
                }
            }
            NoticeKind::Resolved => {
                tracing::info!(incident = id, "session-loss incident resolved");
                self.metrics.incident_open.set(0.0);
                if policy == PinPolicy::OnIncident && self.pin_switch.is_on() {
                    self.pin_switch.set(false);
                    self.log.emit(AlertLine::new(
                        LineKind::PinningStopped,
                        at,
                        &PinningLine {
                            policy: policy.as_str(),
                            reason: LineKind::IncidentResolved.as_str(),
                            incident_id: &id,
                        },
                    ));
                }
            }
            NoticeKind::Updated => {}
        }
        let notice = Arc::new(IncidentNotice { kind, line, labels });
        for sink in &sinks {
            sink.send(notice.clone());
        }
    }

    /// Judge by `config` and pin under `policy` from now on, and hand incidents to `sinks` if
    /// given (else to the sinks it has): the window's counts and an open incident are kept.
    /// Under a policy other than `on_incident` the pin switch is off; under `on_incident` it is
    /// on while an incident is open.
    pub(crate) fn reconfigure(
        &self,
        config: IncidentConfig,
        policy: PinPolicy,
        sinks: Option<Vec<SinkHandle>>,
    ) {
        let now = self.clock.now();
        let mut st = self.lock();
        st.tracker.set_config(config);
        st.policy = policy;
        if let Some(sinks) = sinks {
            // A sink that replaced another learns of the open incident now, not at its next
            // update (Alertmanager would let the alert expire meanwhile).
            if st.tracker.is_open() {
                let snap = st.tracker.snapshot(now);
                let notice = Arc::new(IncidentNotice {
                    kind: NoticeKind::Updated,
                    line: self.line(&snap, st.incident_id.clone().unwrap_or_default()),
                    labels: st.labels.clone(),
                });
                for sink in &sinks {
                    sink.send(notice.clone());
                }
            }
            st.sinks = sinks;
        }
        self.pin_switch
            .set(policy == PinPolicy::OnIncident && st.tracker.is_open());
    }

    /// Tick every `every` until `shutdown` turns true.
    pub(crate) async fn run(self: Arc<Self>, every: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.tick(),
                _ = crate::shutdown::stopped(&mut shutdown) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The watch's whole timing on paused tokio time: its clock follows the paused clock, so
    //! ticks, windows and the timestamps in its lines all move with `sleep` and cost nothing.

    use std::path::PathBuf;

    use http::{Method, StatusCode, Uri};
    use metrics::Counter;
    use serde_json::Value;
    use sessionwatch_core::{Attribution, Fingerprint, Outcome, ResetSignal, SessionRecord};
    use tokio::sync::mpsc;
    use tokio::task::JoinHandle;
    use tokio::time::{Instant, sleep};

    use super::*;
    use crate::report::alert_log::{AlertLogWriter, AlertTargets};

    const A: BackendId = BackendId(0);
    const B: BackendId = BackendId(1);
    /// 2100-01-01T00:00:00Z: a whole second, so the tracker's one-second buckets start with the
    /// test, and later than any system clock, so a time read from the system shows.
    const EPOCH_MS: u64 = 4_102_444_800_000;
    /// The proxy's default tick.
    const TICK: Duration = Duration::from_millis(500);

    struct Watched {
        watch: Arc<IncidentWatch>,
        clock: Clock,
        pin: PinSwitch,
        notices: mpsc::UnboundedReceiver<Arc<IncidentNotice>>,
        metrics: Arc<Metrics>,
        log: AlertLog,
        path: PathBuf,
        shutdown: watch::Sender<bool>,
        task: JoinHandle<()>,
        _writer: AlertLogWriter,
        requests: u128,
    }

    impl Watched {
        /// A watch over node-a and node-b with the default incident settings, ticking as the
        /// proxy does. Call on paused time.
        fn start(name: &str, policy: PinPolicy) -> Self {
            let path = std::env::temp_dir()
                .join(format!("sw-incidents-{}-{name}.jsonl", std::process::id()));
            let _ = std::fs::remove_file(&path);
            let (log, writer) = AlertLog::start(
                AlertTargets {
                    file: Some(path.clone()),
                    stdout: false,
                },
                Counter::noop(),
            )
            .unwrap();
            let backends = Arc::new(Backends::named(&["node-a", "node-b"]));
            let metrics = Arc::new(Metrics::new(["node-a", "node-b"]));
            let start = Instant::now();
            let clock =
                Clock::from_fn(move || Timestamp::from_millis(EPOCH_MS).plus(start.elapsed()));
            let pin = PinSwitch::default();
            let (sink, notices) = SinkHandle::capture();
            let watch = Arc::new(IncidentWatch::new(
                IncidentConfig::default(),
                backends,
                log.clone(),
                metrics.clone(),
                policy,
                pin.clone(),
                vec![sink],
                clock.clone(),
            ));
            let (shutdown, stop) = watch::channel(false);
            let task = tokio::spawn(watch.clone().run(TICK, stop));
            Self {
                watch,
                clock,
                pin,
                notices,
                metrics,
                log,
                path,
                shutdown,
                task,
                _writer: writer,
                requests: 0,
            }
        }

        /// One request with a known session issued by `issuer` a few seconds ago, served by
        /// `server`; lost when they differ, as with a per-node session store.
        fn request(&mut self, issuer: BackendId, server: BackendId) {
            // Ages spread over seconds, far from the minute a timeout hint needs.
            let age = Duration::from_millis(1_000 + (self.requests as u64 * 37) % 9_000);
            self.observe(issuer, server, age, issuer != server);
        }

        /// One request with a known session issued by `issuer` `age` ago, served by `server`.
        fn observe(&mut self, issuer: BackendId, server: BackendId, age: Duration, lost: bool) {
            self.requests += 1;
            let at = self.clock.now();
            let issued = Timestamp::from_millis(at.as_millis() - age.as_millis() as u64);
            let (method, uri) = (Method::GET, Uri::from_static("/account"));
            let outcome = match (lost, issuer == server) {
                (false, _) => Outcome::Continued,
                (true, same) => Outcome::Reset {
                    signal: ResetSignal::LoginRedirect,
                    attribution: if same {
                        Attribution::SameBackend
                    } else {
                        Attribution::CrossBackend
                    },
                },
            };
            self.watch.observe(
                &Observed {
                    at,
                    outcome,
                    fingerprint: Fingerprint(self.requests),
                    record: SessionRecord::issued(issuer, issued),
                    server,
                    method: &method,
                    uri: &uri,
                    status: StatusCode::OK,
                    request_id: None,
                    rescuing: false,
                },
                lost,
            );
        }

        /// `n` requests of each pair in `pairs`.
        fn traffic(&mut self, n: usize, pairs: &[(BackendId, BackendId)]) {
            for _ in 0..n {
                for &(issuer, server) in pairs {
                    self.request(issuer, server);
                }
            }
        }

        fn lines(&self) -> Vec<Value> {
            self.log.flush();
            std::fs::read_to_string(&self.path)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }

        fn lines_of(&self, kind: &str) -> Vec<Value> {
            self.lines()
                .into_iter()
                .filter(|l| l["type"] == kind)
                .collect()
        }

        fn notices(&mut self) -> Vec<NoticeKind> {
            let mut kinds = Vec::new();
            while let Ok(n) = self.notices.try_recv() {
                kinds.push(n.kind);
            }
            kinds
        }

        async fn stop(self) {
            let _ = self.shutdown.send(true);
            self.task.await.unwrap();
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// The moment `ms` milliseconds into the test, as the alert log writes it.
    fn at(ms: u64) -> String {
        humantime::format_rfc3339_millis(SystemTime::from(Timestamp::from_millis(EPOCH_MS + ms)))
            .to_string()
    }

    const PER_NODE: [(BackendId, BackendId); 4] = [(A, A), (A, B), (B, A), (B, B)];
    const SAME: [(BackendId, BackendId); 2] = [(A, A), (B, B)];

    #[tokio::test(start_paused = true)]
    async fn an_incident_opens_on_the_next_tick_pins_while_open_and_resolves_on_time() {
        let mut w = Watched::start("lifecycle", PinPolicy::OnIncident);
        // What /status shows with none open says so.
        let quiet = w.watch.snapshot();
        assert!(
            quiet.summary.starts_with("no incident: "),
            "{}",
            quiet.summary
        );
        assert!(quiet.incident.is_none());
        // Half a tick in, so that the test never wakes at the same instant as a tick.
        sleep(TICK / 2).await;
        // A per-node store: half the requests lose their session.
        w.traffic(10, &PER_NODE);
        assert!(w.lines().is_empty(), "nothing opens before a tick");
        sleep(TICK).await;

        // Opened on the first tick after the losses, 250 ms after them.
        let opened = w.lines_of("incident_opened");
        assert_eq!(opened.len(), 1, "{:?}", w.lines());
        let opened = &opened[0];
        assert_eq!(opened["time"], at(500));
        assert_eq!(opened["started"], "2100-01-01T00:00:00Z");
        assert_eq!(opened["hint"]["code"], "store_not_shared");
        let summary = opened["summary"].as_str().unwrap();
        assert!(
            summary.starts_with("incident since 00:00:00 UTC: 50% of requests"),
            "{summary}"
        );
        let matrix = opened["matrix"].as_array().unwrap();
        assert!(
            matrix
                .iter()
                .any(|c| c["issuer"] == "node-a" && c["server"] == "node-b" && c["resets"] == 10)
        );
        assert!(
            matrix
                .iter()
                .all(|c| c["issuer"] != c["server"] || c["resets"] == 0)
        );
        assert!(!opened["samples"].as_array().unwrap().is_empty());
        let id = opened["incident_id"].as_str().unwrap().to_owned();
        let started = w.lines_of("pinning_started");
        assert_eq!(started.len(), 1);
        assert_eq!(started[0]["incident_id"], id.as_str());
        assert_eq!(started[0]["reason"], "incident_opened");
        assert_eq!(started[0]["policy"], "on_incident");
        assert!(w.pin.is_on());
        assert!(w.watch.is_open());
        assert!(w.metrics.render().contains("sessionwatch_incident_open 1"));
        assert_eq!(w.notices(), [NoticeKind::Opened]);

        // No more losses (and, to keep the arithmetic plain, no more traffic): the losses of
        // second 0 leave the 30 s window at 30 s, and the share stays under the threshold for
        // `resolve_after` (30 s) after that. Meanwhile an update every `update_every` (10 s)
        // from the opening.
        sleep(Duration::from_secs(59)).await;
        assert!(w.watch.is_open(), "still open at 59.75 s: {:?}", w.lines());
        assert!(w.pin.is_on());
        sleep(TICK).await;
        let resolved = w.lines_of("incident_resolved");
        assert_eq!(resolved.len(), 1, "{:?}", w.lines());
        assert_eq!(resolved[0]["time"], at(60_000));
        assert_eq!(resolved[0]["incident_id"], id.as_str());
        // The whole story: the window that resolves it is empty, but the cause, the totals and
        // the matrix are the incident's.
        let end = &resolved[0];
        assert_eq!(end["resets"], 0);
        assert_eq!(end["hint"]["code"], "store_not_shared", "{end}");
        assert_eq!(end["ended"], "2100-01-01T00:01:00Z");
        assert_eq!(end["duration_s"], 59);
        assert_eq!(end["incident"]["resets"], 20, "{end}");
        assert_eq!(end["incident"]["requests"], 40);
        assert_eq!(end["incident"]["sessions_affected"], 20);
        assert_eq!(end["incident"]["first_loss"], "2100-01-01T00:00:00Z");
        assert_eq!(end["incident"]["last_loss"], "2100-01-01T00:00:00Z");
        assert_eq!(end["incident"]["peak_share"], 0.5);
        let whole = end["incident"]["matrix"].as_array().unwrap();
        assert!(
            whole
                .iter()
                .any(|c| c["issuer"] == "node-b" && c["server"] == "node-a" && c["resets"] == 10),
            "{end}"
        );
        let summary = end["summary"].as_str().unwrap();
        assert!(
            summary.starts_with(
                "incident from 00:00:00 to 00:01:00 UTC (59s): 20 of 40 requests with a live \
                 session logged out, 20 sessions affected, 50% at the peak;"
            ),
            "{summary}"
        );
        assert!(summary.contains("not shared across the farm"), "{summary}");
        let updates: Vec<Value> = w.lines_of("incident_updated");
        let update_times: Vec<String> = updates
            .iter()
            .map(|l| l["time"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            update_times,
            [at(10_500), at(20_500), at(30_500), at(40_500), at(50_500)]
        );
        assert!(updates.iter().all(|l| l["incident_id"] == id.as_str()));
        assert!(updates.iter().any(|l| l["resets"] == 0));
        assert!(
            updates
                .iter()
                .all(|l| l["hint"]["code"] == "store_not_shared"),
            "{updates:?}"
        );
        let stopped = w.lines_of("pinning_stopped");
        assert_eq!(stopped.len(), 1);
        assert_eq!(stopped[0]["incident_id"], id.as_str());
        assert_eq!(stopped[0]["reason"], "incident_resolved");
        assert!(!w.pin.is_on());
        assert!(!w.watch.is_open());
        assert!(w.watch.snapshot().summary.starts_with("no incident: "));
        assert!(w.metrics.render().contains("sessionwatch_incident_open 0"));
        let mut expected = vec![NoticeKind::Updated; 5];
        expected.push(NoticeKind::Resolved);
        assert_eq!(w.notices(), expected);

        // Quiet from then on.
        sleep(Duration::from_secs(120)).await;
        assert_eq!(w.lines().len(), 1 + 1 + 5 + 1 + 1);
        w.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_status_series_and_recent_resets_follow_the_watch_clock_for_fifteen_minutes() {
        let mut w = Watched::start("series", PinPolicy::Off);
        sleep(TICK / 2).await;
        // Step 0 (the first 10 s): 40 requests, 20 lost; step 1: 10 requests, none lost.
        w.traffic(10, &PER_NODE);
        sleep(Duration::from_secs(10)).await;
        w.traffic(5, &SAME);
        let (points, recent) = w.watch.recent();
        assert_eq!(points.len(), 90);
        let step = |p: &SharePoint| (p.t, p.requests, p.resets, p.share);
        assert_eq!(step(&points[88]), (EPOCH_MS, 40, 20, 0.5));
        assert_eq!(step(&points[89]), (EPOCH_MS + 10_000, 10, 0, 0.0));
        assert!(points[..88].iter().all(|p| p.requests == 0));
        // The last 20 of the 20 losses, newest first, each a cross-backend pair.
        assert_eq!(recent.len(), 20);
        assert!(recent.iter().all(|r| r.issuer != r.server), "{recent:?}");
        assert_eq!(recent[0].session, Fingerprint(39).short().to_string());
        assert_eq!(recent[0].signal, "login_redirect");
        assert_eq!(recent[0].time, at(250));

        // Just short of 15 minutes after step 0 began it is still the oldest point; at 15
        // minutes it has left the series.
        sleep(Duration::from_secs(15 * 60 - 11)).await;
        let (points, _) = w.watch.recent();
        assert_eq!(step(&points[0]), (EPOCH_MS, 40, 20, 0.5));
        sleep(Duration::from_secs(1)).await;
        let (points, recent) = w.watch.recent();
        assert_eq!(step(&points[0]), (EPOCH_MS + 10_000, 10, 0, 0.0));
        assert_eq!(points.iter().map(|p| p.requests).sum::<u64>(), 10);
        assert_eq!(
            recent.len(),
            20,
            "the list keeps the last resets, however old"
        );
        w.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn losses_under_the_threshold_never_open_an_incident() {
        let mut w = Watched::start("healthy", PinPolicy::OnIncident);
        sleep(TICK / 2).await;
        // Two minutes, every second 100 requests and one loss: a share of 1%, under 5%.
        for _ in 0..120 {
            w.traffic(49, &SAME);
            w.request(A, A);
            w.request(A, B);
            sleep(Duration::from_secs(1)).await;
        }
        assert!(w.lines().is_empty(), "{:?}", w.lines());
        assert!(w.notices().is_empty());
        assert!(!w.watch.is_open());
        assert!(!w.pin.is_on());
        assert!(w.metrics.render().contains("sessionwatch_incident_open 0"));
        // Enough losses to open one, were the share high enough.
        let now = w.watch.snapshot();
        assert!(
            now.resets >= IncidentConfig::default().min_resets,
            "{now:?}"
        );
        assert_eq!(now.share, 0.01);
        w.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_noted_by_the_watch_explains_losses_on_the_issuer() {
        let mut w = Watched::start("restart", PinPolicy::Off);
        sleep(TICK / 2).await;
        // Sessions issued by node-a before it restarts, lost on node-a after: the restart is
        // stamped with the watch's clock, the losses with their own time.
        sleep(Duration::from_secs(20)).await;
        w.watch.note_restart(A);
        sleep(Duration::from_secs(1)).await;
        w.traffic(10, &SAME);
        for _ in 0..10 {
            w.observe(A, A, Duration::from_secs(5), true);
        }
        sleep(TICK).await;
        let opened = w.lines_of("incident_opened");
        assert_eq!(opened.len(), 1, "{:?}", w.lines());
        assert_eq!(opened[0]["hint"]["code"], "lost_on_restart");
        assert!(
            opened[0]["hint"]["text"]
                .as_str()
                .unwrap()
                .contains("after node-a restarted"),
            "{}",
            opened[0]["hint"]["text"]
        );
        assert!(
            w.lines_of("pinning_started").is_empty(),
            "the policy is not on_incident"
        );
        assert!(!w.pin.is_on());
        w.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_join_noted_by_the_watch_explains_the_rejections_that_follow() {
        let mut w = Watched::start("joined", PinPolicy::Off);
        sleep(TICK / 2).await;
        // node-b joins at 20.25 s, stamped with the watch's clock; 12 s later it rejects the
        // sessions node-a issued, as a new pod that does not share the store would.
        sleep(Duration::from_secs(20)).await;
        w.watch.note_joined(B);
        sleep(Duration::from_secs(12)).await;
        w.traffic(10, &SAME);
        w.traffic(10, &[(A, B)]);
        sleep(TICK).await;
        let opened = w.lines_of("incident_opened");
        assert_eq!(opened.len(), 1, "{:?}", w.lines());
        // Without the join these losses read as store_not_shared: the rollout wins.
        assert_eq!(opened[0]["hint"]["code"], "new_backends_differ");
        let text = opened[0]["hint"]["text"].as_str().unwrap();
        assert_eq!(
            text,
            "resets began 12 s after node-b joined; sessions issued by the other backends are \
             rejected by it: the new pod does not share the session store or keys"
        );
        assert!(
            opened[0]["summary"].as_str().unwrap().ends_with(text),
            "{}",
            opened[0]["summary"]
        );
        // The sinks are told the same code.
        let notice = w.notices.try_recv().unwrap();
        assert_eq!(notice.kind, NoticeKind::Opened);
        assert_eq!(notice.line.hint.code, "new_backends_differ");
        w.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconfigured_watch_keeps_its_incident_and_steers_the_switch_and_new_sinks() {
        let mut w = Watched::start("reconfigured", PinPolicy::Off);
        sleep(TICK / 2).await;
        w.traffic(10, &PER_NODE);
        sleep(TICK).await;
        assert!(w.watch.is_open());
        assert!(!w.pin.is_on(), "the policy is off");
        assert_eq!(w.notices(), [NoticeKind::Opened]);

        // on_incident now, a new sink, stricter thresholds: the incident stays open, the
        // switch turns on, and the new sink hears of the incident at once.
        let (sink, mut heard) = SinkHandle::capture();
        let stricter = IncidentConfig {
            min_resets: 1_000,
            ..IncidentConfig::default()
        };
        w.watch
            .reconfigure(stricter.clone(), PinPolicy::OnIncident, Some(vec![sink]));
        assert!(w.watch.is_open());
        assert!(w.pin.is_on());
        let told = heard
            .try_recv()
            .expect("the new sink is told of the open incident");
        assert_eq!(told.kind, NoticeKind::Updated);
        assert_eq!(
            told.line.incident_id,
            w.lines_of("incident_opened")[0]["incident_id"]
        );
        sleep(TICK * 2).await;
        assert!(
            w.watch.is_open(),
            "an open incident resolves only after resolve_after"
        );
        assert!(w.lines_of("incident_resolved").is_empty());

        // Off again: the switch turns off; the sinks stay those given last.
        w.watch.reconfigure(stricter, PinPolicy::Off, None);
        assert!(!w.pin.is_on());
        w.stop().await;
    }
}
