//! The refresh logic on paused time, with a resolver whose answers the test changes.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::time::sleep;

use super::*;
use crate::config::BackendConfig;

const REFRESH: Duration = Duration::from_secs(5);

/// Answers what the test last set (`None`: fails), counting the questions.
#[derive(Default)]
struct Scripted {
    answer: Mutex<Option<Vec<SocketAddr>>>,
    asked: AtomicUsize,
}

impl Scripted {
    fn answer(&self, addrs: &[&str]) {
        *self.answer.lock().unwrap() = Some(addrs.iter().map(|a| a.parse().unwrap()).collect());
    }

    fn fail(&self) {
        *self.answer.lock().unwrap() = None;
    }

    fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }
}

impl Resolve for Scripted {
    fn resolve(&self, _: &DnsTarget) -> Resolving {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let answer = self.answer.lock().unwrap().clone();
        Box::pin(std::future::ready(
            answer.ok_or_else(|| ResolveError::Failed("SERVFAIL".into())),
        ))
    }
}

/// What the hooks heard: `joining` calls, and each change as names.
#[derive(Default)]
struct Heard {
    joining: Mutex<Vec<(BackendId, bool)>>,
    changes: Mutex<Vec<(Vec<BackendId>, Vec<BackendId>)>>,
}

impl Hooks for Heard {
    fn joining(&self, id: BackendId, initial: bool) {
        self.joining.lock().unwrap().push((id, initial));
    }

    fn changed(&self, change: &Change, _: std::time::SystemTime) {
        self.changes
            .lock()
            .unwrap()
            .push((change.joined.clone(), change.left.clone()));
    }
}

struct Setup {
    discovery: Arc<Discovery>,
    backends: Arc<Backends>,
    metrics: Arc<Metrics>,
    resolver: Arc<Scripted>,
    heard: Arc<Heard>,
    _shutdown: watch::Sender<bool>,
}

impl Setup {
    fn names(&self) -> Vec<String> {
        let live = self.backends.live();
        live.members
            .iter()
            .map(|id| self.backends.name(*id).to_owned())
            .collect()
    }

    fn id(&self, name: &str) -> BackendId {
        self.backends.by_name(name).unwrap()
    }

    fn changes(&self) -> Vec<(Vec<String>, Vec<String>)> {
        let names = |ids: &Vec<BackendId>| {
            ids.iter()
                .map(|id| self.backends.name(*id).to_owned())
                .collect()
        };
        self.heard
            .changes
            .lock()
            .unwrap()
            .iter()
            .map(|(j, l)| (names(j), names(l)))
            .collect()
    }
}

/// A farm of the configured `static-a` and one `dns` entry answered by a [`Scripted`] resolver
/// that first answers `first`; resolved once, and running.
async fn setup(first: &[&str]) -> Setup {
    let backends = Arc::new(Backends::new(&[BackendConfig {
        name: "static-a".into(),
        authority: "127.0.0.1:1".parse().unwrap(),
        weight: 1,
        tls: None,
    }]));
    let metrics = Arc::new(Metrics::new(["static-a"]));
    let resolver = Arc::new(Scripted::default());
    resolver.answer(first);
    let heard = Arc::new(Heard::default());
    let config = DiscoveryConfig {
        target: DnsTarget::Host {
            host: "app.test".into(),
            port: 8080,
        },
        text: "app.test:8080".into(),
        refresh: REFRESH,
        resolver: None,
        weight: 1,
        tls: None,
    };
    let discovery = Arc::new(Discovery::new(
        &[config],
        backends.clone(),
        metrics.clone(),
        heard.clone(),
        Some(resolver.clone()),
    ));
    discovery.resolve_all().await;
    let (tx, rx) = watch::channel(false);
    discovery.spawn(&rx);
    Setup {
        discovery,
        backends,
        metrics,
        resolver,
        heard,
        _shutdown: tx,
    }
}

/// Let the discovery tasks run what is due now.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_starting_farm_is_resolved_before_traffic_and_is_not_news() {
    let s = setup(&["10.0.0.2:8080", "10.0.0.1:8080"]).await;
    assert_eq!(s.names(), ["10.0.0.1:8080", "10.0.0.2:8080", "static-a"]);
    let joining = s.heard.joining.lock().unwrap().clone();
    assert_eq!(joining.len(), 2);
    assert!(joining.iter().all(|(_, initial)| *initial));
    assert!(s.changes().is_empty(), "no backend_joined lines at start");
    let text = s.metrics.render();
    assert!(
        text.contains("sessionwatch_backends{state=\"live\"} 3"),
        "{text}"
    );
    assert!(text.contains("sessionwatch_backend_up{backend=\"10.0.0.1:8080\"} 1"));
}

#[tokio::test(start_paused = true)]
async fn every_refresh_applies_the_answer_joins_and_leaves() {
    let s = setup(&["10.0.0.1:8080", "10.0.0.2:8080"]).await;
    let old = s.id("10.0.0.1:8080");
    s.resolver.answer(&["10.0.0.2:8080", "10.0.0.3:8080"]);
    sleep(REFRESH - Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(s.resolver.asked(), 1, "not before refresh");
    sleep(Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(s.resolver.asked(), 2);
    assert_eq!(s.names(), ["10.0.0.2:8080", "10.0.0.3:8080", "static-a"]);
    assert_eq!(
        s.changes(),
        [(
            vec!["10.0.0.3:8080".to_owned()],
            vec!["10.0.0.1:8080".to_owned()]
        )]
    );
    let new = s.id("10.0.0.3:8080");
    assert!(
        s.heard.joining.lock().unwrap().contains(&(new, false)),
        "the tracker hears of the join before the backend takes traffic"
    );
    assert!(!s.backends.is_up(old));
    // The address that left comes back with its old id.
    s.resolver.answer(&["10.0.0.1:8080"]);
    sleep(REFRESH).await;
    settle().await;
    assert_eq!(s.id("10.0.0.1:8080"), old);
    assert!(s.backends.is_up(old));
    assert_eq!(s.names(), ["10.0.0.1:8080", "static-a"]);
    let text = s.metrics.render();
    assert!(
        text.contains("sessionwatch_backends{state=\"left\"} 2"),
        "{text}"
    );
    assert!(text.contains("sessionwatch_backend_changes_total{change=\"joined\"} 2"));
    assert!(text.contains("sessionwatch_backend_changes_total{change=\"left\"} 3"));
}

#[tokio::test(start_paused = true)]
async fn a_failed_or_empty_resolution_keeps_the_last_known_set() {
    let s = setup(&["10.0.0.1:8080"]).await;
    s.resolver.fail();
    for _ in 0..3 {
        sleep(REFRESH).await;
        settle().await;
    }
    assert_eq!(s.resolver.asked(), 4);
    assert_eq!(s.names(), ["10.0.0.1:8080", "static-a"]);
    let text = s.metrics.render();
    assert!(
        text.contains("sessionwatch_discovery_failures_total{target=\"app.test:8080\"} 3"),
        "{text}"
    );
    assert!(text.contains("sessionwatch_discovery_up{target=\"app.test:8080\"} 0"));
    // An answer with no address is not "every pod is gone".
    s.resolver.answer(&[]);
    sleep(REFRESH).await;
    settle().await;
    assert_eq!(s.names(), ["10.0.0.1:8080", "static-a"]);
    s.resolver.answer(&["10.0.0.2:8080"]);
    sleep(REFRESH).await;
    settle().await;
    assert_eq!(s.names(), ["10.0.0.2:8080", "static-a"]);
    assert!(
        s.metrics
            .render()
            .contains("sessionwatch_discovery_up{target=\"app.test:8080\"} 1")
    );
    assert!(s.changes().len() == 1, "failures changed nothing");
}

#[tokio::test(start_paused = true)]
async fn a_wake_resolves_at_once_but_at_most_once_a_second() {
    let s = setup(&["10.0.0.1:8080"]).await;
    // Past the wake gap since the last resolution: the wake is answered at once.
    sleep(Duration::from_secs(2)).await;
    s.resolver.answer(&["10.0.0.1:8080", "10.0.0.9:8080"]);
    s.discovery.wake();
    settle().await;
    assert_eq!(s.resolver.asked(), 2);
    assert!(s.names().contains(&"10.0.0.9:8080".to_owned()));
    // A flood of wakes right after: one more resolution, a second after the last.
    for _ in 0..100 {
        s.discovery.wake();
        settle().await;
    }
    assert_eq!(s.resolver.asked(), 2);
    sleep(WAKE_GAP).await;
    settle().await;
    assert_eq!(s.resolver.asked(), 3);
}

#[tokio::test(start_paused = true)]
async fn replicas_given_the_answers_in_other_orders_name_the_farm_alike() {
    let one = setup(&["10.0.0.3:8080", "10.0.0.1:8080", "[fd00::2]:8080"]).await;
    let two = setup(&[
        "[fd00::2]:8080",
        "10.0.0.1:8080",
        "10.0.0.3:8080",
        "10.0.0.1:8080",
    ])
    .await;
    assert_eq!(one.names(), two.names());
    assert_eq!(
        one.names(),
        [
            "10.0.0.1:8080",
            "10.0.0.3:8080",
            "[fd00::2]:8080",
            "static-a"
        ]
    );
    for name in one.names() {
        assert_eq!(
            one.backends.tag(one.id(&name)),
            two.backends.tag(two.id(&name)),
            "{name}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_successor_learns_its_backends_before_it_takes_over_and_the_old_one_goes_quiet() {
    let s = setup(&["10.0.0.1:8080"]).await;
    let entry = s.discovery.entries[0].config.clone();
    let other = DiscoveryConfig {
        target: DnsTarget::Host {
            host: "other.test".into(),
            port: 8080,
        },
        text: "other.test:8080".into(),
        ..entry.clone()
    };

    // The same entry, and one more. Primed, it has changed nothing yet.
    s.resolver.answer(&["10.0.0.1:8080", "10.0.0.2:8080"]);
    let next = Arc::new(s.discovery.successor(&[entry.clone(), other]));
    next.prime().await;
    assert_eq!(s.names(), ["10.0.0.1:8080", "static-a"]);
    next.take_over(&s.discovery);
    assert_eq!(s.names(), ["10.0.0.1:8080", "10.0.0.2:8080", "static-a"]);
    assert_eq!(s.changes(), [(vec!["10.0.0.2:8080".to_owned()], vec![])]);

    // The same entry alone, whose resolution fails: it keeps the last known set.
    s.resolver.fail();
    let failing = Arc::new(next.successor(std::slice::from_ref(&entry)));
    failing.prime().await;
    failing.take_over(&next);
    assert_eq!(s.names(), ["10.0.0.1:8080", "10.0.0.2:8080", "static-a"]);
    assert_eq!(s.changes().len(), 1);

    // No entries: the discovered backends leave, the configured one stays.
    let none = Arc::new(failing.successor(&[]));
    none.prime().await;
    none.take_over(&failing);
    assert_eq!(s.names(), ["static-a"]);
    assert_eq!(s.changes()[1].1, ["10.0.0.1:8080", "10.0.0.2:8080"]);

    // The retired discoveries never resolve or publish again.
    let asked = s.resolver.asked();
    s.resolver.answer(&["10.0.0.9:8080"]);
    sleep(REFRESH * 3).await;
    assert_eq!(
        s.resolver.asked(),
        asked,
        "a retired discovery still resolves"
    );
    assert_eq!(s.names(), ["static-a"]);
}
