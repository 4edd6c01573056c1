//! What one node's application knows and counts, shared between the node's handle (which tests
//! drive: counters, health switch, delay) and the application serving its requests; and how
//! that application answers a session it does not know. A leaf below both, so the node can
//! start the application and the application can read its node's state without either
//! importing the other.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderValue;

use crate::store::{IdGenerator, SessionStore};

/// How a node answers a request whose session id it does not know. Each variant mimics a real
/// framework so the detector can be tested against every shape of "you are logged out".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LossStyle {
    /// PHP with `use_strict_mode=0`, ASP.NET Core on a store miss: `302` to
    /// `/login?return=%2Fme` and no `Set-Cookie`.
    #[default]
    LoginRedirect,
    /// PHP strict mode, Java servlet containers: `302` to the login page and a `Set-Cookie` with a
    /// fresh, anonymous session id.
    Reissue,
    /// Django: `302` to the login page and a `Set-Cookie` that clears the cookie
    /// (`""`, `Max-Age=0`, expiry in 1970).
    Clear,
    /// An XHR/API endpoint: `401` and no `Set-Cookie`.
    Unauthorized,
}

/// Everything a request handler needs; shared between the node handle and its connections.
#[derive(Debug)]
pub(crate) struct NodeState {
    pub(crate) name: String,
    pub(crate) served_by: HeaderValue,
    pub(crate) cookie_name: String,
    pub(crate) loss: LossStyle,
    pub(crate) store: Arc<SessionStore>,
    pub(crate) ids: Arc<IdGenerator>,
    served: AtomicU64,
    health_checks: AtomicU64,
    healthy: AtomicBool,
    delay_nanos: AtomicU64,
}

impl NodeState {
    pub(crate) fn new(
        name: String,
        served_by: HeaderValue,
        cookie_name: String,
        loss: LossStyle,
        store: Arc<SessionStore>,
        ids: Arc<IdGenerator>,
    ) -> Arc<Self> {
        Arc::new(Self {
            name,
            served_by,
            cookie_name,
            loss,
            store,
            ids,
            served: AtomicU64::new(0),
            health_checks: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            delay_nanos: AtomicU64::new(0),
        })
    }

    pub(crate) fn count_request(&self, is_health_check: bool) {
        let counter = if is_health_check {
            &self.health_checks
        } else {
            &self.served
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub(crate) fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay_nanos.load(Ordering::Relaxed))
    }

    pub(crate) fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    pub(crate) fn health_checks(&self) -> u64 {
        self.health_checks.load(Ordering::Relaxed)
    }

    pub(crate) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    pub(crate) fn set_delay(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.delay_nanos.store(nanos, Ordering::Relaxed);
    }
}
