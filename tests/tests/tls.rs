//! TLS termination, end to end, with certificates made here (rcgen, ECDSA P-256, signed by a test
//! CA the clients trust):
//!
//! - HTTP/1.1 and HTTP/2 (chosen by ALPN) through the proxy, seen by the backend as `https`;
//! - the plain HTTP/1.1 loop answers TLS requests (its request counter goes up by one a
//!   request), while HTTP/2 goes to hyper;
//! - `curl --http2` and `openssl s_client` against the proxy (both must be installed);
//! - detection over TLS against the real PHP farm, as `php_farm.rs` does it over plain HTTP;
//! - a certificate replaced on disk (the kubelet's `..data` symlink swap) is served to new
//!   connections without a restart, while a connection opened before keeps working; a broken
//!   replacement keeps the old certificate and is counted;
//! - SNI picks the certificate, the first is the default; `min_version`, the handshake timeout;
//! - a returning client resumes its session (TLS 1.3 and 1.2); a connection the proxy ends
//!   ends with close_notify; the handshake follows a PROXY protocol header.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sessionwatch_proxy::RunningProxy;
use sessionwatch_test_support::{Farm, FarmConfig, StoreMode};
use sessionwatch_tests::php::{COOKIE, NODE_NAMES, PhpFarm, Store, proxy_with_sections};
use sessionwatch_tests::{Scratch, config_toml, farm_backends, lines_of, metric_sum, start_proxy};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

#[path = "tls/certificates.rs"]
mod certificates;
#[path = "tls/handshake.rs"]
mod handshake;
#[path = "tls/php.rs"]
mod php;
#[path = "tls/tools.rs"]
mod tools;

/// Every step that waits on the proxy is bounded by this.
const BOUND: Duration = Duration::from_secs(10);

/// A test CA and the certificates it signs, written into a scratch directory.
struct Pki {
    scratch: Scratch,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// A leaf certificate: its PEM files' contents and its DER (to tell which one a client got).
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Pki {
    fn new(name: &str) -> Self {
        let scratch = Scratch::new(name);
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "sessionwatch test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(scratch.path().join("ca.pem"), ca.pem()).unwrap();
        Self {
            scratch,
            ca,
            ca_key,
        }
    }

    fn ca_file(&self) -> PathBuf {
        self.scratch.path().join("ca.pem")
    }

    /// A new leaf for `names` (DNS names or IP addresses), with a key of its own.
    fn leaf(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// `leaf` written as `<name>.crt` and `<name>.key`.
    fn write(&self, name: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
        let cert = self.scratch.path().join(format!("{name}.crt"));
        let key = self.scratch.path().join(format!("{name}.key"));
        std::fs::write(&cert, &leaf.cert_pem).unwrap();
        std::fs::write(&key, &leaf.key_pem).unwrap();
        (cert, key)
    }

    /// A client that trusts the CA and offers `alpn`.
    fn client(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// `[listen.tls]` with these certificates (the first the default) and `more` keys.
fn tls_section(certs: &[(PathBuf, PathBuf)], more: &str) -> String {
    let mut s = format!("[listen.tls]\n{more}\n");
    for (cert, key) in certs {
        s.push_str(&format!(
            "[[listen.tls.certificates]]\ncert = {:?}\nkey = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ));
    }
    s
}

/// A one-node in-process farm (its `/headers` echoes what it got) behind a TLS proxy.
struct Setup {
    _scratch: Scratch,
    farm: Farm,
    proxy: RunningProxy,
}

impl Setup {
    async fn new(tls: &str) -> Self {
        let scratch = Scratch::new("tls");
        let farm = Farm::start(FarmConfig::new(1, StoreMode::Shared))
            .await
            .expect("farm starts");
        let toml = config_toml(
            &farm_backends(&farm),
            farm.cookie_name(),
            &scratch.alert_log(),
            tls,
        );
        let proxy = start_proxy(&toml).await;
        Self {
            _scratch: scratch,
            farm,
            proxy,
        }
    }

    fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        metric_sum(&self.proxy.metrics_text(), name, labels)
    }

    async fn stop(self) {
        self.proxy.shutdown().await;
        self.farm.shutdown().await;
    }
}

/// Polls (bounded) until `f` holds.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + BOUND;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TLS connection to `addr` asking for `name` (an IP address sends no SNI).
async fn connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).expect("a server name");
    tokio::time::timeout(BOUND, TlsConnector::from(config).connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))?
}

/// The certificate the server sent on `tls`.
fn served(tls: &TlsStream<TcpStream>) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec()
}

/// The ALPN protocol agreed on `tls`.
fn alpn(tls: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

/// An HTTP client over one TLS connection, HTTP/1.1 or HTTP/2 as ALPN chose.
enum Client {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// An answer: status, headers, body.
type Answer = (StatusCode, http::HeaderMap, Bytes);

impl Client {
    async fn over(tls: TlsStream<TcpStream>) -> Self {
        let h2 = alpn(&tls).as_deref() == Some(b"h2");
        let io = TokioIo::new(tls);
        if h2 {
            let (send, conn) = http2::handshake(TokioExecutor::new(), io).await.unwrap();
            tokio::spawn(conn);
            Client::H2(send)
        } else {
            let (send, conn) = http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Client::H1(send)
        }
    }

    async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Answer, hyper::Error> {
        let answer = async {
            let resp = match self {
                Client::H1(s) => {
                    s.ready().await?;
                    s.send_request(req).await?
                }
                Client::H2(s) => {
                    s.ready().await?;
                    s.send_request(req).await?
                }
            };
            let (parts, body) = resp.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok((parts.status, parts.headers, body))
        };
        tokio::time::timeout(BOUND, answer)
            .await
            .expect("an answer in time")
    }

    /// `method path` with `cookie` and `body` (a form).
    async fn request(
        &mut self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        body: &str,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"));
        if matches!(self, Client::H1(_)) {
            req = req.uri(path).header("host", "localhost");
        }
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        if !body.is_empty() {
            req = req.header("content-type", "application/x-www-form-urlencoded");
        }
        let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        self.send(req).await.expect("an answer")
    }

    async fn get(&mut self, path: &str) -> Answer {
        self.request("GET", path, None, "").await
    }
}

/// The headers the backend echoed (`name: value` a line), by name.
fn echoed(body: &[u8], name: &str) -> Vec<String> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_http2_over_tls_reach_the_backend_as_https() {
    let pki = Pki::new("tls-both");
    let files = pki.write("server", &pki.leaf(&["localhost"]));
    let s = Setup::new(&tls_section(&[files], "")).await;
    for (offered, expect) in [
        (&[b"h2".as_slice(), b"http/1.1"][..], Some(&b"h2"[..])),
        (&[b"http/1.1".as_slice()][..], Some(&b"http/1.1"[..])),
        // No ALPN at all: HTTP/1.1, as before ALPN existed.
        (&[][..], None),
    ] {
        let tls = connect(s.proxy.addr(), pki.client(offered), "localhost")
            .await
            .unwrap();
        assert_eq!(alpn(&tls).as_deref(), expect);
        let mut client = Client::over(tls).await;
        for _ in 0..3 {
            let (status, _, body) = client.get("/headers").await;
            assert_eq!(status, 200, "{offered:?}");
            assert_eq!(echoed(&body, "x-forwarded-proto"), ["https"], "{offered:?}");
            assert_eq!(
                echoed(&body, "x-forwarded-for"),
                ["127.0.0.1"],
                "{offered:?}"
            );
        }
    }
    assert_eq!(
        s.metric("sessionwatch_tls_handshakes_total", &["result=\"ok\""]),
        3.0
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_loop_serves_tls_requests_and_http2_goes_to_hyper() {
    let pki = Pki::new("tls-plain");
    let files = pki.write("server", &pki.leaf(&["localhost"]));
    let s = Setup::new(&tls_section(&[files], "")).await;
    let plain = |s: &Setup| s.metric("sessionwatch_plain_path_requests_total", &[]);
    assert_eq!(plain(&s), 0.0);
    // The loop counts its requests when the connection leaves it: closed here by the client.
    let mut answered = 0.0;
    for round in 1..=3 {
        let tls = connect(s.proxy.addr(), pki.client(&[b"http/1.1"]), "localhost")
            .await
            .unwrap();
        let mut client = Client::over(tls).await;
        for _ in 0..round {
            let (status, _, _) = client.get("/headers").await;
            assert_eq!(status, 200);
        }
        drop(client);
        answered += f64::from(round);
        eventually("the plain loop counted every request", || {
            plain(&s) == answered
        })
        .await;
    }
    // HTTP/2 is hyper's: the plain count stays.
    let tls = connect(s.proxy.addr(), pki.client(&[b"h2"]), "localhost")
        .await
        .unwrap();
    let mut client = Client::over(tls).await;
    for _ in 0..4 {
        assert_eq!(client.get("/headers").await.0, 200);
    }
    drop(client);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(plain(&s), answered);
    s.stop().await;
}
