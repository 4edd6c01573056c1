//! TLS from the proxy to its backends (`https://` URLs, `[upstream.tls]`) and to its alert sinks
//! (`ca_file`), against certificates each test makes with rcgen: a CA, and a server certificate
//! it signs for `127.0.0.1` and `farm.test`.
//!
//! The TLS backends are the in-process farm's nodes, each behind a TLS front that terminates TLS
//! and hands the bytes to its node: the nodes serve, and count what they serve, as in the plain
//! tests, and each front records the handshakes made with it (the name asked for, the protocol
//! agreed).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sessionwatch_proxy::{Config, RunningProxy};
use sessionwatch_test_support::{Farm, FarmConfig, StoreMode, wait_until};
use sessionwatch_tests::{Harness, Scratch, config_toml, metric_sum, start_proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// A CA and a server certificate it signed.
struct Pki {
    ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
}

/// A fresh CA, and a certificate from it for `127.0.0.1` and `farm.test`.
fn pki() -> Pki {
    pki_of("sessionwatch test farm CA")
}

/// As [`pki`], with a CA named `ca_name`.
fn pki_of(ca_name: &str) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "farm.test".to_owned()])
        .expect("server params");
    let cert = server
        .signed_by(&key, &ca_cert, &ca_key)
        .expect("server certificate");
    Pki {
        ca_pem: ca_cert.pem(),
        chain: vec![cert.der().clone()],
        key: key.serialize_der(),
    }
}

/// A TLS server configuration with `pki`'s certificate, offering HTTP/2 before HTTP/1.1 (so a
/// client that does not ask for HTTP/1.1 alone would get HTTP/2).
fn server_config(pki: &Pki) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key.clone()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(pki.chain.clone(), key)
        .expect("server certificate and key");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One handshake a front completed.
#[derive(Debug, Clone, PartialEq)]
struct Handshake {
    sni: Option<String>,
    alpn: Option<Vec<u8>>,
}

/// A TLS front for one node.
struct TlsFront {
    addr: SocketAddr,
    handshakes: Arc<Mutex<Vec<Handshake>>>,
    failed: Arc<AtomicUsize>,
}

impl TlsFront {
    /// Terminate TLS on 127.0.0.1:0 with `config` and pass each connection's bytes to `node`.
    async fn start(node: SocketAddr, config: Arc<rustls::ServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes: Arc<Mutex<Vec<Handshake>>> = Arc::default();
        let failed = Arc::new(AtomicUsize::new(0));
        let (seen, failures) = (handshakes.clone(), failed.clone());
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, seen, failures) = (acceptor.clone(), seen.clone(), failures.clone());
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(_) => {
                            failures.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    };
                    let session = tls.get_ref().1;
                    seen.lock().unwrap().push(Handshake {
                        sni: session.server_name().map(str::to_owned),
                        alpn: session.alpn_protocol().map(<[u8]>::to_vec),
                    });
                    if let Ok(mut plain) = TcpStream::connect(node).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        Self {
            addr,
            handshakes,
            failed,
        }
    }

    fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes.lock().unwrap().clone()
    }
}

/// A farm of TLS backends and the proxy in front of them.
struct TlsFarm {
    scratch: Scratch,
    farm: Farm,
    fronts: Vec<TlsFront>,
    proxy: RunningProxy,
}

/// What a TLS farm's proxy is told.
struct Setup<'a> {
    /// Sections added to the file.
    extra: &'a str,
    /// Each node's `[[backends]]` lines past `name` and `url`.
    backend_lines: &'a [&'a str],
    /// The proxy trusts another CA than the one that signed the backends' certificates.
    wrong_ca: bool,
}

impl TlsFarm {
    async fn start(farm: FarmConfig, setup: Setup<'_>) -> Self {
        let scratch = Scratch::new("tls-upstream");
        let farm = Farm::start(farm).await.expect("farm starts");
        let pki = pki();
        let config = server_config(&pki);
        let mut fronts = Vec::new();
        for addr in farm.addrs() {
            fronts.push(TlsFront::start(addr, config.clone()).await);
        }
        let trusted = if setup.wrong_ca {
            pki_ca_only()
        } else {
            pki.ca_pem
        };
        let ca_file = scratch.path().join("farm-ca.pem");
        std::fs::write(&ca_file, trusted).unwrap();
        let extra = format!(
            "{}\n[upstream.tls]\nca_file = {:?}\n",
            setup.extra,
            ca_file.display().to_string()
        );
        let mut toml = config_toml(&[], farm.cookie_name(), &scratch.alert_log(), &extra);
        for (i, (name, front)) in farm.names().iter().zip(&fronts).enumerate() {
            toml.push_str(&format!(
                "[[backends]]\nname = \"{name}\"\nurl = \"https://{}\"\n",
                front.addr
            ));
            if let Some(lines) = setup.backend_lines.get(i) {
                toml.push_str(lines);
                toml.push('\n');
            }
        }
        let proxy = start_proxy(&toml).await;
        Self {
            scratch,
            farm,
            fronts,
            proxy,
        }
    }

    fn handshakes(&self) -> usize {
        self.fronts.iter().map(|f| f.handshakes().len()).sum()
    }

    async fn stop(self) {
        self.proxy.shutdown().await;
        self.farm.shutdown().await;
    }
}

/// The PEM of a CA that signed nothing here (and whose name no certificate names as issuer).
fn pki_ca_only() -> String {
    pki_of("some other CA").ca_pem
}

/// A client on one connection to `addr`.
async fn one_connection(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// GET `path` on `sender`'s connection: the status and the body.
async fn get(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: &str,
) -> (u16, String) {
    let req = hyper::Request::get(path)
        .header("host", "shop.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = async {
        sender.ready().await.unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("an answer within 10 s")
}

const NO_ACTIVE_CHECKS: &str = "[health]\nactive = false\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_backend_answers_and_keeps_its_tls_connection_for_the_next_request() {
    let farm = TlsFarm::start(
        FarmConfig::new(1, StoreMode::Shared),
        Setup {
            extra: NO_ACTIVE_CHECKS,
            backend_lines: &[],
            wrong_ca: false,
        },
    )
    .await;
    let mut client = one_connection(farm.proxy.addr()).await;
    for _ in 0..20 {
        assert_eq!(get(&mut client, "/login").await, (200, "login form".into()));
    }
    assert_eq!(farm.farm.served(0), 20);
    assert_eq!(
        farm.fronts[0].handshakes(),
        [Handshake {
            // The URL names an IP address: no SNI, the certificate's IP address verified.
            sni: None,
            alpn: Some(b"http/1.1".to_vec()),
        }],
        "20 requests in a row on one client connection: one TLS connection to the backend"
    );
    farm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_loss_is_detected_behind_https_backends_as_behind_plain_ones() {
    // As detection.rs's per-node-store case: half of the requests of a session land on the
    // node that did not issue it, and every logout is a cross-backend reset.
    let farm = TlsFarm::start(
        FarmConfig::new(2, StoreMode::PerNode),
        Setup {
            extra: "[incident]\nmax_reset_lines_per_sec = 1000000\n",
            backend_lines: &[],
            wrong_ca: false,
        },
    )
    .await;
    let report = sessionwatch_test_support::drive_users(
        farm.proxy.addr(),
        farm.farm.cookie_name(),
        sessionwatch_test_support::DriveConfig::new(50, 20).with_concurrency(10),
    )
    .await;
    assert_eq!(report.errors, 0);
    assert!(report.logged_out > 0);
    farm.proxy.flush_alerts();
    let resets = sessionwatch_tests::lines_of(&farm.scratch.alert_log(), "session_reset");
    let me_resets = resets.iter().filter(|l| l["path"] == "/me").count() as u64;
    assert_eq!(
        me_resets, report.logged_out,
        "every logout detected, nothing else"
    );
    let share = me_resets as f64 / report.requests as f64;
    assert!((share - 0.5).abs() < 0.12, "loss share {share:.2}");
    for l in &resets {
        assert_eq!(l["attribution"], "cross_backend", "{l}");
        assert_ne!(l["issuer"], l["server"], "{l}");
    }
    assert!(farm.fronts.iter().all(|f| !f.handshakes().is_empty()));
    farm.stop().await;
}

/// What the proxy logs from the moment this is first called.
fn captured_log() -> Arc<Mutex<Vec<u8>>> {
    #[derive(Clone)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(buf.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
        buf
    })
    .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_certificate_the_ca_file_does_not_trust_is_a_502_counted_against_the_backend() {
    let log = captured_log();
    let farm = TlsFarm::start(
        FarmConfig::new(1, StoreMode::Shared),
        Setup {
            extra: "[health]\nactive = false\npassive_fall = 100\n",
            backend_lines: &[],
            wrong_ca: true,
        },
    )
    .await;
    let mut client = one_connection(farm.proxy.addr()).await;
    for _ in 0..3 {
        assert_eq!(get(&mut client, "/login").await.0, 502);
    }
    let name = &farm.farm.names()[0];
    let metrics = farm.proxy.metrics_text();
    let connect_errors = metric_sum(
        &metrics,
        "sessionwatch_upstream_errors_total",
        &[&format!("backend=\"{name}\""), "kind=\"connect\""],
    );
    assert_eq!(
        connect_errors, 3.0,
        "each failed handshake is the backend's"
    );
    assert_eq!(
        metric_sum(&metrics, "sessionwatch_client_body_errors_total", &[]),
        0.0,
        "and never the client's"
    );
    assert_eq!(farm.farm.served(0), 0, "no request went out unverified");
    assert!(farm.fronts[0].handshakes().is_empty());
    // The front hears of each failed handshake just after the proxy has answered.
    let failed = || farm.fronts[0].failed.load(Ordering::SeqCst);
    assert!(wait_until(Duration::from_secs(10), || failed() >= 3).await);
    // The log is the whole test binary's: the line is found by what only this case causes.
    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("UnknownIssuer"))
        .unwrap_or_else(|| panic!("no untrusted certificate logged:\n{text}"));
    assert!(
        line.contains(&format!(
            "cannot connect to backend {name}: the TLS handshake failed: invalid peer certificate"
        )),
        "{line}"
    );
    farm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_server_name_is_the_one_sent_and_verified() {
    let farm = TlsFarm::start(
        FarmConfig::new(2, StoreMode::Shared),
        Setup {
            extra: NO_ACTIVE_CHECKS,
            backend_lines: &["server_name = \"farm.test\""],
            wrong_ca: false,
        },
    )
    .await;
    let mut client = one_connection(farm.proxy.addr()).await;
    for _ in 0..4 {
        assert_eq!(get(&mut client, "/login").await.0, 200);
    }
    assert!(farm.farm.served(0) > 0 && farm.farm.served(1) > 0);
    let sni = |i: usize| -> Vec<Option<String>> {
        farm.fronts[i]
            .handshakes()
            .into_iter()
            .map(|h| h.sni)
            .collect()
    };
    assert_eq!(sni(0), [Some("farm.test".to_owned())]);
    assert_eq!(
        sni(1),
        [None],
        "the other backend is asked for its URL's host"
    );
    farm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_name_the_certificate_is_not_for_is_refused() {
    let farm = TlsFarm::start(
        FarmConfig::new(1, StoreMode::Shared),
        Setup {
            extra: NO_ACTIVE_CHECKS,
            backend_lines: &["server_name = \"elsewhere.test\""],
            wrong_ca: false,
        },
    )
    .await;
    let mut client = one_connection(farm.proxy.addr()).await;
    assert_eq!(get(&mut client, "/login").await.0, 502);
    assert_eq!(farm.farm.served(0), 0);
    let failed = || farm.fronts[0].failed.load(Ordering::SeqCst);
    assert!(wait_until(Duration::from_secs(10), || failed() >= 1).await);
    farm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_reach_https_backends_over_tls_and_fail_on_an_untrusted_one() {
    let farm = TlsFarm::start(
        FarmConfig::new(1, StoreMode::Shared),
        Setup {
            extra: "",
            backend_lines: &[],
            wrong_ca: false,
        },
    )
    .await;
    assert!(
        wait_until(Duration::from_secs(10), || farm
            .farm
            .node(0)
            .health_checks()
            >= 3)
        .await,
        "the node saw no health checks"
    );
    assert!(farm.handshakes() >= 1);
    let up =
        |proxy: &RunningProxy| metric_sum(&proxy.metrics_text(), "sessionwatch_backend_up", &[]);
    assert_eq!(up(&farm.proxy), 1.0);
    farm.stop().await;

    let farm = TlsFarm::start(
        FarmConfig::new(1, StoreMode::Shared),
        Setup {
            extra: "",
            backend_lines: &[],
            wrong_ca: true,
        },
    )
    .await;
    assert!(
        wait_until(Duration::from_secs(10), || up(&farm.proxy) == 0.0).await,
        "an untrusted backend stays up"
    );
    assert_eq!(farm.farm.node(0).health_checks(), 0);
    let mut client = one_connection(farm.proxy.addr()).await;
    assert_eq!(
        get(&mut client, "/login").await.0,
        503,
        "no healthy backend"
    );
    farm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_reach_an_https_backend() {
    let farm = TlsFarm::start(
        FarmConfig::new(1, StoreMode::Shared),
        Setup {
            extra: NO_ACTIVE_CHECKS,
            backend_lines: &[],
            wrong_ca: false,
        },
    )
    .await;
    let mut s = TcpStream::connect(farm.proxy.addr()).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    s.write_all(b"ping over the upgraded connection")
        .await
        .unwrap();
    let mut echo = vec![0u8; 33];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo[..], b"ping over the upgraded connection");
    assert_eq!(farm.handshakes(), 1);
    farm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_discovered_by_dns_with_tls_are_reached_over_tls() {
    use sessionwatch_test_support::DnsServer;
    let scratch = Scratch::new("tls-discovery");
    let farm = Farm::start(FarmConfig::new(2, StoreMode::Shared))
        .await
        .expect("farm starts");
    let pki = pki();
    let config = server_config(&pki);
    let mut fronts = Vec::new();
    for addr in farm.addrs() {
        fronts.push(TlsFront::start(addr, config.clone()).await);
    }
    let dns = DnsServer::start().await.unwrap();
    let mut targets = Vec::new();
    for (i, front) in fronts.iter().enumerate() {
        let name = format!("pod-{i}.app.test");
        dns.set_ips(&name, &[front.addr.ip()]);
        targets.push((name, front.addr.port()));
    }
    let targets: Vec<(&str, u16)> = targets.iter().map(|(n, p)| (n.as_str(), *p)).collect();
    dns.set_srv("_https._tcp.app.test", &targets);
    let ca_file = ca_file_in(&scratch, &pki.ca_pem);
    let extra = format!(
        "{NO_ACTIVE_CHECKS}[upstream.tls]\nca_file = {:?}\n",
        ca_file.display().to_string()
    );
    let mut toml = config_toml(&[], farm.cookie_name(), &scratch.alert_log(), &extra);
    toml.push_str(&format!(
        "[[backends]]\nsrv = \"_https._tcp.app.test\"\nresolver = \"{}\"\nrefresh = \"100ms\"\n\
         tls = true\nserver_name = \"farm.test\"\n",
        dns.addr()
    ));
    let proxy = start_proxy(&toml).await;
    let up = || metric_sum(&proxy.metrics_text(), "sessionwatch_backend_up", &[]);
    assert!(
        wait_until(Duration::from_secs(10), || up() == 2.0).await,
        "the two discovered backends never joined"
    );
    let mut client = one_connection(proxy.addr()).await;
    for _ in 0..4 {
        assert_eq!(get(&mut client, "/login").await.0, 200);
    }
    assert!(farm.served(0) > 0 && farm.served(1) > 0);
    for front in &fronts {
        let sni: Vec<Option<String>> = front.handshakes().into_iter().map(|h| h.sni).collect();
        assert_eq!(sni, [Some("farm.test".to_owned())]);
    }
    proxy.shutdown().await;
    farm.shutdown().await;
}

/// A TLS backend that answers its first request `ok` and then, 50 ms later and unasked, a
/// second answer `PWND`; every later request (on any connection) is answered `own`. The flag
/// turns true once the stray answer is in the proxy's socket (on loopback, a write that returned
/// has arrived).
async fn tls_backend_with_a_stray_answer(
    config: Arc<rustls::ServerConfig>,
) -> (SocketAddr, Arc<std::sync::atomic::AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(config);
    let answered = Arc::new(AtomicUsize::new(0));
    let stray_sent = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = stray_sent.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, answered, sent) = (acceptor.clone(), answered.clone(), sent.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let first = answered.fetch_add(1, Ordering::SeqCst) == 0;
                        let answer: &[u8] = if first {
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                        } else {
                            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nown"
                        };
                        if tls.write_all(answer).await.is_err() || tls.flush().await.is_err() {
                            return;
                        }
                        if first {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            let stray = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nPWND";
                            if tls.write_all(stray).await.is_ok() && tls.flush().await.is_ok() {
                                sent.store(true, Ordering::SeqCst);
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, stray_sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_a_tls_backend_sends_unasked_never_reaches_the_next_request() {
    let scratch = Scratch::new("tls-stray");
    let pki = pki();
    let (backend, stray_sent) = tls_backend_with_a_stray_answer(server_config(&pki)).await;
    let ca_file = scratch.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let extra = format!(
        "[health]\nactive = false\n[upstream]\nreuse = \"always\"\n[upstream.tls]\nca_file = {:?}\n",
        ca_file.display().to_string()
    );
    let mut toml = config_toml(&[], "SID", &scratch.alert_log(), &extra);
    toml.push_str(&format!(
        "[[backends]]\nname = \"b\"\nurl = \"https://{backend}\"\n"
    ));
    let proxy = start_proxy(&toml).await;
    let mut client = one_connection(proxy.addr()).await;
    assert_eq!(get(&mut client, "/a").await, (200, "ok".into()));
    // The stray answer arrives on the idle TLS connection before the next request takes it.
    assert!(
        wait_until(Duration::from_secs(10), || stray_sent
            .load(Ordering::SeqCst))
        .await
    );
    assert_eq!(
        get(&mut client, "/b").await,
        (200, "own".into()),
        "another exchange's bytes were handed to /b"
    );
    assert_eq!(
        metric_sum(
            &proxy.metrics_text(),
            "sessionwatch_upstream_poisoned_total",
            &[]
        ),
        1.0
    );
    proxy.shutdown().await;
}

/// A TLS receiver that records the path, `Host` and JSON body of every post.
async fn tls_receiver(
    config: Arc<rustls::ServerConfig>,
) -> (
    SocketAddr,
    Arc<Mutex<Vec<(String, String, serde_json::Value)>>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Arc<Mutex<Vec<(String, String, serde_json::Value)>>> = Arc::default();
    let store = got.clone();
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, store) = (acceptor.clone(), store.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let store = store.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let host = req
                            .headers()
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        if let Ok(v) = serde_json::from_slice(&body) {
                            store.lock().unwrap().push((path, host, v));
                        }
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_and_webhook_receivers_over_tls_get_the_alert() {
    let scratch = Scratch::new("tls-sinks");
    let pki = pki();
    let config = server_config(&pki);
    let (am, am_got) = tls_receiver(config.clone()).await;
    let (hook, hook_got) = tls_receiver(config).await;
    let ca_file = scratch.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let ca = ca_file.display().to_string();
    let extra = format!(
        "[alertmanager]\nurl = \"https://{am}\"\nca_file = {ca:?}\nresend_every = \"1s\"\n\
         [webhook]\nurl = \"https://{hook}/hooks/sessionwatch\"\nca_file = {ca:?}\nresend_every = \"1s\"\n"
    );
    let h = Harness::start(FarmConfig::new(2, StoreMode::PerNode), &extra).await;
    h.drive(50, 10, 10).await;
    let arrived = wait_until(Duration::from_secs(10), || {
        !am_got.lock().unwrap().is_empty() && !hook_got.lock().unwrap().is_empty()
    })
    .await;
    assert!(arrived, "a receiver never got the incident");
    let (path, host, alert) = am_got.lock().unwrap()[0].clone();
    assert_eq!(path, "/api/v2/alerts");
    assert_eq!(host, am.to_string());
    assert_eq!(alert[0]["labels"]["alertname"], "SessionLossIncident");
    let (path, _, notice) = hook_got.lock().unwrap()[0].clone();
    assert_eq!(path, "/hooks/sessionwatch");
    assert_eq!(notice["type"], "incident_opened");
    assert_eq!(
        metric_sum(&h.metrics(), "sessionwatch_alert_sink_failures_total", &[]),
        0.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_over_tls_that_presents_an_untrusted_certificate_is_a_counted_failure() {
    let scratch = Scratch::new("tls-sink-untrusted");
    let (hook, got) = tls_receiver(server_config(&pki())).await;
    let ca_file = scratch.path().join("other-ca.pem");
    std::fs::write(&ca_file, pki_ca_only()).unwrap();
    let extra = format!(
        "[webhook]\nurl = \"https://{hook}/\"\nca_file = {:?}\nresend_every = \"1s\"\n",
        ca_file.display().to_string()
    );
    let h = Harness::start(FarmConfig::new(2, StoreMode::PerNode), &extra).await;
    h.drive(50, 10, 10).await;
    let failures = || metric_sum(&h.metrics(), "sessionwatch_alert_sink_failures_total", &[]);
    assert!(
        wait_until(Duration::from_secs(10), || failures() >= 1.0).await,
        "the failed delivery was not counted"
    );
    assert!(got.lock().unwrap().is_empty());
    h.stop().await;
}

/// `check-config`'s verdict on `toml`: `Ok`, or every problem as `serve` prints them.
fn check(toml: &str) -> Result<(), String> {
    Config::parse(toml, Path::new("farm.toml"))
        .map(drop)
        .map_err(|e| e.to_string())
}

fn ca_file_in(scratch: &Scratch, pem: &str) -> PathBuf {
    let path = scratch.path().join("ca.pem");
    std::fs::write(&path, pem).unwrap();
    path
}

#[test]
fn check_config_explains_what_an_https_backend_needs() {
    let scratch = Scratch::new("tls-config");
    let good = ca_file_in(&scratch, &pki().ca_pem).display().to_string();
    let backend = "[[backends]]\nname = \"a\"\nurl = \"https://10.0.0.7:8443\"\n";
    let with_ca = |file: &str| format!("[upstream.tls]\nca_file = {file:?}\n{backend}");
    assert_eq!(check(&with_ca(&good)), Ok(()));

    let cases: Vec<(String, &str)> = vec![
        (
            "[[backends]]\nname = \"a\"\nurl = \"https://app.internal\"\n".into(),
            "backends[0].url: give the port: https://app.internal:PORT",
        ),
        (
            backend.into(),
            "backends[0].url: a backend over TLS needs [upstream.tls] ca_file",
        ),
        (
            with_ca("/nonexistent/ca.pem"),
            "upstream.tls.ca_file: cannot read /nonexistent/ca.pem",
        ),
        (with_ca(&ca_file_in(&scratch, "not a certificate\n").display().to_string()), "holds no certificate"),
        (
            "[[backends]]\nname = \"a\"\nurl = \"http://10.0.0.7:8080\"\nserver_name = \"a.test\"\n"
                .into(),
            "backends[0].server_name: only for an https:// backend",
        ),
        (
            "[[backends]]\nsrv = \"_https._tcp.app.test\"\ntls = true\n".into(),
            "backends[0].server_name: an srv entry with tls = true needs server_name",
        ),
        (
            "[[backends]]\ndns = \"app.test:8443\"\ntls = true\n".into(),
            "backends[0].tls: a backend over TLS needs [upstream.tls] ca_file",
        ),
        (
            "[[backends]]\ndns = \"app.test:8080\"\nserver_name = \"a.test\"\n".into(),
            "backends[0].server_name: only with tls = true",
        ),
        (
            "[[backends]]\nname = \"a\"\nurl = \"https://10.0.0.7:8443\"\ntls = true\n".into(),
            "backends[0].tls: only for a backend discovered by DNS",
        ),
        (
            format!("[upstream.tls]\nca_file = {good:?}\nserver_name = \"not a name\"\n{backend}"),
            "upstream.tls.server_name: \"not a name\" is not a DNS name",
        ),
    ];
    for (toml, want) in cases {
        let got = check(&toml).expect_err(&toml);
        assert!(got.contains(want), "{want:?} not in:\n{got}\n---\n{toml}");
    }
}

#[test]
fn check_config_explains_what_an_https_sink_needs() {
    let scratch = Scratch::new("tls-sink-config");
    let good = ca_file_in(&scratch, &pki().ca_pem).display().to_string();
    let backend = "[[backends]]\nname = \"a\"\nurl = \"http://10.0.0.7:8080\"\n";
    for section in ["alertmanager", "webhook"] {
        let ok =
            format!("{backend}[{section}]\nurl = \"https://am.test:9093\"\nca_file = {good:?}\n");
        assert_eq!(check(&ok), Ok(()));
        let no_ca = format!("{backend}[{section}]\nurl = \"https://am.test:9093\"\n");
        let got = check(&no_ca).unwrap_err();
        assert!(
            got.contains(&format!("{section}.ca_file: an https:// URL needs ca_file")),
            "{got}"
        );
        let plain =
            format!("{backend}[{section}]\nurl = \"http://am.test:9093\"\nca_file = {good:?}\n");
        let got = check(&plain).unwrap_err();
        assert!(
            got.contains(&format!("{section}.ca_file: only for an https:// URL")),
            "{got}"
        );
    }
}
