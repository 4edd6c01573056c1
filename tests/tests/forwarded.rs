//! Forwarded headers and the PROXY protocol, as a backend sees them: a trusted peer's
//! `X-Forwarded-*` believed and added to, anyone else's replaced, the client found in a chain of
//! trusted proxies, and the client a PROXY header names; on the plain HTTP/1.1 path and on
//! hyper's (a chunked request goes there) alike.

use std::time::Duration;

use sessionwatch_proxy::RunningProxy;
use sessionwatch_test_support::{Farm, FarmConfig, StoreMode};
use sessionwatch_tests::raw_http::{ClientConn, Reply};
use sessionwatch_tests::{Scratch, config_toml, farm_backends, start_proxy};

/// A one-node farm whose `/headers` echoes what it got, and a proxy in front with `listen`
/// added to its `[listen]` section.
struct Setup {
    _scratch: Scratch,
    farm: Farm,
    proxy: RunningProxy,
}

impl Setup {
    async fn new(listen: &str) -> Self {
        let scratch = Scratch::new("forwarded");
        let farm = Farm::start(FarmConfig::new(1, StoreMode::Shared))
            .await
            .expect("farm starts");
        let toml = config_toml(
            &farm_backends(&farm),
            farm.cookie_name(),
            &scratch.alert_log(),
            "",
        );
        let section = "[listen]\naddress = \"127.0.0.1:0\"\n";
        assert!(toml.starts_with(section), "{toml}");
        let toml = toml.replacen(section, &format!("{section}{listen}\n"), 1);
        let proxy = start_proxy(&toml).await;
        Self {
            _scratch: scratch,
            farm,
            proxy,
        }
    }

    async fn stop(self) {
        self.proxy.shutdown().await;
        self.farm.shutdown().await;
    }
}

/// Which way a request goes through the proxy.
#[derive(Debug, Clone, Copy)]
enum Path {
    /// The plain HTTP/1.1 loop.
    Plain,
    /// hyper's server: a chunked request is never plain.
    Hyper,
}

const PATHS: [Path; 2] = [Path::Plain, Path::Hyper];

/// `GET /headers` with `fields` (each `Name: value\r\n`), closing the connection after it.
fn request(path: Path, fields: &str) -> Vec<u8> {
    let framing = match path {
        Path::Plain => "",
        Path::Hyper => "Transfer-Encoding: chunked\r\n",
    };
    let body = match path {
        Path::Plain => "",
        Path::Hyper => "0\r\n\r\n",
    };
    format!(
        "GET /headers HTTP/1.1\r\nHost: shop.internal\r\n{fields}{framing}Connection: close\r\n\r\n{body}"
    )
    .into_bytes()
}

/// The headers the backend got, as it echoed them (`name: value` a line), for `bytes` sent on
/// a new connection.
async fn echoed(s: &Setup, bytes: &[u8]) -> Vec<(String, String)> {
    let mut c = ClientConn::connect(s.proxy.addr()).await.unwrap();
    c.send(bytes).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), c.read_answer(false))
        .await
        .expect("an answer within 10 s");
    let Reply::Complete { head, body } = reply else {
        panic!("no whole answer: {reply:?}");
    };
    assert_eq!(head.status, 200, "{head:?}");
    String::from_utf8_lossy(&body)
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect()
}

/// Every value of `name` the backend got.
fn values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

const INGRESS_FIELDS: &str = "X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n\
                              X-Forwarded-Host: shop.example\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_peer_keeps_proto_and_host_and_is_appended_to() {
    let s = Setup::new("trusted_proxies = [\"127.0.0.1/32\"]").await;
    for path in PATHS {
        let got = echoed(&s, &request(path, INGRESS_FIELDS)).await;
        assert_eq!(
            values(&got, "x-forwarded-for"),
            ["203.0.113.9, 127.0.0.1"],
            "{path:?}"
        );
        assert_eq!(values(&got, "x-forwarded-proto"), ["https"], "{path:?}");
        assert_eq!(
            values(&got, "x-forwarded-host"),
            ["shop.example"],
            "{path:?}"
        );
        assert_eq!(values(&got, "host"), ["shop.internal"], "{path:?}");
        // Without forwarded headers of its own, it gets the proxy's.
        let got = echoed(&s, &request(path, "")).await;
        assert_eq!(values(&got, "x-forwarded-for"), ["127.0.0.1"], "{path:?}");
        assert_eq!(values(&got, "x-forwarded-proto"), ["http"], "{path:?}");
        assert_eq!(
            values(&got, "x-forwarded-host"),
            ["shop.internal"],
            "{path:?}"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peer_has_them_replaced() {
    let s = Setup::new("trusted_proxies = [\"10.0.0.0/8\", \"fd00::/8\"]").await;
    for path in PATHS {
        let got = echoed(&s, &request(path, INGRESS_FIELDS)).await;
        assert_eq!(values(&got, "x-forwarded-for"), ["127.0.0.1"], "{path:?}");
        assert_eq!(values(&got, "x-forwarded-proto"), ["http"], "{path:?}");
        assert_eq!(
            values(&got, "x-forwarded-host"),
            ["shop.internal"],
            "{path:?}"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_is_the_right_most_address_that_is_not_a_trusted_proxy() {
    let s = Setup::new("trusted_proxies = [\"127.0.0.1/32\", \"10.0.0.0/8\"]").await;
    for path in PATHS {
        // 192.0.2.66 is what the client claimed; 203.0.113.9 is whom the trusted 10.1.2.3
        // got the connection from; over two fields, as proxies may send it.
        let fields = "X-Forwarded-For: 192.0.2.66, 203.0.113.9\r\nX-Forwarded-For: 10.1.2.3\r\n";
        let got = echoed(&s, &request(path, fields)).await;
        assert_eq!(
            values(&got, "x-forwarded-for"),
            ["203.0.113.9, 10.1.2.3, 127.0.0.1"],
            "{path:?}"
        );
        // Every hop trusted: the left-most is the client, and nothing is dropped.
        let got = echoed(
            &s,
            &request(path, "X-Forwarded-For: 10.7.7.7, 10.1.2.3\r\n"),
        )
        .await;
        assert_eq!(
            values(&got, "x-forwarded-for"),
            ["10.7.7.7, 10.1.2.3, 127.0.0.1"],
            "{path:?}"
        );
    }
    s.stop().await;
}

/// A PROXY v2 header: command (0 LOCAL, 1 PROXY), family and transport byte, the rest.
fn v2(command: u8, family: u8, rest: &[u8]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x20 | command);
    h.push(family);
    h.extend_from_slice(&u16::try_from(rest.len()).unwrap().to_be_bytes());
    h.extend_from_slice(rest);
    h
}

/// TCP over IPv4 from 198.51.100.20:40000 to 127.0.0.1:80, with an authority TLV and an AWS
/// VPC endpoint id TLV after the addresses.
fn v2_inet4() -> Vec<u8> {
    let mut rest = vec![198, 51, 100, 20, 127, 0, 0, 1];
    rest.extend_from_slice(&40000u16.to_be_bytes());
    rest.extend_from_slice(&80u16.to_be_bytes());
    rest.extend_from_slice(&[0x02, 0, 4]);
    rest.extend_from_slice(b"shop");
    rest.extend_from_slice(&[0xea, 0, 9, 0x01]);
    rest.extend_from_slice(b"vpce-123");
    v2(0x1, 0x11, &rest)
}

fn v2_inet6() -> Vec<u8> {
    let mut rest = Vec::new();
    rest.extend_from_slice(
        &"2001:db8::9"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    rest.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    rest.extend_from_slice(&40000u16.to_be_bytes());
    rest.extend_from_slice(&80u16.to_be_bytes());
    v2(0x1, 0x21, &rest)
}

const WITH_PROXY_PROTOCOL: &str = "trusted_proxies = [\"127.0.0.1/32\"]\nproxy_protocol = true";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_header_names_the_client() {
    let s = Setup::new(WITH_PROXY_PROTOCOL).await;
    let headers: [(&str, Vec<u8>, &str); 4] = [
        (
            "v1 TCP4",
            b"PROXY TCP4 203.0.113.9 127.0.0.1 51000 80\r\n".to_vec(),
            "203.0.113.9",
        ),
        (
            "v1 TCP6",
            b"PROXY TCP6 2001:db8::7 ::1 51000 80\r\n".to_vec(),
            "2001:db8::7",
        ),
        ("v2 INET with TLVs", v2_inet4(), "198.51.100.20"),
        ("v2 INET6", v2_inet6(), "2001:db8::9"),
    ];
    for (what, header, client) in headers {
        for path in PATHS {
            let mut bytes = header.clone();
            // The client's own forwarded headers are not believed: it is no trusted proxy.
            bytes.extend_from_slice(&request(path, INGRESS_FIELDS));
            let got = echoed(&s, &bytes).await;
            assert_eq!(
                values(&got, "x-forwarded-for"),
                [client],
                "{what}, {path:?}"
            );
            assert_eq!(
                values(&got, "x-forwarded-proto"),
                ["http"],
                "{what}, {path:?}"
            );
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_header_without_a_client_leaves_the_peer() {
    let s = Setup::new(WITH_PROXY_PROTOCOL).await;
    // A balancer's own health check (v2 LOCAL), a v1 UNKNOWN, and a UNIX socket's addresses:
    // the client is the peer, a trusted proxy, so its X-Forwarded-For is believed.
    for (what, header) in [
        ("v2 LOCAL", v2(0x0, 0x00, &[])),
        ("v1 UNKNOWN", b"PROXY UNKNOWN\r\n".to_vec()),
        ("v2 UNIX", v2(0x1, 0x31, &[0; 216])),
    ] {
        let mut bytes = header;
        bytes.extend_from_slice(&request(Path::Plain, INGRESS_FIELDS));
        let got = echoed(&s, &bytes).await;
        assert_eq!(
            values(&got, "x-forwarded-for"),
            ["203.0.113.9, 127.0.0.1"],
            "{what}"
        );
        assert_eq!(values(&got, "x-forwarded-proto"), ["https"], "{what}");
    }
    s.stop().await;
}

/// Send `bytes` on a new connection; what came back before the proxy closed it.
async fn answer_to(s: &Setup, bytes: &[u8]) -> Vec<u8> {
    let mut c = ClientConn::connect(s.proxy.addr()).await.unwrap();
    // The proxy may close before everything is written: a failed write is part of the outcome.
    let _ = c.send(bytes).await;
    c.read_to_close(Duration::from_secs(10))
        .await
        .expect("closed within 10 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_valid_proxy_header_is_closed_unanswered() {
    let s = Setup::new(WITH_PROXY_PROTOCOL).await;
    let mut bad_version = v2_inet4();
    bad_version[12] = 0x11;
    let mut oversized = b"\r\n\r\n\0\r\nQUIT\n\x21\x11".to_vec();
    oversized.extend_from_slice(&u16::MAX.to_be_bytes());
    let cases: [(&str, Vec<u8>); 5] = [
        ("no header", request(Path::Plain, "")),
        (
            "a garbage v1 header",
            b"PROXY TCP4 not-an-address 127.0.0.1 1 80\r\n".to_vec(),
        ),
        (
            "a v1 header past 107 bytes",
            [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 200]].concat(),
        ),
        ("a v2 header of another version", bad_version),
        ("a v2 header longer than taken", oversized),
    ];
    for (what, mut bytes) in cases {
        if what != "no header" {
            bytes.extend_from_slice(&request(Path::Plain, ""));
        }
        let got = answer_to(&s, &bytes).await;
        assert!(
            got.is_empty(),
            "{what}: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    assert_eq!(s.farm.served_total(), 0, "a request reached the farm");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_proxy_headers_required_a_peer_that_is_not_a_trusted_proxy_is_closed() {
    let s = Setup::new("trusted_proxies = [\"10.0.0.0/8\"]\nproxy_protocol = true").await;
    let mut bytes = b"PROXY TCP4 203.0.113.9 127.0.0.1 51000 80\r\n".to_vec();
    bytes.extend_from_slice(&request(Path::Plain, ""));
    let got = answer_to(&s, &bytes).await;
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert_eq!(s.farm.served_total(), 0, "a request reached the farm");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_is_read_once_and_names_the_client_of_every_request_after_it() {
    let s = Setup::new(WITH_PROXY_PROTOCOL).await;
    let mut c = ClientConn::connect(s.proxy.addr()).await.unwrap();
    // The header and the first request in one write, as a balancer sends them.
    let mut first = b"PROXY TCP4 203.0.113.9 127.0.0.1 51000 80\r\n".to_vec();
    first.extend_from_slice(b"GET /headers HTTP/1.1\r\nHost: shop\r\n\r\n");
    c.send(&first).await.unwrap();
    for n in 0..3 {
        if n > 0 {
            c.send(b"GET /headers HTTP/1.1\r\nHost: shop\r\n\r\n")
                .await
                .unwrap();
        }
        let reply = tokio::time::timeout(Duration::from_secs(10), c.read_answer(false))
            .await
            .expect("an answer within 10 s");
        let Reply::Complete { head, body } = reply else {
            panic!("request {n}: no whole answer: {reply:?}");
        };
        assert_eq!(head.status, 200, "request {n}");
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.contains("x-forwarded-for: 203.0.113.9\n"),
            "request {n}: {body}"
        );
    }
    s.stop().await;
}
