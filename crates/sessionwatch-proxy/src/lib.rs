//! The sessionwatch reverse proxy: everything that wires the pieces together.
//!
//! Validated configuration, the backend set with its health, the balancer, the upstream client,
//! the accept loop, the alert log and sinks, and the admin listener. The detection rules live in
//! `sessionwatch-core` and the per-request session handling in `sessionwatch-tower`; this crate
//! decides where requests go and what operators see.

pub mod admin;
pub mod app;
pub mod backends;
pub mod config;
pub mod extensions;
#[doc(hidden)]
pub mod fuzzing;
mod hop_by_hop;
pub mod listen;
pub mod metrics;
pub mod prepare;
pub mod report;
pub mod respond;
pub mod route;
mod shutdown;
pub mod upstream;
mod wire;

pub use app::{RunningProxy, StartError, StartOptions, start};
pub use config::{Config, ConfigError};
