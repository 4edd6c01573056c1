//! What the Alertmanager sink posts: one alert for the farm, whichever replicas see the incident,
//! firing until a few re-send periods ahead, and resolved by an `endsAt` of now.
//!
//! Alertmanager tells alerts apart by their labels alone, so the labels are only what every
//! replica in front of the farm derives alike and what stays fixed while the incident lasts:
//! `alertname`, `severity`, `service` and `farm` (from `[alertmanager] farm`). Everything a
//! replica sees for itself goes to annotations: its incident id (each replica opens its own), the
//! hint and its code (a replica judges its own share of the traffic, and may read the matrix
//! differently), the share, and the dominant issuer and server (which a window can change). A
//! label from any of these would split the farm's one incident into an alert per replica, or
//! per hint; annotations are not part of an alert's identity, and Alertmanager keeps those of the
//! latest post. Routing by hint or backend is therefore not possible; routing by farm is.
//!
//! `startsAt` is this replica's incident start. When the posts of several replicas overlap,
//! Alertmanager keeps the earliest `startsAt` of them, so the alert starts when the first replica
//! saw the incident.

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
pub(super) fn body(n: &IncidentNotice, farm: &str, now: SystemTime, resend: Duration) -> Value {
    let mut annotations = json!({
        "summary": n.line.summary,
        "hint": n.line.hint.text,
        "hint_code": n.line.hint.code,
        "share": format!("{:.1}%", n.line.share * 100.0),
        "incident": n.line.incident_id,
    });
    if let (Some((issuer, server)), Some(map)) = (&n.labels, annotations.as_object_mut()) {
        map.insert("issuer".into(), Value::from(issuer.as_str()));
        map.insert("server".into(), Value::from(server.as_str()));
    }
    let ends = match n.kind {
        NoticeKind::Resolved => now,
        _ => now + resend * 3,
    };
    json!([{
        "labels": {
            "alertname": "SessionLossIncident",
            "severity": "critical",
            "service": "sessionwatch",
            "farm": farm,
        },
        "annotations": annotations,
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
        let firing = body(&notice_of(NoticeKind::Updated), "shop", now, resend);
        let resolved = body(&notice_of(NoticeKind::Resolved), "shop", now, resend);
        assert_eq!(firing[0]["endsAt"], "2026-01-01T10:03:00.000Z");
        assert_eq!(resolved[0]["endsAt"], "2026-01-01T10:00:00.000Z");
        assert_eq!(firing[0]["labels"], resolved[0]["labels"]);
        assert_eq!(firing[0]["annotations"]["hint"], "the hint as it reads now");
        assert_eq!(firing[0]["annotations"]["hint_code"], "backend_differs");
        assert_eq!(firing[0]["annotations"]["issuer"], "node-a");
        assert_eq!(firing[0]["annotations"]["server"], "node-b");
        assert_eq!(firing[0]["annotations"]["incident"], "0191");
        assert_eq!(firing[0]["annotations"]["share"], "45.7%");
        assert_eq!(firing[0]["startsAt"], "2026-01-01T10:00:00Z");
    }

    #[test]
    fn the_labels_are_the_farms_and_the_same_from_every_replica() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_261_600);
        let resend = Duration::from_secs(60);
        // Another replica's incident: its own id, its own start, another hint and pair.
        let mut other = notice_of(NoticeKind::Opened);
        other.line.incident_id = "0192".into();
        other.line.started = "2026-01-01T10:00:04Z".into();
        other.line.hint.code = "store_not_shared";
        other.labels = Some(("node-b".into(), "node-a".into()));
        let ours = body(&notice_of(NoticeKind::Updated), "shop", now, resend);
        let theirs = body(&other, "shop", now, resend);
        assert_eq!(ours[0]["labels"], theirs[0]["labels"]);
        assert_eq!(
            ours[0]["labels"],
            json!({
                "alertname": "SessionLossIncident",
                "severity": "critical",
                "service": "sessionwatch",
                "farm": "shop",
            })
        );
        let elsewhere = body(&other, "blog", now, resend);
        assert_ne!(
            elsewhere[0]["labels"], ours[0]["labels"],
            "farms stay apart"
        );
    }
}
