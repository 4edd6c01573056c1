//! Raw session values never reach a log, an alert, a metric or the status page.
//!
//! Runs varied traffic (losses, rescues, pins, logouts, errors) with every log level captured,
//! then searches all of it for every raw session value the users ever held.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sessionwatch_test_support::{
    DriveConfig, Farm, FarmConfig, LossStyle, StoreMode, UserClient, drive_users,
};
use sessionwatch_tests::{Scratch, config_toml, farm_backends, http_get, start_proxy};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_raw_session_value_reaches_any_output() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let scratch = Scratch::new("leak");
    let mut values: Vec<String> = Vec::new();
    for (style, pin, rescue) in [
        (LossStyle::LoginRedirect, "off", true),
        (LossStyle::Reissue, "on_reset", false),
        (LossStyle::Clear, "on_incident", false),
    ] {
        let farm = Farm::start(FarmConfig::new(2, StoreMode::PerNode).with_loss(style))
            .await
            .unwrap();
        let extra = format!(
            "[pin]\npolicy = \"{pin}\"\n[rescue]\nenabled = {rescue}\n[incident]\nmax_reset_lines_per_sec = 1000\n"
        );
        let proxy = start_proxy(&config_toml(
            &farm_backends(&farm),
            farm.cookie_name(),
            &scratch.alert_log(),
            &extra,
        ))
        .await;
        let report = drive_users(
            proxy.addr(),
            farm.cookie_name(),
            DriveConfig::new(20, 10).with_concurrency(5),
        )
        .await;
        values.extend(report.cookie_values);
        for _ in 0..5 {
            let mut u = UserClient::new(proxy.addr(), farm.cookie_name());
            u.login().await.unwrap();
            u.logout().await.unwrap();
            values.extend(u.all_cookie_values().iter().cloned());
        }
        // Errors too: a stopped node gives connect errors while a session is carried.
        let mut u = UserClient::new(proxy.addr(), farm.cookie_name());
        u.login().await.unwrap();
        farm.stop_node(0).await;
        farm.stop_node(1).await;
        let _ = u.me().await;
        values.extend(u.all_cookie_values().iter().cloned());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let metrics = http_get(proxy.admin_addr().unwrap(), "/metrics").await.1;
        let status = http_get(proxy.admin_addr().unwrap(), "/status").await.1;
        capture.clone().write_all(metrics.as_bytes()).unwrap();
        capture.clone().write_all(status.as_bytes()).unwrap();
        proxy.shutdown().await;
        farm.shutdown().await;
    }
    values.sort();
    values.dedup();
    assert!(
        values.len() > 100,
        "the traffic used many sessions ({})",
        values.len()
    );

    let alerts = std::fs::read_to_string(scratch.alert_log()).unwrap();
    assert!(
        alerts.lines().count() > 20,
        "the alert log has content to search"
    );
    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("upstream failure") || logs.contains("backend marked down"),
        "the logs have content to search"
    );
    for v in &values {
        assert!(
            v.len() >= 16,
            "a session value long enough to be unambiguous: {}",
            v.len()
        );
        assert!(
            !alerts.contains(v.as_str()),
            "a raw session value is in the alert log"
        );
        assert!(
            !logs.contains(v.as_str()),
            "a raw session value is in the logs, metrics or status page"
        );
    }
}
