//! What the proxy remembers about one session.

use crate::Timestamp;

/// A backend, by its position in the configured list. Compact on purpose: one is stored in every
/// session record, and the proxy maps it back to a name only when it reports something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendId(pub u16);

impl BackendId {
    /// The backend could not be told (in front of a single upstream without a replica header).
    pub const UNKNOWN: BackendId = BackendId(u16::MAX);

    /// The position in the backend list, for indexing.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// The backend at `index` in the list; past `u16::MAX` it saturates, as the list is never
    /// that long.
    pub(crate) fn from_index(index: usize) -> Self {
        Self(u16::try_from(index).unwrap_or(u16::MAX))
    }
}

/// The record kept per learned session, keyed by its fingerprint. It holds no session value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRecord {
    /// The backend whose `Set-Cookie` issued this value.
    pub issuer: BackendId,
    /// When the session began: the first issue, kept across renewals.
    pub issued_at: Timestamp,
    /// The last request that carried it.
    pub last_seen: Timestamp,
    /// Route this session to its issuer even when the policy pins only some sessions
    /// (`on_reset`: it replaced a session that was lost).
    pub pinned: bool,
    /// A reset was seen for this value while the client kept it (the app redirected to login
    /// without changing the cookie); its replacement inherits a pin under `on_reset`.
    pub lost: bool,
    /// A client has sent this value back at least once, or it was issued on a login path or in
    /// place of a value the client presented (the client will send it next). A table keeps such
    /// sessions apart from the ones nobody has presented, which a framework hands to every
    /// request without a cookie (bots, crawlers, a flood), so that those can never displace
    /// them.
    pub presented: bool,
}

impl SessionRecord {
    /// A session just issued by `issuer` at `now`, not presented yet.
    pub fn issued(issuer: BackendId, now: Timestamp) -> Self {
        Self {
            issuer,
            issued_at: now,
            last_seen: now,
            pinned: false,
            lost: false,
            presented: false,
        }
    }
}
