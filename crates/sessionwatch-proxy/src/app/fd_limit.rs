//! How many client connections the process can hold open: `listen.max_connections`, checked
//! against the file-descriptor limit at start.
//!
//! Each client connection may hold two descriptors (its own and one to a backend), and the
//! upstream pools keep idle connections of their own. The soft limit is raised to the hard one
//! first, as HAProxy and NGINX do, so the usual `ulimit -n` of 1024 does not cap a proxy whose
//! hard limit is far higher.

use crate::config::ConnectionLimit;

/// Descriptors kept for listeners, the alert log, the admin port, health checks and sinks.
const RESERVED: u64 = 64;

/// Why the configured cap cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "listen.max_connections = {wanted} needs about {needed} file descriptors, but the limit is \
     {limit}: lower max_connections to at most {allowed}, or raise the limit (ulimit -n, \
     LimitNOFILE= in systemd)"
)]
pub struct TooManyConnections {
    /// The configured cap.
    pub wanted: usize,
    /// Descriptors it needs.
    pub needed: u64,
    /// The soft limit on open files.
    pub limit: u64,
    /// The largest cap that fits.
    pub allowed: usize,
}

/// Raise the soft limit on open files to the hard limit; returns the soft limit in force
/// (`None`: unlimited, or unknown).
pub(crate) fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::debug!(error = %e, "cannot raise the open-files limit");
        }
    }
    getrlimit(Resource::Nofile).current
}

/// The cap on client connections that `open_files` descriptors allow, with `pooled` idle
/// upstream connections kept besides: the configured one if it fits; an explicit one that does
/// not is an error, the default one is lowered to fit (with a warning).
pub(crate) fn connection_cap(
    limit: ConnectionLimit,
    open_files: Option<u64>,
    pooled: u64,
) -> Result<usize, TooManyConnections> {
    let Some(open_files) = open_files else {
        return Ok(limit.max);
    };
    let needed = 2 * limit.max as u64 + pooled + RESERVED;
    if needed <= open_files {
        return Ok(limit.max);
    }
    let allowed = usize::try_from(open_files.saturating_sub(pooled + RESERVED) / 2)
        .unwrap_or(usize::MAX)
        .max(1);
    if limit.explicit {
        return Err(TooManyConnections {
            wanted: limit.max,
            needed,
            limit: open_files,
            allowed,
        });
    }
    tracing::warn!(
        max_connections = allowed,
        open_files,
        "the open-files limit allows fewer client connections than the default 10000; \
         raise it (ulimit -n) or set listen.max_connections"
    );
    Ok(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(max: usize, explicit: bool) -> ConnectionLimit {
        ConnectionLimit { max, explicit }
    }

    #[test]
    fn a_cap_that_fits_is_kept() {
        assert_eq!(connection_cap(cap(100, true), Some(1024), 512), Ok(100));
        assert_eq!(connection_cap(cap(10_000, false), None, 512), Ok(10_000));
    }

    #[test]
    fn an_explicit_cap_that_does_not_fit_is_an_error() {
        let err = connection_cap(cap(1000, true), Some(1024), 256).unwrap_err();
        assert_eq!(err.allowed, (1024 - 256 - 64) / 2);
        assert_eq!(err.needed, 2000 + 256 + 64);
        assert!(err.to_string().contains("at most 352"), "{err}");
    }

    #[test]
    fn the_default_cap_is_lowered_to_fit() {
        assert_eq!(
            connection_cap(cap(10_000, false), Some(1024), 256),
            Ok((1024 - 256 - 64) / 2)
        );
        // Even a limit too small for the pools leaves one connection, not zero.
        assert_eq!(connection_cap(cap(10_000, false), Some(10), 256), Ok(1));
    }
}
