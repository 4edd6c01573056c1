//! The alert lines: every kind the alert log (and the webhook) can carry, its name, and the body
//! each kind carries. A line's name is written here once, in [`LineKind::as_str`]; whatever
//! writes or matches a kind goes through [`LineKind`].

use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Map, Value};

/// What a line reports; its name is the line's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineKind {
    /// A session that should have been alive was lost ([`SessionResetLine`]).
    SessionReset,
    /// A lost request was replayed on the issuer ([`SessionRescuedLine`]).
    SessionRescued,
    /// An incident opened ([`IncidentLine`]).
    IncidentOpened,
    /// An open incident, as it stands now ([`IncidentLine`]).
    IncidentUpdated,
    /// An incident resolved ([`IncidentLine`]).
    IncidentResolved,
    /// `on_incident` pinning started ([`PinningLine`]).
    PinningStarted,
    /// `on_incident` pinning stopped ([`PinningLine`]).
    PinningStopped,
    /// The shared session store stopped answering ([`StoreLine`]).
    StoreDegraded,
    /// The shared session store answers again ([`StoreLine`]).
    StoreRecovered,
    /// A discovered backend joined the farm ([`BackendLine`]).
    BackendJoined,
    /// A discovered backend left the farm ([`BackendLine`]).
    BackendLeft,
}

impl LineKind {
    /// The name readers see in the line's `type` field.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            LineKind::SessionReset => "session_reset",
            LineKind::SessionRescued => "session_rescued",
            LineKind::IncidentOpened => "incident_opened",
            LineKind::IncidentUpdated => "incident_updated",
            LineKind::IncidentResolved => "incident_resolved",
            LineKind::PinningStarted => "pinning_started",
            LineKind::PinningStopped => "pinning_stopped",
            LineKind::StoreDegraded => "store_degraded",
            LineKind::StoreRecovered => "store_recovered",
            LineKind::BackendJoined => "backend_joined",
            LineKind::BackendLeft => "backend_left",
        }
    }
}

/// One alert line, before the writer adds `type`, `time`, `event_id` and `seq`.
#[derive(Debug, Clone)]
pub(crate) struct AlertLine {
    /// What it reports.
    pub(crate) kind: LineKind,
    /// When the event happened.
    pub(crate) time: SystemTime,
    /// The event's own fields.
    pub(crate) fields: Map<String, Value>,
}

impl AlertLine {
    /// A line of `kind` at `time` whose fields are `body` (a struct serialising to an object).
    pub(crate) fn new(kind: LineKind, time: SystemTime, body: &impl Serialize) -> Self {
        let fields = match serde_json::to_value(body) {
            Ok(Value::Object(map)) => map,
            // Bodies are plain structs of strings and numbers; anything else is a bug, and an
            // empty line of the right kind is better than none.
            _ => Map::new(),
        };
        Self { kind, time, fields }
    }
}

/// The `session_reset` line.
#[derive(Debug, Serialize)]
pub(crate) struct SessionResetLine<'a> {
    /// What showed the loss.
    pub(crate) signal: &'static str,
    /// `cross_backend`, `same_backend` or `unknown`.
    pub(crate) attribution: &'static str,
    /// The backend that issued the session.
    pub(crate) issuer: &'a str,
    /// The backend that lost it.
    pub(crate) server: &'a str,
    /// Short keyed fingerprint of the session.
    pub(crate) session: String,
    /// Time since the session was issued.
    pub(crate) session_age_ms: u64,
    /// Time since the session was last seen before this request.
    pub(crate) idle_ms: u64,
    /// Request method.
    pub(crate) method: &'a str,
    /// Request path, without query or path parameters.
    pub(crate) path: &'a str,
    /// Response status.
    pub(crate) status: u16,
    /// The request id.
    pub(crate) request_id: Option<&'a str>,
    /// Whether the proxy replays the request on the issuer.
    pub(crate) rescue: bool,
}

/// The `session_rescued` line.
#[derive(Debug, Serialize)]
pub(crate) struct SessionRescuedLine<'a> {
    /// Short keyed fingerprint of the session.
    pub(crate) session: String,
    /// The backend that lost the session.
    pub(crate) server: &'a str,
    /// The issuer the request was replayed on.
    pub(crate) issuer: &'a str,
    /// Status of the answer the client got.
    pub(crate) status: u16,
    /// Whether that answer still showed the session lost.
    pub(crate) still_lost: bool,
    /// Whether the issuer answered the replay (false: it could not be reached, and the client
    /// got the original answer).
    pub(crate) reached_issuer: bool,
    /// Request method.
    pub(crate) method: &'a str,
    /// Request path.
    pub(crate) path: &'a str,
    /// The request id, to join with the `session_reset` line.
    pub(crate) request_id: Option<&'a str>,
}

/// One cell of the issuer x server matrix, by name.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct MatrixCell {
    /// The backend that issued the sessions.
    pub(crate) issuer: String,
    /// The backend that served the requests.
    pub(crate) server: String,
    /// Requests with a known session in the window.
    pub(crate) requests: u64,
    /// Of those, the ones where the session was lost.
    pub(crate) resets: u64,
}

/// The hint, for machines and for people.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct HintLine {
    /// Stable identifier: `store_not_shared`, `backend_differs`, `lost_on_restart`,
    /// `new_backends_differ`, `timeout_too_short` or `unclear`.
    pub(crate) code: &'static str,
    /// The sentence.
    pub(crate) text: String,
}

/// The body of `incident_opened`, `incident_updated` and `incident_resolved` lines.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct IncidentLine {
    /// Identifies the incident across its lines.
    pub(crate) incident_id: String,
    /// When it opened (RFC 3339 UTC).
    pub(crate) started: String,
    /// One sentence for the on-call engineer.
    pub(crate) summary: String,
    /// Share of requests with a live session that were logged out, in the window.
    pub(crate) share: f64,
    /// Requests with a known session in the window.
    pub(crate) requests: u64,
    /// Resets in the window.
    pub(crate) resets: u64,
    /// Resets since the incident opened.
    pub(crate) total_resets: u64,
    /// Per-reset lines not written since it opened (rate limit).
    pub(crate) suppressed: u64,
    /// The issuer x server matrix.
    pub(crate) matrix: Vec<MatrixCell>,
    /// The likely cause.
    pub(crate) hint: HintLine,
    /// The pair with most of the losses, if one has most.
    pub(crate) dominant_issuer: Option<String>,
    /// See `dominant_issuer`.
    pub(crate) dominant_server: Option<String>,
    /// A few fingerprints of lost sessions.
    pub(crate) samples: Vec<String>,
    /// On `incident_resolved`: when it ended (RFC 3339 UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ended: Option<String>,
    /// On `incident_resolved`: from `started` to `ended`, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) duration_s: Option<u64>,
    /// What the incident saw in all, from the window that opened it (absent when none is open).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) incident: Option<IncidentTotals>,
}

/// An incident's whole life on its lines: the story its postmortem tells.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct IncidentTotals {
    /// Requests with a known session.
    pub(crate) requests: u64,
    /// Of those, the ones where the session was lost.
    pub(crate) resets: u64,
    /// Distinct sessions lost.
    pub(crate) sessions_affected: u64,
    /// Whether `sessions_affected` is a floor (more were lost than are counted one by one).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) sessions_affected_at_least: bool,
    /// The first loss (RFC 3339 UTC).
    pub(crate) first_loss: Option<String>,
    /// The last loss so far: on the resolved line, when the losses stopped.
    pub(crate) last_loss: Option<String>,
    /// The highest share the window reached.
    pub(crate) peak_share: f64,
    /// When (RFC 3339 UTC).
    pub(crate) peak_at: String,
    /// The issuer x server matrix over the whole incident.
    pub(crate) matrix: Vec<MatrixCell>,
}

/// The body of `pinning_started` and `pinning_stopped` lines.
#[derive(Debug, Serialize)]
pub(crate) struct PinningLine<'a> {
    /// The pin policy that switched.
    pub(crate) policy: &'static str,
    /// The kind of the incident line that made it switch.
    pub(crate) reason: &'static str,
    /// The incident it switched for.
    pub(crate) incident_id: &'a str,
}

/// The `store_degraded` and `store_recovered` lines.
#[derive(Debug, Serialize)]
pub(crate) struct StoreLine {
    /// The store (`redis`).
    pub(crate) store: &'static str,
    /// Why it is degraded (`timeout`, `error`, `unreachable`); on recovery `answering`, or
    /// `answering_empty` when Redis lost its data.
    pub(crate) reason: &'static str,
    /// The store's own error, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// On recovery: how long the store was degraded, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) down_ms: Option<u64>,
    /// On recovery: the near cache's sessions written back (those the store did not have).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rewritten: Option<u64>,
}

/// The body of `backend_joined` and `backend_left` lines.
#[derive(Debug, Serialize)]
pub(crate) struct BackendLine<'a> {
    /// The backend (a discovered backend's name is its address).
    pub(crate) backend: &'a str,
    /// The farm's members after the change.
    pub(crate) members: usize,
}
