//! The sans-I/O heart of sessionwatch.
//!
//! This crate owns the detection rules and nothing else: reading session cookies from `Cookie`
//! and `Set-Cookie` headers, turning raw session values into keyed fingerprints, classifying the
//! response to a request that carried a known session (continued, renewed, reset, ended), counting
//! resets in sliding windows to open and resolve incidents with a root-cause hint, and deciding
//! where a session should be routed under a pin policy. It opens no socket, reads no clock and
//! spawns nothing: time is an argument and every function returns a verdict, so the rules can be
//! unit-tested, fuzzed and benchmarked on their own.
//!
//! ```
//! use sessionwatch_core::{Framework, SessionProfile};
//! let profile = SessionProfile::preset(Framework::Php);
//! assert_eq!(profile.cookies()[0].name(), "PHPSESSID");
//! ```

mod affinity;
#[cfg(test)]
mod affinity_tests;
mod classify;
#[cfg(test)]
mod classify_tests;
mod cookies;
mod fingerprint;
mod hint;
mod incident;
#[cfg(test)]
mod incident_tests;
mod life;
mod paths;
mod pin;
mod profile;
mod record;
#[cfg(test)]
mod robustness_tests;
mod time;

pub use affinity::{
    Affinity, AffinityKey, AffinityRejection, expire_cookie_header, read_cookie, set_cookie_header,
    strip_cookie,
};
pub use classify::{
    Attribution, Carried, EndReason, Exchange, Outcome, Renewal, ResetSignal, StoreUpdate, Verdict,
    classify, plan_updates,
};
pub use cookies::{
    CookieId, SetCookieEvent, read_request_cookies, read_set_cookie, read_set_cookies,
};
pub use fingerprint::{Fingerprint, Fingerprinter, ShortFingerprint};
pub use hint::{Direction, Hint, PairCounts};
pub use incident::{
    IncidentConfig, IncidentEvent, IncidentSnapshot, IncidentTracker, WindowCounts,
};
pub use life::IncidentLife;
pub use paths::loggable_path;
pub use pin::{PinPolicy, RouteDecision, UnknownPinPolicy, route};
pub use profile::{CookieSpec, Framework, MAX_COOKIES, Marker, ProfileError, SessionProfile};
pub use record::{BackendId, SessionRecord};
pub use time::Timestamp;
