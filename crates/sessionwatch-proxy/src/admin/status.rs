//! `/status` (the live picture as JSON) and the status page at `/` that draws it.
//!
//! The page is one HTML file built into the binary ([`PAGE`]): inline CSS, inline script and
//! inline SVG, no external asset. Its script fetches `status` relative to the page's own URL
//! every few seconds, so it works behind a path prefix and with the HTTP Basic credentials the
//! browser already holds. The Content-Security-Policy it is served with forbids every remote
//! load: scripts and styles only with the response's nonce, connections only to the page's own
//! origin, images only as `data:`.
//!
//! Nothing here holds a raw session id: resets are listed by their short fingerprint, as the
//! alert log writes them.

use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderName};
use http::{HeaderValue, Response, StatusCode};
use serde_json::{Value, json};

use super::AdminState;
use crate::backends::Backend;
use crate::metrics::CLASSES;
use crate::report::series::STEP_MS;
use crate::upstream::body::ResponseBody;

/// The page; `__NONCE__` is replaced by each response's nonce.
const PAGE: &str = include_str!("page.html");

/// How often the page fetches `/status` again, in milliseconds (written into the page).
const REFRESH_MS: u64 = 2_000;

fn rfc3339(t: sessionwatch_core::Timestamp) -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::from(t)).to_string()
}

/// One backend's entry: what `/status` always said (name, member, healthy, in flight), its
/// answers and sessions, and its health history.
fn backend_entry(b: &Backend) -> Value {
    let s = b.stats.snapshot();
    let health = b.stats.health();
    let responses: serde_json::Map<String, Value> = CLASSES
        .iter()
        .zip(s.classes)
        .map(|(class, n)| ((*class).to_owned(), json!(n)))
        .collect();
    let state = match (b.is_member(), b.is_healthy()) {
        (false, _) => "left",
        (true, true) => "up",
        (true, false) => "down",
    };
    json!({
        "name": &*b.name,
        "member": b.is_member(),
        "healthy": b.is_healthy(),
        "in_flight": b.in_flight(),
        "requests": s.requests,
        "responses": responses,
        "proxy_answered": s.proxy_answered,
        "pins": s.pins,
        "answer_time_total_ms": s.answer_micros as f64 / 1000.0,
        "average_answer_ms": s.average_answer_ms().map(|ms| (ms * 1000.0).round() / 1000.0),
        "sessions_issued": s.sessions_issued,
        "sessions_lost": s.sessions_lost,
        "issued_sessions_lost": s.issued_lost,
        "health": {
            "state": state,
            "last_check": health.last_check.map(|(result, at)| json!({
                "result": result.describe(),
                "passed": result.passed(),
                "at": rfc3339(at),
            })),
            "changed_at": health.changed.map(|(at, _)| rfc3339(at)),
            "changed_reason": health.changed.map(|(_, why)| why),
        },
    })
}

/// The `/status` document.
pub(super) fn document(state: &AdminState) -> Value {
    let window = state.incidents.snapshot();
    let open = state.incidents.is_open();
    let (points, recent) = state.incidents.recent();
    let backends: Vec<Value> = state.backends.known().map(backend_entry).collect();
    let incident = open
        .then(|| {
            window.incident.as_ref().map(|life| {
                json!({
                    "id": window.incident_id,
                    "started": window.started,
                    "summary": window.summary,
                    "hint": window.hint,
                    "share": window.share,
                    "requests": life.requests,
                    "resets": life.resets,
                    "sessions_affected": life.sessions_affected,
                    "sessions_affected_at_least": life.sessions_affected_at_least,
                    "peak_share": life.peak_share,
                    "first_loss": life.first_loss,
                    "last_loss": life.last_loss,
                })
            })
        })
        .flatten();
    let incident_matrix = open
        .then(|| window.incident.as_ref().map(|life| &life.matrix))
        .flatten();
    json!({
        "incident_open": open,
        "summary": window.summary,
        "incident": incident,
        "matrix": {
            "window": window.matrix,
            "incident": incident_matrix,
        },
        "share_series": {
            "step_s": STEP_MS / 1000,
            "points": points,
        },
        "recent_resets": recent,
        "window": window,
        "backends": backends,
        "sessions_tracked": state.store.len(),
    })
}

/// `GET /status`.
pub(super) fn json(state: &AdminState) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(document(state).to_string()));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// 32 hex digits from the system's randomness: a page's scripts and styles run only with it.
fn nonce() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Still unique per response, if less unpredictable; the policy still forbids any
        // remote load, which is what it is there for.
        return uuid::Uuid::now_v7().simple().to_string();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `GET /`: the page, with a fresh nonce in its policy and its tags.
pub(super) fn page() -> Response<ResponseBody> {
    let nonce = nonce();
    let body = PAGE
        .replace("__NONCE__", &nonce)
        .replace("__REFRESH_MS__", &REFRESH_MS.to_string());
    let policy = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
         connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    );
    let mut r = Response::new(ResponseBody::full(body));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    // A nonce is 32 hex digits, so the policy is always a valid header value.
    if let Ok(v) = HeaderValue::from_str(&policy) {
        h.insert(CONTENT_SECURITY_POLICY, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_elsewhere_and_every_tag_carries_the_nonce() {
        let r = page();
        let csp = r.headers()[CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            csp.starts_with("default-src 'none'; script-src 'nonce-"),
            "{csp}"
        );
        let nonce = csp
            .split("'nonce-")
            .nth(1)
            .and_then(|s| s.split('\'').next())
            .unwrap();
        assert_eq!(nonce.len(), 32);
        let ResponseBody::Full { data: Some(body) } = r.into_body() else {
            panic!("a whole body");
        };
        let html = String::from_utf8(body.to_vec()).unwrap();
        assert!(!html.contains("__NONCE__") && !html.contains("__REFRESH_MS__"));
        for tag in ["<script", "<style"] {
            let n = html.matches(tag).count();
            assert!(n > 0);
            assert_eq!(
                html.matches(&format!("{tag} nonce=\"{nonce}\"")).count(),
                n,
                "every {tag} carries the nonce"
            );
        }
        // No address of anywhere else: every fetch is relative.
        for remote in ["http://", "https://", "//cdn", "src=", "@import", "url("] {
            assert!(
                !html.contains(remote) || remote == "http://" && only_svg_namespace(&html),
                "the page refers to {remote}"
            );
        }
        assert!(
            html.contains("fetch(new URL('status', location.href)"),
            "the refresh is relative"
        );
    }

    /// `http://` appears only as the SVG namespace, which is a name, not a load.
    fn only_svg_namespace(html: &str) -> bool {
        html.matches("http://").count() == html.matches("http://www.w3.org/2000/svg").count()
    }

    #[test]
    fn two_pages_get_two_nonces() {
        let csp = |r: Response<ResponseBody>| r.headers()[CONTENT_SECURITY_POLICY].clone();
        assert_ne!(csp(page()), csp(page()));
    }
}
