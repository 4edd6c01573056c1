//! Farm configuration and the handle a test holds to start, stop and inspect backend nodes.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use crate::node::Node;
use crate::state::{LossStyle, NodeState};
use crate::store::{IdGenerator, SessionStore};

/// Where a farm keeps its sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    /// One store shared by every node, as with Redis or a database: any node knows any session.
    Shared,
    /// Each node keeps its own in-memory store: the broken farm, where a request that lands on
    /// another node (or on a restarted one) loses its session.
    PerNode,
}

/// What to build: how many nodes, where sessions live, and how a lost session looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FarmConfig {
    /// Number of backend nodes.
    pub nodes: usize,
    /// Shared store or one store per node.
    pub store: StoreMode,
    /// The answer to an unknown session id.
    pub loss: LossStyle,
    /// Name of the session cookie (default `SID`).
    pub cookie_name: String,
    /// Node names, sent back in `x-served-by` (default `node-a`, `node-b`, ...). Missing entries
    /// are filled with the default name for that index.
    pub node_names: Vec<String>,
    /// Where each node listens (default `127.0.0.1:0`); missing entries take the default. Nodes
    /// on other loopback addresses (127.0.0.2, ...) and one port look like pods behind one DNS
    /// name.
    pub bind: Vec<SocketAddr>,
}

impl FarmConfig {
    /// A farm of `nodes` nodes with the default loss style, cookie name and node names.
    pub fn new(nodes: usize, store: StoreMode) -> Self {
        Self {
            nodes,
            store,
            loss: LossStyle::default(),
            cookie_name: "SID".to_owned(),
            node_names: (0..nodes).map(default_node_name).collect(),
            bind: Vec::new(),
        }
    }

    /// Sets how nodes answer an unknown session id.
    pub fn with_loss(mut self, loss: LossStyle) -> Self {
        self.loss = loss;
        self
    }

    /// Sets the session cookie name.
    pub fn with_cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = name.into();
        self
    }

    /// Sets the node names (index `i` names node `i`).
    pub fn with_node_names<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.node_names = names.into_iter().map(Into::into).collect();
        self
    }

    /// Sets where the nodes listen (index `i` for node `i`).
    pub fn with_bind(mut self, addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.bind = addrs.into_iter().collect();
        self
    }

    fn node_name(&self, i: usize) -> String {
        self.node_names
            .get(i)
            .cloned()
            .unwrap_or_else(|| default_node_name(i))
    }

    fn validate(&self) -> io::Result<()> {
        if self.nodes == 0 {
            return Err(invalid("a farm needs at least one node"));
        }
        let is_token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if self.cookie_name.is_empty() || !self.cookie_name.chars().all(is_token) {
            return Err(invalid("cookie_name must be a non-empty HTTP token"));
        }
        Ok(())
    }
}

fn default_node_name(i: usize) -> String {
    match u8::try_from(i) {
        Ok(n) if n < 26 => format!("node-{}", char::from(b'a' + n)),
        _ => format!("node-{i}"),
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// A running farm of in-process backend nodes, each an HTTP/1.1 + HTTP/2 server on 127.0.0.1.
///
/// Dropping the farm stops every node; [`Farm::shutdown`] does the same and waits for it.
#[derive(Debug)]
pub struct Farm {
    nodes: Vec<Node>,
    store: StoreMode,
    cookie_name: String,
}

impl Farm {
    /// Binds one listener per node (on `127.0.0.1:0` unless [`FarmConfig::with_bind`] says
    /// otherwise) and starts serving.
    ///
    /// Fails on an invalid config (no nodes, a bad cookie name, a node name that is not a valid
    /// header value) or if a port cannot be bound.
    pub async fn start(cfg: FarmConfig) -> io::Result<Farm> {
        cfg.validate()?;
        let ids = Arc::new(IdGenerator::from_os()?);
        let shared = SessionStore::new();
        let mut nodes = Vec::with_capacity(cfg.nodes);
        for i in 0..cfg.nodes {
            let name = cfg.node_name(i);
            let served_by = HeaderValue::from_str(&name)
                .map_err(|_| invalid("node names must be valid header values"))?;
            let store = match cfg.store {
                StoreMode::Shared => Arc::clone(&shared),
                StoreMode::PerNode => SessionStore::new(),
            };
            let state = NodeState::new(
                name,
                served_by,
                cfg.cookie_name.clone(),
                cfg.loss,
                store,
                Arc::clone(&ids),
            );
            let addr = cfg
                .bind
                .get(i)
                .copied()
                .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
            nodes.push(Node::bind(state, addr).await?);
        }
        Ok(Farm {
            nodes,
            store: cfg.store,
            cookie_name: cfg.cookie_name,
        })
    }

    /// Every node's address, by index. Addresses stay the same across restarts.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(Node::addr).collect()
    }

    /// Every node's name, by index.
    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name().to_owned()).collect()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always `false`: a farm is never started without nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The session cookie name this farm uses.
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    /// Where this farm keeps its sessions.
    pub fn store_mode(&self) -> StoreMode {
        self.store
    }

    /// Node `i`.
    ///
    /// # Panics
    ///
    /// If `i` is not below [`Farm::len`]; tests index nodes they created.
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Stops node `i`: closes its listener and drops its open connections, so connects are
    /// refused until [`Farm::start_node`]. Does nothing if the node is already stopped.
    pub async fn stop_node(&self, i: usize) {
        self.node(i).stop().await;
    }

    /// Starts node `i` again on the same port. Does nothing if it is already running.
    pub async fn start_node(&self, i: usize) -> io::Result<()> {
        self.node(i).start().await
    }

    /// Stops and starts node `i`. With [`StoreMode::PerNode`] its in-memory store is lost, as it
    /// would be when a real process restarts; a shared store survives.
    pub async fn restart_node(&self, i: usize) -> io::Result<()> {
        let node = self.node(i);
        node.stop().await;
        if self.store == StoreMode::PerNode {
            node.clear_sessions();
        }
        node.start().await
    }

    /// Requests served by node `i`, not counting `GET /health` (see [`Node::health_checks`]), so
    /// a proxy's active health checks do not blur balancing assertions.
    pub fn served(&self, i: usize) -> u64 {
        self.node(i).served()
    }

    /// Requests served by all nodes together, not counting health checks.
    pub fn served_total(&self) -> u64 {
        self.nodes.iter().map(Node::served).sum()
    }

    /// Makes node `i` answer `GET /health` with `200` (healthy) or `503`. Every other route keeps
    /// working either way.
    pub fn set_healthy(&self, i: usize, healthy: bool) {
        self.node(i).set_healthy(healthy);
    }

    /// Delays every response from node `i` by `d`, to simulate a slow backend. Zero turns it off.
    pub fn set_delay(&self, i: usize, d: Duration) {
        self.node(i).set_delay(d);
    }

    /// Stops every node and waits until their listeners and connections are closed.
    pub async fn shutdown(self) {
        for node in &self.nodes {
            node.stop().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names() {
        let cfg = FarmConfig::new(3, StoreMode::Shared);
        assert_eq!(cfg.node_names, ["node-a", "node-b", "node-c"]);
        assert_eq!(cfg.node_name(30), "node-30");
    }

    #[test]
    fn rejects_bad_config() {
        assert!(FarmConfig::new(0, StoreMode::Shared).validate().is_err());
        let bad = FarmConfig::new(1, StoreMode::Shared).with_cookie_name("a b");
        assert!(bad.validate().is_err());
        assert!(FarmConfig::new(1, StoreMode::Shared).validate().is_ok());
    }
}
