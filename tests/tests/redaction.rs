//! No raw session value reaches the proxy's own output, even at TRACE level: real traffic on
//! every path (plain HTTP/1.1, HTTP/1.1 handed to hyper, HTTP/2), lost sessions, a `jsessionid`
//! path parameter, credentials, the proxy's own error answers and the admin listener, with
//! every event of every crate captured.
//!
//! A file of its own: the subscriber is global to the process (the proxy's workers run on their
//! own threads), so no other test may share it.

use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sessionwatch_test_support::{FarmConfig, StoreMode};
use sessionwatch_tests::{Harness, http_get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Everything the subscriber writes, kept.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A credential the client sends that must never be printed either.
const BEARER: &str = "Bearer tok3n-never-logged-7f3a91";
/// A servlet-style session id in the path.
const PATH_SESSION: &str = "JSESSIONPATH0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_raw_session_value_reaches_trace_output() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    // Per-node sessions: most requests lose theirs, so resets are reported, pinned and logged.
    let h = Harness::start(
        FarmConfig::new(2, StoreMode::PerNode),
        "[incident]\nmax_reset_lines_per_sec = 1000000\n",
    )
    .await;
    let addr = h.proxy.addr();
    let mut values: Vec<String> = Vec::new();

    // Plain HTTP/1.1: sign in, use the session, lose it, sign out.
    for _ in 0..6 {
        let mut user = h.user();
        user.login().await.unwrap();
        for _ in 0..4 {
            let _ = user.me().await.unwrap();
        }
        let _ = user.logout().await;
        values.extend(user.all_cookie_values().iter().cloned());
    }
    let cookie = values.first().cloned().expect("the farm issued a session");

    // HTTP/1.1 handed to hyper (a chunked body), with the session and a credential.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let chunked = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nCookie: sid={cookie}\r\nAuthorization: {BEARER}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    );
    s.write_all(chunked.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));

    // HTTP/2: sign in and use the session, cookies split over fields.
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let login = http::Request::post(format!("http://{addr}/login"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(login).await.unwrap();
    let h2_cookie = resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    values.push(h2_cookie.split_once('=').unwrap().1.to_owned());
    for _ in 0..4 {
        let me = http::Request::get(format!("http://{addr}/me"))
            .header("cookie", "theme=dark")
            .header("cookie", h2_cookie.clone())
            .header("authorization", BEARER)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = client.request(me).await.unwrap();
        let _ = resp.into_body().collect().await;
    }

    // A session id in a path parameter, on the plain path.
    let (status, _) = http_get(addr, &format!("/me;jsessionid={PATH_SESSION}")).await;
    assert!(status < 500, "{status}");

    // The proxy's own answers: every backend down, with the session.
    h.farm.stop_node(0).await;
    h.farm.stop_node(1).await;
    let mut user = h.user();
    user.set_cookie(Some(cookie.clone()));
    let _ = user.me().await;

    // The admin listener.
    if let Some(admin) = h.proxy.admin_addr() {
        let _ = http_get(admin, "/metrics").await;
        let _ = http_get(admin, "/status").await;
    }
    h.proxy.flush_alerts();
    h.stop().await;

    let text = captured.text();
    // The capture worked: the proxy's own debug lines and the libraries' trace lines are there.
    assert!(
        text.contains("sessionwatch listening"),
        "nothing captured: {text}"
    );
    assert!(text.contains("TRACE"), "no TRACE line captured");
    assert!(values.len() > 6, "too few sessions to check: {values:?}");
    for value in values.iter().filter(|v| v.len() >= 8) {
        assert!(
            !text.contains(value.as_str()),
            "a raw session value reached the output"
        );
    }
    assert!(
        !text.contains(PATH_SESSION),
        "a path session id reached the output"
    );
    assert!(
        !text.contains("tok3n-never-logged"),
        "a credential reached the output"
    );
}
