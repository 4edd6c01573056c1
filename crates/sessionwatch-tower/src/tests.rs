//! The layer end to end over a `service_fn` farm.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use sessionwatch_core::{
    Attribution, BackendId, CookieSpec, Fingerprinter, Outcome, PinPolicy, ResetSignal,
    RouteDecision, SessionProfile,
};
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::{
    BackendHealth, CompactStore, MokaStore, Observed, RescueAttempt, Rescued, ServedBy,
    SessionEvents, SessionLayer, SessionRoute, SessionStore,
};

type Body = Empty<bytes::Bytes>;

#[derive(Default)]
struct Log {
    observed: Mutex<Vec<(Outcome, BackendId, BackendId)>>,
    rescued: Mutex<Vec<(BackendId, BackendId, bool)>>,
    issued: Mutex<Vec<(BackendId, u32)>>,
}

impl SessionEvents for Log {
    fn observed(&self, e: &Observed<'_>) {
        self.observed
            .lock()
            .unwrap()
            .push((e.outcome, e.record.issuer, e.server));
    }
    fn rescued(&self, e: &Rescued<'_>) {
        self.rescued
            .lock()
            .unwrap()
            .push((e.from, e.to, e.still_lost));
    }
    fn issued(&self, server: BackendId, sessions: u32) {
        self.issued.lock().unwrap().push((server, sessions));
    }
}

struct AllHealthy;
impl BackendHealth for AllHealthy {
    fn is_healthy(&self, _: BackendId) -> bool {
        true
    }
}

/// A two-node farm with per-node stores: node `n` knows only the values `n` issued.
/// `/login` issues `n-<count>`; `/anon` without a cookie issues `n-anon-<serial>`, a fresh
/// anonymous session as PHP would; anything else with a foreign value redirects to login.
/// Requests go to node 1 unless pinned.
fn farm(
    routes: Arc<Mutex<Vec<Option<RouteDecision>>>>,
) -> impl Service<Request<Body>, Response = Response<String>, Error = Infallible> + Clone {
    let serial = Arc::new(AtomicU64::new(0));
    service_fn(move |req: Request<Body>| {
        let routes = routes.clone();
        let serial = serial.clone();
        async move {
            let decision = req.extensions().get::<SessionRoute>().map(|r| r.decision);
            routes.lock().unwrap().push(decision);
            let node = match (decision, req.extensions().get::<RescueAttempt>()) {
                (_, Some(RescueAttempt(b))) => *b,
                (Some(RouteDecision::Pin(b)), _) => b,
                _ => BackendId(1),
            };
            let cookie = req
                .headers()
                .get("cookie")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let mut resp = Response::new(String::new());
            if req.uri().path() == "/login" {
                resp.headers_mut().insert(
                    "set-cookie",
                    format!("SID={}-{}; Path=/", node.0, cookie.len())
                        .parse()
                        .unwrap(),
                );
            } else if req.uri().path() == "/anon" && cookie.is_empty() {
                let n = serial.fetch_add(1, Ordering::Relaxed);
                resp.headers_mut().insert(
                    "set-cookie",
                    format!("SID={}-anon-{n}; Path=/", node.0).parse().unwrap(),
                );
            } else if !cookie.starts_with(&format!("SID={}-", node.0)) {
                *resp.status_mut() = StatusCode::FOUND;
                resp.headers_mut()
                    .insert("location", "/login?return=%2Fme".parse().unwrap());
            }
            resp.extensions_mut().insert(ServedBy(node));
            Ok::<_, Infallible>(resp)
        }
    })
}

fn get(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::get(path);
    if let Some(c) = cookie {
        b = b.header("cookie", c);
    }
    b.body(Body::new()).unwrap()
}

/// Wait for `svc` to be ready and send it `req`.
async fn send<S>(svc: &mut S, req: Request<Body>) -> Response<String>
where
    S: Service<Request<Body>, Response = Response<String>, Error = Infallible>,
{
    svc.ready().await.unwrap().call(req).await.unwrap()
}

fn layer(store: Arc<MokaStore>) -> SessionLayer {
    let profile = SessionProfile::custom(vec![CookieSpec::new("SID")]);
    SessionLayer::new(profile, Fingerprinter::from_secret(b"t"), store)
}

#[tokio::test]
async fn new_sessions_are_reported_as_issued_by_their_backend_and_rotations_are_not() {
    let store = Arc::new(MokaStore::new(1000, Duration::from_secs(60)));
    let log = Arc::new(Log::default());
    let mut svc = layer(store.clone())
        .with_events(log.clone())
        .layer(farm(Arc::default()));

    let resp = send(&mut svc, get("/login", None)).await;
    let cookie = resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    store.run_pending_tasks();
    assert_eq!(*log.issued.lock().unwrap(), [(BackendId(1), 1)]);
    // A sign-in with a session carried issues the signed-in session: a new one.
    let resp = send(&mut svc, get("/login", Some(&cookie))).await;
    assert!(resp.headers().contains_key("set-cookie"));
    assert_eq!(log.issued.lock().unwrap().len(), 2);
    // A visitor without a cookie gets a new anonymous session.
    send(&mut svc, get("/anon", None)).await;
    assert_eq!(
        *log.issued.lock().unwrap(),
        [(BackendId(1), 1), (BackendId(1), 1), (BackendId(1), 1)]
    );
    // An answer that sets no session cookie issues nothing.
    send(&mut svc, get("/me", None)).await;
    assert_eq!(log.issued.lock().unwrap().len(), 3);

    // A rotating cookie re-issued on an ordinary answer is the same session.
    let rotating = SessionProfile::custom(vec![CookieSpec::new("AUTH").rotating(true)]);
    let log = Arc::new(Log::default());
    let serial = Arc::new(AtomicU64::new(0));
    let mut svc = SessionLayer::new(rotating, Fingerprinter::from_secret(b"t"), store.clone())
        .with_events(log.clone())
        .layer(service_fn(move |_: Request<Body>| {
            let n = serial.fetch_add(1, Ordering::Relaxed);
            let mut resp = Response::new(String::new());
            resp.headers_mut()
                .insert("set-cookie", format!("AUTH=ticket-{n}").parse().unwrap());
            resp.extensions_mut().insert(ServedBy(BackendId(0)));
            async move { Ok::<_, Infallible>(resp) }
        }));
    send(&mut svc, get("/page", None)).await;
    store.run_pending_tasks();
    let resp = send(&mut svc, get("/page", Some("AUTH=ticket-0"))).await;
    assert!(resp.headers().contains_key("set-cookie"));
    assert!(
        matches!(
            log.observed.lock().unwrap().last(),
            Some((Outcome::Renewed(_), _, _))
        ),
        "{:?}",
        log.observed.lock().unwrap()
    );
    assert_eq!(*log.issued.lock().unwrap(), [(BackendId(0), 1)]);
}

#[tokio::test]
async fn learns_only_from_set_cookie_and_classifies_the_next_request() {
    let store = Arc::new(MokaStore::new(1000, Duration::from_secs(60)));
    let log = Arc::new(Log::default());
    let routes = Arc::default();
    let mut svc = layer(store.clone())
        .with_events(log.clone())
        .layer(farm(routes));

    // Issued by node 1 (the default route): learned.
    let resp = send(&mut svc, get("/login", None)).await;
    let cookie = resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    store.run_pending_tasks();
    assert_eq!(store.len(), 1);

    // A value the client made up is not learned and not classified.
    let resp = send(&mut svc, get("/me", Some("SID=0-made-up"))).await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    store.run_pending_tasks();
    assert_eq!(store.len(), 1);
    assert!(log.observed.lock().unwrap().is_empty());

    // Node 1 knows its own session.
    send(&mut svc, get("/me", Some(&cookie))).await;
    assert_eq!(
        log.observed.lock().unwrap().last().unwrap().0,
        Outcome::Continued
    );
}

/// A store that knows session `SID=0-0` as issued by node 0 (which the farm routes to only
/// when pinned).
fn store_knowing_node0_session() -> Arc<MokaStore> {
    let store = Arc::new(MokaStore::new(1000, Duration::from_secs(60)));
    let fp = Fingerprinter::from_secret(b"t").fingerprint("SID", b"0-0");
    store.put(
        fp,
        sessionwatch_core::SessionRecord::issued(BackendId(0), sessionwatch_core::Timestamp::now()),
    );
    store
}

#[tokio::test]
async fn a_session_lost_on_another_node_is_a_cross_backend_reset() {
    let log = Arc::new(Log::default());
    let mut svc = layer(store_knowing_node0_session())
        .with_events(log.clone())
        .layer(farm(Arc::default()));
    let resp = send(&mut svc, get("/me", Some("SID=0-0"))).await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(
        log.observed.lock().unwrap().as_slice(),
        &[(
            Outcome::Reset {
                signal: ResetSignal::LoginRedirect,
                attribution: Attribution::CrossBackend
            },
            BackendId(0),
            BackendId(1)
        )]
    );
}

#[tokio::test]
async fn learn_policy_pins_known_sessions_to_their_issuer() {
    let store = store_knowing_node0_session();
    let routes: Arc<Mutex<Vec<Option<RouteDecision>>>> = Arc::default();
    let mut svc = layer(store)
        .with_pin_policy(PinPolicy::Learn)
        .layer(farm(routes.clone()));
    let resp = send(&mut svc, get("/me", Some("SID=0-0"))).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "pinned to node 0, which knows it"
    );
    let resp = send(&mut svc, get("/me", None)).await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(
        routes.lock().unwrap().as_slice(),
        &[
            Some(RouteDecision::Pin(BackendId(0))),
            Some(RouteDecision::Balance)
        ]
    );
}

#[tokio::test]
async fn rescue_replays_a_lost_get_once_on_the_issuer() {
    let log = Arc::new(Log::default());
    let routes: Arc<Mutex<Vec<Option<RouteDecision>>>> = Arc::default();
    let mut svc = layer(store_knowing_node0_session())
        .with_events(log.clone())
        .with_rescue(Arc::new(AllHealthy))
        .layer(farm(routes.clone()));
    let resp = send(&mut svc, get("/me", Some("SID=0-0"))).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "the client sees the issuer's answer"
    );
    assert_eq!(routes.lock().unwrap().len(), 2, "sent exactly twice");
    assert!(
        matches!(log.observed.lock().unwrap()[0].0, Outcome::Reset { .. }),
        "the reset is still reported"
    );
    assert_eq!(
        log.rescued.lock().unwrap().as_slice(),
        &[(BackendId(1), BackendId(0), false)]
    );

    // A POST is never replayed.
    let mut post = get("/me", Some("SID=0-0"));
    *post.method_mut() = http::Method::POST;
    let resp = send(&mut svc, post).await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(routes.lock().unwrap().len(), 3);
}

/// The first cookie a response sets, as a `Cookie` header value.
fn set_cookie(resp: &Response<String>) -> String {
    resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// Through the layer, with pinning on: a user signs in, then a flood of cookie-less
/// requests, each handed a fresh anonymous session, churns a table of ten through many times;
/// the user's session is still known and pinned. So is an anonymous session its client sent back
/// before the flood.
async fn signed_in_session_outlives_a_flood(store: Arc<dyn SessionStore>) {
    let routes: Arc<Mutex<Vec<Option<RouteDecision>>>> = Arc::default();
    let profile = SessionProfile::custom(vec![CookieSpec::new("SID")]);
    let mut svc = SessionLayer::new(profile, Fingerprinter::from_secret(b"t"), store.clone())
        .with_pin_policy(PinPolicy::Learn)
        .layer(farm(routes.clone()));
    // Node 1 (the farm's default) issues both: one to a sign-in, one to an anonymous visitor
    // who comes back with it.
    let mut sign_in = get("/login", None);
    *sign_in.method_mut() = http::Method::POST;
    let resp = send(&mut svc, sign_in).await;
    let user = set_cookie(&resp);
    let resp = send(&mut svc, get("/anon", None)).await;
    let visitor = set_cookie(&resp);
    assert_eq!(
        send(&mut svc, get("/me", Some(&visitor))).await.status(),
        StatusCode::OK
    );

    for _ in 0..200 {
        send(&mut svc, get("/anon", None)).await;
    }
    store.maintain();
    assert!(
        store.len() <= 10,
        "{} tracked in a table of ten",
        store.len()
    );
    assert!(
        store.evictions().unpresented >= 190,
        "{:?}",
        store.evictions()
    );
    assert_eq!(store.evictions().presented, 0);

    routes.lock().unwrap().clear();
    assert_eq!(
        send(&mut svc, get("/me", Some(&user))).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&mut svc, get("/me", Some(&visitor))).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        routes.lock().unwrap().as_slice(),
        &[Some(RouteDecision::Pin(BackendId(1))); 2],
        "both sessions still known, so pinned to their issuer"
    );
}

#[tokio::test]
async fn a_signed_in_session_outlives_a_flood_of_anonymous_ones_in_moka() {
    signed_in_session_outlives_a_flood(Arc::new(MokaStore::new(10, Duration::from_secs(60)))).await;
}

#[tokio::test]
async fn a_signed_in_session_outlives_a_flood_of_anonymous_ones_in_the_compact_store() {
    signed_in_session_outlives_a_flood(Arc::new(CompactStore::new(10, Duration::from_secs(60))))
        .await;
}
