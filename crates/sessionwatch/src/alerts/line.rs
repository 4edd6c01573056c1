//! One alert-log line as the `alerts` command reads it: the raw text (passed through unchanged
//! by `--json`), the parsed object, and its kind. A line that is not a JSON object, or whose
//! `type` this build does not know, is kept as a [`BadLine`] so that the reader can show or count
//! it instead of stopping.

use std::time::SystemTime;

use serde_json::{Map, Value};

/// Lines longer than this are not alert lines (the proxy's longest, an incident line with a
/// full matrix, is a few KiB); the reader drops them rather than buffering without bound.
pub(crate) const MAX_LINE_BYTES: usize = 1 << 20;

/// The kinds of line the proxy writes (README, "The alert log").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    SessionReset,
    SessionRescued,
    IncidentOpened,
    IncidentUpdated,
    IncidentResolved,
    PinningStarted,
    PinningStopped,
    BackendJoined,
    BackendLeft,
    StoreDegraded,
    StoreRecovered,
}

impl Kind {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "session_reset" => Kind::SessionReset,
            "session_rescued" => Kind::SessionRescued,
            "incident_opened" => Kind::IncidentOpened,
            "incident_updated" => Kind::IncidentUpdated,
            "incident_resolved" => Kind::IncidentResolved,
            "pinning_started" => Kind::PinningStarted,
            "pinning_stopped" => Kind::PinningStopped,
            "backend_joined" => Kind::BackendJoined,
            "backend_left" => Kind::BackendLeft,
            "store_degraded" => Kind::StoreDegraded,
            "store_recovered" => Kind::StoreRecovered,
            _ => return None,
        })
    }

    pub(crate) fn is_incident(self) -> bool {
        matches!(
            self,
            Kind::IncidentOpened | Kind::IncidentUpdated | Kind::IncidentResolved
        )
    }
}

/// A parsed alert line.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) kind: Kind,
    /// `time`, when present and RFC 3339.
    pub(crate) time: Option<SystemTime>,
    pub(crate) fields: Map<String, Value>,
}

/// Why a line is not an [`Event`]. Carries no text of the line: a line that is not ours could
/// hold anything, a raw session id included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BadLine {
    /// Not UTF-8, not JSON, or JSON but not an object.
    NotJson { bytes: usize },
    /// An object without a string `type`.
    NoType,
    /// A `type` this build does not know (kept short and printable).
    UnknownType(String),
    /// Longer than [`MAX_LINE_BYTES`].
    TooLong,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadLine::NotJson { bytes } => write!(f, "not a JSON object ({bytes} bytes)"),
            BadLine::NoType => f.write_str("a JSON object without a \"type\""),
            BadLine::UnknownType(t) => write!(f, "unknown type {t:?}"),
            BadLine::TooLong => write!(f, "longer than {MAX_LINE_BYTES} bytes"),
        }
    }
}

/// A line read from the log.
#[derive(Debug)]
pub(crate) enum Line {
    /// `raw` is the line without its newline.
    Event {
        raw: Vec<u8>,
        event: Event,
    },
    /// A JSON object of a kind this build does not know; `--json` still passes it on, since a
    /// newer proxy may write kinds this reader has not heard of.
    Unknown {
        raw: Vec<u8>,
        why: BadLine,
    },
    Bad(BadLine),
}

/// Parse one line (without its newline).
pub(crate) fn parse(raw: Vec<u8>) -> Line {
    let object = match serde_json::from_slice::<Value>(&raw) {
        Ok(Value::Object(map)) => map,
        _ => return Line::Bad(BadLine::NotJson { bytes: raw.len() }),
    };
    let kind = match object.get("type").and_then(Value::as_str) {
        Some(name) => match Kind::parse(name) {
            Some(kind) => kind,
            None => {
                let shown: String = name.chars().filter(|c| !c.is_control()).take(40).collect();
                return Line::Unknown {
                    raw,
                    why: BadLine::UnknownType(shown),
                };
            }
        },
        None => {
            return Line::Unknown {
                raw,
                why: BadLine::NoType,
            };
        }
    };
    let time = object
        .get("time")
        .and_then(Value::as_str)
        .and_then(parse_time);
    Line::Event {
        raw,
        event: Event {
            kind,
            time,
            fields: object,
        },
    }
}

/// An RFC 3339 UTC time as the proxy writes them (`2025-01-14T09:21:07.412Z`).
pub(crate) fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(text).ok()
}

impl Event {
    /// A string field, or `""`.
    pub(crate) fn str(&self, name: &str) -> &str {
        self.fields.get(name).and_then(Value::as_str).unwrap_or("")
    }

    /// A whole-number field, or 0.
    pub(crate) fn u64(&self, name: &str) -> u64 {
        self.fields.get(name).and_then(Value::as_u64).unwrap_or(0)
    }

    /// A number field, or 0.
    pub(crate) fn f64(&self, name: &str) -> f64 {
        self.fields.get(name).and_then(Value::as_f64).unwrap_or(0.0)
    }

    /// An object field.
    pub(crate) fn object(&self, name: &str) -> Option<&Map<String, Value>> {
        self.fields.get(name).and_then(Value::as_object)
    }

    /// `hint.code` of an incident line.
    pub(crate) fn hint_code(&self) -> &str {
        self.object("hint")
            .and_then(|h| h.get("code"))
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// `hint.text` of an incident line.
    pub(crate) fn hint_text(&self) -> &str {
        self.object("hint")
            .and_then(|h| h.get("text"))
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_that_are_not_alert_lines_are_told_apart() {
        assert!(matches!(
            parse(b"{\"type\":\"session_reset\",\"time\":\"2025-01-14T09:21:07.412Z\"}".to_vec()),
            Line::Event { event, .. } if event.kind == Kind::SessionReset && event.time.is_some()
        ));
        assert!(matches!(
            parse(b"not json".to_vec()),
            Line::Bad(BadLine::NotJson { bytes: 8 })
        ));
        assert!(matches!(
            parse(b"[1,2]".to_vec()),
            Line::Bad(BadLine::NotJson { .. })
        ));
        assert!(matches!(
            parse(vec![0xff, 0xfe]),
            Line::Bad(BadLine::NotJson { .. })
        ));
        assert!(matches!(
            parse(b"{\"a\":1}".to_vec()),
            Line::Unknown {
                why: BadLine::NoType,
                ..
            }
        ));
        assert!(matches!(
            parse(b"{\"type\":\"from_the_future\"}".to_vec()),
            Line::Unknown { why: BadLine::UnknownType(t), .. } if t == "from_the_future"
        ));
    }
}
