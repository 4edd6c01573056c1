//! The farm itself must behave, or every proxy test built on it proves nothing.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::*;

async fn logged_in(farm: &Farm, node: usize) -> UserClient {
    let mut user = UserClient::new(farm.addrs()[node], farm.cookie_name()).with_user("alice");
    user.login().await.unwrap();
    assert_eq!(user.me().await.unwrap(), MeOutcome::LoggedIn);
    user
}

/// The same cookie, sent to another node.
fn on_node(farm: &Farm, node: usize, user: &UserClient) -> UserClient {
    let mut other = UserClient::new(farm.addrs()[node], farm.cookie_name());
    other.set_cookie(user.cookie().map(str::to_owned));
    other
}

#[tokio::test]
async fn shared_store_knows_session_on_every_node() {
    let farm = Farm::start(FarmConfig::new(2, StoreMode::Shared))
        .await
        .unwrap();
    let user = logged_in(&farm, 0).await;
    let id = user.cookie().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    assert!(farm.node(1).knows_session(&id));

    let mut elsewhere = on_node(&farm, 1, &user);
    let (status, headers, body) = elsewhere.get("/me").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "alice");
    assert_eq!(headers[SERVED_BY_HEADER], "node-b");
    farm.shutdown().await;
}

#[tokio::test]
async fn per_node_store_answers_each_loss_style() {
    for loss in [
        LossStyle::LoginRedirect,
        LossStyle::Reissue,
        LossStyle::Clear,
        LossStyle::Unauthorized,
    ] {
        let cfg = FarmConfig::new(2, StoreMode::PerNode)
            .with_loss(loss)
            .with_cookie_name("PHPSESSID");
        let farm = Farm::start(cfg).await.unwrap();
        let user = logged_in(&farm, 0).await;
        let old = user.cookie().unwrap().to_owned();
        let mut elsewhere = on_node(&farm, 1, &user);
        let (status, headers, _) = elsewhere.get("/me").await.unwrap();
        let location = headers.get("location").map(|v| v.to_str().unwrap());
        let set_cookie = headers.get("set-cookie").map(|v| v.to_str().unwrap());
        match loss {
            LossStyle::LoginRedirect => {
                assert_eq!(status, StatusCode::FOUND);
                assert_eq!(location, Some("/login?return=%2Fme"));
                assert_eq!(set_cookie, None);
                assert_eq!(elsewhere.cookie(), Some(old.as_str()));
            }
            LossStyle::Reissue => {
                assert_eq!(status, StatusCode::FOUND);
                assert_eq!(location, Some("/login?return=%2Fme"));
                let fresh = elsewhere.cookie().unwrap();
                assert_ne!(fresh, old);
                assert_eq!(
                    set_cookie.unwrap(),
                    format!("PHPSESSID={fresh}; Path=/; HttpOnly")
                );
                assert!(farm.node(1).knows_session(fresh));
            }
            LossStyle::Clear => {
                assert_eq!(status, StatusCode::FOUND);
                assert_eq!(location, Some("/login?return=%2Fme"));
                assert_eq!(
                    set_cookie,
                    Some(
                        "PHPSESSID=\"\"; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/"
                    )
                );
                assert_eq!(elsewhere.cookie(), None);
            }
            LossStyle::Unauthorized => {
                assert_eq!(status, StatusCode::UNAUTHORIZED);
                assert_eq!(location, None);
                assert_eq!(set_cookie, None);
            }
        }
        farm.shutdown().await;
    }
}

#[tokio::test]
async fn no_cookie_is_anonymous_not_lost() {
    let cfg = FarmConfig::new(1, StoreMode::PerNode).with_loss(LossStyle::Reissue);
    let farm = Farm::start(cfg).await.unwrap();
    let mut user = UserClient::new(farm.addrs()[0], "SID");
    let (status, headers, _) = user.get("/me").await.unwrap();
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(headers["location"], "/login?return=%2Fme");
    assert!(headers.get("set-cookie").is_none());

    let (status, headers, _) = user.get("/anon").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get("set-cookie").is_some());
    let anon = user.cookie().unwrap().to_owned();
    let (_, headers, _) = user.get("/anon").await.unwrap();
    assert!(headers.get("set-cookie").is_none());
    // A live anonymous session is not a loss, so no reissue either.
    let (status, headers, _) = user.get("/me").await.unwrap();
    assert_eq!(status, StatusCode::FOUND);
    assert!(headers.get("set-cookie").is_none());
    assert_eq!(user.cookie(), Some(anon.as_str()));
    farm.shutdown().await;
}

#[tokio::test]
async fn login_rotates_and_logout_deletes() {
    let farm = Farm::start(FarmConfig::new(1, StoreMode::PerNode))
        .await
        .unwrap();
    let mut user = logged_in(&farm, 0).await;
    let first = user.cookie().unwrap().to_owned();
    user.login().await.unwrap();
    assert_ne!(user.cookie().unwrap(), first);
    let current = user.cookie().unwrap().to_owned();
    user.logout().await.unwrap();
    assert_eq!(user.cookie(), None);
    assert!(!farm.node(0).knows_session(&current));
    assert_eq!(user.all_cookie_values(), [first, current]);
    farm.shutdown().await;
}

#[tokio::test]
async fn restart_empties_per_node_store_only() {
    for (mode, survives) in [(StoreMode::PerNode, false), (StoreMode::Shared, true)] {
        let farm = Farm::start(FarmConfig::new(2, mode)).await.unwrap();
        let mut user = logged_in(&farm, 0).await;
        farm.restart_node(0).await.unwrap();
        let expected = if survives {
            MeOutcome::LoggedIn
        } else {
            MeOutcome::LoggedOut { status: 302 }
        };
        assert_eq!(user.me().await.unwrap(), expected, "{mode:?}");
        farm.shutdown().await;
    }
}

#[tokio::test]
async fn stop_refuses_connections_and_start_serves_same_port() {
    let farm = Farm::start(FarmConfig::new(2, StoreMode::Shared))
        .await
        .unwrap();
    let addr = farm.addrs()[1];
    let mut open = TcpStream::connect(addr).await.unwrap();
    open.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    assert!(open.read(&mut buf).await.unwrap() > 0);

    farm.stop_node(1).await;
    assert!(!farm.node(1).is_running().await);
    let err = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    // The kept-alive connection was dropped too: EOF or reset, never an answer.
    open.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .ok();
    assert!(matches!(open.read(&mut buf).await, Ok(0) | Err(_)));

    farm.start_node(1).await.unwrap();
    assert_eq!(farm.addrs()[1], addr);
    let mut user = UserClient::new(addr, "SID");
    let (status, headers, body) = user.get("/health").await.unwrap();
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"ok"[..]));
    assert_eq!(headers[SERVED_BY_HEADER], "node-b");
    farm.shutdown().await;
}

#[tokio::test]
async fn echo_streams_the_body_back() {
    let farm = Farm::start(FarmConfig::new(1, StoreMode::Shared))
        .await
        .unwrap();
    let stream = TcpStream::connect(farm.addrs()[0]).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);

    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, hyper::Error>::new(1);
    let req = Request::post("/echo")
        .header("host", "farm")
        .body(body)
        .unwrap();
    tx.send_data(Bytes::from_static(b"first")).await.unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut echoed = resp.into_body();
    // The first chunk comes back while the upload is still open: streamed, not buffered.
    let first = echoed.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "first");
    tx.send_data(Bytes::from_static(b"second")).await.unwrap();
    drop(tx);
    let rest = echoed.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "second");
    farm.shutdown().await;
}

#[tokio::test]
async fn big_headers_and_http2() {
    let farm = Farm::start(FarmConfig::new(1, StoreMode::Shared))
        .await
        .unwrap();
    let mut user = UserClient::new(farm.addrs()[0], "SID");
    let (status, _, body) = user.get("/big?bytes=100000").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), 100_000);
    assert!(body.iter().all(|&b| b == b'x'));

    let (_, _, body) = user.get("/headers").await.unwrap();
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(body.starts_with("host: 127.0.0.1:"), "{body}");

    // The same node speaks HTTP/2 with prior knowledge.
    let stream = TcpStream::connect(farm.addrs()[0]).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("http://farm/health")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.headers()[SERVED_BY_HEADER], "node-a");
    farm.shutdown().await;
}

#[tokio::test]
async fn websocket_upgrade_echoes_raw_bytes() {
    let farm = Farm::start(FarmConfig::new(1, StoreMode::Shared))
        .await
        .unwrap();
    let mut stream = TcpStream::connect(farm.addrs()[0]).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream.write_all(b"hello").await.unwrap();
    let mut echoed = [0u8; 5];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"hello");
    farm.shutdown().await;
}

#[tokio::test]
async fn health_switch_delay_and_counters() {
    let farm = Farm::start(FarmConfig::new(1, StoreMode::Shared))
        .await
        .unwrap();
    let mut user = UserClient::new(farm.addrs()[0], "SID");
    farm.set_healthy(0, false);
    assert_eq!(
        user.get("/health").await.unwrap().0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(user.get("/nope").await.unwrap().0, StatusCode::NOT_FOUND);
    farm.set_healthy(0, true);
    assert_eq!(user.get("/health").await.unwrap().0, StatusCode::OK);
    assert_eq!(farm.node(0).health_checks(), 2);
    assert_eq!(farm.served(0), 1);

    farm.set_delay(0, Duration::from_millis(100));
    let started = Instant::now();
    user.get("/health").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(100));
    farm.shutdown().await;
}

#[tokio::test]
async fn drive_users_against_one_node_never_loses() {
    let farm = Farm::start(FarmConfig::new(2, StoreMode::PerNode))
        .await
        .unwrap();
    let cfg = DriveConfig::new(8, 5).with_concurrency(3);
    let report = drive_users(farm.addrs()[0], farm.cookie_name(), cfg).await;
    assert_eq!(report.requests, 40);
    assert_eq!(report.errors, 0);
    assert_eq!(report.logged_out, 0);
    assert_eq!(report.losses_per_user, vec![0; 8]);
    assert_eq!(report.cookie_values.len(), 8);
    assert_eq!(farm.node(0).sessions(), 8);
    assert_eq!(farm.served(1), 0);
    farm.shutdown().await;
}

#[tokio::test]
async fn drive_users_counts_losses_after_restart() {
    let farm = Farm::start(FarmConfig::new(1, StoreMode::PerNode))
        .await
        .unwrap();
    let mut user = logged_in(&farm, 0).await;
    farm.restart_node(0).await.unwrap();
    assert_eq!(
        user.me().await.unwrap(),
        MeOutcome::LoggedOut { status: 302 }
    );
    // A stopped node is an error, not a loss.
    farm.stop_node(0).await;
    let report = drive_users(farm.addrs()[0], "SID", DriveConfig::new(2, 2)).await;
    assert_eq!(report.total_losses(), 0);
    assert_eq!(report.errors, 2 + 4);
    farm.shutdown().await;
}

#[tokio::test]
async fn wait_until_polls_and_gives_up() {
    assert!(wait_until(Duration::from_millis(50), || true).await);
    let started = Instant::now();
    assert!(!wait_until(Duration::from_millis(30), || false).await);
    assert!(started.elapsed() >= Duration::from_millis(30));
}
