//! The shutdown signal every background task takes: a watch channel that turns `true` once.

use tokio::sync::watch;

/// Resolves once `shutdown` turns true (or its sender is gone). The guard `wait_for` returns is
/// not `Send`, so it is dropped here rather than held across a `select!`.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}
