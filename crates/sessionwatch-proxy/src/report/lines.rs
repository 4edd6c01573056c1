//! The alert lines: every kind the alert log (and the webhook) can carry, its name, and the body
//! each kind carries. A line's name is written here once, in [`LineKind::as_str`]; whatever
//! writes or matches a kind goes through [`LineKind`].

use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Map, Value};

/// What a line reports; its name is the line's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
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
}

impl LineKind {
    /// The name readers see in the line's `type` field.
    pub const fn as_str(self) -> &'static str {
        match self {
            LineKind::SessionReset => "session_reset",
            LineKind::SessionRescued => "session_rescued",
            LineKind::IncidentOpened => "incident_opened",
            LineKind::IncidentUpdated => "incident_updated",
            LineKind::IncidentResolved => "incident_resolved",
            LineKind::PinningStarted => "pinning_started",
            LineKind::PinningStopped => "pinning_stopped",
        }
    }
}

/// One alert line, before the writer adds `type`, `time`, `event_id` and `seq`.
#[derive(Debug, Clone)]
pub struct AlertLine {
    /// What it reports.
    pub kind: LineKind,
    /// When the event happened.
    pub time: SystemTime,
    /// The event's own fields.
    pub fields: Map<String, Value>,
}

impl AlertLine {
    /// A line of `kind` at `time` whose fields are `body` (a struct serialising to an object).
    pub fn new(kind: LineKind, time: SystemTime, body: &impl Serialize) -> Self {
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
pub struct SessionResetLine<'a> {
    /// What showed the loss.
    pub signal: &'static str,
    /// `cross_backend`, `same_backend` or `unknown`.
    pub attribution: &'static str,
    /// The backend that issued the session.
    pub issuer: &'a str,
    /// The backend that lost it.
    pub server: &'a str,
    /// Short keyed fingerprint of the session.
    pub session: String,
    /// Time since the session was issued.
    pub session_age_ms: u64,
    /// Time since the session was last seen before this request.
    pub idle_ms: u64,
    /// Request method.
    pub method: &'a str,
    /// Request path, without query or path parameters.
    pub path: &'a str,
    /// Response status.
    pub status: u16,
    /// The request id.
    pub request_id: Option<&'a str>,
    /// Whether the proxy replays the request on the issuer.
    pub rescue: bool,
}

/// The `session_rescued` line.
#[derive(Debug, Serialize)]
pub struct SessionRescuedLine<'a> {
    /// Short keyed fingerprint of the session.
    pub session: String,
    /// The backend that lost the session.
    pub server: &'a str,
    /// The issuer the request was replayed on.
    pub issuer: &'a str,
    /// Status of the answer the client got.
    pub status: u16,
    /// Whether that answer still showed the session lost.
    pub still_lost: bool,
    /// Whether the issuer answered the replay (false: it could not be reached, and the client
    /// got the original answer).
    pub reached_issuer: bool,
    /// Request method.
    pub method: &'a str,
    /// Request path.
    pub path: &'a str,
    /// The request id, to join with the `session_reset` line.
    pub request_id: Option<&'a str>,
}

/// One cell of the issuer x server matrix, by name.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MatrixCell {
    /// The backend that issued the sessions.
    pub issuer: String,
    /// The backend that served the requests.
    pub server: String,
    /// Requests with a known session in the window.
    pub requests: u64,
    /// Of those, the ones where the session was lost.
    pub resets: u64,
}

/// The hint, for machines and for people.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HintLine {
    /// Stable identifier: `store_not_shared`, `backend_differs`, `lost_on_restart`,
    /// `timeout_too_short` or `unclear`.
    pub code: &'static str,
    /// The sentence.
    pub text: String,
}

/// The body of `incident_opened`, `incident_updated` and `incident_resolved` lines.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IncidentLine {
    /// Identifies the incident across its lines.
    pub incident_id: String,
    /// When it opened (RFC 3339 UTC).
    pub started: String,
    /// One sentence for the on-call engineer.
    pub summary: String,
    /// Share of requests with a live session that were logged out, in the window.
    pub share: f64,
    /// Requests with a known session in the window.
    pub requests: u64,
    /// Resets in the window.
    pub resets: u64,
    /// Resets since the incident opened.
    pub total_resets: u64,
    /// Per-reset lines not written since it opened (rate limit).
    pub suppressed: u64,
    /// The issuer x server matrix.
    pub matrix: Vec<MatrixCell>,
    /// The likely cause.
    pub hint: HintLine,
    /// The pair with most of the losses, if one has most.
    pub dominant_issuer: Option<String>,
    /// See `dominant_issuer`.
    pub dominant_server: Option<String>,
    /// A few fingerprints of lost sessions.
    pub samples: Vec<String>,
}

/// The body of `pinning_started` and `pinning_stopped` lines.
#[derive(Debug, Serialize)]
pub struct PinningLine<'a> {
    /// The pin policy that switched.
    pub policy: &'static str,
    /// The kind of the incident line that made it switch.
    pub reason: &'static str,
    /// The incident it switched for.
    pub incident_id: &'a str,
}
