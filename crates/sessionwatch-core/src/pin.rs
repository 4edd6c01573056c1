//! Where a request with a known session should go under a pin policy.

use std::fmt;
use std::str::FromStr;

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
    /// Every policy, in the order the documentation and error messages list them.
    pub const ALL: [PinPolicy; 4] = [
        PinPolicy::Off,
        PinPolicy::Learn,
        PinPolicy::OnReset,
        PinPolicy::OnIncident,
    ];

    /// The name used in configuration files, on the command line and in alert lines: the one
    /// place these names are written.
    pub fn as_str(self) -> &'static str {
        match self {
            PinPolicy::Off => "off",
            PinPolicy::Learn => "learn",
            PinPolicy::OnReset => "on_reset",
            PinPolicy::OnIncident => "on_incident",
        }
    }
}

impl fmt::Display for PinPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PinPolicy {
    type Err = UnknownPinPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PinPolicy::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPinPolicy {
                given: s.to_owned(),
            })
    }
}

/// A name that is not one of [`PinPolicy::ALL`]'s; its message lists the accepted names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPinPolicy {
    given: String,
}

impl fmt::Display for UnknownPinPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown pin policy {:?}; expected one of: ", self.given)?;
        for (i, p) in PinPolicy::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(p.as_str())?;
        }
        Ok(())
    }
}

impl std::error::Error for UnknownPinPolicy {}

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
    fn every_name_parses_back_to_its_policy() {
        for policy in PinPolicy::ALL {
            assert_eq!(policy.as_str().parse::<PinPolicy>(), Ok(policy));
            assert_eq!(policy.to_string(), policy.as_str());
        }
        let names: Vec<&str> = PinPolicy::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(names, ["off", "learn", "on_reset", "on_incident"]);
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_accepted_names() {
        for wrong in ["sometimes", "", "Learn", "on-reset", " off"] {
            let err = wrong.parse::<PinPolicy>().unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "unknown pin policy {wrong:?}; expected one of: off, learn, on_reset, on_incident"
                )
            );
        }
    }

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
