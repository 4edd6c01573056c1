//! What the proxy does with each observation: metrics, alert lines, and the incident watch.

use std::sync::Arc;
use std::time::SystemTime;

use sessionwatch_core::{AffinityRejection, BackendId, Outcome, loggable_path};
use sessionwatch_tower::{AffinityUse, Observed, Rescued, SessionEvents};

use crate::backends::Backends;
use crate::metrics::Metrics;
use crate::report::alert_log::AlertLog;
use crate::report::incidents::IncidentWatch;
use crate::report::lines::{AlertLine, LineKind, SessionRescuedLine, SessionResetLine};

/// Turns observations into metrics, alert lines and incident counts.
pub(crate) struct Reporter {
    backends: Arc<Backends>,
    metrics: Arc<Metrics>,
    log: AlertLog,
    incidents: Arc<IncidentWatch>,
    extra: Option<Arc<dyn SessionEvents>>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter").finish_non_exhaustive()
    }
}

impl Reporter {
    /// A reporter writing to `log`; `extra` also receives every observation (the demo uses it).
    pub(crate) fn new(
        backends: Arc<Backends>,
        metrics: Arc<Metrics>,
        log: AlertLog,
        incidents: Arc<IncidentWatch>,
        extra: Option<Arc<dyn SessionEvents>>,
    ) -> Self {
        Self {
            backends,
            metrics,
            log,
            incidents,
            extra,
        }
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl SessionEvents for Reporter {
    fn observed(&self, e: &Observed<'_>) {
        if let Some(extra) = &self.extra {
            extra.observed(e);
        }
        if matches!(e.outcome, Outcome::Untracked) {
            return;
        }
        self.metrics.session_requests.increment(1);
        let Outcome::Reset {
            signal,
            attribution,
        } = e.outcome
        else {
            if e.outcome.counts_in_share() {
                self.incidents.observe(e, false);
            }
            return;
        };
        self.metrics
            .reset(signal, attribution, e.record.issuer.0, e.server.0);
        if let Some(b) = self.backends.get(e.server) {
            b.stats.lost_here();
        }
        if let Some(b) = self.backends.get(e.record.issuer) {
            b.stats.issued_was_lost();
        }
        if !self.incidents.observe(e, true) {
            self.metrics.resets_suppressed.increment(1);
            return;
        }
        let line = SessionResetLine {
            signal: signal.as_str(),
            attribution: attribution.as_str(),
            issuer: self.backends.name(e.record.issuer),
            server: self.backends.name(e.server),
            session: e.fingerprint.short().to_string(),
            session_age_ms: millis(e.at.since(e.record.issued_at)),
            idle_ms: millis(e.at.since(e.record.last_seen)),
            method: e.method.as_str(),
            path: loggable_path(e.uri.path()),
            status: e.status.as_u16(),
            request_id: e.request_id.and_then(|v| v.to_str().ok()),
            rescue: e.rescuing,
        };
        self.log.emit(AlertLine::new(
            LineKind::SessionReset,
            SystemTime::from(e.at),
            &line,
        ));
    }

    fn affinity(&self, event: AffinityUse) {
        if let Some(extra) = &self.extra {
            extra.affinity(event);
        }
        let counter = match event {
            AffinityUse::Adopted => &self.metrics.affinity_adopted,
            AffinityUse::Unresolved => &self.metrics.affinity_unresolved,
            AffinityUse::Rejected(AffinityRejection::Malformed) => {
                &self.metrics.affinity_rejected[0]
            }
            AffinityUse::Rejected(AffinityRejection::Forged) => &self.metrics.affinity_rejected[1],
            AffinityUse::Rejected(AffinityRejection::Stale) => &self.metrics.affinity_rejected[2],
        };
        counter.increment(1);
    }

    fn issued(&self, server: BackendId, sessions: u32) {
        if let Some(extra) = &self.extra {
            extra.issued(server, sessions);
        }
        if let Some(b) = self.backends.get(server) {
            b.stats.issued(u64::from(sessions));
        }
    }

    fn rescued(&self, e: &Rescued<'_>) {
        if let Some(extra) = &self.extra {
            extra.rescued(e);
        }
        match (e.reached_issuer, e.still_lost) {
            (false, _) => self.metrics.rescues_failed.increment(1),
            (true, true) => self.metrics.rescues_still_lost.increment(1),
            (true, false) => self.metrics.rescues_ok.increment(1),
        }
        if !self.incidents.allow_line(e.at) {
            self.metrics.resets_suppressed.increment(1);
            return;
        }
        let line = SessionRescuedLine {
            session: e.fingerprint.short().to_string(),
            server: self.backends.name(e.from),
            issuer: self.backends.name(e.to),
            status: e.status.as_u16(),
            still_lost: e.still_lost,
            reached_issuer: e.reached_issuer,
            method: e.method.as_str(),
            path: loggable_path(e.uri.path()),
            request_id: e.request_id.and_then(|v| v.to_str().ok()),
        };
        self.log.emit(AlertLine::new(
            LineKind::SessionRescued,
            SystemTime::from(e.at),
            &line,
        ));
    }
}
