//! The affinity cookie through the layer: two replicas, each its own table, one key.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use sessionwatch_core::{
    Affinity, AffinityKey, AffinityRejection, BackendId, CookieSpec, Fingerprinter, Outcome,
    PinPolicy, ResetSignal, RouteDecision, SessionProfile, Timestamp,
};
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::{
    AffinityUse, BackendDirectory, MokaStore, Observed, ServedBy, SessionEvents, SessionLayer,
    SessionRoute, SessionStore,
};

type Body = Empty<bytes::Bytes>;
pub(super) const SECRET: &[u8] = b"fleet secret 0123456789";

#[derive(Default)]
pub(super) struct Seen {
    /// The `Cookie` header of every request the farm received.
    pub(super) cookies: Mutex<Vec<String>>,
    pub(super) routes: Mutex<Vec<Option<RouteDecision>>>,
    pub(super) uses: Mutex<Vec<AffinityUse>>,
    pub(super) observed: Mutex<Vec<(Outcome, BackendId, BackendId)>>,
}

struct Events(Arc<Seen>);

impl SessionEvents for Events {
    fn observed(&self, e: &Observed<'_>) {
        let seen = (e.outcome, e.record.issuer, e.server);
        self.0.observed.lock().unwrap().push(seen);
    }
    fn affinity(&self, event: AffinityUse) {
        self.0.uses.lock().unwrap().push(event);
    }
}

/// Two nodes with per-node stores: node `n` knows only the `n-…` values it issued. A request
/// goes to its pin, else to `balance_to`. `/login` issues a value; `/logout` deletes it; any
/// other path with a foreign value redirects to the login page.
fn farm(seen: Arc<Seen>, balance_to: Arc<AtomicU16>) -> Farm {
    Farm::new(service_fn(move |req: Request<Body>| {
        let seen = seen.clone();
        let node = match req.extensions().get::<SessionRoute>().map(|r| r.decision) {
            Some(RouteDecision::Pin(b)) => b,
            _ => BackendId(balance_to.load(Ordering::Relaxed)),
        };
        async move {
            let cookie: Vec<String> = req
                .headers()
                .get_all("cookie")
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect();
            let cookie = cookie.join("; ");
            seen.cookies.lock().unwrap().push(cookie.clone());
            seen.routes
                .lock()
                .unwrap()
                .push(req.extensions().get::<SessionRoute>().map(|r| r.decision));
            let mut resp = Response::new(String::new());
            match req.uri().path() {
                "/login" => {
                    let v = format!("SID={}-user; Path=/", node.0);
                    resp.headers_mut().insert("set-cookie", v.parse().unwrap());
                }
                "/logout" => {
                    let v = "SID=; Max-Age=0; Path=/";
                    resp.headers_mut().insert("set-cookie", v.parse().unwrap());
                }
                _ if !cookie.contains(&format!("SID={}-", node.0)) => {
                    *resp.status_mut() = StatusCode::FOUND;
                    resp.headers_mut()
                        .insert("location", "/login".parse().unwrap());
                }
                _ => {}
            }
            resp.extensions_mut().insert(ServedBy(node));
            Ok::<_, Infallible>(resp)
        }
    }))
}

type Farm = tower::util::BoxCloneService<Request<Body>, Response<String>, Infallible>;

pub(super) struct Replica {
    pub(super) svc: crate::SessionService<Farm>,
    pub(super) store: Arc<MokaStore>,
    pub(super) seen: Arc<Seen>,
}

/// A replica with its own table, the shared secret (or `secret`), and the cookie on or off.
fn replica(secret: &[u8], policy: PinPolicy, affinity: bool, balance_to: u16) -> Replica {
    replica_with(secret, policy, affinity, balance_to, None, None)
}

/// As [`replica`], naming its backends through `directory` (else by index) and sharing
/// records through `fleet` when given.
pub(super) fn replica_with(
    secret: &[u8],
    policy: PinPolicy,
    affinity: bool,
    balance_to: u16,
    directory: Option<Arc<dyn BackendDirectory>>,
    fleet: Option<Arc<dyn crate::FleetStore>>,
) -> Replica {
    let seen = Arc::new(Seen::default());
    let balance_to = Arc::new(AtomicU16::new(balance_to));
    let store = Arc::new(MokaStore::new(100, Duration::from_secs(1800)));
    let profile = SessionProfile::custom(vec![CookieSpec::new("SID")])
        .with_logout_paths(vec!["/logout".into()]);
    let mut layer = SessionLayer::new(profile, Fingerprinter::from_secret(secret), store.clone())
        .with_pin_policy(policy)
        .with_events(Arc::new(Events(seen.clone())));
    if affinity {
        layer = layer.with_affinity_cookie("swaff", false);
    }
    if let Some(fleet) = fleet {
        layer = layer.with_fleet_store(fleet);
    }
    if let Some(directory) = directory {
        layer = layer.with_backend_directory(directory);
    }
    let inner = farm(seen.clone(), balance_to.clone());
    Replica {
        svc: layer.layer(inner),
        store,
        seen,
    }
}

pub(super) fn get(path: &str, cookie: &str) -> Request<Body> {
    let mut b = Request::get(path);
    if !cookie.is_empty() {
        b = b.header("cookie", cookie);
    }
    b.body(Body::new()).unwrap()
}

impl Replica {
    pub(super) async fn send(&mut self, path: &str, cookie: &str) -> Response<String> {
        let req = get(path, cookie);
        self.svc.ready().await.unwrap().call(req).await.unwrap()
    }
}

/// The `Set-Cookie` lines of `resp` for `name`.
fn set_cookies(resp: &Response<String>, name: &str) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .filter(|v| v.starts_with(&format!("{name}=")))
        .collect()
}

/// The value the affinity cookie's `Set-Cookie` gives.
fn affinity_value(resp: &Response<String>) -> String {
    let lines = set_cookies(resp, "swaff");
    assert_eq!(lines.len(), 1, "{lines:?}");
    lines[0]["swaff=".len()..]
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_replica_that_never_saw_the_issue_pins_from_the_cookie() {
    let mut a = replica(SECRET, PinPolicy::Learn, true, 0);
    let mut b = replica(SECRET, PinPolicy::Learn, true, 1);
    let login = a.send("/login", "").await;
    let lines = set_cookies(&login, "swaff");
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].ends_with("; Max-Age=1800; Path=/; HttpOnly; SameSite=Lax"),
        "{}",
        lines[0]
    );
    let swaff = affinity_value(&login);

    // B balances to node 1, which would redirect to login: the cookie pins it to node 0.
    let resp = b.send("/me", &format!("SID=0-user; swaff={swaff}")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        b.seen.routes.lock().unwrap()[0],
        Some(RouteDecision::Pin(BackendId(0)))
    );
    assert_eq!(*b.seen.uses.lock().unwrap(), [AffinityUse::Adopted]);
    let fp = Fingerprinter::from_secret(SECRET).fingerprint("SID", b"0-user");
    assert_eq!(b.store.get(fp).map(|r| r.issuer), Some(BackendId(0)));
    // The backend never sees the proxy's cookie.
    assert_eq!(*b.seen.cookies.lock().unwrap(), ["SID=0-user"]);
}

#[tokio::test]
async fn without_the_cookie_the_other_replica_does_not_know_the_session() {
    let mut a = replica(SECRET, PinPolicy::Learn, false, 0);
    let mut b = replica(SECRET, PinPolicy::Learn, false, 1);
    let login = a.send("/login", "").await;
    assert!(set_cookies(&login, "swaff").is_empty());
    let resp = b.send("/me", "SID=0-user").await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(
        b.seen.routes.lock().unwrap()[0],
        Some(RouteDecision::Balance)
    );
    assert!(b.seen.observed.lock().unwrap().is_empty());
}

#[tokio::test]
async fn with_pin_off_the_replica_attributes_the_reset_to_the_cookies_issuer() {
    let mut a = replica(SECRET, PinPolicy::Off, true, 0);
    let mut b = replica(SECRET, PinPolicy::Off, true, 1);
    let swaff = affinity_value(&a.send("/login", "").await);
    let resp = b.send("/me", &format!("SID=0-user; swaff={swaff}")).await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    let observed = b.seen.observed.lock().unwrap().clone();
    assert_eq!(observed.len(), 1);
    assert!(matches!(
        observed[0].0,
        Outcome::Reset {
            signal: ResetSignal::LoginRedirect,
            ..
        }
    ));
    assert_eq!((observed[0].1, observed[0].2), (BackendId(0), BackendId(1)));
}

#[tokio::test]
async fn forged_stale_mismatched_and_malformed_cookies_pin_nothing_and_teach_nothing() {
    let key = AffinityKey::derive(&Fingerprinter::from_secret(SECRET));
    let fp = Fingerprinter::from_secret(SECRET).fingerprint("SID", b"0-user");
    let now = Timestamp::now();
    let affinity = |minted_at| Affinity {
        issuer_tag: 0,
        issued_at: minted_at,
        minted_at,
    };
    let other_key = AffinityKey::derive(&Fingerprinter::from_secret(b"not the fleet's key"));
    let other_fp = Fingerprinter::from_secret(SECRET).fingerprint("SID", b"1-user");
    let stale = now
        .since(Timestamp::from_millis(0))
        .saturating_sub(Duration::from_secs(1801));
    let cases = [
        (
            other_key.mint(fp, &affinity(now)),
            AffinityRejection::Forged,
        ),
        (
            key.mint(other_fp, &affinity(now)),
            AffinityRejection::Forged,
        ),
        (
            key.mint(
                fp,
                &affinity(Timestamp::from_millis(stale.as_millis() as u64)),
            ),
            AffinityRejection::Stale,
        ),
        ("AAAA".to_owned(), AffinityRejection::Malformed),
    ];
    // The genuine cookie works on the same replica setup, so each case fails for its flaw.
    let mut control = replica(SECRET, PinPolicy::Learn, true, 1);
    control
        .send(
            "/me",
            &format!("SID=0-user; swaff={}", key.mint(fp, &affinity(now))),
        )
        .await;
    assert_eq!(*control.seen.uses.lock().unwrap(), [AffinityUse::Adopted]);

    for (value, why) in cases {
        let mut b = replica(SECRET, PinPolicy::Learn, true, 1);
        let resp = b.send("/me", &format!("SID=0-user; swaff={value}")).await;
        assert_eq!(resp.status(), StatusCode::FOUND, "{why:?}");
        assert_eq!(
            b.seen.routes.lock().unwrap()[0],
            Some(RouteDecision::Balance)
        );
        assert_eq!(*b.seen.uses.lock().unwrap(), [AffinityUse::Rejected(why)]);
        assert!(b.store.get(fp).is_none(), "{why:?}");
        assert!(b.seen.observed.lock().unwrap().is_empty());
        assert_eq!(*b.seen.cookies.lock().unwrap(), ["SID=0-user"]);
    }
}

#[tokio::test]
async fn a_logout_expires_the_cookie_and_a_known_session_is_not_verified_again() {
    let mut a = replica(SECRET, PinPolicy::Learn, true, 0);
    let swaff = affinity_value(&a.send("/login", "").await);
    let cookie = format!("SID=0-user; swaff={swaff}");
    let me = a.send("/me", &cookie).await;
    assert!(set_cookies(&me, "swaff").is_empty());
    assert!(a.seen.uses.lock().unwrap().is_empty());
    let out = a.send("/logout", &cookie).await;
    assert_eq!(
        set_cookies(&out, "swaff"),
        ["swaff=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"]
    );
    assert!(
        a.seen
            .cookies
            .lock()
            .unwrap()
            .iter()
            .all(|c| !c.contains("swaff"))
    );
}

#[tokio::test]
async fn with_the_cookie_off_a_client_cookie_of_that_name_passes_untouched() {
    let mut b = replica(SECRET, PinPolicy::Learn, false, 1);
    b.send("/me", "SID=1-user; swaff=whatever").await;
    assert_eq!(
        *b.seen.cookies.lock().unwrap(),
        ["SID=1-user; swaff=whatever"]
    );
    assert!(b.seen.uses.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_active_session_gets_a_fresh_cookie_before_its_own_runs_out() {
    let key = AffinityKey::derive(&Fingerprinter::from_secret(SECRET));
    let fp = Fingerprinter::from_secret(SECRET).fingerprint("SID", b"0-user");
    let now = Timestamp::now();
    let minted = |ago: u64| {
        let at = Timestamp::from_millis(now.as_millis() - ago * 1000);
        key.mint(
            fp,
            &Affinity {
                issuer_tag: 0,
                issued_at: at,
                minted_at: at,
            },
        )
    };
    let mut b = replica(SECRET, PinPolicy::Learn, true, 1);
    // Adopted from a cookie minted 15 of the 30 minutes ago: the answer carries a fresh one.
    let resp = b
        .send("/me", &format!("SID=0-user; swaff={}", minted(900)))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let fresh = affinity_value(&resp);
    let got = key
        .verify(
            fresh.as_bytes(),
            fp,
            Timestamp::now(),
            Duration::from_secs(1800),
        )
        .unwrap();
    assert_eq!(got.issuer_tag, 0);
    assert_eq!(got.issued_at.as_millis(), now.as_millis() - 900_000);
    assert!(Timestamp::now().since(got.minted_at) < Duration::from_secs(60));
    // A recent one is left alone.
    let resp = b.send("/me", &format!("SID=0-user; swaff={fresh}")).await;
    assert!(set_cookies(&resp, "swaff").is_empty());
    // A known session whose client dropped the cookie gets it back.
    let resp = b.send("/me", "SID=0-user").await;
    assert_eq!(affinity_value(&resp).len(), 50);
}

/// Backends known by tag, in this replica's order; counts the tags it was asked about.
struct Tags {
    tags: Vec<u32>,
    asked: Mutex<Vec<u32>>,
}

impl BackendDirectory for Tags {
    fn tag(&self, backend: BackendId) -> u32 {
        self.tags[backend.index()]
    }

    fn resolve(&self, tag: u32) -> Option<BackendId> {
        self.asked.lock().unwrap().push(tag);
        let i = self.tags.iter().position(|t| *t == tag)?;
        Some(BackendId(u16::try_from(i).unwrap()))
    }
}

fn tags(tags: &[u32]) -> Arc<Tags> {
    Arc::new(Tags {
        tags: tags.to_vec(),
        asked: Mutex::new(Vec::new()),
    })
}

#[tokio::test]
async fn replicas_that_number_the_backends_otherwise_agree_through_the_tags() {
    // A's node 0 is B's node 1: the cookie names it by tag, and B pins to its own id for it.
    let (on_a, on_b) = (tags(&[0xaaaa, 0xbbbb]), tags(&[0xbbbb, 0xaaaa]));
    let mut a = replica_with(SECRET, PinPolicy::Learn, true, 0, Some(on_a), None);
    let mut b = replica_with(SECRET, PinPolicy::Learn, true, 0, Some(on_b.clone()), None);
    let swaff = affinity_value(&a.send("/login", "").await);
    b.send("/me", &format!("SID=0-user; swaff={swaff}")).await;
    assert_eq!(*on_b.asked.lock().unwrap(), [0xaaaa]);
    assert_eq!(
        b.seen.routes.lock().unwrap()[0],
        Some(RouteDecision::Pin(BackendId(1)))
    );
    let fp = Fingerprinter::from_secret(SECRET).fingerprint("SID", b"0-user");
    assert_eq!(b.store.get(fp).map(|r| r.issuer), Some(BackendId(1)));
}

#[tokio::test]
async fn a_cookie_whose_issuer_this_replica_has_not_resolved_leaves_the_session_unknown() {
    let mut a = replica_with(SECRET, PinPolicy::Off, true, 0, Some(tags(&[0xaaaa])), None);
    let not_yet = tags(&[0xcccc]);
    let mut b = replica_with(SECRET, PinPolicy::Off, true, 1, Some(not_yet.clone()), None);
    let swaff = affinity_value(&a.send("/login", "").await);
    // B balances to node 1, which does not know the session: with an issuer, that would be a
    // reset; an unknown session gives no verdict.
    let resp = b.send("/me", &format!("SID=0-user; swaff={swaff}")).await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(*b.seen.uses.lock().unwrap(), [AffinityUse::Unresolved]);
    assert_eq!(
        *not_yet.asked.lock().unwrap(),
        [0xaaaa],
        "the directory heard of the tag"
    );
    assert!(b.seen.observed.lock().unwrap().is_empty(), "no verdict");
    assert_eq!(
        b.seen.routes.lock().unwrap()[0],
        Some(RouteDecision::Balance)
    );
    let fp = Fingerprinter::from_secret(SECRET).fingerprint("SID", b"0-user");
    assert!(b.store.get(fp).is_none(), "nothing learnt from it");
}
