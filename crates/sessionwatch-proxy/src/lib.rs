//! The sessionwatch reverse proxy: everything that wires the pieces together.
//!
//! Validated configuration, the backend set with its health, the balancer, the upstream client,
//! the accept loop, the alert log and sinks, and the admin listener. The detection rules live in
//! `sessionwatch-core` and the per-request session handling in `sessionwatch-tower`; this crate
//! decides where requests go and what operators see.
//!
//! The public API is small: [`Config::load`] or [`Config::parse`] validate a configuration
//! (a [`ConfigError`] lists every problem with its place), [`start`] binds and runs the proxy
//! with [`StartOptions`] for embedding (an extra event hook, the incident tick, the
//! [`FleetIncidents`] view the Alertmanager sink asks before it resolves the farm's alert) or
//! fails with a [`StartError`], and the [`RunningProxy`] it returns says where it listens,
//! answers a few questions about its state (metrics, backend health, incidents, the session
//! count), reloads its configuration file ([`RunningProxy::reload`], a [`ReloadReport`] or a
//! [`ReloadError`]) and shuts down. [`probe`] is the deploy gate (`sessionwatch probe`, `POST /probe`): it
//! mints a session on each backend and tells which others keep it. Every other module is private (the fuzz targets aim at the codec crate, `sessionwatch-h1`).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use sessionwatch_proxy::{Config, StartOptions};
//! let config = Config::load(std::path::Path::new("sessionwatch.toml"))?;
//! let proxy = sessionwatch_proxy::start(config, StartOptions::default()).await?;
//! println!("listening on {}", proxy.addr());
//! proxy.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod admin;
mod app;
mod backends;
mod certs;
mod config;
mod extensions;
mod fleet;
mod hop_by_hop;
mod listen;
mod metrics;
mod prepare;
pub mod probe;
mod report;
mod respond;
mod route;
mod sensitive;
mod shutdown;
mod slots;
mod upstream;

pub use app::{ReloadError, ReloadReport, RunningProxy, StartError, StartOptions, start};
pub use config::{Config, ConfigError};
pub use report::sinks::{FleetIncidents, InProcessFleet, NoSharedView, OthersOpen};
