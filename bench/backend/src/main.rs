//! A backend for the benchmark harness (`bench/run.sh`): as little work per request as an HTTP
//! server can do, so that what the benchmark measures is the proxy in front of it.
//!
//! `sessionwatch-bench-backend PORT` listens on 127.0.0.1:PORT (0 picks a free port) and prints
//! `listening on 127.0.0.1:N` once it accepts connections. It answers:
//! - `GET /issue?sid=ID`: 200 with `Set-Cookie: SESSIONID=ID; Path=/; HttpOnly`, so a proxy in
//!   front learns the session `ID` (the harness's fill phase);
//! - `GET /health`: 200;
//! - anything else: 200 with a page of about 100 bytes and, when the request carries no
//!   `SESSIONID` cookie, a fresh random `SESSIONID`, as an application issues a session to a new
//!   visitor.
//!
//! One thread (a current-thread runtime): the farm of two such processes leaves the machine's
//! other core to the proxy and the load generator.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The cookie the farm issues.
const COOKIE_NAME: &str = "SESSIONID";

/// The page every ordinary request gets: 100 bytes.
const PAGE: &[u8] =
    b"<!doctype html><html><head><title>bench</title></head><body><p>hello from the farm</p></body></html>\n";

/// Fresh session ids: a counter run through splitmix64 from a random start, so that ids are
/// unique within the process and unpredictable across runs (what matters here is that they look
/// like a real application's: 32 hex digits, all distinct).
struct IdSource {
    next: AtomicU64,
    salt: u64,
}

impl IdSource {
    fn new() -> Self {
        let start = getrandom::u64().unwrap_or(0x5eed_5eed_5eed_5eed);
        let salt = getrandom::u64().unwrap_or(0x9e37_79b9_7f4a_7c15);
        Self {
            next: AtomicU64::new(start),
            salt,
        }
    }

    fn fresh(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{:016x}", splitmix64(n), splitmix64(n ^ self.salt))
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether the request's `Cookie` headers carry a `SESSIONID`.
fn has_session(req: &Request<Incoming>) -> bool {
    req.headers().get_all(COOKIE).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b';')
            .any(|pair| pair.trim_ascii_start().starts_with(b"SESSIONID="))
    })
}

/// The id in `sid=ID`, if it is a plain token that can go into a cookie unquoted.
fn sid_of(query: Option<&str>) -> Option<&str> {
    let sid = query?.split('&').find_map(|kv| kv.strip_prefix("sid="))?;
    let valid = !sid.is_empty()
        && sid.len() <= 128
        && sid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid.then_some(sid)
}

fn set_cookie(id: &str) -> Option<HeaderValue> {
    HeaderValue::try_from(format!("{COOKIE_NAME}={id}; Path=/; HttpOnly")).ok()
}

fn respond(req: &Request<Incoming>, ids: &IdSource) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    match req.uri().path() {
        "/health" => {}
        "/issue" => match sid_of(req.uri().query()).and_then(set_cookie) {
            Some(cookie) => {
                response.headers_mut().insert(SET_COOKIE, cookie);
            }
            None => *response.status_mut() = StatusCode::BAD_REQUEST,
        },
        _ => {
            *response.body_mut() = Full::new(Bytes::from_static(PAGE));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            if !has_session(req) {
                if let Some(cookie) = set_cookie(&ids.fresh()) {
                    response.headers_mut().insert(SET_COOKIE, cookie);
                }
            }
        }
    }
    response
}

async fn serve(listener: TcpListener) {
    let ids: &'static IdSource = Box::leak(Box::new(IdSource::new()));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of descriptors or a connection reset before accept: keep serving.
                eprintln!("accept: {e}");
                tokio::task::yield_now().await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| async move {
                Ok::<_, Infallible>(respond(&req, ids))
            });
            // A client that goes away mid-request is not worth reporting in a benchmark.
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn main() -> std::process::ExitCode {
    let port: u16 = match std::env::args().nth(1).map(|p| p.parse()) {
        Some(Ok(port)) => port,
        _ => {
            eprintln!("usage: sessionwatch-bench-backend PORT");
            return std::process::ExitCode::from(64);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot listen on {addr}: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        match listener.local_addr() {
            Ok(bound) => println!("listening on {bound}"),
            Err(e) => {
                eprintln!("cannot read the bound address: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
        serve(listener).await;
        std::process::ExitCode::SUCCESS
    })
}
