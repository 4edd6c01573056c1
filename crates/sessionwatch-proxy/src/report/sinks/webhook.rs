//! What the webhook sink posts: the incident line as the alert log has it, with its `type`.

use serde_json::Value;

use super::IncidentNotice;

/// The post for `n`.
pub(super) fn body(n: &IncidentNotice) -> Value {
    let mut v = serde_json::to_value(&n.line).unwrap_or(Value::Null);
    if let Some(map) = v.as_object_mut() {
        map.insert("type".into(), Value::from(n.kind.line_kind().as_str()));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::sinks::{NoticeKind, notice_of};

    #[test]
    fn the_post_is_the_incident_line_with_the_type_of_its_transition() {
        for (kind, name) in [
            (NoticeKind::Opened, "incident_opened"),
            (NoticeKind::Updated, "incident_updated"),
            (NoticeKind::Resolved, "incident_resolved"),
        ] {
            let n = notice_of(kind);
            let mut posted = body(&n);
            assert_eq!(posted["type"], name);
            posted.as_object_mut().unwrap().remove("type");
            assert_eq!(posted, serde_json::to_value(&n.line).unwrap());
        }
    }
}
