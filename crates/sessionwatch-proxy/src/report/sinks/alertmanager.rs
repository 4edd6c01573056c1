//! What the Alertmanager sink posts: one alert per incident, told apart by labels fixed when it
//! opened, firing until a few re-send periods ahead, and resolved by an `endsAt` of now.

use std::time::{Duration, SystemTime};

use http::Uri;
use serde_json::{Value, json};

use super::{IncidentNotice, NoticeKind};

/// Alertmanager's v2 alerts endpoint under `base` (which may have a path prefix).
pub(super) fn alerts_uri(base: &Uri) -> Uri {
    let prefix = base.path().trim_end_matches('/');
    let mut parts = base.clone().into_parts();
    parts.path_and_query = format!("{prefix}/api/v2/alerts").parse().ok();
    Uri::from_parts(parts).unwrap_or_else(|_| base.clone())
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The post for `n` at `now`; a firing alert ends three re-send periods ahead, so that one or
/// two lost re-sends do not resolve it.
pub(super) fn body(n: &IncidentNotice, now: SystemTime, resend: Duration) -> Value {
    let mut labels = json!({
        "alertname": "SessionLossIncident",
        "severity": "critical",
        "service": "sessionwatch",
        "incident": n.line.incident_id,
        "hint": n.hint_code,
    });
    if let (Some((issuer, server)), Some(map)) = (&n.labels, labels.as_object_mut()) {
        map.insert("issuer".into(), Value::from(issuer.as_str()));
        map.insert("server".into(), Value::from(server.as_str()));
    }
    let ends = match n.kind {
        NoticeKind::Resolved => now,
        _ => now + resend * 3,
    };
    json!([{
        "labels": labels,
        "annotations": {
            "summary": n.line.summary,
            "hint": n.line.hint.text,
            "share": format!("{:.1}%", n.line.share * 100.0),
        },
        "startsAt": n.line.started,
        "endsAt": rfc3339(ends),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::sinks::notice_of;

    #[test]
    fn the_alerts_endpoint_keeps_a_path_prefix() {
        let at = |base: &str| alerts_uri(&base.parse().unwrap()).to_string();
        assert_eq!(at("http://am:9093"), "http://am:9093/api/v2/alerts");
        assert_eq!(at("http://am:9093/am/"), "http://am:9093/am/api/v2/alerts");
    }

    #[test]
    fn a_firing_alert_ends_ahead_and_a_resolve_ends_now_under_the_same_labels() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_261_600);
        let resend = Duration::from_secs(60);
        let firing = body(&notice_of(NoticeKind::Updated), now, resend);
        let resolved = body(&notice_of(NoticeKind::Resolved), now, resend);
        assert_eq!(firing[0]["endsAt"], "2026-01-01T10:03:00.000Z");
        assert_eq!(resolved[0]["endsAt"], "2026-01-01T10:00:00.000Z");
        // Alertmanager tells alerts apart by labels: the hint label is the one fixed at open,
        // while the annotation follows the window.
        assert_eq!(firing[0]["labels"], resolved[0]["labels"]);
        assert_eq!(firing[0]["labels"]["hint"], "store_not_shared");
        assert_eq!(firing[0]["labels"]["issuer"], "node-a");
        assert_eq!(firing[0]["labels"]["server"], "node-b");
        assert_eq!(firing[0]["labels"]["incident"], "0191");
        assert_eq!(firing[0]["annotations"]["hint"], "the hint as it reads now");
        assert_eq!(firing[0]["annotations"]["share"], "45.7%");
        assert_eq!(firing[0]["startsAt"], "2026-01-01T10:00:00Z");
    }
}
