//! The handshake itself: `min_version`, its timeout, resumption, after a PROXY header, and
//! the close_notify that ends a connection.

use super::*;

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
