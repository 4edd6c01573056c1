//! The operator metrics of a running proxy say what happened: every client request is timed,
//! on the plain HTTP/1.1 loop and on hyper's path (HTTP/2 here) alike; upstream connections are
//! counted while they are open and no longer once closed; the build is labelled with the
//! release and the commit the embedder gave.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sessionwatch_proxy::{Config, StartOptions};
use sessionwatch_test_support::{Farm, FarmConfig, StoreMode, wait_until};
use sessionwatch_tests::{Scratch, config_toml, farm_backends, http_get, metric_sum, start_proxy};

const DURATION: &str = "sessionwatch_client_request_duration_seconds";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_requests_are_timed_on_both_paths_and_upstream_connections_counted() {
    let scratch = Scratch::new("operator-metrics");
    let farm = Farm::start(FarmConfig::new(2, StoreMode::Shared))
        .await
        .expect("farm starts");
    // No health checks: the only upstream connections are the requests'.
    let toml = config_toml(
        &farm_backends(&farm),
        farm.cookie_name(),
        &scratch.alert_log(),
        "[health]\nactive = false\n[upstream]\npool_idle_timeout = \"200ms\"\n",
    );
    let proxy = start_proxy(&toml).await;
    let count = |text: &str| metric_sum(text, &format!("{DURATION}_count"), &[]);
    let open = |text: &str| metric_sum(text, "sessionwatch_upstream_connections", &[]);
    let before = proxy.metrics_text();
    assert_eq!(count(&before), 0.0, "{before}");
    assert_eq!(open(&before), 0.0, "{before}");

    // The plain loop.
    for _ in 0..5 {
        // Not signed in: sent to the login page.
        let (status, _) = http_get(proxy.addr(), "/me").await;
        assert_eq!(status, 302);
    }
    let (status, body) = http_get(proxy.addr(), "/big?bytes=2000000").await;
    assert_eq!((status, body.len()), (200, 2_000_000));
    let plain = proxy.metrics_text();
    assert_eq!(count(&plain), 6.0, "{plain}");
    assert_eq!(
        metric_sum(&plain, &format!("{DURATION}_bucket"), &["le=\"+Inf\""]),
        6.0
    );
    assert!(
        metric_sum(&plain, &format!("{DURATION}_sum"), &[]) > 0.0,
        "{plain}"
    );
    assert!(
        open(&plain) >= 1.0,
        "the answers' connections wait in the pool:\n{plain}"
    );

    // hyper's path: HTTP/2 with prior knowledge.
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    for _ in 0..3 {
        let req = http::Request::get(format!("http://{}/me", proxy.addr()))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
            .await
            .expect("answered in time")
            .expect("answered");
        assert_eq!(
            (resp.version(), resp.status().as_u16()),
            (http::Version::HTTP_2, 302)
        );
        resp.into_body().collect().await.expect("body");
    }
    // The stream's task drops the answer's body just after its last frame went out.
    assert!(
        wait_until(Duration::from_secs(10), || count(&proxy.metrics_text())
            == 9.0)
        .await,
        "HTTP/2 requests not timed:\n{}",
        proxy.metrics_text()
    );

    // Idle past the pool's timeout, the connections are swept (once a second) and closed.
    assert!(
        wait_until(Duration::from_secs(10), || open(&proxy.metrics_text())
            == 0.0)
        .await,
        "swept connections still counted:\n{}",
        proxy.metrics_text()
    );
    proxy.shutdown().await;
    farm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_build_is_labelled_with_the_release_and_the_commit_given() {
    let scratch = Scratch::new("build-info");
    let farm = Farm::start(FarmConfig::new(1, StoreMode::Shared))
        .await
        .expect("farm starts");
    let toml = config_toml(
        &farm_backends(&farm),
        farm.cookie_name(),
        &scratch.alert_log(),
        "",
    );
    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));

    let unnamed = start_proxy(&toml).await;
    let text = unnamed.metrics_text();
    assert_eq!(
        metric_sum(
            &text,
            "sessionwatch_build_info",
            &[&version, "commit=\"unknown\""]
        ),
        1.0,
        "{text}"
    );
    unnamed.shutdown().await;

    let config = Config::parse(&toml, Path::new("test.toml")).expect("config");
    let named = sessionwatch_proxy::start(
        config,
        StartOptions {
            commit: Some("0123abcd4567".to_owned()),
            ..StartOptions::default()
        },
    )
    .await
    .expect("proxy starts");
    let (status, text) = http_get(named.admin_addr().expect("admin"), "/metrics").await;
    assert_eq!(status, 200);
    let build: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("sessionwatch_build_info"))
        .collect();
    assert_eq!(build.len(), 1, "{text}");
    assert!(
        build[0].contains(&version)
            && build[0].contains("commit=\"0123abcd4567\"")
            && build[0].ends_with(" 1"),
        "{}",
        build[0]
    );
    named.shutdown().await;
    farm.shutdown().await;
}
