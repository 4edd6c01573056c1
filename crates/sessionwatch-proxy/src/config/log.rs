//! `[log]`: what the process logs beyond its own events. Levels and targets are `RUST_LOG`'s.

use serde::Deserialize;

/// The section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogFile {
    /// One event a request on target `sessionwatch::access` (default off).
    pub(crate) access: Option<bool>,
}
