//! The incident watch: feeds the core tracker from live observations, writes incident and
//! pinning lines, drives the `on_incident` pin switch and hands incidents to the sinks.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sessionwatch_core::{
    BackendId, IncidentConfig, IncidentEvent, IncidentSnapshot, IncidentTracker, PinPolicy,
    Timestamp,
};
use sessionwatch_tower::{Observed, PinSwitch};
use tokio::sync::watch;

use crate::backends::Backends;
use crate::metrics::Metrics;
use crate::report::alert_log::AlertLog;
use crate::report::lines::{AlertLine, HintLine, IncidentLine, LineKind, MatrixCell, PinningLine};
use crate::report::sinks::{IncidentNotice, NoticeKind, SinkHandle};

struct State {
    tracker: IncidentTracker,
    incident_id: Option<String>,
    labels: Option<(String, String)>,
    hint_code: &'static str,
}

/// See the module docs.
pub struct IncidentWatch {
    state: Mutex<State>,
    backends: Arc<Backends>,
    log: AlertLog,
    metrics: Arc<Metrics>,
    policy: PinPolicy,
    pin_switch: PinSwitch,
    sinks: Vec<SinkHandle>,
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
    /// A watch over `backends`.
    pub fn new(
        config: IncidentConfig,
        backends: Arc<Backends>,
        log: AlertLog,
        metrics: Arc<Metrics>,
        policy: PinPolicy,
        pin_switch: PinSwitch,
        sinks: Vec<SinkHandle>,
    ) -> Self {
        let tracker = IncidentTracker::new(config, backends.all().len());
        Self {
            state: Mutex::new(State {
                tracker,
                incident_id: None,
                labels: None,
                hint_code: "unclear",
            }),
            backends,
            log,
            metrics,
            policy,
            pin_switch,
            sinks,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave counters inconsistent enough to matter.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Count one observation; for a reset, whether its alert line may be written.
    pub fn observe(&self, e: &Observed<'_>, reset: bool) -> bool {
        let mut st = self.lock();
        st.tracker.record_request(e.record.issuer, e.server, e.at);
        if !reset {
            return true;
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

    /// Whether one more per-event alert line may be written now (the incident rate limit).
    pub fn allow_line(&self) -> bool {
        self.lock().tracker.allow_line(Timestamp::now())
    }

    /// A backend came back up.
    pub fn note_restart(&self, backend: BackendId) {
        self.lock().tracker.note_restart(backend, Timestamp::now());
    }

    /// Whether an incident is open.
    pub fn is_open(&self) -> bool {
        self.lock().tracker.is_open()
    }

    /// The current picture (for the status page and tests).
    pub fn snapshot(&self) -> IncidentLine {
        let st = self.lock();
        let snap = st.tracker.snapshot(Timestamp::now());
        self.line(&snap, st.incident_id.clone().unwrap_or_default())
    }

    fn name(&self, b: BackendId) -> String {
        self.backends.name(b).to_owned()
    }

    fn line(&self, s: &IncidentSnapshot, id: String) -> IncidentLine {
        let hint_text = s.hint.text(&|b| self.name(b));
        let started = rfc3339(s.started);
        let summary = format!(
            "incident since {} UTC: {:.0}% of requests with a live session are logged out; {}",
            started.get(11..19).unwrap_or(&started),
            s.share * 100.0,
            hint_text
        );
        IncidentLine {
            incident_id: id,
            started,
            summary,
            share: (s.share * 10_000.0).round() / 10_000.0,
            requests: s.requests,
            resets: s.resets,
            total_resets: s.total_resets,
            suppressed: s.suppressed,
            matrix: s
                .matrix
                .iter()
                .map(|p| MatrixCell {
                    issuer: self.name(p.issuer),
                    server: self.name(p.server),
                    requests: p.requests,
                    resets: p.resets,
                })
                .collect(),
            hint: HintLine {
                code: s.hint.code(),
                text: hint_text,
            },
            dominant_issuer: s.dominant.map(|(i, _)| self.name(i)),
            dominant_server: s.dominant.map(|(_, sv)| self.name(sv)),
            samples: s.samples.iter().map(|f| f.to_string()).collect(),
        }
    }

    /// Advance the tracker and act on what changed.
    pub fn tick(&self) {
        let now = Timestamp::now();
        let mut st = self.lock();
        let Some(event) = st.tracker.evaluate(now) else {
            return;
        };
        let (kind, snap) = match &event {
            IncidentEvent::Opened(s) => {
                st.incident_id = Some(uuid::Uuid::now_v7().simple().to_string());
                st.labels = s.dominant.map(|(i, sv)| (self.name(i), self.name(sv)));
                st.hint_code = s.hint.code();
                (NoticeKind::Opened, s)
            }
            IncidentEvent::Updated(s) => (NoticeKind::Updated, s),
            IncidentEvent::Resolved(s) => (NoticeKind::Resolved, s),
        };
        let id = st.incident_id.clone().unwrap_or_default();
        let labels = st.labels.clone();
        let hint_code = st.hint_code;
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
                if self.policy == PinPolicy::OnIncident {
                    self.pin_switch.set(true);
                    self.log.emit(AlertLine::new(
                        LineKind::PinningStarted,
                        at,
                        &PinningLine {
                            policy: self.policy.as_str(),
                            reason: LineKind::IncidentOpened.as_str(),
                            incident_id: &id,
                        },
                    ));
                }
            }
            NoticeKind::Resolved => {
                tracing::info!(incident = id, "session-loss incident resolved");
                self.metrics.incident_open.set(0.0);
                if self.policy == PinPolicy::OnIncident && self.pin_switch.is_on() {
                    self.pin_switch.set(false);
                    self.log.emit(AlertLine::new(
                        LineKind::PinningStopped,
                        at,
                        &PinningLine {
                            policy: self.policy.as_str(),
                            reason: LineKind::IncidentResolved.as_str(),
                            incident_id: &id,
                        },
                    ));
                }
            }
            NoticeKind::Updated => {}
        }
        let notice = Arc::new(IncidentNotice {
            kind,
            line,
            labels,
            hint_code,
            at,
        });
        for sink in &self.sinks {
            sink.send(notice.clone());
        }
    }

    /// Tick every `every` until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, every: Duration, mut shutdown: watch::Receiver<bool>) {
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
