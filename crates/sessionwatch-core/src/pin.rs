//! Where a request with a known session should go under a pin policy.

use crate::{BackendId, SessionRecord};

/// When sessions are routed to the backend that issued them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PinPolicy {
    /// Never: the balancer decides (detection only).
    #[default]
    Off,
    /// Always, like a learned stick table.
    Learn,
    /// Only sessions that replaced a lost one, so a user is not logged out twice.
    OnReset,
    /// Every known session while an incident is open.
    OnIncident,
}

impl PinPolicy {
    /// The name used in configuration files and alert lines.
    pub fn as_str(self) -> &'static str {
        match self {
            PinPolicy::Off => "off",
            PinPolicy::Learn => "learn",
            PinPolicy::OnReset => "on_reset",
            PinPolicy::OnIncident => "on_incident",
        }
    }
}

/// Where to send one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteDecision {
    /// Let the load-balancing policy choose.
    Balance,
    /// Send it to this backend if it is healthy.
    Pin(BackendId),
}

/// The route for a request whose (first) known session has `record`; `incident_open` says
/// whether the `on_incident` policy is currently pinning.
pub fn route(
    policy: PinPolicy,
    record: Option<&SessionRecord>,
    incident_open: bool,
) -> RouteDecision {
    let Some(record) = record else {
        return RouteDecision::Balance;
    };
    if record.issuer == BackendId::UNKNOWN {
        return RouteDecision::Balance;
    }
    let pin = match policy {
        PinPolicy::Off => false,
        PinPolicy::Learn => true,
        PinPolicy::OnReset => record.pinned,
        PinPolicy::OnIncident => incident_open || record.pinned,
    };
    if pin {
        RouteDecision::Pin(record.issuer)
    } else {
        RouteDecision::Balance
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Timestamp;

    #[test]
    fn each_policy_routes_as_documented() {
        let plain = SessionRecord::issued(BackendId(1), Timestamp::from_millis(0));
        let pinned = SessionRecord {
            pinned: true,
            ..plain
        };
        let unknown = SessionRecord::issued(BackendId::UNKNOWN, Timestamp::from_millis(0));
        let pin1 = RouteDecision::Pin(BackendId(1));
        assert_eq!(
            route(PinPolicy::Off, Some(&pinned), true),
            RouteDecision::Balance
        );
        assert_eq!(route(PinPolicy::Learn, Some(&plain), false), pin1);
        assert_eq!(route(PinPolicy::Learn, None, false), RouteDecision::Balance);
        assert_eq!(
            route(PinPolicy::Learn, Some(&unknown), false),
            RouteDecision::Balance
        );
        assert_eq!(
            route(PinPolicy::OnReset, Some(&plain), true),
            RouteDecision::Balance
        );
        assert_eq!(route(PinPolicy::OnReset, Some(&pinned), false), pin1);
        assert_eq!(
            route(PinPolicy::OnIncident, Some(&plain), false),
            RouteDecision::Balance
        );
        assert_eq!(route(PinPolicy::OnIncident, Some(&plain), true), pin1);
    }
}
