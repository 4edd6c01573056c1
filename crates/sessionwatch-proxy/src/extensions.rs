//! What the accept loop and the prepare step tell the upstream exchange and pool about a
//! request's client connection, as request extensions. A leaf: they set them, the steps below read
//! them, and neither imports the other for it.

use std::sync::Arc;

/// Marks a request that is the first of its client connection: under `upstream.reuse = "safe"`
/// it goes on a new upstream connection, never on one another client's request used.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FirstOnConnection;

/// Held by a request whose connection may turn into a tunnel: kept alive by the tunnel for as
/// long as it lasts, so that the client connection it came from still counts as open (under
/// `listen.max_connections`, in the connection gauge).
#[derive(Clone)]
pub(crate) struct ClientConnection(
    // Never read: holding it is the point, its last drop is the connection's end.
    #[allow(dead_code)] pub(crate) Arc<dyn std::any::Any + Send + Sync>,
);

impl std::fmt::Debug for ClientConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientConnection")
    }
}
