//! Conformance of the proxy to the rules of HTTP that an intermediary must enforce (RFC 9110,
//! RFC 9112, RFC 9113), over raw sockets: a client writing exact bytes, and a scripted backend
//! recording the exact bytes it receives. One test per rule, named after it; where the RFC is
//! exact (a status, a header's value), so is the test. Where it leaves a choice (refuse, or
//! repair and forward), the test takes either and checks what reached the backend byte by byte:
//! never a second, smuggled request, never a request whose body disagrees with its framing.
//!
//! - `framing`: how a request's body is delimited (RFC 9112 6 and 7), smuggling shapes.
//! - `fields`: the request's fields on the way through (Host, Connection, the request id).
//! - `limits`: the request head's size and a slow body (431, 408).
//! - `answers`: how answers are framed on the way back (RFC 9110 6.4.1, 8.6, 15; RFC 9112 6.3).
//! - `h2`: HTTP/2 requests turned into HTTP/1.1 ones (RFC 9113 8), and rapid reset.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use sessionwatch_proxy::RunningProxy;
use sessionwatch_tests::raw::{Outcome, RawBackend, Received, Reply, Script, exchange};
use sessionwatch_tests::{Scratch, config_toml, metric_sum, start_proxy};

// The root of a test target looks for its modules beside it, where each would become a test
// target of its own: they live in a directory of their own instead.
#[path = "conformance/answers.rs"]
mod answers;
#[path = "conformance/fields.rs"]
mod fields;
#[path = "conformance/framing.rs"]
mod framing;
#[path = "conformance/h2.rs"]
mod h2;
#[path = "conformance/limits.rs"]
mod limits;

/// A short answer with a length.
const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// The proxy in front of one scripted backend, with active health checks off so that the
/// backend sees nothing but what the tests send.
struct Setup {
    _scratch: Scratch,
    proxy: RunningProxy,
    backend: RawBackend,
}

impl Setup {
    async fn new(backend: RawBackend) -> Self {
        Self::with(backend, "", "").await
    }

    /// With `listen` added to the `[listen]` section and `extra` sections.
    async fn with(backend: RawBackend, listen: &str, extra: &str) -> Self {
        let scratch = Scratch::new("conformance");
        let toml = config_toml(
            &[("raw".to_owned(), backend.addr)],
            "SID",
            &scratch.alert_log(),
            &format!("[health]\nactive = false\n{extra}"),
        )
        .replace("[listen]\n", &format!("[listen]\n{listen}"));
        let proxy = start_proxy(&toml).await;
        Self {
            _scratch: scratch,
            proxy,
            backend,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.proxy.addr()
    }

    /// `sessionwatch_upstream_errors_total`, every kind summed.
    fn upstream_errors(&self) -> f64 {
        metric_sum(
            &self.proxy.metrics_text(),
            "sessionwatch_upstream_errors_total",
            &[],
        )
    }

    /// Everything the backend received, as text, for failure messages.
    fn backend_bytes(&self) -> String {
        shown(&self.backend.all_bytes())
    }

    async fn stop(self) {
        self.proxy.shutdown().await;
    }
}

/// A backend answering each request by the first route whose path starts its target, else
/// with [`OK`].
fn routes(table: &[(&str, &[u8])]) -> Script {
    let table: Vec<(String, Vec<u8>)> = table
        .iter()
        .map(|(p, a)| ((*p).to_owned(), a.to_vec()))
        .collect();
    Arc::new(move |r: &Received| {
        let line = r.request_line();
        let target = line.split(' ').nth(1).unwrap_or_default().to_owned();
        let answer = table
            .iter()
            .find(|(p, _)| target.starts_with(p.as_str()))
            .map_or_else(|| OK.to_vec(), |(_, a)| a.clone());
        Reply::Send(answer)
    })
}

/// Send `request` through a fresh proxy and backend; assert it is answered `status` alone and
/// that the backend received not one byte. The outcome, for more checks.
async fn refused(request: &[u8], status: u16) -> Outcome {
    let s = Setup::new(RawBackend::fixed(OK).await).await;
    let out = exchange(s.addr(), request).await;
    s.backend.settled().await;
    let request = shown(request);
    assert_eq!(
        out.statuses(),
        [status],
        "{request} must get {status} alone; got:\n{out}\nbackend got {}",
        s.backend_bytes()
    );
    assert!(
        s.backend.all_bytes().is_empty(),
        "{request} was answered {status} but reached the backend: {}",
        s.backend_bytes()
    );
    s.stop().await;
    out
}

/// Send `request`; the proxy must either refuse it (400, and close), or send the backend
/// exactly one well-framed request (one framing header, the body it announces, nothing after
/// it) and answer once. No request line the backend sees may contain `smuggled`. With
/// `must_close`, the connection must close after the answer either way (RFC 9112 6.1 for a
/// request that had both framings).
async fn one_request_or_refused(request: &[u8], must_close: bool) {
    let s = Setup::new(RawBackend::echo_line().await).await;
    let out = exchange(s.addr(), request).await;
    let got = s.backend.settled().await;
    let all = s.backend.all_bytes();
    let ctx = format!(
        "request {}\ngot:\n{out}\nbackend got {}",
        shown(request),
        s.backend_bytes()
    );
    for r in &got {
        assert!(
            !r.request_line().contains("smuggled"),
            "a smuggled request reached the backend: {ctx}"
        );
    }
    match out.statuses()[..] {
        [400] => {
            assert!(out.closed, "a 400 for broken framing must close: {ctx}");
            assert!(all.is_empty(), "refused, yet forwarded: {ctx}");
        }
        [200] => {
            assert_eq!(got.len(), 1, "exactly one request at the backend: {ctx}");
            let r = &got[0];
            let framings = r.values("content-length").len() + r.values("transfer-encoding").len();
            assert!(framings <= 1, "two framings reached the backend: {ctx}");
            assert_eq!(
                all,
                [r.head.clone(), r.body.clone()].concat(),
                "bytes beyond the one request reached the backend: {ctx}"
            );
            if must_close {
                assert!(out.closed, "must close after this request: {ctx}");
            }
        }
        _ => panic!("expected one answer, 400 or 200: {ctx}"),
    }
    s.stop().await;
}

/// Whether `id` is a request id the proxy may pass on: at most 128 of `[A-Za-z0-9._:-]`.
fn plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// `bytes` quoted for a failure message, cut short if long.
fn shown(bytes: &[u8]) -> String {
    const MAX: usize = 400;
    if bytes.len() <= MAX {
        return format!("{:?}", String::from_utf8_lossy(bytes));
    }
    format!(
        "{:?}... ({} bytes in all)",
        String::from_utf8_lossy(&bytes[..MAX]),
        bytes.len()
    )
}

/// Run `case` for every request, each in a task of its own so that one failing does not hide
/// the others, then fail with every failure's message.
async fn each<T, F, Fut>(requests: impl IntoIterator<Item = T>, case: F)
where
    T: AsRef<[u8]>,
    F: Fn(T) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    each_named(requests.into_iter().map(|r| (shown(r.as_ref()), r)), case).await;
}

/// As [`each`], for cases with a name of their own.
async fn each_named<T, F, Fut>(cases: impl IntoIterator<Item = (String, T)>, case: F)
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut failed = Vec::new();
    for (name, item) in cases {
        if let Err(e) = tokio::spawn(case(item)).await {
            let why = match e.try_into_panic() {
                Ok(p) => p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            failed.push(format!("- {name}:\n{why}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} case(s) failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}
