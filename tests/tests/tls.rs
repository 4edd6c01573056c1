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

/// `program`'s output, failing the test loudly when it is not installed.
fn run_tool(program: &str, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} is needed for this test and cannot run: {e}"));
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.as_bytes());
    }
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_http2_and_openssl_s_client_talk_to_the_proxy() {
    let pki = Pki::new("tls-tools");
    let files = pki.write("server", &pki.leaf(&["localhost"]));
    let s = Setup::new(&tls_section(&[files], "")).await;
    let port = s.proxy.addr().port().to_string();
    let ca = pki.ca_file().display().to_string();
    let resolve = format!("localhost:{port}:127.0.0.1");
    let url = format!("https://localhost:{port}/headers");
    for (flag, version) in [("--http2", "HTTP/2"), ("--http1.1", "HTTP/1.1")] {
        let out = tokio::task::spawn_blocking({
            let args: Vec<String> = [
                "-sS",
                "--max-time",
                "10",
                flag,
                "--cacert",
                &ca,
                "--resolve",
                &resolve,
                "-i",
                &url,
            ]
            .iter()
            .map(|a| (*a).to_owned())
            .collect();
            move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                run_tool("curl", &args, "")
            }
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "curl {flag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.starts_with(&format!("{version} 200")), "{stdout}");
        assert!(stdout.contains("x-forwarded-proto: https"), "{stdout}");
    }

    let connect_to = format!("127.0.0.1:{port}");
    let out = tokio::task::spawn_blocking(move || {
        run_tool(
            "openssl",
            &[
                "s_client",
                "-connect",
                &connect_to,
                "-servername",
                "localhost",
                "-verify_hostname",
                "localhost",
                "-CAfile",
                &ca,
                "-alpn",
                "http/1.1",
                "-verify_return_error",
                "-quiet",
            ],
            "GET /headers HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stdout.starts_with("HTTP/1.1 200"), "{stdout}\n{stderr}");
    assert!(stdout.contains("x-forwarded-proto: https"), "{stdout}");
    assert!(stderr.contains("verify return:1"), "{stderr}");
    s.stop().await;
}

/// A user of the PHP farm over one TLS connection, keeping its `PHPSESSID` as a browser does.
struct PhpUser {
    client: Client,
    cookie: Option<String>,
    seen: Vec<String>,
}

impl PhpUser {
    async fn new(addr: SocketAddr, pki: &Pki, alpn: &[u8]) -> Self {
        let tls = connect(addr, pki.client(&[alpn]), "localhost")
            .await
            .unwrap();
        assert_eq!(alpn_of(&tls), alpn);
        Self {
            client: Client::over(tls).await,
            cookie: None,
            seen: Vec::new(),
        }
    }

    async fn request(&mut self, method: &str, path: &str, body: &str) -> Answer {
        let cookie = self.cookie.as_ref().map(|v| format!("{COOKIE}={v}"));
        let answer = self
            .client
            .request(method, path, cookie.as_deref(), body)
            .await;
        for set in answer.1.get_all("set-cookie") {
            let text = set.to_str().unwrap_or_default();
            let Some((name, rest)) = text.split_once('=') else {
                continue;
            };
            if name != COOKIE {
                continue;
            }
            let value = rest.split(';').next().unwrap_or_default().to_owned();
            if value.is_empty() || value == "deleted" {
                self.cookie = None;
            } else {
                if !self.seen.contains(&value) {
                    self.seen.push(value.clone());
                }
                self.cookie = Some(value);
            }
        }
        answer
    }
}

fn alpn_of(tls: &TlsStream<TcpStream>) -> Vec<u8> {
    alpn(tls).unwrap_or_default()
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Over HTTP/1.1 and HTTP/2 on TLS, the broken PHP farm (each node its own session store) loses
/// sessions across nodes, and the proxy says so line by line, naming the node that issued the
/// session and the one that lost it, exactly as over plain HTTP (`php_farm.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detection_over_tls_on_the_real_php_farm() {
    let pki = Pki::new("tls-php");
    let files = pki.write("server", &pki.leaf(&["localhost"]));
    let scratch = Scratch::new("tls-php-farm");
    let alert_log = scratch.alert_log();
    let farm = tokio::task::block_in_place(|| PhpFarm::start(&scratch, Store::PerNode, false));
    let proxy = proxy_with_sections(&farm, &alert_log, "off", "", &tls_section(&[files], "")).await;

    let mut losses = Vec::new();
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let mut user = PhpUser::new(proxy.addr(), &pki, alpn).await;
        let mut lost = None;
        for _ in 0..10 {
            let (status, headers, _) = user.request("POST", "/login", "user=scripted").await;
            assert_eq!(status, 302, "login answers 302\n{}", farm.logs());
            assert!(user.cookie.is_some(), "login sets PHPSESSID");
            let issuer = header(&headers, "x-served-by").to_owned();
            let (status, headers, body) = user.request("GET", "/me", "").await;
            let server = header(&headers, "x-served-by").to_owned();
            match status.as_u16() {
                200 => {
                    assert_eq!(
                        issuer, server,
                        "a node that did not issue the session knew it"
                    );
                    assert_eq!(body.as_ref(), b"scripted\n");
                }
                302 => {
                    assert_eq!(header(&headers, "location"), "/login");
                    assert_ne!(issuer, server);
                    let id = header(&headers, "x-request-id").to_owned();
                    lost = Some((issuer, server, id));
                    break;
                }
                other => panic!("GET /me answered {other}\n{}", farm.logs()),
            }
        }
        let (issuer, server, id) = lost.expect("a session lost across nodes in ten tries");
        losses.push((alpn, issuer, server, id, user.seen));
    }

    tokio::task::block_in_place(|| proxy.flush_alerts());
    let resets = lines_of(&alert_log, "session_reset");
    let log = std::fs::read_to_string(&alert_log).unwrap_or_default();
    let metrics = proxy.metrics_text();
    for (alpn, issuer, server, id, seen) in &losses {
        let line = resets
            .iter()
            .find(|l| l["request_id"] == id.as_str())
            .unwrap_or_else(|| {
                panic!("no session_reset line for the loss over {alpn:?}: {resets:?}")
            });
        assert_eq!(line["signal"], "login_redirect", "{line}");
        assert_eq!(line["attribution"], "cross_backend", "{line}");
        assert_eq!(line["path"], "/me", "{line}");
        assert_eq!(line["issuer"], issuer.as_str(), "{line}");
        assert_eq!(line["server"], server.as_str(), "{line}");
        assert!(NODE_NAMES.contains(&issuer.as_str()));
        for value in seen {
            assert!(
                !log.contains(value.as_str()),
                "a raw PHPSESSID reached the alert log"
            );
            assert!(
                !metrics.contains(value.as_str()),
                "a raw PHPSESSID reached the metrics"
            );
        }
    }
    proxy.shutdown().await;
}

/// The kubelet's way of updating a mounted Secret: the files are links into `..data`, a link
/// to a timestamped directory; a new directory is written, then `..data` swapped to it by a
/// rename.
struct MountedSecret {
    dir: PathBuf,
    generation: u32,
}

impl MountedSecret {
    fn new(dir: &Path, leaf: &Leaf) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let mut s = Self {
            dir: dir.to_owned(),
            generation: 0,
        };
        s.update(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes());
        std::os::unix::fs::symlink("..data/tls.crt", dir.join("tls.crt")).unwrap();
        std::os::unix::fs::symlink("..data/tls.key", dir.join("tls.key")).unwrap();
        s
    }

    fn update(&mut self, cert: &[u8], key: &[u8]) {
        self.generation += 1;
        let version = format!("..2026_{}", self.generation);
        let target = self.dir.join(&version);
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("tls.crt"), cert).unwrap();
        std::fs::write(target.join("tls.key"), key).unwrap();
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&version, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }

    fn files(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("tls.crt"), self.dir.join("tls.key"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_replaced_on_disk_reaches_new_connections_and_open_ones_keep_working() {
    let pki = Pki::new("tls-reload");
    let first = pki.leaf(&["localhost"]);
    let mut secret = MountedSecret::new(&pki.scratch.path().join("secret"), &first);
    let s = Setup::new(&tls_section(
        &[secret.files()],
        "reload_interval = \"100ms\"",
    ))
    .await;
    // A new client each time: one that resumed its last session would not be sent a
    // certificate at all.
    let client = || pki.client(&[b"http/1.1"]);
    let reloads = |s: &Setup, result: &str| {
        s.metric(
            "sessionwatch_tls_certificate_reloads_total",
            &[&format!("result=\"{result}\"")],
        )
    };

    let tls = connect(s.proxy.addr(), client(), "localhost")
        .await
        .unwrap();
    assert_eq!(served(&tls), first.der);
    let mut open = Client::over(tls).await;
    assert_eq!(open.get("/headers").await.0, 200);

    let second = pki.leaf(&["localhost"]);
    secret.update(second.cert_pem.as_bytes(), second.key_pem.as_bytes());
    eventually("the new certificate is reloaded", || {
        reloads(&s, "reloaded") == 1.0
    })
    .await;
    let tls = connect(s.proxy.addr(), client(), "localhost")
        .await
        .unwrap();
    assert_eq!(
        served(&tls),
        second.der,
        "a new connection gets the new certificate"
    );
    let mut fresh = Client::over(tls).await;
    assert_eq!(fresh.get("/headers").await.0, 200);
    // The connection opened before the swap carries on, on the certificate it got.
    for _ in 0..3 {
        assert_eq!(open.get("/headers").await.0, 200);
    }

    // A replacement whose key is not its certificate's: the second certificate stays.
    let third = pki.leaf(&["localhost"]);
    secret.update(third.cert_pem.as_bytes(), first.key_pem.as_bytes());
    eventually("the bad replacement is refused", || {
        reloads(&s, "failed") == 1.0
    })
    .await;
    // Looked at again and again, the same bad files are refused once.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(reloads(&s, "failed"), 1.0);
    assert_eq!(reloads(&s, "reloaded"), 1.0);
    let tls = connect(s.proxy.addr(), client(), "localhost")
        .await
        .unwrap();
    assert_eq!(
        served(&tls),
        second.der,
        "the last good certificate is still served"
    );
    // Fixed: served.
    secret.update(third.cert_pem.as_bytes(), third.key_pem.as_bytes());
    eventually("the fixed files are reloaded", || {
        reloads(&s, "reloaded") == 2.0
    })
    .await;
    let tls = connect(s.proxy.addr(), client(), "localhost")
        .await
        .unwrap();
    assert_eq!(served(&tls), third.der);
    assert_eq!(fresh.get("/headers").await.0, 200);
    s.stop().await;
}

/// Accepts any certificate: the SNI test looks at which one came, not whether it fits the
/// name asked for (the default's does not).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_and_the_first_is_the_default() {
    let pki = Pki::new("tls-sni");
    let shop = pki.leaf(&["shop.example", "127.0.0.1"]);
    let api = pki.leaf(&["*.api.example"]);
    let admin = pki.leaf(&["admin.example"]);
    let certs = [
        pki.write("shop", &shop),
        pki.write("api", &api),
        pki.write("admin", &admin),
    ];
    let s = Setup::new(&tls_section(&certs, "")).await;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let any = Arc::new(
        ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
    );
    for (name, expect, which) in [
        ("admin.example", &admin.der, "admin"),
        ("eu.api.example", &api.der, "api"),
        ("shop.example", &shop.der, "shop"),
        // A name no certificate is for, and no SNI at all (an address): the first.
        ("other.example", &shop.der, "shop"),
        ("127.0.0.1", &shop.der, "shop"),
    ] {
        let tls = connect(s.proxy.addr(), any.clone(), name).await.unwrap();
        assert!(
            served(&tls) == **expect,
            "{name} should get the {which} certificate"
        );
    }
    // With verification on, each name's certificate checks out for it.
    let trusting = pki.client(&[b"http/1.1"]);
    for name in [
        "admin.example",
        "x.api.example",
        "shop.example",
        "127.0.0.1",
    ] {
        let tls = connect(s.proxy.addr(), trusting.clone(), name)
            .await
            .unwrap();
        assert_eq!(
            Client::over(tls).await.get("/headers").await.0,
            200,
            "{name}"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_and_the_handshake_timeout_are_kept() {
    let pki = Pki::new("tls-limits");
    let files = pki.write("server", &pki.leaf(&["localhost"]));
    let more = "min_version = \"1.3\"\nhandshake_timeout = \"300ms\"";
    let s = Setup::new(&tls_section(&[files], more)).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let tls12_only = Arc::new(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    assert!(
        connect(s.proxy.addr(), tls12_only, "localhost")
            .await
            .is_err()
    );
    let tls = connect(s.proxy.addr(), pki.client(&[]), "localhost")
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    drop(tls);
    eventually("the refused handshake is counted", || {
        s.metric("sessionwatch_tls_handshakes_total", &["result=\"failed\""]) == 1.0
    })
    .await;

    // A client that connects and says nothing is closed once the handshake timeout passes.
    let mut silent = TcpStream::connect(s.proxy.addr()).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(BOUND, tokio::io::AsyncReadExt::read(&mut silent, &mut byte))
        .await
        .expect("closed within the bound");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    eventually("the timeout is counted", || {
        s.metric("sessionwatch_tls_handshakes_total", &["result=\"timeout\""]) == 1.0
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_coming_back_resumes_its_session_on_either_version() {
    let pki = Pki::new("tls-resume");
    let files = pki.write("server", &pki.leaf(&["localhost"]));
    let s = Setup::new(&tls_section(&[files], "")).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let client = Arc::new(
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[version])
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_no_client_auth(),
        );
        let mut kinds = Vec::new();
        for _ in 0..3 {
            let tls = connect(s.proxy.addr(), client.clone(), "localhost")
                .await
                .unwrap();
            kinds.push(tls.get_ref().1.handshake_kind());
            // TLS 1.3 tickets come after the handshake: an answer read makes sure they did.
            let mut c = Client::over(tls).await;
            assert_eq!(c.get("/headers").await.0, 200);
        }
        use rustls::HandshakeKind::{Full, Resumed};
        assert_eq!(
            kinds,
            [Some(Full), Some(Resumed), Some(Resumed)],
            "{version:?}"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_follows_a_proxy_protocol_header() {
    let pki = Pki::new("tls-proxy-protocol");
    let files = pki.write("server", &pki.leaf(&["localhost"]));
    let listen = "[listen]\naddress = \"127.0.0.1:0\"\n";
    let section = format!("{listen}trusted_proxies = [\"127.0.0.1/32\"]\nproxy_protocol = true\n");
    let s = {
        let scratch = Scratch::new("tls-pp");
        let farm = Farm::start(FarmConfig::new(1, StoreMode::Shared))
            .await
            .expect("farm starts");
        let toml = config_toml(
            &farm_backends(&farm),
            farm.cookie_name(),
            &scratch.alert_log(),
            &tls_section(&[files], ""),
        );
        assert!(toml.starts_with(listen), "{toml}");
        let proxy = start_proxy(&toml.replacen(listen, &section, 1)).await;
        Setup {
            _scratch: scratch,
            farm,
            proxy,
        }
    };
    let mut tcp = TcpStream::connect(s.proxy.addr()).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut tcp,
        b"PROXY TCP4 203.0.113.9 127.0.0.1 51000 443\r\n",
    )
    .await
    .unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(
        BOUND,
        TlsConnector::from(pki.client(&[b"h2"])).connect(name, tcp),
    )
    .await
    .expect("a handshake in time")
    .unwrap();
    let mut client = Client::over(tls).await;
    let (status, _, body) = client.get("/headers").await;
    assert_eq!(status, 200);
    assert_eq!(echoed(&body, "x-forwarded-for"), ["203.0.113.9"]);
    assert_eq!(echoed(&body, "x-forwarded-proto"), ["https"]);
    s.stop().await;
}

/// A connection the proxy closes after its last answer ends with TLS's close_notify: without
/// it a client cannot tell the end from a cut (OpenSSL then drops the session from its cache,
/// and the next connection cannot resume).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_ends_a_tls_connection_with_close_notify() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new("tls-close");
    let files = pki.write("server", &pki.leaf(&["localhost"]));
    let s = Setup::new(&tls_section(&[files], "")).await;
    for request in [
        &b"GET /headers HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"[..],
        b"GET /headers HTTP/1.0\r\n\r\n",
        // Not plain (chunked): hyper's path.
        b"GET /headers HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
    ] {
        let mut tls = connect(s.proxy.addr(), pki.client(&[b"http/1.1"]), "localhost")
            .await
            .unwrap();
        tls.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(BOUND, tls.read_to_end(&mut answer))
            .await
            .expect("the proxy closes in time");
        let text = String::from_utf8_lossy(&answer);
        assert!(
            read.is_ok(),
            "{read:?}: closed without close_notify after {text}"
        );
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    }
    s.stop().await;
}
