//! The Alertmanager sink's delivery loop against a receiver on loopback that records every post:
//! whether a closed incident resolves the farm's alert, as the fleet view and `fleet` decide.
//!
//! Each case tells "no resolve was posted" from "not posted yet" by order, not by waiting: the
//! sink posts its notices in the order it gets them, so once the post of a later notice has
//! arrived, a resolve that would have come before it has not been sent.

use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::*;
use crate::report::sinks::fleet_view::OthersOpen;

/// A receiver that answers 200 to every post and hands its JSON body to the test.
async fn receiver() -> (Uri, mpsc::UnboundedReceiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let _ = tx.send(serde_json::from_slice::<Value>(&body).unwrap());
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (url, rx)
}

struct Running {
    handle: SinkHandle,
    posts: mpsc::UnboundedReceiver<Value>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// An Alertmanager sink for farm "shop" asking `view`. Re-sends are an hour apart, so every
    /// post a case sees answers a notice it sent.
    async fn start(view: Arc<dyn FleetIncidents>, fleet: bool) -> Self {
        Self::start_every(view, fleet, Duration::from_secs(3600)).await
    }

    /// The same sink re-sending every `resend_every`.
    async fn start_every(
        view: Arc<dyn FleetIncidents>,
        fleet: bool,
        resend_every: Duration,
    ) -> Self {
        let (url, posts) = receiver().await;
        let config = AlertmanagerConfig {
            sink: SinkConfig {
                url,
                resend_every,
                timeout: Duration::from_millis(500),
                tls: None,
            },
            farm: "shop".into(),
            fleet,
        };
        let (stop, stopped) = watch::channel(false);
        let metrics = Arc::new(Metrics::new(["node-a", "node-b"]));
        let (handle, task) = spawn(Sink::Alertmanager(config, view), metrics, stopped);
        Self {
            handle,
            posts,
            stop,
            task,
        }
    }

    fn send(&self, kind: NoticeKind, incident: &str) {
        let mut n = notice_of(kind);
        n.line.incident_id = incident.into();
        self.handle.send(Arc::new(n));
    }

    /// The next post: the incident it is about, and whether it resolves the alert.
    async fn next_post(&mut self) -> (String, bool) {
        let post = tokio::time::timeout(Duration::from_secs(10), self.posts.recv())
            .await
            .expect("a post within 10 s")
            .expect("the receiver runs");
        let alert = &post[0];
        assert_eq!(alert["labels"]["farm"], "shop", "{alert}");
        let ends = humantime::parse_rfc3339(alert["endsAt"].as_str().unwrap()).unwrap();
        let incident = alert["annotations"]["incident"]
            .as_str()
            .unwrap()
            .to_owned();
        (incident, ends <= SystemTime::now())
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        self.task.await.unwrap();
    }
}

const FIRING: bool = false;
const RESOLVES: bool = true;

#[tokio::test]
async fn a_closed_incident_leaves_the_alert_to_a_replica_that_still_sees_one() {
    let fleet = InProcessFleet::new();
    let other = fleet.member();
    let mut sink = Running::start(fleet.member(), false).await;
    other.own_incident(true);
    sink.send(NoticeKind::Opened, "first");
    assert_eq!(sink.next_post().await, ("first".into(), FIRING));
    assert_eq!(fleet.open_count(), 2);
    sink.send(NoticeKind::Resolved, "first");
    sink.send(NoticeKind::Opened, "second");
    assert_eq!(
        sink.next_post().await,
        ("second".into(), FIRING),
        "the other replica still sees the incident: no resolve"
    );
    // Once the other replica's incident is over too, this one's resolve ends the alert.
    other.own_incident(false);
    sink.send(NoticeKind::Resolved, "second");
    assert_eq!(sink.next_post().await, ("second".into(), RESOLVES));
    assert_eq!(fleet.open_count(), 0);
    sink.stop().await;
}

#[tokio::test]
async fn a_resolve_held_for_the_others_goes_out_once_they_have_closed() {
    // Two replicas that resolve within one exchange of each other each see the other still
    // open; the one that hears otherwise at its next tick resolves the alert after all.
    let fleet = InProcessFleet::new();
    let other = fleet.member();
    let mut sink = Running::start_every(fleet.member(), false, Duration::from_millis(200)).await;
    other.own_incident(true);
    sink.send(NoticeKind::Opened, "first");
    assert_eq!(sink.next_post().await, ("first".into(), FIRING));
    sink.send(NoticeKind::Resolved, "first");
    // The sink has taken the resolve (it counted itself out) and asked, in the same step, while
    // the other was still open.
    while fleet.open_count() != 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    other.own_incident(false);
    assert_eq!(
        sink.next_post().await,
        ("first".into(), RESOLVES),
        "the held resolve never went out: the alert was left to expire"
    );
    sink.stop().await;
}

#[tokio::test]
async fn without_a_shared_view_the_fleet_setting_decides() {
    // A single proxy (fleet = false) resolves as it always has.
    let mut sink = Running::start(Arc::new(NoSharedView), false).await;
    sink.send(NoticeKind::Opened, "first");
    assert_eq!(sink.next_post().await, ("first".into(), FIRING));
    sink.send(NoticeKind::Resolved, "first");
    assert_eq!(sink.next_post().await, ("first".into(), RESOLVES));
    sink.stop().await;

    // In a fleet with no shared view, the alert is left to expire by its endsAt.
    let mut sink = Running::start(Arc::new(NoSharedView), true).await;
    sink.send(NoticeKind::Opened, "first");
    assert_eq!(sink.next_post().await, ("first".into(), FIRING));
    sink.send(NoticeKind::Resolved, "first");
    sink.send(NoticeKind::Opened, "second");
    assert_eq!(sink.next_post().await, ("second".into(), FIRING));
    sink.stop().await;
}

/// A view that never answers, as a shared store that hangs would.
struct Hung;

impl FleetIncidents for Hung {
    fn others_open(&self) -> OthersOpen<'_> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test]
async fn a_view_that_does_not_answer_in_time_counts_as_no_view() {
    let mut sink = Running::start(Arc::new(Hung), false).await;
    sink.send(NoticeKind::Opened, "first");
    assert_eq!(sink.next_post().await, ("first".into(), FIRING));
    sink.send(NoticeKind::Resolved, "first");
    assert_eq!(sink.next_post().await, ("first".into(), RESOLVES));
    sink.stop().await;
}

#[tokio::test]
async fn a_replica_that_stops_while_it_sees_an_incident_counts_itself_out() {
    let fleet = InProcessFleet::new();
    let mut sink = Running::start(fleet.member(), false).await;
    sink.send(NoticeKind::Opened, "first");
    assert_eq!(sink.next_post().await, ("first".into(), FIRING));
    assert_eq!(fleet.open_count(), 1);
    sink.stop().await;
    assert_eq!(
        fleet.open_count(),
        0,
        "a stopped replica would keep the others from resolving"
    );
}
