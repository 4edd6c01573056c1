//! `X-Forwarded-For`, `-Proto` and `-Host` as ingress controllers set them: a trusted proxy's
//! are believed and added to, anyone else's replaced; and the client found in a trusted chain
//! as NGINX's `real_ip_recursive` finds it.

use std::net::{IpAddr, SocketAddr};

use http::header::HOST;
use http::{HeaderMap, HeaderValue};

use super::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use crate::config::TrustedProxies;
use crate::listen::Peer;

/// Set the forwarded headers for a request from `peer`, over `proto`; the client it is from.
///
/// From a peer that is not a trusted proxy, all three are replaced: `X-Forwarded-For` is the
/// peer alone. From a trusted one, `X-Forwarded-Proto` and `-Host` are kept when present, and
/// the client is the right-most address of its `X-Forwarded-For` that is not a trusted proxy
/// (the left-most, when all are); what the backend gets is the chain from that client on, then
/// the peer. The entries left of the client are dropped: nobody the proxy trusts wrote them,
/// and a backend that reads the left-most entry would take them for the client.
pub(crate) fn set_forwarded(headers: &mut HeaderMap, peer: &Peer, proto: &'static str) -> IpAddr {
    if !peer.trusted {
        if let Some(v) = &peer.addr_value {
            headers.insert(X_FORWARDED_FOR, v.clone());
        } else {
            headers.remove(X_FORWARDED_FOR);
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        if let Some(h) = headers.get(HOST).cloned() {
            headers.insert(X_FORWARDED_HOST, h);
        } else {
            headers.remove(X_FORWARDED_HOST);
        }
        return peer.addr;
    }
    let client = append_trusted(headers, peer);
    if !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !headers.contains_key(X_FORWARDED_HOST) {
        if let Some(h) = headers.get(HOST).cloned() {
            headers.insert(X_FORWARDED_HOST, h);
        }
    }
    client
}

/// A trusted peer's `X-Forwarded-For` (every field, in order), cut to start at the client, with
/// the peer appended; the client.
fn append_trusted(headers: &mut HeaderMap, peer: &Peer) -> IpAddr {
    let mut chain: Vec<u8> = Vec::new();
    for v in headers.get_all(X_FORWARDED_FOR) {
        if !chain.is_empty() {
            chain.extend_from_slice(b", ");
        }
        chain.extend_from_slice(v.as_bytes());
    }
    let (client, from) = real_client(&chain, peer.addr, &peer.trust);
    let kept = chain[from..].trim_ascii();
    let Some(peer_value) = &peer.addr_value else {
        // Never taken (an address always formats to a header value); the chain stays as sent.
        return client;
    };
    if kept.is_empty() {
        headers.insert(X_FORWARDED_FOR, peer_value.clone());
        return client;
    }
    let mut out = Vec::with_capacity(kept.len() + 2 + peer_value.len());
    out.extend_from_slice(kept);
    out.extend_from_slice(b", ");
    out.extend_from_slice(peer_value.as_bytes());
    // Bytes of header values joined with ", ": always a valid value.
    if let Ok(v) = HeaderValue::from_bytes(&out) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    client
}

/// Walking `chain` (`X-Forwarded-For` entries, comma-separated) from the right while the
/// address so far is a trusted proxy: the client, and the offset in `chain` of its entry
/// (`chain.len()` when the client is `peer` itself). An entry that is no address stops the walk:
/// the address right of it is the client.
fn real_client(chain: &[u8], peer: IpAddr, trust: &TrustedProxies) -> (IpAddr, usize) {
    let mut client = peer;
    let mut from = chain.len();
    let mut end = chain.len();
    while trust.contains(client) && !chain[..end].trim_ascii().is_empty() {
        let start = chain[..end]
            .iter()
            .rposition(|&b| b == b',')
            .map_or(0, |comma| comma + 1);
        let Some(ip) = entry_ip(chain[start..end].trim_ascii()) else {
            break;
        };
        client = ip;
        from = start;
        if start == 0 {
            break;
        }
        end = start - 1;
    }
    (client, from)
}

/// An entry's address: `192.0.2.1`, `2001:db8::1`, or with a port (`192.0.2.1:51000`,
/// `[2001:db8::1]:51000`), as some load balancers write them.
fn entry_ip(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?;
    let ip = text
        .parse::<IpAddr>()
        .or_else(|_| text.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()?;
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;

    fn trust(cidrs: &[&str]) -> TrustedProxies {
        let list = cidrs
            .iter()
            .map(|c| format!("{c:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let toml = format!(
            "[listen]\ntrusted_proxies = [{list}]\n[session]\ncookies = [{{ name = \"sid\" }}]\n\
             [[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:8081\"\n"
        );
        Config::parse(&toml, std::path::Path::new("t.toml"))
            .unwrap()
            .forwarded
            .trusted
    }

    fn peer(addr: &str, trusted: TrustedProxies) -> Peer {
        let addr: IpAddr = addr.parse().unwrap();
        Peer {
            addr,
            addr_value: HeaderValue::from_str(&addr.to_string()).ok(),
            trusted: trusted.contains(addr),
            trust: Arc::new(trusted),
            local: "127.0.0.1:8080".parse().unwrap(),
            tls: false,
            held: crate::extensions::ClientConnection(Arc::new(())),
        }
    }

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("shop.example"));
        for v in xff {
            h.append(X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(X_FORWARDED_HOST, HeaderValue::from_static("public.example"));
        h
    }

    #[test]
    fn an_untrusted_peer_has_all_three_replaced() {
        let p = peer("198.51.100.7", trust(&["10.0.0.0/8"]));
        let mut h = headers(&["203.0.113.9"]);
        let client = set_forwarded(&mut h, &p, "http");
        assert_eq!(client, p.addr);
        assert_eq!(h[X_FORWARDED_FOR], "198.51.100.7");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(h[X_FORWARDED_HOST], "shop.example");
    }

    #[test]
    fn a_trusted_peer_is_believed_and_appended_to() {
        let p = peer("10.0.0.2", trust(&["10.0.0.0/8"]));
        let mut h = headers(&["203.0.113.9"]);
        let client = set_forwarded(&mut h, &p, "http");
        assert_eq!(client, "203.0.113.9".parse::<IpAddr>().unwrap());
        assert_eq!(h[X_FORWARDED_FOR], "203.0.113.9, 10.0.0.2");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[X_FORWARDED_HOST], "public.example");
        // Without headers of its own, it gets the proxy's.
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("shop.example"));
        assert_eq!(set_forwarded(&mut h, &p, "http"), p.addr);
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.2");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(h[X_FORWARDED_HOST], "shop.example");
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_address() {
        let t = || trust(&["10.0.0.0/8", "fd00::/8"]);
        let p = peer("10.0.0.2", t());
        let cases: &[(&[&str], &str, &str)] = &[
            // What the client claimed left of the first untrusted address is dropped.
            (
                &["192.0.2.66, 203.0.113.9, 10.1.1.1"],
                "203.0.113.9",
                "203.0.113.9, 10.1.1.1, 10.0.0.2",
            ),
            // Several fields are one list.
            (
                &["192.0.2.66", "203.0.113.9", "fd00::5"],
                "203.0.113.9",
                "203.0.113.9, fd00::5, 10.0.0.2",
            ),
            // All trusted: the left-most.
            (
                &["10.9.9.9,10.1.1.1"],
                "10.9.9.9",
                "10.9.9.9,10.1.1.1, 10.0.0.2",
            ),
            // Ports, and IPv4-mapped addresses.
            (
                &["203.0.113.9:51000, [::ffff:10.1.1.1]:80"],
                "203.0.113.9",
                "203.0.113.9:51000, [::ffff:10.1.1.1]:80, 10.0.0.2",
            ),
            // Not an address: the walk stops at the trusted proxy right of it.
            (
                &["203.0.113.9, unknown, 10.1.1.1"],
                "10.1.1.1",
                "10.1.1.1, 10.0.0.2",
            ),
            (
                &["203.0.113.9, , 10.1.1.1"],
                "10.1.1.1",
                "10.1.1.1, 10.0.0.2",
            ),
            (&["203.0.113.9, nonsense"], "10.0.0.2", "10.0.0.2"),
            (&[""], "10.0.0.2", "10.0.0.2"),
        ];
        for (xff, client, sent) in cases {
            let mut h = headers(xff);
            let got = set_forwarded(&mut h, &p, "http");
            assert_eq!(got, client.parse::<IpAddr>().unwrap(), "{xff:?}");
            assert_eq!(h[X_FORWARDED_FOR], *sent, "{xff:?}");
        }
    }
}
