//! A Django-style farm whose sign-in needs a CSRF token, for the probe's sign-in tests.
//!
//! Each node serves, as Django's auth views do:
//!
//! - `GET /accounts/login/`: a form with a hidden `csrfmiddlewaretoken` and a `csrftoken`
//!   cookie. The form's token is the cookie's secret masked (here: reversed and prefixed), so
//!   the two differ as Django's do and a client must read each from its own place;
//! - `POST /accounts/login/`: refused 403 unless it carries the `csrftoken` cookie and either
//!   the form field `csrfmiddlewaretoken` that matches it or an `X-CSRFToken` header equal to
//!   the cookie; with the right `username` and `password`, 302 to `/me` and a new `sessionid`;
//!   with wrong ones, the form again (200) and no session;
//! - `GET /me`: the user, or a redirect to `/accounts/login/?next=/me` when the session is not
//!   in this node's store.
//!
//! Sessions live in one store for the farm or one per node, so the same farm can keep or lose
//! them across nodes. Every answer names its node in `x-served-by`.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use percent_encoding::percent_decode_str;
use rand::{Rng, SeedableRng};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::StoreMode;

/// The form field Django's template tag writes.
pub const CSRF_FIELD: &str = "csrfmiddlewaretoken";
/// Django's CSRF cookie.
pub const CSRF_COOKIE: &str = "csrftoken";
/// Django's session cookie.
pub const SESSION_COOKIE: &str = "sessionid";

/// What every node of the farm shares: who may sign in, the CSRF secrets it handed out, the
/// requests counted by kind.
#[derive(Debug)]
struct Site {
    username: String,
    password: String,
    secrets: Mutex<HashSet<String>>,
    next: AtomicU64,
    refused_csrf: AtomicU64,
    refused_credentials: AtomicU64,
}

impl Site {
    fn fresh(&self, kind: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let noise: u64 = rand::rngs::StdRng::from_os_rng().random();
        format!("{kind}{n:08}{noise:016x}")
    }
}

type Store = Arc<Mutex<HashMap<String, String>>>;

/// One node's view.
#[derive(Debug)]
struct CsrfNode {
    name: String,
    site: Arc<Site>,
    store: Store,
}

/// The masked form of a CSRF secret that the login form carries.
fn mask(secret: &str) -> String {
    format!("m{}", secret.chars().rev().collect::<String>())
}

/// A running CSRF farm; its nodes stop when it is dropped.
#[derive(Debug)]
pub struct CsrfFarm {
    nodes: Vec<(String, SocketAddr, JoinHandle<()>)>,
    site: Arc<Site>,
}

impl Drop for CsrfFarm {
    fn drop(&mut self) {
        for (_, _, task) in &self.nodes {
            task.abort();
        }
    }
}

impl CsrfFarm {
    /// `nodes` nodes on loopback ports, named `django-a`, `django-b`, ..., with one store or
    /// one each, where `username` with `password` may sign in.
    pub async fn start(
        nodes: usize,
        mode: StoreMode,
        username: &str,
        password: &str,
    ) -> io::Result<Self> {
        let site = Arc::new(Site {
            username: username.to_owned(),
            password: password.to_owned(),
            secrets: Mutex::new(HashSet::new()),
            next: AtomicU64::new(1),
            refused_csrf: AtomicU64::new(0),
            refused_credentials: AtomicU64::new(0),
        });
        let shared: Store = Arc::default();
        let mut out = Vec::new();
        for i in 0..nodes {
            let name = format!("django-{}", char::from(b'a' + (i % 26) as u8));
            let store = match mode {
                StoreMode::Shared => shared.clone(),
                StoreMode::PerNode => Arc::default(),
            };
            let node = Arc::new(CsrfNode {
                name: name.clone(),
                site: site.clone(),
                store,
            });
            let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
            let addr = listener.local_addr()?;
            let task = tokio::spawn(accept(listener, node));
            out.push((name, addr, task));
        }
        Ok(Self { nodes: out, site })
    }

    /// The nodes as (name, address).
    pub fn backends(&self) -> Vec<(String, SocketAddr)> {
        self.nodes.iter().map(|(n, a, _)| (n.clone(), *a)).collect()
    }

    /// Sign-ins refused for a missing or wrong CSRF token.
    pub fn refused_csrf(&self) -> u64 {
        self.site.refused_csrf.load(Ordering::Relaxed)
    }

    /// Sign-ins refused for wrong credentials.
    pub fn refused_credentials(&self) -> u64 {
        self.site.refused_credentials.load(Ordering::Relaxed)
    }
}

async fn accept(listener: TcpListener, node: Arc<CsrfNode>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let node = node.clone();
                async move { Ok::<_, Infallible>(handle(&node, req).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn head(status: StatusCode) -> http::response::Builder {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/html; charset=utf-8")
}

fn finish(b: http::response::Builder, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    // Every header set here is a valid static or formatted ASCII value.
    b.body(Full::new(body.into()))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

async fn handle(node: &CsrfNode, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let mut resp = match (req.method().clone(), req.uri().path()) {
        (Method::GET, "/accounts/login/") => login_form(node, None),
        (Method::POST, "/accounts/login/") => login(node, req).await,
        (Method::GET, "/me") => me(node, req.headers()),
        _ => finish(head(StatusCode::NOT_FOUND), "not found"),
    };
    if let Ok(v) = http::HeaderValue::from_str(&node.name) {
        resp.headers_mut().insert(crate::SERVED_BY_HEADER, v);
    }
    resp
}

fn login_form(node: &CsrfNode, error: Option<&str>) -> Response<Full<Bytes>> {
    let secret = node.site.fresh("c");
    node.site
        .secrets
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(secret.clone());
    let body = format!(
        "<!doctype html><form method=\"post\" action=\"/accounts/login/\">{}\
         <input type=\"hidden\" name=\"{CSRF_FIELD}\" value=\"{}\">\
         <input type=\"text\" name=\"username\"><input type=\"password\" name=\"password\">\
         <button>Sign in</button></form>",
        error
            .map(|e| format!("<p class=\"errornote\">{e}</p>"))
            .unwrap_or_default(),
        mask(&secret)
    );
    finish(
        head(StatusCode::OK).header(
            SET_COOKIE,
            format!("{CSRF_COOKIE}={secret}; Path=/; SameSite=Lax"),
        ),
        body,
    )
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

fn form_field(form: &str, name: &str) -> Option<String> {
    form.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        let decode = |s: &str| {
            percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        (decode(k) == name).then(|| decode(v))
    })
}

async fn login(node: &CsrfNode, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let Ok(form) = Limited::new(body, 64 * 1024).collect().await else {
        return finish(head(StatusCode::BAD_REQUEST), "bad form");
    };
    let form = String::from_utf8_lossy(&form.to_bytes()).into_owned();
    let secret = cookie(&parts.headers, CSRF_COOKIE).map(str::to_owned);
    let known = secret.as_ref().is_some_and(|s| {
        node.site
            .secrets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(s)
    });
    let by_field = form_field(&form, CSRF_FIELD);
    let by_header = parts
        .headers
        .get("x-csrftoken")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let token_ok = match (&secret, known) {
        (Some(s), true) => {
            by_field.as_deref() == Some(mask(s).as_str()) || by_header.as_deref() == Some(s)
        }
        _ => false,
    };
    if !token_ok {
        node.site.refused_csrf.fetch_add(1, Ordering::Relaxed);
        return finish(
            head(StatusCode::FORBIDDEN),
            "<h1>Forbidden (403)</h1><p>CSRF verification failed. Request aborted.</p>",
        );
    }
    let user = form_field(&form, "username").unwrap_or_default();
    let password = form_field(&form, "password").unwrap_or_default();
    if user != node.site.username || password != node.site.password {
        node.site
            .refused_credentials
            .fetch_add(1, Ordering::Relaxed);
        return login_form(node, Some("Please enter a correct username and password."));
    }
    let id = node.site.fresh("s");
    node.store
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id.clone(), user);
    finish(
        head(StatusCode::FOUND).header(LOCATION, "/me").header(
            SET_COOKIE,
            format!("{SESSION_COOKIE}={id}; HttpOnly; Path=/; SameSite=Lax"),
        ),
        "",
    )
}

fn me(node: &CsrfNode, headers: &HeaderMap) -> Response<Full<Bytes>> {
    let user = cookie(headers, SESSION_COOKIE).and_then(|id| {
        node.store
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    });
    match user {
        Some(user) => finish(head(StatusCode::OK), user),
        None => finish(
            head(StatusCode::FOUND).header(LOCATION, "/accounts/login/?next=/me"),
            "",
        ),
    }
}
