//! The status page at `/` in a real browser (headless Chromium through chromedriver), and the
//! answer counts behind it on both request paths.
//!
//! The page test runs a per-node farm with users until an incident opens and pinning starts,
//! then stops the traffic and reads the page's DOM: it must say what `/status` says at the same
//! moment (the chart's points, the matrices' cells, the backend table, the incident, the resets),
//! with no console error or exception, and with no raw session value anywhere. The screenshot
//! is written to `target/test-artefacts/status-page.png`.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use sessionwatch_test_support::{FarmConfig, MeOutcome, StoreMode, wait_until};
use sessionwatch_tests::chromium::{Chromium, artefact_path};
use sessionwatch_tests::raw_http::{ClientConn, Reply};
use sessionwatch_tests::{Harness, http_get, metric_sum};

async fn status(admin: SocketAddr) -> (Value, String) {
    let (code, body) = http_get(admin, "/status").await;
    assert_eq!(code, 200, "{body}");
    (serde_json::from_str(&body).expect("/status is JSON"), body)
}

/// `users` users each signing in and making `requests` requests, signing in again after a
/// loss; every raw session value they were given.
async fn browse(h: &Harness, users: usize, requests: usize) -> Vec<String> {
    let tasks: Vec<_> = (0..users)
        .map(|i| {
            let mut u = h.user().with_user(format!("user-{i}"));
            tokio::spawn(async move {
                u.login().await.expect("sign-in");
                for _ in 0..requests {
                    if let MeOutcome::LoggedOut { .. } = u.me().await.expect("answer") {
                        u.login().await.expect("sign-in again");
                    }
                }
                u.all_cookie_values().to_vec()
            })
        })
        .collect();
    let mut values = Vec::new();
    for t in tasks {
        values.extend(t.await.expect("user task"));
    }
    values
}

/// Every number as a float, so that `0` from the page and `0.0` from `/status` compare equal.
fn floats(v: Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(a) => Value::Array(a.into_iter().map(floats).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, floats(v))).collect()),
        other => other,
    }
}

fn cells(matrix: &Value) -> Value {
    let mut cells: Vec<(String, String, u64, u64)> = matrix
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["issuer"].as_str().unwrap().to_owned(),
                        c["server"].as_str().unwrap().to_owned(),
                        c["requests"].as_u64().unwrap(),
                        c["resets"].as_u64().unwrap(),
                    )
                })
                // The heat map draws every pair; a pair without traffic is a cell of zeros.
                .filter(|c| c.2 > 0 || c.3 > 0)
                .collect()
        })
        .unwrap_or_default();
    cells.sort();
    json!(cells)
}

/// What the page shows, taken from a `/status` document, in the shape [`READ_DOM`] gives.
fn view_of_status(s: &Value) -> Value {
    let incident = (!s["incident"].is_null()).then(|| {
        let i = &s["incident"];
        json!({
            "id": i["id"], "started": i["started"], "hint_code": i["hint"]["code"],
            "hint_text": i["hint"]["text"], "resets": i["resets"], "requests": i["requests"],
            "sessions_affected": i["sessions_affected"], "peak_share": i["peak_share"],
        })
    });
    let backends: Vec<Value> = s["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let h = &b["health"];
            json!({
                "name": b["name"], "state": h["state"],
                "last_check": h["last_check"]["result"], "changed": h["changed_at"],
                "requests": b["requests"],
                "1xx": b["responses"]["1xx"], "2xx": b["responses"]["2xx"],
                "3xx": b["responses"]["3xx"], "4xx": b["responses"]["4xx"],
                "5xx": b["responses"]["5xx"], "proxy_answered": b["proxy_answered"],
                "in_flight": b["in_flight"], "pins": b["pins"],
                "average_answer_ms": b["average_answer_ms"],
                "sessions_issued": b["sessions_issued"], "sessions_lost": b["sessions_lost"],
                "issued_sessions_lost": b["issued_sessions_lost"],
            })
        })
        .collect();
    let points: Vec<Value> = s["share_series"]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| json!({"t": p["t"], "requests": p["requests"], "resets": p["resets"], "share": p["share"]}))
        .collect();
    let resets: Vec<Value> = s["recent_resets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["session"].clone())
        .collect();
    floats(json!({
        "summary": s["summary"],
        "incident_open": s["incident_open"],
        "incident": incident,
        "window": {"share": s["window"]["share"], "requests": s["window"]["requests"], "resets": s["window"]["resets"]},
        "sessions_tracked": s["sessions_tracked"],
        "points": points,
        "matrix_window": cells(&s["matrix"]["window"]),
        "matrix_incident": cells(&s["matrix"]["incident"]),
        "backends": backends,
        "resets": resets,
    }))
}

/// Reads the numbers from the page's stable ids and data attributes (never from its script's
/// state), in the shape of [`view_of_status`].
const READ_DOM: &str = r#"
const q = (s) => document.querySelector(s);
const val = (id) => document.getElementById(id).getAttribute('data-value');
const n = (v) => (v === null || v === '' ? null : Number(v));
const cells = (id) => Array.from(document.querySelectorAll('#' + id + ' td[data-issuer]')).map((td) => ({
  issuer: td.dataset.issuer, server: td.dataset.server, requests: Number(td.dataset.requests), resets: Number(td.dataset.resets)
}));
const open = q('#incident').dataset.open === 'true';
const text = ['state', 'last_check', 'changed'];
const backends = Array.from(document.querySelectorAll('#backends tbody tr[data-backend]')).map((row) => {
  const b = { name: row.dataset.backend };
  row.querySelectorAll('td[data-field]').forEach((td) => {
    const f = td.dataset.field;
    if (f === 'name') return;
    const v = td.getAttribute('data-value');
    b[f] = text.includes(f) ? (v === '' ? null : v) : n(v);
  });
  return b;
});
return {
  generation: Number(q('#updated').dataset.generation),
  refresh_error: q('#updated').getAttribute('data-error'),
  incident_none_shown: !q('#incident-none').hidden && q('#incident-none').textContent,
  view: {
    summary: q('#summary').textContent,
    incident_open: open,
    incident: open ? {
      id: val('incident-id'), started: val('incident-started'), hint_code: val('incident-hint-code'),
      hint_text: q('#incident-hint-text').textContent, resets: n(val('incident-resets')),
      requests: n(val('incident-requests')), sessions_affected: n(val('incident-sessions')),
      peak_share: n(val('incident-peak'))
    } : null,
    window: { share: n(val('share-now')), requests: n(val('window-requests')), resets: n(val('window-resets')) },
    sessions_tracked: n(val('sessions-tracked')),
    points: Array.from(document.querySelectorAll('#chart-points rect.point')).map((r) => ({
      t: Number(r.dataset.t), requests: Number(r.dataset.requests), resets: Number(r.dataset.resets), share: Number(r.dataset.share)
    })),
    matrix_window: cells('matrix-window'),
    matrix_incident: cells('matrix-incident'),
    backends: backends,
    resets: Array.from(document.querySelectorAll('#recent-resets tr[data-session]')).map((r) => r.dataset.session)
  }
};
"#;

async fn read_dom(chrome: &Chromium) -> Value {
    let mut dom = chrome.eval(READ_DOM).await;
    let view = dom["view"].take();
    dom["view"] = floats(zero_cells_dropped(view));
    dom
}

/// The DOM's matrices with the zero cells dropped, as [`cells`] drops them from `/status`.
fn zero_cells_dropped(mut view: Value) -> Value {
    for m in ["matrix_window", "matrix_incident"] {
        view[m] = cells(&view[m]);
    }
    view
}

/// Waits (generously) until the page has rendered more than `after` times.
async fn refreshed_past(chrome: &Chromium, after: u64) -> Value {
    for _ in 0..300 {
        let dom = read_dom(chrome).await;
        if dom["generation"].as_u64().unwrap_or(0) > after {
            return dom;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the page did not refresh from /status within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_what_status_says_with_no_console_error() {
    // The browser first: a machine without it fails here, naming the package.
    let chrome = Chromium::start(1280, 2200).await;
    let h = Harness::start(
        FarmConfig::new(2, StoreMode::PerNode),
        "[pin]\npolicy = \"on_incident\"\n",
    )
    .await;
    let admin = h.proxy.admin_addr().expect("an admin listener");
    chrome.open(&format!("http://{admin}/")).await;

    // Before any traffic: no incident, and the page says so.
    let first = refreshed_past(&chrome, 0).await;
    assert_eq!(first["view"]["incident_open"], false, "{first}");
    assert_eq!(first["incident_none_shown"], "no incident", "{first}");
    let summary = first["view"]["summary"].as_str().unwrap();
    assert!(summary.starts_with("no incident"), "{summary}");

    // A per-node store loses sessions across backends until the incident opens; then every
    // known session is pinned, and more browsing counts pins.
    let mut raw = browse(&h, 20, 10).await;
    assert!(
        wait_until(Duration::from_secs(10), || h.proxy.incident_open()).await,
        "no incident opened"
    );
    assert!(
        wait_until(Duration::from_secs(5), || !h
            .lines("pinning_started")
            .is_empty())
        .await,
        "pinning did not start"
    );
    raw.extend(browse(&h, 10, 10).await);
    assert!(!raw.is_empty());

    // The traffic has stopped. The page refreshes every 2 s and the window slides: read
    // /status, wait for the page's refreshes after it, read the DOM, read /status again. When
    // both reads agree, nothing changed in between, and the page must show exactly that.
    let mut compared = None;
    for _ in 0..20 {
        let (before, _) = status(admin).await;
        let generation = read_dom(&chrome).await["generation"].as_u64().unwrap();
        let dom = refreshed_past(&chrome, generation + 1).await;
        let (after, after_text) = status(admin).await;
        if view_of_status(&before) == view_of_status(&after) {
            compared = Some((dom, after, after_text));
            break;
        }
    }
    let (dom, s, status_text) = compared.expect("/status settled within 20 tries");
    assert!(dom["refresh_error"].is_null(), "{dom}");
    assert_eq!(
        dom["view"],
        view_of_status(&s),
        "the page shows other numbers than /status"
    );

    // What those numbers are: the farm's story.
    assert_eq!(s["incident_open"], true);
    assert_eq!(s["incident"]["hint"]["code"], "store_not_shared", "{s}");
    let incident_cells = s["matrix"]["incident"].as_array().unwrap();
    assert!(
        incident_cells
            .iter()
            .any(|c| c["issuer"] != c["server"] && c["resets"].as_u64().unwrap() > 0)
    );
    assert!(
        incident_cells
            .iter()
            .all(|c| c["issuer"] != c["server"] || c["resets"] == 0),
        "{incident_cells:?}"
    );
    let points = s["share_series"]["points"].as_array().unwrap();
    assert_eq!(points.len(), 90, "15 minutes of 10 s points");
    assert!(
        points
            .iter()
            .map(|p| p["resets"].as_u64().unwrap())
            .sum::<u64>()
            > 0
    );
    let backends = s["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2);
    let total = |f: &str| -> u64 { backends.iter().map(|b| b[f].as_u64().unwrap()).sum() };
    assert!(total("requests") > 0);
    // Every session value a user was given, each sign-in's: each issued by one backend.
    assert_eq!(total("sessions_issued"), raw.len() as u64, "{backends:?}");
    assert!(
        total("sessions_lost") > 0 && total("pins") > 0,
        "{backends:?}"
    );
    assert_eq!(total("sessions_lost"), total("issued_sessions_lost"));
    for b in backends {
        assert_eq!(b["health"]["state"], "up");
        assert_eq!(b["health"]["last_check"]["result"], "passed: 200", "{b}");
        assert!(b["responses"]["2xx"].as_u64().unwrap() > 0, "{b}");
        assert!(b["responses"]["3xx"].as_u64().unwrap() > 0, "{b}");
    }
    let resets = s["recent_resets"].as_array().unwrap();
    assert!(!resets.is_empty() && resets.len() <= 20);
    assert!(s["sessions_tracked"].as_u64().unwrap() > 0);
    // The row of each backend, the cells of the chart: the page drew them all.
    assert_eq!(dom["view"]["backends"].as_array().unwrap().len(), 2);
    assert_eq!(dom["view"]["points"].as_array().unwrap().len(), 90);

    // No console error, no exception, no refused load.
    let console = chrome.console().await;
    let bad: Vec<&Value> = console
        .iter()
        .filter(|e| {
            e["level"] == "SEVERE"
                || e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("Content Security Policy"))
        })
        .collect();
    assert!(bad.is_empty(), "console: {console:?}");

    // No raw session value on the page or in /status.
    let html = chrome
        .eval("return document.documentElement.outerHTML;")
        .await;
    let html = html.as_str().unwrap();
    for v in &raw {
        assert!(v.len() >= 16, "a session value the check can find: {v}");
        assert!(
            !html.contains(v.as_str()),
            "a raw session value is on the page"
        );
        assert!(
            !status_text.contains(v.as_str()),
            "a raw session value is in /status"
        );
    }

    let png = chrome.screenshot().await;
    let path = artefact_path("status-page.png");
    std::fs::write(&path, &png).expect("write the screenshot");
    let written = std::fs::read(&path).unwrap();
    assert!(written.len() > 1_000, "{} bytes", written.len());
    assert_eq!(&written[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    eprintln!("screenshot: {}", path.display());

    chrome.quit().await;
    h.stop().await;
}

/// One answer on a fresh connection, from raw bytes.
async fn exchange(proxy: SocketAddr, request: &[u8]) -> u16 {
    let mut c = ClientConn::connect(proxy).await.expect("connect");
    c.send(request).await.expect("send");
    match c.read_answer(false).await {
        Reply::Complete { head, .. } => head.status,
        other => panic!("no whole answer: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_counted_per_backend_on_the_plain_path_and_on_hyper_s() {
    // Checks far apart, so that only live traffic finds the stopped node below.
    let h = Harness::start(
        FarmConfig::new(2, StoreMode::Shared),
        "[health]\ninterval = \"60s\"\ntimeout = \"1s\"\nrise = 1\nfall = 1\n",
    )
    .await;
    let proxy = h.proxy.addr();
    let admin = h.proxy.admin_addr().unwrap();
    let plain = b"GET /login HTTP/1.1\r\nHost: farm\r\nConnection: close\r\n\r\n";
    let missing = b"GET /nowhere HTTP/1.1\r\nHost: farm\r\nConnection: close\r\n\r\n";
    // A chunked body is never plain: hyper serves it.
    let chunked = b"POST /echo HTTP/1.1\r\nHost: farm\r\nTransfer-Encoding: chunked\r\n\
                    Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    for _ in 0..4 {
        assert_eq!(exchange(proxy, plain).await, 200);
    }
    for _ in 0..2 {
        assert_eq!(exchange(proxy, missing).await, 404);
    }
    for _ in 0..3 {
        assert_eq!(exchange(proxy, chunked).await, 200);
    }
    let (s, _) = status(admin).await;
    let backends = s["backends"].as_array().unwrap();
    let total = |f: &dyn Fn(&Value) -> &Value| -> u64 {
        backends.iter().map(|b| f(b).as_u64().unwrap()).sum()
    };
    assert_eq!(total(&|b| &b["requests"]), 9, "{backends:?}");
    assert_eq!(total(&|b| &b["responses"]["2xx"]), 7);
    assert_eq!(total(&|b| &b["responses"]["4xx"]), 2);
    assert_eq!(total(&|b| &b["responses"]["5xx"]), 0);
    assert_eq!(total(&|b| &b["proxy_answered"]), 0);
    assert!(
        backends.iter().all(|b| b["requests"].as_u64().unwrap() > 0),
        "both backends served: {backends:?}"
    );
    for b in backends {
        assert!(b["average_answer_ms"].as_f64().unwrap() > 0.0, "{b}");
    }
    // The metric counts the same answers, by backend and class.
    let metrics = h.metrics();
    for b in backends {
        let name = b["name"].as_str().unwrap();
        for class in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
            let label = format!("backend=\"{name}\"");
            let class_label = format!("class=\"{class}\"");
            assert_eq!(
                metric_sum(
                    &metrics,
                    "sessionwatch_responses_total",
                    &[&label, &class_label]
                ),
                b["responses"][class].as_f64().unwrap(),
                "{name} {class}"
            );
        }
    }
    assert!(metrics.contains("sessionwatch_responses_total{backend=\"node-a\",class=\"1xx\"} 0"));

    // A backend that is gone: the proxy answers 502 for it, counted as the proxy's answer and
    // in no class of the backend's.
    h.farm.stop_node(1).await;
    let before = total(&|b| &b["requests"]);
    let (mut bad_gateway, mut sent) = (0, 0);
    while sent < 10 && bad_gateway == 0 {
        sent += 1;
        if exchange(proxy, plain).await == 502 {
            bad_gateway += 1;
        }
    }
    assert!(bad_gateway > 0, "the stopped node was chosen at least once");
    let (s, _) = status(admin).await;
    let gone = &s["backends"][1];
    assert_eq!(
        gone["proxy_answered"].as_u64().unwrap(),
        bad_gateway,
        "{gone}"
    );
    let answered: u64 = ["1xx", "2xx", "3xx", "4xx", "5xx"]
        .iter()
        .map(|c| gone["responses"][*c].as_u64().unwrap())
        .sum();
    assert_eq!(
        answered + bad_gateway,
        gone["requests"].as_u64().unwrap(),
        "{gone}"
    );
    let requests_now: u64 = s["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(requests_now, before + sent);
    h.stop().await;
}

/// With `[admin] token`, a browser opens the page with the token as its Basic password, and
/// the page's refreshes from `/status` go on with the credentials the browser holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_refreshes_behind_the_admin_token() {
    const TOKEN: &str = "status-page-admin-token-0123";
    let chrome = Chromium::start(1024, 1400).await;
    let h = Harness::start(
        FarmConfig::new(2, StoreMode::Shared),
        &format!("[admin]\naddress = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"),
    )
    .await;
    let admin = h.proxy.admin_addr().expect("an admin listener");
    let (code, _) = http_get(admin, "/status").await;
    assert_eq!(code, 401, "/status without the token");

    chrome
        .open(&format!("http://operator:{TOKEN}@{admin}/"))
        .await;
    // Two refreshes: the first fetch and one more on the timer, both answered.
    let dom = refreshed_past(&chrome, 1).await;
    assert_eq!(dom["view"]["incident_open"], false, "{dom}");
    assert!(
        dom["view"]["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("no incident")),
        "{dom}"
    );
    let console = chrome.console().await;
    let bad: Vec<&Value> = console.iter().filter(|e| e["level"] == "SEVERE").collect();
    assert!(bad.is_empty(), "console: {console:?}");
    let html = chrome
        .eval("return document.documentElement.outerHTML;")
        .await;
    assert!(
        !html.as_str().unwrap().contains(TOKEN),
        "the token is on the page"
    );

    chrome.quit().await;
    h.stop().await;
}
