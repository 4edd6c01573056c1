//! How the proxy stops: the shutdown signal every background task takes (a watch channel that
//! turns `true` once), and the drain the client side goes through before it.
//!
//! A drain is what Kubernetes needs from a pod it is about to stop: `/readyz` fails at once and
//! answers ask clients to close their connections ([`Phase::Draining`]), while the listener keeps
//! accepting for `drain.delay`, since the endpoint is removed from the Service a little after the
//! signal and connections keep arriving until then. Then the listener closes and idle
//! connections with it, and in-flight requests get `drain.timeout` to finish
//! ([`Phase::Closing`]); whatever is still open then is dropped ([`Phase::Abandoned`]). The
//! connection loops only watch a [`DrainWatch`]; [`Drain::run`] holds the timing.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

/// Resolves once `shutdown` turns true (or its sender is gone). The guard `wait_for` returns is
/// not `Send`, so it is dropped here rather than held across a `select!`.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Where a drain is, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Not draining.
    Serving,
    /// Not ready; still accepting; every answer asks the client to close.
    Draining,
    /// No longer accepting; idle connections close, in-flight requests finish.
    Closing,
    /// Past the timeout: open connections are dropped.
    Abandoned,
}

/// `[drain]`: how long each part of a drain takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DrainTimes {
    /// Accepting on while the endpoint is taken out of rotation.
    pub delay: Duration,
    /// In-flight requests' time to finish once accepting stops.
    pub timeout: Duration,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drained {
    /// Every connection finished within the timeout.
    Complete,
    /// Some were still open at the timeout and were dropped.
    Abandoned,
}

/// The side that drives a drain.
#[derive(Debug)]
pub(crate) struct Drain {
    tx: watch::Sender<Phase>,
}

/// What the connection loops and `/readyz` watch. When the [`Drain`] is gone (the proxy was
/// dropped), every phase counts as reached.
#[derive(Debug, Clone)]
pub(crate) struct DrainWatch {
    rx: watch::Receiver<Phase>,
}

impl Drain {
    pub(crate) fn new() -> (Drain, DrainWatch) {
        let (tx, rx) = watch::channel(Phase::Serving);
        (Drain { tx }, DrainWatch { rx })
    }

    /// Go through the phases: `Draining` now, `Closing` after `times.delay`, then wait for
    /// `connections_closed` up to `times.timeout`, and `Abandoned` if it did not come.
    pub(crate) async fn run(
        &self,
        times: DrainTimes,
        connections_closed: impl Future<Output = ()>,
    ) -> Drained {
        self.tx.send_replace(Phase::Draining);
        if !times.delay.is_zero() {
            tokio::time::sleep(times.delay).await;
        }
        self.tx.send_replace(Phase::Closing);
        match tokio::time::timeout(times.timeout, connections_closed).await {
            Ok(()) => Drained::Complete,
            Err(_) => {
                self.tx.send_replace(Phase::Abandoned);
                Drained::Abandoned
            }
        }
    }
}

impl DrainWatch {
    /// Whether a drain has begun: answers ask clients to close, `/readyz` fails.
    pub(crate) fn is_draining(&self) -> bool {
        *self.rx.borrow() >= Phase::Draining
    }

    /// Whether accepting has stopped.
    pub(crate) fn is_closing(&self) -> bool {
        *self.rx.borrow() >= Phase::Closing
    }

    /// Resolves once the drain reaches `phase` (at once if it has, or if the drain is gone).
    pub(crate) async fn reached(&mut self, phase: Phase) {
        let _ = self.rx.wait_for(|p| *p >= phase).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::Notify;
    use tokio::time::Instant;

    use super::*;

    const TIMES: DrainTimes = DrainTimes {
        delay: Duration::from_secs(5),
        timeout: Duration::from_secs(25),
    };

    /// Each phase `watch` saw, with when, relative to `start`, until the drain is gone.
    async fn phase_times(mut watch: DrainWatch, start: Instant) -> Vec<(Phase, Duration)> {
        let mut seen = Vec::new();
        while watch.rx.changed().await.is_ok() {
            seen.push((*watch.rx.borrow_and_update(), start.elapsed()));
        }
        seen
    }

    #[tokio::test(start_paused = true)]
    async fn accepting_goes_on_for_the_delay_and_in_flight_requests_finish() {
        let (drain, watch) = Drain::new();
        assert!(!watch.is_draining());
        let start = Instant::now();
        let closed = Arc::new(Notify::new());
        let observer = tokio::spawn(phase_times(watch.clone(), start));
        let finisher = {
            let closed = closed.clone();
            let mut watch = watch.clone();
            async move {
                watch.reached(Phase::Closing).await;
                // The last request takes ten seconds after accepting stops.
                tokio::time::sleep(Duration::from_secs(10)).await;
                closed.notify_one();
            }
        };
        tokio::spawn(finisher);
        let drained = drain.run(TIMES, closed.notified()).await;
        assert_eq!(drained, Drained::Complete);
        assert_eq!(start.elapsed(), Duration::from_secs(15));
        assert!(watch.is_draining() && watch.is_closing());
        drop(drain);
        assert_eq!(
            observer.await.unwrap(),
            [
                (Phase::Draining, Duration::ZERO),
                (Phase::Closing, TIMES.delay)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn connections_still_open_at_the_timeout_are_abandoned() {
        let (drain, watch) = Drain::new();
        let start = Instant::now();
        let observer = tokio::spawn(phase_times(watch.clone(), start));
        let drained = drain.run(TIMES, std::future::pending()).await;
        assert_eq!(drained, Drained::Abandoned);
        drop(drain);
        assert_eq!(
            observer.await.unwrap(),
            [
                (Phase::Draining, Duration::ZERO),
                (Phase::Closing, TIMES.delay),
                (Phase::Abandoned, TIMES.delay + TIMES.timeout),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_without_delay_stops_accepting_at_once() {
        let (drain, mut watch) = Drain::new();
        let start = Instant::now();
        let drained = drain
            .run(
                DrainTimes {
                    delay: Duration::ZERO,
                    timeout: TIMES.timeout,
                },
                async {},
            )
            .await;
        assert_eq!(drained, Drained::Complete);
        watch.reached(Phase::Closing).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(*watch.rx.borrow() < Phase::Abandoned);
    }

    #[tokio::test]
    async fn a_dropped_drain_counts_as_every_phase_reached() {
        let (drain, mut watch) = Drain::new();
        drop(drain);
        watch.reached(Phase::Abandoned).await;
    }
}
