//! What a client's request must satisfy before it goes to the farm, and what the proxy does to
//! its head: the `Host` rules (RFC 9112 3.2), hop-by-hop headers (RFC 9110 7.6.1), `Cookie`
//! fields joined (RFC 9113 8.2.3), a bounded request id, and the de facto X-Forwarded-*
//! ([`forwarded`]); and [`Prepare`], the step that does it to every request of a connection,
//! outermost in the stack, on the plain HTTP/1.1 path and hyper's alike.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use futures_util::future::Either;
use http::Response;
use http::header::Entry;
use pin_project_lite::pin_project;
use tower::Service;

use http::header::{
    AUTHORIZATION, CONNECTION, CONTENT_LENGTH, COOKIE, HOST, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Version};

use crate::extensions::FirstOnConnection;
use crate::hop_by_hop::{HOP_BY_HOP, is_upgrade, strip_hop_by_hop};
use crate::listen::{Handler, Peer};
use crate::respond::{ForwardError, Respond};
use crate::upstream::body::{RequestBody, ResponseBody};

mod forwarded;

/// Client address chain.
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// Client scheme.
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// Host the client asked for.
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The header that carries a request's id.
pub(crate) use sessionwatch_tower::X_REQUEST_ID;

/// Fields a `Connection` header may not name: removing them would change what the request is
/// (its target host, its session, its credentials, its framing), and attackers name them to
/// make a proxy drop exactly what the application relies on.
const PROTECTED: [HeaderName; 5] = [
    HOST,
    COOKIE,
    AUTHORIZATION,
    CONTENT_LENGTH,
    TRANSFER_ENCODING,
];

/// The longest client request id kept; a longer one is replaced.
const MAX_REQUEST_ID: usize = 128;

/// What one pass over a request's fields found (no hashing: most requests need nothing more).
#[derive(Debug, Default, Clone, Copy)]
struct Scan {
    hosts: u8,
    cookies: u8,
    request_ids: u8,
    /// A `Connection` field.
    connection: bool,
    /// Another hop-by-hop field, or `Upgrade`.
    hop_by_hop: bool,
}

fn scan(headers: &HeaderMap) -> Scan {
    let mut found = Scan::default();
    for (name, _) in headers {
        if name == HOST {
            found.hosts = found.hosts.saturating_add(1);
        } else if name == COOKIE {
            found.cookies = found.cookies.saturating_add(1);
        } else if name == X_REQUEST_ID {
            found.request_ids = found.request_ids.saturating_add(1);
        } else if name == CONNECTION {
            found.connection = true;
        } else if name == UPGRADE || HOP_BY_HOP.contains(name) {
            found.hop_by_hop = true;
        }
    }
    found
}

/// Whether a client's request id is one to keep: short, and only characters that cannot break
/// a log line or a header.
pub(crate) fn acceptable_request_id(id: &HeaderValue) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_REQUEST_ID
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
}

/// Ready a client's request for the farm, before anything reads it; an `Err` is the answer the
/// client gets instead (the request goes nowhere).
///
/// In order: `CONNECT` is refused (a reverse proxy opens no tunnels); the `Host` rules; the
/// hop-by-hop headers go, including those `Connection` names (except the protected ones, which
/// make the request a bad one); several `Cookie` fields become one; then the proxy's own
/// headers are set, after the removal, so a client cannot strip them; last the request id,
/// the client's kept only if [`acceptable_request_id`].
pub(crate) fn prepare<B>(
    req: &mut Request<B>,
    peer: &Peer,
    new_id: impl FnOnce() -> HeaderValue,
) -> Result<Prepared, ForwardError> {
    if req.method() == Method::CONNECT {
        return Err(ForwardError::MethodNotAllowed);
    }
    let found = scan(req.headers());
    if found.hosts > 1 {
        return Err(ForwardError::BadRequest("more than one Host header"));
    }
    if found.connection && names_protected(req.headers()) {
        return Err(ForwardError::BadRequest(
            "Connection names a field the request depends on",
        ));
    }
    set_host(req, found.hosts == 1, peer.local)?;
    let mut upgrade = false;
    if found.connection || found.hop_by_hop {
        // Only WebSocket passes: any other protocol (h2c, say) would give the client a raw
        // channel to the backend past every check here, so its `Upgrade` is removed and the
        // request goes on as an ordinary one.
        upgrade = req.version() == Version::HTTP_11
            && is_upgrade(req.headers())
            && req
                .headers()
                .get_all(UPGRADE)
                .iter()
                .any(|v| sessionwatch_h1::lists_token(v.as_bytes(), "websocket"));
        strip_hop_by_hop(req.headers_mut(), upgrade);
    }
    if found.cookies > 1 {
        join_cookies(req.headers_mut());
    }
    let client = forwarded::set_forwarded(req.headers_mut(), peer, peer.proto());
    let headers = req.headers_mut();
    let kept = match found.request_ids {
        1 => headers
            .get(X_REQUEST_ID)
            .filter(|id| acceptable_request_id(id))
            .cloned(),
        _ => None,
    };
    let id = match kept {
        Some(id) => id,
        None => {
            let id = new_id();
            headers.insert(X_REQUEST_ID, id.clone());
            id
        }
    };
    Ok(Prepared {
        id,
        upgrade,
        client,
    })
}

/// What [`prepare`] found out about a request it let through.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The request id.
    pub id: HeaderValue,
    /// Whether the request asks to switch protocols.
    pub upgrade: bool,
    /// The client, as [`forwarded::set_forwarded`] found it: what logs name.
    pub client: IpAddr,
}

/// Whether a `Connection` header names one of the [`PROTECTED`] fields.
fn names_protected(headers: &HeaderMap) -> bool {
    headers.get_all(CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .any(|t| {
                PROTECTED
                    .iter()
                    .any(|p| t.eq_ignore_ascii_case(p.as_str().as_bytes()))
            })
    })
}

/// The `Host` the farm sees: the target's authority when it has one (an absolute-form target,
/// HTTP/2's `:authority`), which wins over a `Host` field (RFC 9112 3.2.2, RFC 9113 8.3.1);
/// else the client's `Host`. HTTP/1.1 without either is refused (RFC 9112 3.2); HTTP/1.0
/// without either gets the listener's own address, never the backend's.
fn set_host<B>(
    req: &mut Request<B>,
    has_host: bool,
    local: SocketAddr,
) -> Result<(), ForwardError> {
    if let Some(authority) = req.uri().authority() {
        let value = HeaderValue::from_str(authority.as_str())
            .ok()
            .filter(valid_host)
            .ok_or(ForwardError::BadRequest(
                "the target's authority is not a valid Host",
            ))?;
        req.headers_mut().insert(HOST, value);
        return Ok(());
    }
    if has_host {
        return match req.headers().get(HOST) {
            Some(host) if !valid_host(host) => Err(ForwardError::BadRequest("an invalid Host")),
            _ => Ok(()),
        };
    }
    if req.version() == Version::HTTP_10 {
        // A socket address always formats to a valid header value.
        if let Ok(v) = HeaderValue::from_str(&local.to_string()) {
            req.headers_mut().insert(HOST, v);
        }
        return Ok(());
    }
    Err(ForwardError::BadRequest("no Host header"))
}

/// Whether a `Host` value can be `uri-host [ ":" port ]` (RFC 9112 3.2, RFC 3986 3.2.2): no
/// user information, path, query, fragment, whitespace or non-ASCII byte. (The finer grammar
/// is the application's to judge; these are what would make the proxy and the farm read a
/// different host.)
fn valid_host(host: &HeaderValue) -> bool {
    host.as_bytes()
        .iter()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'@' | b'/' | b'?' | b'#' | b'\\'))
}

/// Several `Cookie` fields (HTTP/2 splits them) as the one field an HTTP/1.1 backend expects,
/// joined with "; " in order (RFC 9113 8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    let mut joined: Vec<u8> = Vec::new();
    for v in headers.get_all(COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, v);
    }
}

/// Request ids for one worker: its prefix and a counter, formatted without allocating a
/// `String`; cheap enough for every request, unique across workers and, in practice, restarts.
#[derive(Clone)]
pub(crate) struct RequestIds {
    prefix: u32,
    next: Arc<AtomicU64>,
}

impl RequestIds {
    /// Ids `<prefix>-<counter>`, in hex, the counter from 1.
    pub(crate) fn new(prefix: u32) -> Self {
        Self {
            prefix,
            next: Arc::new(AtomicU64::new(1)),
        }
    }

    fn next(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 25];
        let hex = b"0123456789abcdef";
        for (i, slot) in buf[..8].iter_mut().enumerate() {
            *slot = hex[((self.prefix >> (28 - 4 * i)) & 0xf) as usize];
        }
        buf[8] = b'-';
        for (i, slot) in buf[9..].iter_mut().enumerate() {
            *slot = hex[((n >> (60 - 4 * i)) & 0xf) as usize];
        }
        // Hex digits and '-' always make a valid value; the fallback is never taken.
        HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
    }
}

/// The prepare step for one client connection, in front of the rest of the stack: every request
/// is prepared (or refused) before any step reads it, and every answer carries the request id.
pub(crate) struct Prepare<S> {
    inner: Respond<S>,
    ids: RequestIds,
    peer: Peer,
    /// Whether a request of this connection has been sent on (see [`FirstOnConnection`]).
    used: AtomicBool,
}

impl<S> Prepare<S> {
    /// The step for the connection from `peer`, in front of `inner`.
    pub(crate) fn new(inner: Respond<S>, ids: RequestIds, peer: Peer) -> Self {
        Self {
            inner,
            ids,
            peer,
            used: AtomicBool::new(false),
        }
    }
}

impl<S> Handler for Prepare<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = ForwardError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    fn handle(
        &self,
        mut req: Request<RequestBody>,
    ) -> impl Future<Output = Response<ResponseBody>> + Send + 'static + use<S> {
        // Before anything reads the request, so the session layer sees exactly what the backend
        // will see (a `Connection: x` must not hide `x` from the backend alone).
        let (id, client) = match prepare(&mut req, &self.peer, || self.ids.next()) {
            Ok(Prepared {
                id,
                upgrade,
                client,
            }) => {
                if upgrade {
                    req.extensions_mut().insert(self.peer.held.clone());
                }
                (id, client)
            }
            Err(refused) => {
                let client = self.peer.addr;
                tracing::debug!(%client, status = %refused.status(), error = %refused, "refused");
                let mut resp = refused.into_response();
                resp.headers_mut().insert(X_REQUEST_ID, self.ids.next());
                return Either::Left(std::future::ready(resp));
            }
        };
        if !self.used.swap(true, Ordering::Relaxed) {
            req.extensions_mut().insert(FirstOnConnection);
        }
        Either::Right(WithId {
            answer: self.inner.respond_for(req, Some(client)),
            id: Some(id),
        })
    }
}

pin_project! {
    /// An answer that will carry its request's id (unless the backend set one).
    struct WithId<F> {
        #[pin]
        answer: F,
        id: Option<HeaderValue>,
    }
}

impl<F> Future for WithId<F>
where
    F: Future<Output = Result<Response<ResponseBody>, Infallible>>,
{
    type Output = Response<ResponseBody>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = match ready!(this.answer.poll(cx)) {
            Ok(resp) => resp,
            Err(never) => match never {},
        };
        if let (Entry::Vacant(e), Some(id)) =
            (resp.headers_mut().entry(X_REQUEST_ID), this.id.take())
        {
            e.insert(id);
        }
        Poll::Ready(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> Peer {
        Peer {
            addr: std::net::Ipv4Addr::LOCALHOST.into(),
            addr_value: None,
            trusted: false,
            trust: Arc::default(),
            local: "127.0.0.1:8080".parse().unwrap(),
            tls: false,
            held: crate::extensions::ClientConnection(Arc::new(())),
        }
    }

    fn prepared(uri: &str, hosts: &[&str]) -> Result<Request<()>, ForwardError> {
        let mut b = Request::builder().uri(uri);
        for h in hosts {
            b = b.header(HOST, *h);
        }
        let mut req = b.body(()).unwrap();
        let peer = peer();
        prepare(&mut req, &peer, || HeaderValue::from_static("id-1")).map(|_| req)
    }

    #[test]
    fn only_a_websocket_upgrade_passes() {
        let mut req = Request::builder()
            .uri("/")
            .header(HOST, "shop")
            .header(CONNECTION, "Upgrade")
            .header(UPGRADE, "h2c")
            .body(())
            .unwrap();
        let peer = peer();
        let prepared = prepare(&mut req, &peer, || HeaderValue::from_static("id-1")).unwrap();
        assert!(!prepared.upgrade);
        assert!(!req.headers().contains_key(UPGRADE));
        assert!(!req.headers().contains_key(CONNECTION));
        let mut req = Request::builder()
            .uri("/ws")
            .header(HOST, "shop")
            .header(CONNECTION, "keep-alive, Upgrade")
            .header(UPGRADE, "WebSocket")
            .body(())
            .unwrap();
        let prepared = prepare(&mut req, &peer, || HeaderValue::from_static("id-2")).unwrap();
        assert!(prepared.upgrade);
        assert_eq!(req.headers()[UPGRADE], "WebSocket");
    }

    #[test]
    fn a_host_that_would_read_differently_is_refused() {
        for host in ["a/b", "u@shop", "shop?x", "shop#x", "sh op", "shop\\x"] {
            assert!(
                matches!(prepared("/", &[host]), Err(ForwardError::BadRequest(_))),
                "{host:?} was accepted"
            );
        }
        // User information in an absolute-form target would reach the farm as its Host.
        assert!(prepared("http://user:pw@shop.example/x", &["x"]).is_err());
        for host in [
            "shop.example",
            "shop.example:8080",
            "[::1]:8080",
            "127.0.0.1",
        ] {
            let req = prepared("/", &[host]).unwrap();
            assert_eq!(req.headers()[HOST], host);
        }
        let req = prepared("http://a.example/x", &["b.example"]).unwrap();
        assert_eq!(req.headers()[HOST], "a.example");
    }
}
