//! Test support for sessionwatch: in-process backend web farms whose nodes keep sessions in a
//! shared store (the healthy farm) or each in its own memory (the broken farm that loses users),
//! plus simulated users that drive a cookie-keeping HTTP client through the proxy under test.
//! Integration tests and `sessionwatch demo` use it; nothing here is meant for production.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use sessionwatch_test_support::{DriveConfig, Farm, FarmConfig, StoreMode, drive_users};
//!
//! let farm = Farm::start(FarmConfig::new(2, StoreMode::PerNode)).await?;
//! // Without a proxy in between, one node on its own never loses a session.
//! let report = drive_users(farm.addrs()[0], farm.cookie_name(), DriveConfig::new(5, 10)).await;
//! assert_eq!(report.total_losses(), 0);
//! farm.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod app;
mod body;
mod csrf;
mod dns;
mod drive;
mod farm;
mod node;
mod state;
mod store;
mod user;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use csrf::{CSRF_COOKIE, CSRF_FIELD, CsrfFarm, SESSION_COOKIE};
pub use dns::DnsServer;
pub use drive::{DriveConfig, DriveReport, drive_users, drive_users_with_client};
pub use farm::{Farm, FarmConfig, StoreMode};
pub use node::Node;
pub use state::LossStyle;
pub use user::{
    DriveError, MeOutcome, REQUEST_TIMEOUT, Reply, SharedClient, UserClient, shared_client,
};

/// The header every farm response carries, naming the node that served it.
pub const SERVED_BY_HEADER: &str = "x-served-by";

/// Polls `f` every 10 ms until it returns true or `timeout` passes; returns the last answer.
pub async fn wait_until<F: Fn() -> bool>(timeout: Duration, f: F) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
