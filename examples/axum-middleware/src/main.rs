//! An axum application that watches its own sessions with sessionwatch's tower layer.
//!
//! The app keeps its sessions in memory: `POST /login` (the body is a user name) starts one and
//! sets the `sid` cookie, `GET /me` answers 200 for a live session and a 302 to `/login`
//! otherwise, `POST /logout` ends one, and `POST /forget` drops them all, as a restart does to an
//! in-process store. The [`SessionLayer`] in front learns each session from the login's
//! `Set-Cookie` and reports when a request that carries one is answered as if it never existed.
//!
//! ```text
//! cargo run -p axum-middleware -- --listen 127.0.0.1:3000
//! curl -s -c jar -d alice http://127.0.0.1:3000/login
//! curl -si -b jar http://127.0.0.1:3000/me          # 200
//! curl -s -X POST http://127.0.0.1:3000/forget
//! curl -si -b jar http://127.0.0.1:3000/me          # 302, and the app prints the reset
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sessionwatch_core::{BackendId, CookieSpec, Fingerprinter, Outcome, SessionProfile};
use sessionwatch_tower::{MokaStore, Observed, SessionEvents, SessionLayer};

const COOKIE: &str = "sid";

/// Session id -> user name: the application's own, deliberately fragile, session store.
#[derive(Clone, Default)]
struct Sessions(Arc<Mutex<HashMap<String, String>>>);

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    // The OS random source does not fail on supported platforms; a zero id would only make this
    // example's sessions guessable, not wrong.
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix("sid="))
}

fn with_cookie(status: StatusCode, cookie: &str) -> Response {
    let mut resp = status.into_response();
    if let Ok(v) = HeaderValue::from_str(cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

async fn login(State(sessions): State<Sessions>, user: String) -> Response {
    let id = random_hex();
    sessions.lock().insert(id.clone(), user);
    with_cookie(
        StatusCode::OK,
        &format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax"),
    )
}

async fn me(State(sessions): State<Sessions>, headers: HeaderMap) -> Response {
    match session_id(&headers).and_then(|id| sessions.lock().get(id).cloned()) {
        Some(user) => format!("hello {user}\n").into_response(),
        None => (StatusCode::FOUND, [(header::LOCATION, "/login")]).into_response(),
    }
}

async fn logout(State(sessions): State<Sessions>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        sessions.lock().remove(id);
    }
    with_cookie(StatusCode::OK, &format!("{COOKIE}=; Path=/; Max-Age=0"))
}

async fn forget(State(sessions): State<Sessions>) -> StatusCode {
    sessions.lock().clear();
    StatusCode::NO_CONTENT
}

/// The application behind the session layer, reporting to `events`.
fn app(sessions: Sessions, events: Arc<dyn SessionEvents>) -> Router {
    let profile = SessionProfile::custom(vec![CookieSpec::new(COOKIE)]);
    let store = Arc::new(MokaStore::new(100_000, profile.idle_timeout()));
    let mut key = [0u8; 32];
    let _ = getrandom::fill(&mut key);
    let layer = SessionLayer::new(profile, Fingerprinter::from_key(key), store)
        .with_events(events)
        // The app is its own, single backend.
        .with_default_server(BackendId(0));
    Router::new()
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/me", get(me))
        .route("/forget", post(forget))
        .with_state(sessions)
        .layer(layer)
}

/// Print each reset with the short fingerprint only: never the session value.
fn print_reset(e: &Observed<'_>) {
    if let Outcome::Reset {
        signal,
        attribution,
    } = e.outcome
    {
        println!(
            "session reset: {} ({}) session {} on {} {} -> {}",
            signal.as_str(),
            attribution.as_str(),
            e.fingerprint.short(),
            e.method,
            e.uri.path(),
            e.status.as_u16()
        );
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 3000));
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next().map(|v| v.parse())) {
            ("--listen", Some(Ok(addr))) => listen = addr,
            _ => {
                eprintln!("usage: axum-middleware [--listen 127.0.0.1:3000]");
                std::process::exit(64);
            }
        }
    }
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!(
        "listening on {}: POST /login, GET /me, POST /logout, POST /forget",
        listener.local_addr()?
    );
    axum::serve(listener, app(Sessions::default(), Arc::new(print_reset))).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    /// The app with a hook that records every reset as "signal attribution".
    fn recording_app() -> (Router, Arc<Mutex<Vec<String>>>) {
        let resets = Arc::new(Mutex::new(Vec::new()));
        let seen = resets.clone();
        let hook = move |e: &Observed<'_>| {
            if let Outcome::Reset {
                signal,
                attribution,
            } = e.outcome
            {
                let line = format!("{} {}", signal.as_str(), attribution.as_str());
                seen.lock().unwrap().push(line);
            }
        };
        (app(Sessions::default(), Arc::new(hook)), resets)
    }

    async fn send(app: &Router, method: &str, path: &str, cookie: Option<&str>) -> Response {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        let req = req.body(Body::from("alice")).unwrap();
        app.clone().oneshot(req).await.unwrap()
    }

    fn cookie_of(resp: &Response) -> String {
        let set = resp.headers()[header::SET_COOKIE].to_str().unwrap();
        set.split(';').next().unwrap().to_owned()
    }

    #[tokio::test]
    async fn a_wiped_store_is_reported_as_a_reset() {
        let (app, resets) = recording_app();
        let cookie = cookie_of(&send(&app, "POST", "/login", None).await);
        assert_eq!(
            send(&app, "GET", "/me", Some(&cookie)).await.status(),
            StatusCode::OK
        );
        assert!(resets.lock().unwrap().is_empty());

        send(&app, "POST", "/forget", None).await;
        let resp = send(&app, "GET", "/me", Some(&cookie)).await;
        assert_eq!(resp.status(), StatusCode::FOUND);
        assert_eq!(resp.headers()[header::LOCATION], "/login");
        assert_eq!(
            *resets.lock().unwrap(),
            ["login_redirect same_backend".to_owned()]
        );
    }

    #[tokio::test]
    async fn logins_and_logouts_are_not_resets() {
        let (app, resets) = recording_app();
        let first = cookie_of(&send(&app, "POST", "/login", None).await);
        // Signing in again while carrying a live session: a new id on the login path.
        let second = cookie_of(&send(&app, "POST", "/login", Some(&first)).await);
        assert_ne!(first, second);
        for _ in 0..3 {
            let resp = send(&app, "GET", "/me", Some(&second)).await;
            assert_eq!(resp.status(), StatusCode::OK);
        }
        let resp = send(&app, "POST", "/logout", Some(&second)).await;
        assert!(cookie_of(&resp).ends_with('='));
        assert!(resets.lock().unwrap().is_empty(), "{resets:?}");
    }
}
