//! Faults on the HTTP paths: a backend that dies in the middle of an answer, one that never
//! answers, one that resets connections at random under load, an alert log whose disk is full,
//! and an Alertmanager that is down. In each, the proxy keeps answering everyone else, never
//! hands a client bytes meant for another, and says what it lost.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sessionwatch_test_support::{Farm, FarmConfig, StoreMode, wait_until};
use sessionwatch_tests::log::captured_log;
use sessionwatch_tests::raw_http::{
    Act, ClientConn, Reply, ScriptedBackend, chunked_answer, ok_answer,
};
use sessionwatch_tests::{
    Harness, Scratch, alert_lines, config_toml, farm_backends, lines_of, metric_sum, start_proxy,
};

/// Every reset line is wanted: the incident rate limit would otherwise hold lines back.
const ALL_LINES: &str = "[incident]\nmax_reset_lines_per_sec = 1000000\n";

/// A proxy in front of `backends` with one worker (so every request meets the same connection
/// pool), no active health checks (so the backends see only forwarded traffic) and `extra`.
async fn proxy_for(
    backends: &[(&str, SocketAddr)],
    scratch: &Scratch,
    extra: &str,
) -> sessionwatch_proxy::RunningProxy {
    let named: Vec<(String, SocketAddr)> = backends
        .iter()
        .map(|(n, a)| ((*n).to_owned(), *a))
        .collect();
    let toml = config_toml(
        &named,
        "SID",
        &scratch.alert_log(),
        &format!("[health]\nactive = false\npassive_fall = 1000\n{extra}"),
    )
    .replace("[listen]\n", "[listen]\nworkers = 1\n");
    start_proxy(&toml).await
}

/// One request on a fresh connection, its reply within 10 s.
async fn one_request(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut c = ClientConn::connect(addr)
        .await
        .expect("connect to the proxy");
    c.send(request).await.expect("send the request");
    tokio::time::timeout(Duration::from_secs(10), c.read_answer(false))
        .await
        .expect("a reply within 10 s")
}

/// The next answer on `c` is a whole 200 with the backend's body `whole`.
async fn expect_whole(c: &mut ClientConn, case: &str) {
    match tokio::time::timeout(Duration::from_secs(10), c.read_answer(false)).await {
        Ok(Reply::Complete { head, body }) => {
            assert_eq!(head.status, 200, "{case}");
            assert_eq!(body, b"whole", "{case}");
        }
        other => panic!("{case}: expected a whole answer, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_dies_mid_body_gives_a_truncated_answer_and_its_connection_is_dropped() {
    let scratch = Scratch::new("mid-body");
    for (chunked, reset) in [(false, false), (false, true), (true, false), (true, true)] {
        let case = format!("chunked={chunked} reset={reset}");
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let log = seen.clone();
        let backend = ScriptedBackend::start(move |req| {
            let mut log = log.lock().unwrap();
            log.push(format!("{} {}", req.method, req.target));
            if log.len() > 1 {
                return Act::Answer(ok_answer("", b"whole"));
            }
            // The head promises 100 bytes (or more chunks); 10 come, then the backend dies.
            let mut bytes = if chunked {
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n64\r\n".to_vec()
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n".to_vec()
            };
            bytes.extend_from_slice(b"0123456789");
            Act::SendThenClose { bytes, reset }
        })
        .await;
        let proxy = proxy_for(&[("dying", backend.addr)], &scratch, "").await;

        // The client asked for keep-alive, and still its connection is closed: the close is the
        // only way left to tell it the answer is not whole.
        let mut c = ClientConn::connect(proxy.addr()).await.unwrap();
        c.send(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        match tokio::time::timeout(Duration::from_secs(10), c.read_answer(false)).await {
            Ok(Reply::Truncated {
                head: Some(head),
                body,
            }) => {
                assert_eq!(head.status, 200, "{case}");
                assert!(body.len() <= 10, "{case}: {} body bytes", body.len());
            }
            other => panic!("{case}: expected a truncated answer, got {other:?}"),
        }
        assert!(
            c.read_to_close(Duration::from_secs(10)).await.is_some(),
            "{case}: the client's connection stayed open"
        );

        // The dead connection is not pooled: the next request, a POST that the proxy would not
        // send twice, goes on a new connection and is answered whole.
        let mut c = ClientConn::connect(proxy.addr()).await.unwrap();
        c.send(b"POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd")
            .await
            .unwrap();
        expect_whole(&mut c, &case).await;
        assert_eq!(backend.accepts(), 2, "{case}: a new upstream connection");
        // A healthy connection is pooled: the third request reuses the second's.
        c.send(b"GET /third HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        expect_whole(&mut c, &case).await;
        assert_eq!(
            backend.accepts(),
            2,
            "{case}: the pooled connection was used"
        );
        // Nothing was sent twice: not the GET whose answer had begun, not the POST.
        assert_eq!(
            *seen.lock().unwrap(),
            ["GET /first", "POST /second", "GET /third"],
            "{case}"
        );
        proxy.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_answers_gives_504_and_holds_up_nobody_else() {
    let scratch = Scratch::new("silent");
    let stalled = Arc::new(AtomicUsize::new(0));
    let count = stalled.clone();
    let silent = ScriptedBackend::start(move |_| {
        count.fetch_add(1, Ordering::SeqCst);
        Act::Stall
    })
    .await;
    let healthy = ScriptedBackend::start(|_| Act::Answer(ok_answer("", b"healthy"))).await;
    let proxy = proxy_for(
        &[("silent", silent.addr), ("healthy", healthy.addr)],
        &scratch,
        "[upstream]\nresponse_timeout = \"1s\"\n",
    )
    .await;

    // All at once, each on its own connection: the balancer sends some to each backend.
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (addr, done) = (proxy.addr(), done.clone());
        tasks.push(tokio::spawn(async move {
            let reply = one_request(
                addr,
                b"GET /t HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await;
            (reply, done.fetch_add(1, Ordering::SeqCst))
        }));
    }
    let mut answered = Vec::new();
    let mut timed_out = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (Reply::Complete { head, body }, order) if head.status == 200 => {
                assert_eq!(body, b"healthy");
                answered.push(order);
            }
            (Reply::Complete { head, body }, order) if head.status == 504 => {
                assert_eq!(body, b"gateway timeout\n");
                timed_out.push(order);
            }
            (other, _) => panic!("expected 200 or 504, got {other:?}"),
        }
    }
    assert!(
        !answered.is_empty() && !timed_out.is_empty(),
        "both backends were used"
    );
    assert_eq!(
        timed_out.len(),
        stalled.load(Ordering::SeqCst),
        "every stalled request got 504"
    );
    // The healthy backend's answers did not wait for the stalled ones' timeout.
    let last_answer = answered.iter().max().unwrap();
    let first_timeout = timed_out.iter().min().unwrap();
    assert!(
        last_answer < first_timeout,
        "answers came in after a 504: answered {answered:?}, timed out {timed_out:?}"
    );

    // Afterwards the proxy still serves, and stops in good time with stalled sockets around.
    let mut again = 0;
    for _ in 0..4 {
        if let Reply::Complete { head, .. } = one_request(
            proxy.addr(),
            b"GET /t HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
            && head.status == 200
        {
            again += 1;
        }
    }
    assert!(again >= 1, "the healthy backend is still reached");
    tokio::time::timeout(Duration::from_secs(10), proxy.shutdown())
        .await
        .expect("the proxy stopped within 10 s");
}

/// splitmix64: a deterministic stream of faults, the same on every run.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The token in a `/echo/TOKEN` target.
fn token_of(target: &str) -> &str {
    target.strip_prefix("/echo/").unwrap_or("")
}

/// The body a correct answer to the request with `token` (and request body `body`) carries.
fn expected_body(token: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("answer:{token}:").into_bytes();
    out.extend_from_slice(body);
    out
}

/// What the clients of the random-reset test saw, by kind.
#[derive(Debug, Default)]
struct Tally {
    own: usize,
    bad_gateway: usize,
    truncated_own: usize,
    wrong: Vec<String>,
}

/// One client of the random-reset test: `requests` requests with tokens of its own, on a
/// keep-alive connection opened again whenever the proxy closes it.
async fn reset_test_client(addr: SocketAddr, client: usize, requests: usize) -> Tally {
    let mut tally = Tally::default();
    let mut conn: Option<ClientConn> = None;
    for i in 0..requests {
        let token = format!("c{client}r{i}");
        let body = format!("body-{token}");
        let (request, sent_body) = match i % 10 {
            0..5 => (
                format!("GET /echo/{token} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
                Vec::new(),
            ),
            5..8 => (
                format!(
                    "POST /echo/{token} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes(),
                body.clone().into_bytes(),
            ),
            _ => (
                format!(
                    "POST /echo/{token} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                     {:x}\r\n{body}\r\n0\r\n\r\n",
                    body.len()
                )
                .into_bytes(),
                body.clone().into_bytes(),
            ),
        };
        let expected = expected_body(&token, &sent_body);
        let c = match conn.as_mut() {
            Some(c) => c,
            None => conn.insert(ClientConn::connect(addr).await.expect("connect")),
        };
        if c.send(&request).await.is_err() {
            tally
                .wrong
                .push(format!("{token}: the proxy closed a kept-alive connection"));
            conn = None;
            continue;
        }
        let reply = tokio::time::timeout(Duration::from_secs(10), c.read_answer(false)).await;
        let keep = match reply {
            Ok(Reply::Complete { head, body }) if head.status == 200 => {
                if head.header("x-token") == Some(&token) && body == expected {
                    tally.own += 1;
                } else {
                    tally.wrong.push(format!(
                        "{token}: got x-token {:?}, body {:?}",
                        head.header("x-token"),
                        String::from_utf8_lossy(&body)
                    ));
                }
                !head.closes()
            }
            Ok(Reply::Complete { head, .. }) if head.status == 502 => {
                tally.bad_gateway += 1;
                !head.closes()
            }
            Ok(Reply::Truncated {
                head: Some(head),
                body,
            }) if head.status == 200
                && head.header("x-token") == Some(&token)
                && expected.starts_with(&body) =>
            {
                tally.truncated_own += 1;
                false
            }
            other => {
                tally.wrong.push(format!("{token}: {other:?}"));
                false
            }
        };
        if !keep {
            conn = None;
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_resets_under_load_never_give_a_client_someone_elses_answer() {
    let scratch = Scratch::new("resets");
    let served = Arc::new(AtomicUsize::new(0));
    let faults = Arc::new(AtomicUsize::new(0));
    let posts = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let (n, f, p) = (served.clone(), faults.clone(), posts.clone());
    let backend = ScriptedBackend::start(move |req| {
        let token = token_of(&req.target).to_owned();
        if req.method == "POST" {
            *p.lock().unwrap().entry(token.clone()).or_default() += 1;
        }
        let h = mix(n.fetch_add(1, Ordering::SeqCst) as u64);
        let extra = format!("x-token: {token}\r\n");
        let body = expected_body(&token, &req.body);
        let answer = if h & 1 == 0 {
            ok_answer(&extra, &body)
        } else {
            chunked_answer(&extra, &body)
        };
        if h % 5 != 0 {
            return Act::Answer(answer);
        }
        f.fetch_add(1, Ordering::SeqCst);
        match (h >> 8) % 3 {
            // Reset with nothing sent: the request may or may not have been acted on.
            0 => Act::SendThenClose {
                bytes: Vec::new(),
                reset: true,
            },
            // The head and part of the body, then a reset.
            1 => Act::SendThenClose {
                bytes: answer[..answer.len() - 8].to_vec(),
                reset: true,
            },
            // A plain close with nothing sent.
            _ => Act::SendThenClose {
                bytes: Vec::new(),
                reset: false,
            },
        }
    })
    .await;
    let proxy = proxy_for(&[("flaky", backend.addr)], &scratch, "").await;
    let clients: Vec<_> = (0..24)
        .map(|c| tokio::spawn(reset_test_client(proxy.addr(), c, 50)))
        .collect();
    let mut total = Tally::default();
    for c in clients {
        let t = c.await.unwrap();
        total.own += t.own;
        total.bad_gateway += t.bad_gateway;
        total.truncated_own += t.truncated_own;
        total.wrong.extend(t.wrong);
    }
    assert!(
        total.wrong.is_empty(),
        "{} wrong answers, e.g. {:?}",
        total.wrong.len(),
        &total.wrong[..total.wrong.len().min(10)]
    );
    assert_eq!(total.own + total.bad_gateway + total.truncated_own, 24 * 50);
    assert!(faults.load(Ordering::SeqCst) > 50, "faults were injected");
    assert!(
        total.bad_gateway > 0 && total.own > 24 * 50 / 2,
        "{total:?}"
    );
    let twice: Vec<_> = posts
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(t, n)| format!("{t} x{n}"))
        .collect();
    assert!(twice.is_empty(), "POSTs the backend got twice: {twice:?}");
    proxy.shutdown().await;
}

/// Drives a per-node-store farm, whose users lose their sessions half the time: every loss is
/// an alert line.
async fn lose_sessions(proxy: SocketAddr, farm: &Farm, users: usize) {
    let report = sessionwatch_test_support::drive_users(
        proxy,
        farm.cookie_name(),
        sessionwatch_test_support::DriveConfig::new(users, 10).with_concurrency(10),
    )
    .await;
    assert_eq!(report.errors, 0, "requests kept flowing");
    assert_eq!(report.requests, users as u64 * 10);
    assert!(report.logged_out > 0, "sessions were lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_alertmanager_down_detection_and_the_alert_log_go_on() {
    // Nothing listens on the first port; the second accepts and never answers.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let black_hole = ScriptedBackend::start(|_| Act::Stall).await;
    for (case, target) in [("refused", closed), ("black hole", black_hole.addr)] {
        let h = Harness::start(
            FarmConfig::new(2, StoreMode::PerNode),
            &format!(
                "{ALL_LINES}[alertmanager]\nurl = \"http://{target}\"\nresend_every = \"100ms\"\n\
                 timeout = \"300ms\"\n"
            ),
        )
        .await;
        let report = h.drive(50, 20, 10).await;
        assert_eq!(report.errors, 0, "{case}");
        assert_eq!(report.requests, 1000, "{case}");
        assert_eq!(
            h.lines("session_reset").len() as u64,
            report.logged_out,
            "{case}: every loss is in the alert log"
        );
        assert_eq!(h.lines("incident_opened").len(), 1, "{case}");
        assert!(
            wait_until(Duration::from_secs(10), || metric_sum(
                &h.metrics(),
                "sessionwatch_alert_sink_failures_total",
                &["sink=\"alertmanager\""]
            ) >= 2.0)
            .await,
            "{case}: failed deliveries are counted, and retried"
        );
        let (ready, _) =
            sessionwatch_tests::http_get(h.proxy.admin_addr().unwrap(), "/readyz").await;
        assert_eq!(ready, 200, "{case}");
        // The delivery under way when the shutdown starts may run to its timeout; no other
        // starts (each attempt at the black hole is a new connection, as the last one is busy).
        let attempts = black_hole.accepts();
        tokio::time::timeout(Duration::from_secs(10), h.stop())
            .await
            .unwrap_or_else(|_| panic!("{case}: the proxy did not stop within 10 s"));
        let during_shutdown = black_hole.accepts() - attempts;
        assert!(
            during_shutdown <= 1,
            "{case}: {during_shutdown} deliveries tried during the shutdown"
        );
    }
}

/// A small tmpfs, mounted for one test and unmounted when dropped, even when the test fails
/// (lazily if the proxy's writer thread still holds a file on it).
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    /// Mount `size` of tmpfs at `dir`. Needs root and mount(8): without them the test fails
    /// here, saying so.
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).expect("create the mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap_or_else(|e| panic!("this test mounts a tmpfs and cannot run mount(8): {e}"));
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill it, and needs root for that: `mount -t tmpfs \
             -o size={size} tmpfs {}` failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            dir: dir.to_owned(),
        }
    }

    /// Take every free byte with a file of its own; the file's path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).expect("create the filler");
        let block = [0u8; 4096];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    // ENOSPC: the disk is full.
                    assert_eq!(e.raw_os_error(), Some(28), "filling the disk: {e}");
                    break;
                }
            }
        }
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_drops_alert_lines_counts_them_and_never_leaves_half_a_line() {
    let log_text = captured_log();
    let logged = |what: &str| String::from_utf8_lossy(&log_text.lock().unwrap()).contains(what);
    let scratch = Scratch::new("disk-full");
    let disk = SmallDisk::mount(&scratch.path().join("disk"), "64k");
    let log = disk.dir.join("alerts.jsonl");
    let farm = Farm::start(FarmConfig::new(2, StoreMode::PerNode))
        .await
        .expect("farm starts");
    let proxy = start_proxy(&config_toml(
        &farm_backends(&farm),
        farm.cookie_name(),
        &log,
        ALL_LINES,
    ))
    .await;
    let dropped = || {
        metric_sum(
            &proxy.metrics_text(),
            "sessionwatch_alert_lines_dropped_total",
            &[],
        )
    };

    lose_sessions(proxy.addr(), &farm, 5).await;
    proxy.flush_alerts();
    let written_first = alert_lines(&log).len();
    assert!(written_first > 0);
    assert_eq!(dropped(), 0.0);

    // The disk fills up: the lines that do not fit are dropped and counted, the proxy says so,
    // and requests go on as before.
    let filler = disk.fill();
    lose_sessions(proxy.addr(), &farm, 20).await;
    proxy.flush_alerts();
    // Every line in the file is whole (this panics on one that is not).
    let while_full = alert_lines(&log);
    let dropped_while_full = dropped();
    assert!(dropped_while_full > 0.0, "lines were dropped");
    assert!(
        logged("cannot write the alert log"),
        "the failure is reported on the log"
    );
    let last_seq_while_full = while_full.last().map_or(0, |l| l["seq"].as_u64().unwrap());

    // Room again: new lines are written whole after the old ones, and nothing is dropped.
    std::fs::remove_file(filler).unwrap();
    lose_sessions(proxy.addr(), &farm, 5).await;
    proxy.flush_alerts();
    assert_eq!(dropped(), dropped_while_full, "nothing dropped with room");
    assert!(logged("the alert log is written again"));
    let all = alert_lines(&log);
    let seqs: Vec<u64> = all.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(
        seqs.iter()
            .any(|s| *s > last_seq_while_full + dropped_while_full as u64),
        "lines emitted after the disk had room again are in the file"
    );
    assert!(!lines_of(&log, "session_reset").is_empty());
    // Each line emitted is in the file or counted as dropped: the gaps in `seq` are the drops.
    let last = *seqs.last().unwrap();
    assert_eq!(all.len() as u64 + dropped_while_full as u64, last);
    proxy.shutdown().await;
    farm.shutdown().await;
}
