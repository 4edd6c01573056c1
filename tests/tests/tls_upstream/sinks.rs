//! The alert sinks over TLS: Alertmanager and a webhook behind TLS receivers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sessionwatch_test_support::{FarmConfig, StoreMode, wait_until};
use sessionwatch_tests::{Harness, Scratch, metric_sum};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::support::{pki, pki_ca_only, server_config};

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
