//! Choosing a backend for a request that is not pinned.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use sessionwatch_core::BackendId;

use crate::backends::Backends;
use crate::config::BalancePolicy;

/// Picks healthy backends under a balancing policy, over the farm as it is now (the backends'
/// [`crate::backends::Live`] picture, which carries the weighted wheel).
#[derive(Debug)]
pub(crate) struct Balancer {
    /// The policy, `least_requests` when set (a reload may change it). A relaxed load beside the
    /// counters every pick touches: nothing a request would notice.
    least_requests: AtomicBool,
    backends: Arc<Backends>,
    next: AtomicUsize,
    rng: AtomicU64,
}

impl Balancer {
    /// A balancer over `backends`.
    pub(crate) fn new(policy: BalancePolicy, backends: Arc<Backends>) -> Self {
        Self {
            least_requests: AtomicBool::new(policy == BalancePolicy::LeastRequests),
            backends,
            next: AtomicUsize::new(0),
            rng: AtomicU64::new(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id())),
        }
    }

    /// Spread new requests under `policy` from now on.
    pub(crate) fn set_policy(&self, policy: BalancePolicy) {
        self.least_requests
            .store(policy == BalancePolicy::LeastRequests, Ordering::Relaxed);
    }

    /// A healthy backend, or `None` when every backend is down.
    pub(crate) fn pick(&self) -> Option<BackendId> {
        self.pick_from(&self.backends.live())
    }

    /// [`Balancer::pick`] over `live`, a picture of the farm that may be older than the one in
    /// place now: when none of its backends is up because the farm changed meanwhile (a reload
    /// or discovery swapped every member: the old ones are no members any more), the pick is
    /// made again once over the new picture rather than answering 503 with healthy backends.
    fn pick_from(&self, live: &Arc<crate::backends::Live>) -> Option<BackendId> {
        if let Some(id) = self.pick_in(&live.wheel) {
            return Some(id);
        }
        let now = self.backends.live();
        if Arc::ptr_eq(live, &now) {
            return None;
        }
        self.pick_in(&now.wheel)
    }

    fn pick_in(&self, wheel: &[BackendId]) -> Option<BackendId> {
        if wheel.is_empty() {
            return None;
        }
        if self.least_requests.load(Ordering::Relaxed) {
            self.least_requests(wheel)
        } else {
            self.round_robin(wheel)
        }
    }

    fn round_robin(&self, wheel: &[BackendId]) -> Option<BackendId> {
        let n = wheel.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| wheel[(start + i) % n])
            .find(|id| self.backends.is_up(*id))
    }

    /// splitmix64 over an atomic: statistically fine for choosing two backends, no lock.
    fn random(&self) -> u64 {
        let mut z = self
            .rng
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Power of two choices: two random healthy backends (drawn by weight from the wheel), the
    /// one with fewer in-flight requests per unit of weight wins.
    fn least_requests(&self, wheel: &[BackendId]) -> Option<BackendId> {
        let n = wheel.len() as u64;
        let draw = || {
            let start = (self.random() % n) as usize;
            (0..wheel.len())
                .map(|i| wheel[(start + i) % wheel.len()])
                .find(|id| self.backends.is_up(*id))
        };
        let a = draw()?;
        let b = draw()?;
        let load = |id: BackendId| {
            self.backends.get(id).map_or(u64::MAX, |b| {
                (b.in_flight() as u64 * 1000) / u64::from(b.weight().max(1))
            })
        };
        Some(if load(b) < load(a) { b } else { a })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendConfig;

    fn backends(weights: &[u32]) -> Arc<Backends> {
        let configs: Vec<BackendConfig> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| BackendConfig {
                // Named so that their order by name is their order in the list.
                name: format!("b{i:02}"),
                authority: format!("127.0.0.1:{}", 9000 + i).parse().unwrap(),
                weight: *w,
                tls: None,
            })
            .collect();
        Arc::new(Backends::new(&configs))
    }

    fn counts(b: &Balancer, n: usize, len: usize) -> Vec<usize> {
        let mut c = vec![0; len];
        for _ in 0..n {
            c[b.pick().unwrap().index()] += 1;
        }
        c
    }

    #[test]
    fn a_pick_over_a_farm_swapped_meanwhile_is_made_over_the_new_one() {
        for policy in [BalancePolicy::RoundRobin, BalancePolicy::LeastRequests] {
            let farm = backends(&[1, 1]);
            let bal = Balancer::new(policy, farm.clone());
            farm.set_members(&[BackendId(0)]);
            // A request read the farm when only b00 was in it; then a reload made b01 the
            // whole farm, and b00 is no member any more.
            let before = farm.live().clone();
            farm.set_members(&[BackendId(1)]);
            assert!(bal.pick_in(&before.wheel).is_none(), "{policy:?}");
            assert_eq!(bal.pick_from(&before), Some(BackendId(1)), "{policy:?}");
            // With nothing up in the farm as it is, there is nothing to pick.
            farm.set_healthy(BackendId(1), false);
            assert_eq!(bal.pick(), None, "{policy:?}");
        }
    }

    #[test]
    fn round_robin_follows_weights_and_interleaves() {
        let bal = Balancer::new(BalancePolicy::RoundRobin, backends(&[3, 1]));
        assert_eq!(counts(&bal, 400, 2), vec![300, 100]);
        let wheel: Vec<u16> = bal.backends.live().wheel.iter().map(|b| b.0).collect();
        assert_eq!(
            wheel,
            vec![0, 0, 1, 0],
            "smooth: the light backend is not left to the end"
        );
    }

    #[test]
    fn unhealthy_backends_are_skipped_and_none_when_all_down() {
        let b = backends(&[1, 1, 1]);
        let bal = Balancer::new(BalancePolicy::RoundRobin, b.clone());
        b.set_healthy(BackendId(1), false);
        assert_eq!(counts(&bal, 300, 3)[1], 0);
        let lr = Balancer::new(BalancePolicy::LeastRequests, b.clone());
        assert_eq!(counts(&lr, 300, 3)[1], 0);
        for i in 0..3 {
            b.set_healthy(BackendId(i), false);
        }
        assert_eq!(bal.pick(), None);
        assert_eq!(lr.pick(), None);
    }

    #[test]
    fn least_requests_prefers_the_idle_backend() {
        let b = backends(&[1, 1]);
        let bal = Balancer::new(BalancePolicy::LeastRequests, b.clone());
        let _busy: Vec<_> = (0..10).map(|_| b.start_request(BackendId(0))).collect();
        let c = counts(&bal, 1000, 2);
        // Backend 0 wins only when both draws land on it (about a quarter of the time).
        assert!(c[1] > 650, "{c:?}");
        drop(_busy);
        let c = counts(&bal, 2000, 2);
        assert!(c[0] > 800 && c[1] > 800, "even when idle: {c:?}");
    }

    #[test]
    fn a_backend_that_joins_gets_traffic_and_one_that_leaves_none() {
        let b = backends(&[1, 1]);
        let bal = Balancer::new(BalancePolicy::RoundRobin, b.clone());
        let c = b.add("b02", "127.0.0.1:9002".parse().unwrap(), 1).unwrap();
        assert_eq!(counts(&bal, 300, 3)[2], 0, "known is not yet a member");
        b.set_members(&[BackendId(0), BackendId(1), c]);
        assert_eq!(counts(&bal, 300, 3), vec![100, 100, 100]);
        b.set_members(&[BackendId(1), c]);
        assert_eq!(counts(&bal, 300, 3), vec![0, 150, 150]);
    }

    #[test]
    fn least_requests_follows_weights_when_idle() {
        let bal = Balancer::new(BalancePolicy::LeastRequests, backends(&[3, 1]));
        let c = counts(&bal, 4000, 2);
        assert!(c[0] > 2 * c[1], "{c:?}");
    }
}
