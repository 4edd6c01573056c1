//! The sessionwatch reverse proxy: everything that wires the pieces together.
//!
//! Validated configuration, the backend set with its health, the balancer, the upstream client,
//! the accept loop, the alert log and sinks, the admin listener and the demo. The detection rules
//! live in `sessionwatch-core` and the per-request session handling in `sessionwatch-tower`; this
//! crate decides where requests go and what operators see.

pub mod admin;
pub mod alert_log;
pub mod app;
pub mod backends;
pub mod balancer;
pub mod body;
pub mod config;
pub mod errors;
pub mod extensions;
pub mod fd_limit;
pub mod forward;
mod front;
#[doc(hidden)]
pub mod fuzzing;
pub mod headers;
pub mod health;
pub mod incidents;
pub mod metrics;
pub mod reporter;
pub mod server;
pub mod sinks;
pub mod upstream;
mod wire;

pub use app::{RunningProxy, StartError, StartOptions, start};
pub use config::{Config, ConfigError};
pub mod demo;
