//! `POST /probe`: the deploy gate on the admin listener, for an Argo Rollouts `web` analysis
//! or a Flagger webhook. It runs the file's `[probe]` on the farm the proxy has now, within the
//! same time limit as `sessionwatch probe`, and answers the same JSON: 200 when every session
//! was kept, 422 when one was lost, 503 when the probe could not run (or the file has no
//! `[probe]`). One probe at a time: a second asked while one runs is answered 409 at once, so
//! a retrying analysis cannot pile runs onto the farm.

use std::sync::Arc;

use http::header::ALLOW;
use http::{HeaderValue, Method, Response, StatusCode};
use tokio::sync::Mutex;

use super::text;
use crate::backends::Backends;
use crate::config::Config;
use crate::probe::{Probe, ProbeOutcome};
use crate::upstream::body::ResponseBody;

/// What `POST /probe` needs: the configuration the proxy started with, its live farm, and the
/// lock that keeps runs one at a time.
pub(crate) struct ProbeGate {
    config: Config,
    backends: Arc<Backends>,
    running: Mutex<()>,
}

impl ProbeGate {
    pub(crate) fn new(config: Config, backends: Arc<Backends>) -> Self {
        Self {
            config,
            backends,
            running: Mutex::new(()),
        }
    }
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<ResponseBody> {
    text(status, body.to_string(), "application/json")
}

pub(crate) async fn handle(gate: &ProbeGate, method: &Method) -> Response<ResponseBody> {
    if method != Method::POST {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST runs the probe\n",
            "text/plain",
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let Ok(_running) = gate.running.try_lock() else {
        return json(
            StatusCode::CONFLICT,
            &serde_json::json!({"result": "busy", "error": "a probe is running already"}),
        );
    };
    let probe = match Probe::for_running(&gate.config, &gate.backends) {
        Ok(probe) => probe,
        Err(why) => {
            return json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"result": "failed", "error": why}),
            );
        }
    };
    let env = |name: &str| std::env::var(name).ok();
    let report = probe.run(&env).await;
    let status = match report.outcome() {
        ProbeOutcome::Kept => StatusCode::OK,
        ProbeOutcome::Lost => StatusCode::UNPROCESSABLE_ENTITY,
        ProbeOutcome::Failed => StatusCode::SERVICE_UNAVAILABLE,
    };
    match report.outcome() {
        ProbeOutcome::Kept => tracing::info!(result = "kept", "probe"),
        outcome => tracing::warn!(
            result = outcome.as_str(),
            error = report.error.as_deref(),
            hint = report.hint.as_ref().map(|h| h.code()),
            "probe"
        ),
    }
    json(status, &report.to_json())
}
