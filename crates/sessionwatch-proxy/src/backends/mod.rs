//! The farm as the proxy sees it: each backend's address, weight, load and health.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use sessionwatch_core::BackendId;
use sessionwatch_tower::BackendHealth;

use crate::config::BackendConfig;
use crate::upstream::Endpoint;

pub(crate) mod health;

/// One backend's live state.
#[derive(Debug)]
pub(crate) struct Backend {
    /// Its position in the list.
    pub id: BackendId,
    /// Its name.
    pub name: Arc<str>,
    /// Where it is, for the upstream client.
    pub endpoint: Endpoint,
    /// Relative share of new traffic.
    pub weight: u32,
    healthy: AtomicBool,
    in_flight: AtomicUsize,
    passive_failures: AtomicU32,
}

impl Backend {
    /// Whether it takes traffic.
    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Requests being served now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A health transition, for logs and incident hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    /// The backend was taken out.
    Down,
    /// The backend was brought back.
    Up,
}

/// All backends, shared by the balancer, the health checker and the session layer.
#[derive(Debug)]
pub(crate) struct Backends {
    list: Vec<Backend>,
}

impl Backends {
    /// The backends of the configuration, all healthy to begin with (so that traffic flows
    /// before the first check completes; a dead one is ejected on its first failure).
    pub(crate) fn new(configs: &[BackendConfig]) -> Self {
        let list = configs
            .iter()
            .enumerate()
            .map(|(i, c)| Backend {
                id: BackendId(u16::try_from(i).unwrap_or(u16::MAX - 1)),
                name: Arc::from(c.name.as_str()),
                endpoint: Endpoint {
                    slot: i,
                    authority: c.authority.clone(),
                },
                weight: c.weight,
                healthy: AtomicBool::new(true),
                in_flight: AtomicUsize::new(0),
                passive_failures: AtomicU32::new(0),
            })
            .collect();
        Self { list }
    }

    /// Backends named `names`, of weight 1, at unreachable loopback ports: for tests that need a
    /// farm's names, never its answers.
    #[cfg(test)]
    pub(crate) fn named(names: &[&str]) -> Self {
        let configs: Vec<BackendConfig> = names
            .iter()
            .enumerate()
            .map(|(i, name)| BackendConfig {
                name: (*name).into(),
                authority: format!("127.0.0.1:{}", i + 1).parse().unwrap(),
                weight: 1,
            })
            .collect();
        Self::new(&configs)
    }

    /// Every backend, in configured order.
    pub(crate) fn all(&self) -> &[Backend] {
        &self.list
    }

    /// One backend.
    pub(crate) fn get(&self, id: BackendId) -> Option<&Backend> {
        self.list.get(id.index())
    }

    /// The name of a backend, `"unknown"` when it cannot be told.
    pub(crate) fn name(&self, id: BackendId) -> &str {
        self.get(id).map_or("unknown", |b| &b.name)
    }

    /// Whether backend `id` takes traffic.
    pub(crate) fn is_up(&self, id: BackendId) -> bool {
        self.get(id).is_some_and(Backend::is_healthy)
    }

    /// Whether any backend takes traffic (`/readyz`).
    pub(crate) fn any_healthy(&self) -> bool {
        self.list.iter().any(Backend::is_healthy)
    }

    /// Mark a backend up or down; returns the transition if its state changed.
    pub(crate) fn set_healthy(&self, id: BackendId, healthy: bool) -> Option<Transition> {
        let b = self.get(id)?;
        let was = b.healthy.swap(healthy, Ordering::Relaxed);
        match (was, healthy) {
            (false, true) => {
                b.passive_failures.store(0, Ordering::Relaxed);
                Some(Transition::Up)
            }
            (true, false) => Some(Transition::Down),
            _ => None,
        }
    }

    /// Count a connect error or timeout on live traffic; true once `fall` have come in a row.
    pub(crate) fn passive_failure(&self, id: BackendId, fall: u32) -> bool {
        self.get(id)
            .is_some_and(|b| b.passive_failures.fetch_add(1, Ordering::Relaxed) + 1 >= fall)
    }

    /// A success on live traffic resets the passive failure count.
    pub(crate) fn passive_success(&self, id: BackendId) {
        if let Some(b) = self.get(id)
            && b.passive_failures.load(Ordering::Relaxed) != 0
        {
            b.passive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Count a request in flight on `id` until the guard drops.
    pub(crate) fn start_request(self: &Arc<Self>, id: BackendId) -> InFlight {
        if let Some(b) = self.get(id) {
            b.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        InFlight {
            backends: self.clone(),
            id,
        }
    }
}

impl BackendHealth for Backends {
    fn is_healthy(&self, backend: BackendId) -> bool {
        self.get(backend).is_some_and(Backend::is_healthy)
    }
}

/// Counts one request in flight (for `least_requests`) until dropped.
#[derive(Debug)]
pub(crate) struct InFlight {
    backends: Arc<Backends>,
    id: BackendId,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(b) = self.backends.get(self.id) {
            b.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
