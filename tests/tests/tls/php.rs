//! Detection over TLS against the real PHP farm, as `php_farm.rs` does it over plain HTTP.

use super::*;

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
