//! `[admin] token`: with it set, the admin listener answers `/metrics`, `/status` and every
//! other path only to a request that carries the token (Bearer, or the password of HTTP Basic),
//! while `/healthz` and `/readyz` stay open for kubelets and load balancers; the traffic
//! listener is not touched.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http_body_util::{BodyExt, Full};
use sessionwatch_test_support::{FarmConfig, StoreMode, shared_client};
use sessionwatch_tests::{Harness, http_get};

const TOKEN: &str = "admin-token-for-the-test-0123";

/// GET `path` with an optional `Authorization` value: status, `WWW-Authenticate` values, body.
async fn get(addr: SocketAddr, path: &str, auth: Option<&str>) -> (u16, Vec<String>, String) {
    let mut req = http::Request::get(format!("http://{addr}{path}"));
    if let Some(a) = auth {
        req = req.header(AUTHORIZATION, a);
    }
    let req = req.body(Full::new(Bytes::new())).expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(10), shared_client().request(req))
        .await
        .expect("the admin listener answers within 10s")
        .expect("the admin listener answers");
    let status = resp.status().as_u16();
    let challenges = resp
        .headers()
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .collect();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        challenges,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// A farm of `nodes` sharing one store, behind a proxy whose `[admin]` section has `settings`
/// besides its address.
async fn with_admin(nodes: usize, settings: &str) -> Harness {
    Harness::start(
        FarmConfig::new(nodes, StoreMode::Shared),
        &format!("[admin]\naddress = \"127.0.0.1:0\"\n{settings}"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_path_but_the_probes_needs_the_token() {
    let h = with_admin(
        2,
        &format!(
            "token = \"{TOKEN}\"
"
        ),
    )
    .await;
    let admin = h.proxy.admin_addr().expect("admin listener configured");

    for open in ["/healthz", "/readyz"] {
        let (status, _, body) = get(admin, open, None).await;
        assert_eq!(status, 200, "{open} without a token: {body}");
    }

    let basic =
        |user: &str, pass: &str| format!("Basic {}", STANDARD.encode(format!("{user}:{pass}")));
    let wrong = [
        None,
        Some(format!("Bearer {TOKEN}-not")),
        Some(format!("Bearer {}", &TOKEN[1..])),
        Some(basic(TOKEN, "wrong")),
        Some(format!("Digest {TOKEN}")),
    ];
    for path in ["/metrics", "/status", "/", "/no-such-path"] {
        for auth in &wrong {
            let (status, challenges, body) = get(admin, path, auth.as_deref()).await;
            assert_eq!(status, 401, "{path} with {auth:?}: {body}");
            assert!(
                challenges.first().is_some_and(|c| c.starts_with("Basic "))
                    && challenges.iter().any(|c| c.starts_with("Bearer ")),
                "{path}: a browser needs a Basic challenge, an API client a Bearer one: {challenges:?}"
            );
            assert!(
                !body.contains(TOKEN) && !body.contains("sessionwatch_"),
                "{body}"
            );
        }
    }

    let (status, _, scrape) = get(admin, "/metrics", Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(status, 200, "{scrape}");
    assert!(scrape.contains("sessionwatch_requests_total"), "{scrape}");
    let (status, _, body) = get(admin, "/status", Some(&basic("operator", TOKEN))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"sessions_tracked\""), "{body}");

    // The traffic listener asks nothing of its clients.
    let (status, body) = http_get(h.proxy.addr(), "/login").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "login form"),
        "through the proxy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_admin_paths_are_open_as_before() {
    let h = with_admin(1, "").await;
    let admin = h.proxy.admin_addr().expect("admin listener configured");
    for path in ["/metrics", "/status"] {
        let (status, challenges, body) = get(admin, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(challenges.is_empty(), "{challenges:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_open_paths_lists_is_answered_without_the_token() {
    let h = with_admin(
        1,
        &format!(
            "token = \"{TOKEN}\"
open_paths = [\"/metrics\"]
"
        ),
    )
    .await;
    let admin = h.proxy.admin_addr().expect("admin listener configured");
    let (status, _, scrape) = get(admin, "/metrics", None).await;
    assert_eq!(status, 200, "{scrape}");
    assert!(scrape.contains("sessionwatch_requests_total"), "{scrape}");
    for closed in ["/status", "/", "/probe"] {
        let (status, _, body) = get(admin, closed, None).await;
        assert_eq!(status, 401, "{closed}: {body}");
    }
}
