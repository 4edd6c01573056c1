//! Alert sinks: Alertmanager's v2 API and a generic JSON webhook.
//!
//! Each sink is a task fed through a channel, so a slow or dead receiver never holds up a request
//! or the alert log. Alertmanager forgets a firing alert unless it is re-sent, so the open
//! incident is re-posted every `resend_every` with an `endsAt` a few periods ahead; the resolve is
//! a post with `endsAt` = now. Failures are logged and counted, and retried on the next period.
//!
//! The Alertmanager alert is the farm's, shared by every replica in front of it, so a replica
//! whose incident closes resolves it only when no other replica still sees one. It asks its
//! [`FleetIncidents`] view: no other open, it resolves; another open, it stops re-sending and
//! leaves the alert to the replicas that still see the incident (their re-sends keep it firing,
//! and the last of them resolves it); no shared view, it resolves unless `[alertmanager] fleet`
//! says other replicas may still see it, in which case it lets the alert expire by its `endsAt`.
//!
//! What each sink sends is in its own file ([`alertmanager`], [`webhook`]), the fleet view in
//! [`fleet_view`], how a post travels (plain or TLS) in [`transport`]; this one holds the
//! delivery loop they share.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Uri;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{AlertmanagerConfig, SinkConfig};
use crate::metrics::Metrics;
use crate::report::lines::{IncidentLine, LineKind};

mod alertmanager;
pub(crate) mod fleet_view;
mod transport;
mod webhook;

use transport::Transport;

pub use fleet_view::{FleetIncidents, InProcessFleet, NoSharedView, OthersOpen};

/// Which transition a notice reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoticeKind {
    /// The incident opened.
    Opened,
    /// Periodic update while open.
    Updated,
    /// It resolved.
    Resolved,
}

impl NoticeKind {
    /// The kind of the incident line that reports this transition.
    pub(crate) fn line_kind(self) -> LineKind {
        match self {
            NoticeKind::Opened => LineKind::IncidentOpened,
            NoticeKind::Updated => LineKind::IncidentUpdated,
            NoticeKind::Resolved => LineKind::IncidentResolved,
        }
    }
}

/// What a sink is told.
#[derive(Debug, Clone)]
pub(crate) struct IncidentNotice {
    /// The transition.
    pub(crate) kind: NoticeKind,
    /// The incident, as in the alert log.
    pub(crate) line: IncidentLine,
    /// `(issuer, server)` of the pair that dominated when the incident opened, if one did.
    pub(crate) labels: Option<(String, String)>,
}

/// The kinds of sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SinkKind {
    /// Alertmanager v2 (`POST {url}/api/v2/alerts`).
    Alertmanager,
    /// `POST {url}` with the incident line as JSON.
    Webhook,
}

impl SinkKind {
    fn name(self) -> &'static str {
        match self {
            SinkKind::Alertmanager => "alertmanager",
            SinkKind::Webhook => "webhook",
        }
    }
}

/// Sends notices to a sink task.
#[derive(Debug, Clone)]
pub(crate) struct SinkHandle {
    tx: mpsc::UnboundedSender<Arc<IncidentNotice>>,
}

impl SinkHandle {
    /// Queue a notice; never blocks.
    pub(crate) fn send(&self, notice: Arc<IncidentNotice>) {
        let _ = self.tx.send(notice);
    }

    /// A handle whose notices the test reads itself, in place of a sink task.
    #[cfg(test)]
    pub(crate) fn capture() -> (Self, mpsc::UnboundedReceiver<Arc<IncidentNotice>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }
}

/// A sink to start, with what it needs.
pub(crate) enum Sink {
    /// Alertmanager, and the view it asks before it resolves the farm's alert.
    Alertmanager(AlertmanagerConfig, Arc<dyn FleetIncidents>),
    /// The JSON webhook.
    Webhook(SinkConfig),
}

/// What the Alertmanager sink knows beyond its delivery settings.
struct FarmAlert {
    farm: String,
    fleet: bool,
    view: Arc<dyn FleetIncidents>,
}

impl FarmAlert {
    /// Whether this replica's resolve may end the farm's alert now (see the module docs).
    async fn may_resolve(&self, timeout: Duration) -> bool {
        let others_open = tokio::time::timeout(timeout, self.view.others_open())
            .await
            .ok()
            .flatten();
        match others_open {
            Some(open) => !open,
            None => !self.fleet,
        }
    }
}

/// Start a sink task.
pub(crate) fn spawn(
    sink: Sink,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> (SinkHandle, JoinHandle<()>) {
    let (kind, config, farm) = match sink {
        Sink::Alertmanager(am, view) => (
            SinkKind::Alertmanager,
            am.sink,
            Some(FarmAlert {
                farm: am.farm,
                fleet: am.fleet,
                view,
            }),
        ),
        Sink::Webhook(config) => (SinkKind::Webhook, config, None),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let transport = Transport::new(config.tls.as_ref());
    let task = tokio::spawn(run(kind, config, farm, transport, metrics, rx, shutdown));
    (SinkHandle { tx }, task)
}

fn target(kind: SinkKind, base: &Uri) -> Uri {
    match kind {
        SinkKind::Webhook => base.clone(),
        SinkKind::Alertmanager => alertmanager::alerts_uri(base),
    }
}

/// One post, connection and TLS handshake included, within `timeout`.
async fn post(
    transport: &Transport,
    uri: &Uri,
    body: &Value,
    timeout: Duration,
) -> Result<(), String> {
    let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    match tokio::time::timeout(timeout, transport.post(uri, Bytes::from(bytes))).await {
        Ok(Ok(status)) if status.is_success() => Ok(()),
        Ok(Ok(status)) => Err(format!("answered {status}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// Undelivered webhook notices kept for retry; past this the oldest are dropped (and logged).
const WEBHOOK_BACKLOG: usize = 64;

/// The post for `n`: Alertmanager's when the sink has a farm alert, else the webhook's.
fn body_for(farm: Option<&FarmAlert>, n: &IncidentNotice, resend_every: Duration) -> Value {
    match farm {
        Some(f) => alertmanager::body(n, &f.farm, SystemTime::now(), resend_every),
        None => webhook::body(n),
    }
}

async fn run(
    kind: SinkKind,
    config: SinkConfig,
    farm: Option<FarmAlert>,
    transport: Transport,
    metrics: Arc<Metrics>,
    mut rx: mpsc::UnboundedReceiver<Arc<IncidentNotice>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let uri = target(kind, &config.url);
    // Alertmanager: the latest notice of the open incident, re-sent every period until a
    // resolve is delivered. Webhook: every notice not yet delivered, in order, so a failed
    // resolve is not overtaken and lost by a later notice.
    let mut queue: std::collections::VecDeque<Arc<IncidentNotice>> =
        std::collections::VecDeque::new();
    let mut ticker = tokio::time::interval(config.resend_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    // Whether this replica has told the fleet view its incident is open, so that a replica
    // that stops while it sees one counts itself out.
    let mut open = false;
    loop {
        // A new notice is sent at once; a tick re-sends (Alertmanager) or retries (webhook).
        // Shutdown is looked at first: after a post that took its whole timeout the ticker is
        // ready too, and a fair pick would start another post (and another timeout) half the
        // time, leaving the shutdown unbounded.
        tokio::select! {
            biased;
            _ = crate::shutdown::stopped(&mut shutdown) => break,
            n = rx.recv() => match n {
                Some(n) => {
                    if let Some(farm) = &farm {
                        open = n.kind != NoticeKind::Resolved;
                        farm.view.own_incident(open);
                    }
                    if kind == SinkKind::Alertmanager {
                        queue.clear();
                    } else if queue.len() == WEBHOOK_BACKLOG {
                        queue.pop_front();
                        tracing::warn!(sink = kind.name(), "webhook backlog full; dropped the oldest undelivered notice");
                    }
                    queue.push_back(n);
                }
                None => break,
            },
            _ = ticker.tick() => {}
        }
        while let Some(notice) = queue.front().cloned() {
            if let (Some(farm), NoticeKind::Resolved) = (&farm, notice.kind) {
                if !farm.may_resolve(config.timeout).await {
                    tracing::info!(
                        sink = kind.name(),
                        incident = notice.line.incident_id,
                        "incident resolved here; the farm's alert is left to the replicas that may still see it"
                    );
                    // Asked again at every tick, not re-sent: replicas that resolve within one
                    // exchange of each other each see the other still open, and the last to
                    // hear otherwise resolves the alert instead of leaving it to expire.
                    break;
                }
            }
            let body = body_for(farm.as_ref(), &notice, config.resend_every);
            if let Err(e) = post(&transport, &uri, &body, config.timeout).await {
                metrics.sink_failure(kind.name());
                tracing::warn!(sink = kind.name(), error = %e, "alert sink delivery failed; will retry");
                break;
            }
            match kind {
                // Alertmanager keeps hearing about a firing incident until it resolves.
                SinkKind::Alertmanager => {
                    if notice.kind == NoticeKind::Resolved {
                        queue.clear();
                    }
                    break;
                }
                SinkKind::Webhook => {
                    queue.pop_front();
                }
            }
        }
    }
    if let (Some(farm), true) = (&farm, open) {
        farm.view.own_incident(false);
    }
}

/// A notice as the incident watch would send it, for the payload tests.
#[cfg(test)]
fn notice_of(kind: NoticeKind) -> IncidentNotice {
    use crate::report::lines::HintLine;
    IncidentNotice {
        kind,
        line: IncidentLine {
            incident_id: "0191".into(),
            started: "2026-01-01T10:00:00Z".into(),
            summary: "incident since 10:00:00 UTC".into(),
            share: 0.4567,
            requests: 100,
            resets: 45,
            total_resets: 45,
            suppressed: 0,
            matrix: Vec::new(),
            hint: HintLine {
                code: "backend_differs",
                text: "the hint as it reads now".into(),
            },
            dominant_issuer: Some("node-a".into()),
            dominant_server: Some("node-b".into()),
            samples: Vec::new(),
            ended: None,
            duration_s: None,
            incident: None,
        },
        labels: Some(("node-a".into(), "node-b".into())),
    }
}

#[cfg(test)]
mod tests;
