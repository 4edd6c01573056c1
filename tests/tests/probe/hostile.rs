//! What a farm should never answer, and a probe that must not wait forever: a backend that
//! never answers (the time limit), a second `POST /probe` while one runs (409), and garbage,
//! redirect loops and broken cookies (a probe that could not run, with why, never a crash).

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_answers_stops_the_probe_at_its_timeout() {
    let scratch = Scratch::new("probe-timeout");
    let (hole, _) = black_hole().await;
    let file = write(
        &scratch,
        &config(&[("hung".to_owned(), hole)], "php", &php_probe()),
    );
    let run = probe_async(&file, &["--json", "--timeout", "1s"], &[]).await;
    assert_eq!(run.code, 2, "{run:#?}");
    let error = run.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.contains("did not finish within 1s") && error.contains("on hung"),
        "{error}"
    );

    // Signed in on a backend that answers, the session is asked of both at once: the message
    // names the one that never answered.
    let (_, odd, _) = hostile_backends().await;
    let file = write(
        &scratch,
        &config(
            &[("odd".to_owned(), odd), ("hung".to_owned(), hole)],
            "php",
            &php_probe(),
        ),
    );
    let run = probe_async(&file, &["--json", "--timeout", "1s"], &[]).await;
    assert_eq!(run.code, 2, "{run:#?}");
    let report = run.json();
    let error = report["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("with the session odd issued, waiting on hung"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_probe_while_one_runs_is_answered_409_and_the_first_503_at_its_timeout() {
    let (hole, accepted) = black_hole().await;
    let toml = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n\
         [alerts]\nlog_file = \"\"\n{}",
        config(
            &[("hung".to_owned(), hole)],
            "php",
            "[probe]\ncheck = \"/me\"\ntimeout = \"2s\"\n"
        )
    );
    let proxy = start_proxy(&toml).await;
    let admin = proxy.admin_addr().expect("admin listener");
    let first = tokio::spawn(post_probe(admin, http::Method::POST));
    // The first probe is waiting on the hung backend (no health check connects: active checks
    // are off).
    tokio::time::timeout(ANSWER_WITHIN, accepted.notified())
        .await
        .expect("the probe reaches the hung backend");
    let (status, _, busy) = post_probe(admin, http::Method::POST).await;
    assert_eq!(status, 409, "{busy}");
    assert_eq!(busy["result"], "busy");
    let (status, _, report) = first.await.expect("first probe");
    assert_eq!(status, 503, "{report}");
    assert!(
        report["error"]
            .as_str()
            .unwrap_or_default()
            .contains("did not finish within 2s"),
        "{report}"
    );
    proxy.shutdown().await;
}

/// A backend that answers badly: garbage for a status line on one port; on the other, a
/// sign-in with no cookie (`/none`), a redirect to itself (`/loop`), and one with broken
/// `Set-Cookie`s, a large body and a session (`/login`, then `/me`).
async fn hostile_backends() -> (SocketAddr, SocketAddr, Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let garbage = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let garbage_addr = garbage.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = garbage.accept().await {
            let _ = tokio::io::AsyncWriteExt::write_all(&mut s, b"SSH-2.0-not-http\r\n\r\n").await;
        }
    });
    let loops = Arc::new(AtomicU64::new(0));
    let counted = loops.clone();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counted = counted.clone();
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let counted = counted.clone();
                    async move {
                        let b = http::Response::builder();
                        let resp = match req.uri().path() {
                            "/loop" => {
                                counted.fetch_add(1, Ordering::Relaxed);
                                b.status(302).header("location", "/loop")
                            }
                            "/login" => b
                                .status(200)
                                .header("set-cookie", "PHPSESSID")
                                .header("set-cookie", ";;;=")
                                .header(
                                    "set-cookie",
                                    http::HeaderValue::from_bytes(b"x=\xff\xfe").expect("value"),
                                )
                                .header("set-cookie", "PHPSESSID=hostile-session-value; Path=/"),
                            "/me" => b.status(200).header(
                                "set-cookie",
                                http::HeaderValue::from_bytes(b"PHPSESSID\xff").expect("value"),
                            ),
                            _ => b.status(200),
                        };
                        let body = if req.uri().path() == "/login" {
                            vec![b'<'; 1024 * 1024]
                        } else {
                            Vec::new()
                        };
                        Ok::<_, std::convert::Infallible>(
                            resp.body(http_body_util::Full::new(bytes::Bytes::from(body)))
                                .expect("response"),
                        )
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
            );
        }
    });
    (garbage_addr, addr, loops)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_answers_end_the_probe_with_why_and_never_crash_it() {
    use std::sync::atomic::Ordering;
    let scratch = Scratch::new("probe-hostile");
    let (garbage, odd, loops) = hostile_backends().await;
    let step = |path: &str, extra: &str| {
        format!(
            "[probe]\ncheck = \"/me\"\ntimeout = \"{PROBE_TIMEOUT}\"\n\
             [[probe.sign_in]]\nmethod = \"POST\"\npath = \"{path}\"\n{extra}\n"
        )
    };
    let error_of = |run: &Run| run.json()["error"].as_str().unwrap_or_default().to_owned();

    let file = write(
        &scratch,
        &config(&[("garbage".into(), garbage)], "php", &step("/login", "")),
    );
    let run = probe_async(&file, &["--json"], &[]).await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(error_of(&run).contains("no answer from"), "{run:#?}");

    let file = write(
        &scratch,
        &config(&[("odd".into(), odd)], "php", &step("/none", "")),
    );
    let run = probe_async(&file, &["--json"], &[]).await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        error_of(&run).contains("issued no session cookie"),
        "{run:#?}"
    );

    // A redirect loop is followed as far as the step says, then left.
    let file = write(
        &scratch,
        &config(
            &[("odd".into(), odd)],
            "php",
            &step("/loop", "follow_redirects = 4"),
        ),
    );
    let run = probe_async(&file, &["--json"], &[]).await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        error_of(&run).contains("issued no session cookie"),
        "{run:#?}"
    );
    assert_eq!(
        loops.load(Ordering::Relaxed),
        5,
        "the step and its four redirects"
    );

    // Broken Set-Cookies and a large body around a good session: minted and kept, and its
    // value shown nowhere.
    let file = write(
        &scratch,
        &config(&[("odd".into(), odd)], "php", &step("/login", "")),
    );
    let run = probe_async(&file, &["--json"], &[]).await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        !run.stdout.contains("hostile-session-value"),
        "{}",
        run.stdout
    );
    assert_eq!(pair(&run.json(), "odd", "odd")["kept"], true);
}
