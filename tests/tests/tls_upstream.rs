//! TLS from the proxy to its backends (`https://` URLs, `[upstream.tls]`) and to its alert sinks
//! (`ca_file`), against certificates each test makes with rcgen: a CA, and a server certificate
//! it signs for `127.0.0.1` and `farm.test`.
//!
//! The TLS backends are the in-process farm's nodes, each behind a TLS front that terminates TLS
//! and hands the bytes to its node: the nodes serve, and count what they serve, as in the plain
//! tests, and each front records the handshakes made with it (the name asked for, the protocol
//! agreed). The alert sinks' cases are in `tls_upstream/sinks.rs`, check-config's in
//! `tls_upstream/config.rs`, what they share in `tls_upstream/support.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use sessionwatch_proxy::RunningProxy;
use sessionwatch_test_support::{Farm, FarmConfig, StoreMode, wait_until};
use sessionwatch_tests::{Scratch, config_toml, metric_sum, start_proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

#[path = "tls_upstream/config.rs"]
mod config;
#[path = "tls_upstream/sinks.rs"]
mod sinks;
#[path = "tls_upstream/support.rs"]
mod support;

use config::ca_file_in;
use sessionwatch_tests::log::captured_log;
use support::{Handshake, TlsFront, pki, pki_ca_only, server_config};

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
