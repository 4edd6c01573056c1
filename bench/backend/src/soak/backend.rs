//! The soak's backend: every answer names the request it answers (`x-token`, and the body), so a
//! client can tell its own answer from anyone else's; some paths end badly on purpose.
//!
//! - `GET /health`: 200.
//! - `GET /login?t=T&s=S`: 200 with `Set-Cookie: SESSIONID=S` (the proxy learns session `S`).
//! - `GET|HEAD /echo?t=T`: 200, body `echo T\n` (HEAD: the same head, no body).
//! - `GET /chunked?t=T`: 200, chunked, three chunks naming `T`.
//! - `GET /nocontent?t=T`: 204.
//! - `GET /big?t=T&n=N`: 200 with `N` bytes (at most 8 MiB) of [`pattern`] for `T`.
//! - `POST /upload?t=T`: 200 with [`upload_receipt`] of the body (sized or chunked).
//! - `GET /reset?t=T&at=before`: the connection is reset with nothing sent.
//! - `GET /reset?t=T&at=after`: the head (`content-length: 1000`) and 100 bytes, then a reset.

use std::io;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::wire::{
    BodyEnd, Conn, Head, chunk_parts, echo_body, path, pattern, query, upload_receipt,
};

/// Largest `/big` answer.
const MAX_BIG: usize = 8 << 20;

/// Serve `listener` until the process ends.
pub(crate) async fn serve(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream));
            }
            Err(e) => {
                // Out of descriptors, or a connection reset before it was accepted: keep going.
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// What to do with the connection after an answer.
enum After {
    KeepOpen,
    Close,
    Reset,
}

async fn connection(stream: TcpStream) {
    let mut conn = Conn::new(stream);
    loop {
        let head = match conn.read_head().await {
            Ok(Some(h)) => h,
            Ok(None) | Err(_) => return,
        };
        let mut body = Vec::new();
        let read = if head.chunked() {
            conn.read_chunked(&mut body).await
        } else {
            let len = head.content_length().unwrap_or(0);
            conn.read_sized(len, &mut body).await
        };
        if !matches!(read, Ok(BodyEnd::Whole)) {
            return;
        }
        let keep = head.keep_alive();
        match answer(&head, &body, keep, &mut conn).await {
            Ok(After::KeepOpen) if keep => {}
            Ok(After::Reset) => {
                let _ = conn.stream.set_zero_linger();
                return;
            }
            Ok(_) | Err(_) => return,
        }
    }
}

fn head_text(status: &str, token: &str, framing: &str, keep: bool, extra: &str) -> String {
    let connection = if keep { "" } else { "connection: close\r\n" };
    format!("HTTP/1.1 {status}\r\nx-token: {token}\r\n{framing}{extra}{connection}\r\n")
}

fn sized(status: &str, token: &str, body: &[u8], keep: bool, extra: &str) -> Vec<u8> {
    let mut out = head_text(
        status,
        token,
        &format!("content-length: {}\r\n", body.len()),
        keep,
        extra,
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

async fn answer(head: &Head, body: &[u8], keep: bool, conn: &mut Conn) -> io::Result<After> {
    let token = query(&head.target, "t").unwrap_or("-");
    let bytes = match (head.method.as_str(), path(&head.target)) {
        ("GET", "/health") => sized("200 OK", token, b"ok\n", keep, ""),
        ("GET", "/login") => {
            let session = query(&head.target, "s").unwrap_or("anonymous");
            let cookie = format!("set-cookie: SESSIONID={session}; Path=/; HttpOnly\r\n");
            sized("200 OK", token, b"welcome\n", keep, &cookie)
        }
        ("GET", "/echo") => sized("200 OK", token, &echo_body(token), keep, ""),
        ("HEAD", "/echo") => {
            let len = echo_body(token).len();
            head_text(
                "200 OK",
                token,
                &format!("content-length: {len}\r\n"),
                keep,
                "",
            )
            .into_bytes()
        }
        ("GET", "/chunked") => {
            let mut out =
                head_text("200 OK", token, "transfer-encoding: chunked\r\n", keep, "").into_bytes();
            for part in chunk_parts(token) {
                out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                out.extend_from_slice(&part);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            out
        }
        ("GET", "/nocontent") => head_text("204 No Content", token, "", keep, "").into_bytes(),
        ("GET", "/big") => {
            let n = query(&head.target, "n")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0usize)
                .min(MAX_BIG);
            sized("200 OK", token, &pattern(token, n), keep, "")
        }
        ("POST", "/upload") => sized("200 OK", token, &upload_receipt(token, body), keep, ""),
        ("GET", "/reset") => {
            if query(&head.target, "at") == Some("after") {
                let mut out =
                    head_text("200 OK", token, "content-length: 1000\r\n", true, "").into_bytes();
                out.extend_from_slice(&pattern(token, 100));
                conn.send(&out).await?;
                // Let the bytes reach the proxy before the reset overtakes them.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            return Ok(After::Reset);
        }
        _ => sized("404 Not Found", token, b"no such page\n", keep, ""),
    };
    conn.send(&bytes).await?;
    Ok(if keep { After::KeepOpen } else { After::Close })
}
