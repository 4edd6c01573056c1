//! Request and response extensions through which the layer talks to what is below it.

use sessionwatch_core::{BackendId, RouteDecision, ShortFingerprint};

/// Set on a response by whatever served it: which backend that was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedBy(pub BackendId);

/// Set on a request by the session layer: where the pin policy wants it to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRoute {
    /// The routing decision.
    pub decision: RouteDecision,
}

/// Set on a request that replays a lost GET or HEAD on the issuing backend: the balancer must
/// send it to exactly this backend and never elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RescueAttempt(pub BackendId);

/// Set on a response by a layer built [`crate::SessionLayer::with_session_marks`]: the session
/// the exchange was about, in the short form logs may carry. That is the first session cookie the
/// request carried, or else the first one the answer issued; none when there was neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSeen(pub ShortFingerprint);
