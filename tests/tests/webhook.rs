//! The generic JSON webhook sink: a receiver gets the incident as JSON, and a receiver that is
//! down or failing never holds up traffic or costs an alert-log line; its failures are counted.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sessionwatch_test_support::{FarmConfig, StoreMode, wait_until};
use sessionwatch_tests::{Harness, metric_sum};

/// A webhook receiver on 127.0.0.1:0 that records every JSON body and answers `status`.
async fn receiver(status: u16) -> (SocketAddr, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let store = got.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let store = store.clone();
                    async move {
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        if let Ok(v) = serde_json::from_slice(&body) {
                            store.lock().unwrap().push(v);
                        }
                        let mut resp = hyper::Response::new(Full::new(Bytes::new()));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_receives_the_incident_as_json() {
    let (addr, got) = receiver(200).await;
    let extra =
        format!("[webhook]\nurl = \"http://{addr}/hooks/sessionwatch\"\nresend_every = \"1s\"\n");
    let h = Harness::start(FarmConfig::new(2, StoreMode::PerNode), &extra).await;
    h.drive(50, 10, 10).await;
    assert!(
        wait_until(Duration::from_secs(5), || !got.lock().unwrap().is_empty()).await,
        "the webhook never received the incident"
    );
    let first = got.lock().unwrap()[0].clone();
    assert_eq!(first["type"], "incident_opened");
    assert_eq!(first["hint"]["code"], "store_not_shared");
    assert!(first["summary"].as_str().unwrap().contains("not shared"));
    assert_eq!(
        first["incident_id"],
        h.lines("incident_opened")[0]["incident_id"]
    );
    assert_eq!(
        metric_sum(&h.metrics(), "sessionwatch_alert_sink_failures_total", &[]),
        0.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_webhook_blocks_nothing_and_loses_no_line() {
    let (addr, got) = receiver(500).await;
    let extra = format!(
        "[webhook]\nurl = \"http://{addr}/\"\nresend_every = \"200ms\"\n\
         [incident]\nmax_reset_lines_per_sec = 1000000\n"
    );
    let h = Harness::start(FarmConfig::new(2, StoreMode::PerNode), &extra).await;
    let report = h.drive(50, 20, 10).await;
    assert_eq!(report.errors, 0, "traffic flows while the sink fails");
    assert!(
        wait_until(Duration::from_secs(5), || {
            metric_sum(
                &h.metrics(),
                "sessionwatch_alert_sink_failures_total",
                &["sink=\"webhook\""],
            ) >= 2.0
        })
        .await,
        "failures are counted, and retried"
    );
    assert!(!got.lock().unwrap().is_empty(), "the receiver was asked");
    assert_eq!(
        h.lines("session_reset").len() as u64,
        report.logged_out,
        "every reset still has its line"
    );
    assert_eq!(h.lines("incident_opened").len(), 1);
    h.stop().await;
}
