//! A tower layer that feeds sessionwatch's core from live traffic.
//!
//! [`SessionLayer`] sits in front of whatever serves the request (the proxy's balancer, or an
//! application itself). On the way in it reads the session cookies, fingerprints them, looks up
//! their records in a [`SessionStore`] and attaches a [`SessionRoute`] saying where a pinned
//! session must go. On the way out it reads which backend served the response ([`ServedBy`]),
//! classifies the exchange with [`sessionwatch_core::classify`], applies the store updates and
//! reports every exchange with a known session to a [`SessionEvents`] hook. Optionally it rescues
//! a lost GET or HEAD by replaying it once on the backend that issued the session, and mints a
//! signed affinity cookie so that other replicas, each with its own table, know the sessions this
//! one saw issued ([`SessionLayer::with_affinity_cookie`]).
//!
//! ```
//! use std::sync::Arc;
//! use sessionwatch_core::{Fingerprinter, Framework, SessionProfile};
//! use sessionwatch_tower::{MokaStore, SessionLayer};
//! use tower::ServiceBuilder;
//!
//! let profile = SessionProfile::preset(Framework::Php);
//! let store = MokaStore::new(100_000, profile.idle_timeout());
//! let layer = SessionLayer::new(profile, Fingerprinter::from_secret(b"secret"), Arc::new(store));
//! let svc = ServiceBuilder::new().layer(layer).service(tower::service_fn(
//!     |_req: http::Request<String>| async { Ok::<_, std::convert::Infallible>(http::Response::new(String::new())) },
//! ));
//! # drop(svc);
//! ```

mod answer;
mod compact;
mod events;
mod extensions;
mod fleet;
mod future;
mod layer;
mod request;
mod service;
mod shared;
mod store;

pub use compact::CompactStore;
pub use events::{AffinityUse, Observed, Rescued, SessionEvents};
pub use extensions::{RescueAttempt, ServedBy, SessionRoute, SessionSeen};
pub use fleet::{FleetStore, Found, Lookup, Publish};
pub use future::ResponseFuture;
pub use layer::{LayerSettings, SessionLayer};
pub use service::{SessionService, X_REQUEST_ID};
pub use shared::{BackendDirectory, BackendHealth, PinSwitch, SameOrder};
pub use store::{Evictions, MokaStore, SessionStore};

#[cfg(test)]
mod affinity_tests;
#[cfg(test)]
mod fleet_tests;
#[cfg(test)]
mod tests;
