//! Hop-by-hop headers and forwarding headers (RFC 9110 7.6.1, and the de facto X-Forwarded-*).

use http::header::{CONNECTION, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const PROXY_AUTHENTICATE: HeaderName = HeaderName::from_static("proxy-authenticate");
const PROXY_AUTHORIZATION: HeaderName = HeaderName::from_static("proxy-authorization");
/// Client address chain.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// Client scheme.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// Host the client asked for.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

const HOP_BY_HOP: [HeaderName; 8] = [
    CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
];

/// Whether the request asks to switch protocols (WebSocket): `Connection: upgrade` and an
/// `Upgrade` header.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE) && crate::wire::has_token(headers, "upgrade")
}

fn tokens(v: &HeaderValue) -> impl Iterator<Item = &str> {
    std::str::from_utf8(v.as_bytes())
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Remove hop-by-hop headers, including any named in `Connection`. With `keep_upgrade`, the
/// `Upgrade` header and a `Connection: upgrade` survive so a protocol switch can pass through.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none of them: one pass over the names (no hashing) says so.
    let any = headers
        .keys()
        .any(|k| k == CONNECTION || k == UPGRADE || HOP_BY_HOP.contains(k));
    if !any && !keep_upgrade {
        return;
    }
    if headers.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .flat_map(tokens)
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .filter(|n| !(keep_upgrade && n == UPGRADE))
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(UPGRADE);
    }
}

/// Ready a client's request for the farm, before anything reads it: `Host` from the target's
/// authority when the client sent none (HTTP/2 sends `:authority`), then the forwarding headers.
pub fn set_forwarding<B>(req: &mut http::Request<B>, client_ip: Option<HeaderValue>) {
    if !req.headers().contains_key(HOST)
        && let Some(a) = req.uri().authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        req.headers_mut().insert(HOST, v);
    }
    add_forwarded(req.headers_mut(), client_ip, "http", None);
}

/// Append the client (its IP as a header value) to `X-Forwarded-For` and set
/// `X-Forwarded-Proto` and `X-Forwarded-Host`.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    client_ip: Option<HeaderValue>,
    proto: &'static str,
    host: Option<HeaderValue>,
) {
    if let Some(ip) = client_ip {
        // Earlier proxies may have sent several X-Forwarded-For lines: keep every entry.
        let mut joined: Vec<u8> = Vec::new();
        for prev in headers.get_all(X_FORWARDED_FOR) {
            joined.extend_from_slice(prev.as_bytes());
            joined.extend_from_slice(b", ");
        }
        if joined.is_empty() {
            headers.insert(X_FORWARDED_FOR, ip);
        } else {
            joined.extend_from_slice(ip.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&joined) {
                headers.insert(X_FORWARDED_FOR, v);
            }
        }
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Some(h) = host.or_else(|| headers.get(HOST).cloned()) {
        headers.insert(X_FORWARDED_HOST, h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_standard_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(KEEP_ALIVE, HeaderValue::from_static("timeout=5"));
        h.insert(TE, HeaderValue::from_static("trailers"));
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(PROXY_AUTHORIZATION, HeaderValue::from_static("Basic x"));
        h.insert(UPGRADE, HeaderValue::from_static("h2c"));
        h.insert("cookie", HeaderValue::from_static("a=1"));
        strip_hop_by_hop(&mut h, false);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["cookie"]);
    }

    #[test]
    fn upgrade_survives_when_asked() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[UPGRADE], "websocket");
        assert_eq!(h[CONNECTION], "upgrade");
    }

    #[test]
    fn forwarded_headers_append() {
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.9"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("198.51.100.7"));
        h.insert(HOST, HeaderValue::from_static("shop.example"));
        add_forwarded(
            &mut h,
            Some(HeaderValue::from_static("127.0.0.1")),
            "http",
            None,
        );
        assert_eq!(h[X_FORWARDED_FOR], "203.0.113.9, 198.51.100.7, 127.0.0.1");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(h[X_FORWARDED_HOST], "shop.example");
    }
}
