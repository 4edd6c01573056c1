//! The client side of a connection: plain HTTP/1.1 requests (no body, or a short one whose
//! length is announced) are read, answered and kept alive here, in the connection's own task;
//! everything else goes to hyper.
//!
//! What counts as plain is narrow on purpose (the codec's [`h1::parse_request`] says): an
//! origin-form target, HTTP/1.0 or 1.1, at most one `Content-Length` of at most
//! [`h1::BUFFER_BODY_LIMIT`], and no `Transfer-Encoding`, `Expect` or `Upgrade`. The first
//! request that is anything else (HTTP/2's preface, a chunked or long body, a protocol switch, a
//! head httparse will not take) hands the connection, with the bytes already read, to hyper's
//! server for the rest of its life. So the cases that need care (smuggling
//! attempts, streamed uploads, `100-continue`, WebSockets, HTTP/2) all meet hyper's code.

use std::pin::pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body::Body as _;
use http_body_util::BodyExt;
use sessionwatch_h1::{self as h1, AnswerTo, Framing, Parsed, RequestHead, make_room};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use super::io::{ClientIo, close, linger_close, send};
use super::{ClientLimits, Handler};
use crate::respond::ForwardError;
use crate::shutdown::{DrainWatch, Phase};
use crate::upstream::body::{RequestBody, ResponseBody};

/// Why the plain loop stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The connection is over (closed by either side, timed out, or shut down).
    Closed,
    /// The next request is not plain: hyper takes the connection, starting with these bytes.
    NotPlain(Bytes),
}

/// Serve plain requests on `stream` (TCP, or TLS over it), whose first bytes (read already,
/// after a PROXY header) are in `buf`, until it closes or a request is not plain. (`handler` is
/// borrowed mutably only so that the future is `Send` without the handler being `Sync`.)
/// `limits` bound the wait for each request's head, then for its body (past it: 408);
/// once `drain` begins every answer closes its connection, and once it stops accepting an idle
/// connection is closed at once. The requests answered here are counted in
/// `limits.plain_requests` once the loop ends (one atomic add a connection, not a request).
///
/// Each request's duration goes to `limits.request_duration`: from the moment its head has
/// been read whole to the moment the last byte of its answer has been handed to the socket (or
/// the answer was given up: the client left, a send timed out), so it includes reading a body
/// and the backend's whole answer, as the time a client waits for the page does. The clock is
/// read once a request more than before: the answer's end is also the start of the wait for the
/// next head. A head refused before it was read whole (400, 431) is not timed.
pub(crate) async fn serve_plain<S: ClientIo, H: Handler>(
    stream: &mut S,
    buf: BytesMut,
    handler: &mut H,
    limits: &ClientLimits,
    drain: &mut DrainWatch,
) -> Ended {
    let mut answered = 0;
    let ended = plain_loop(stream, buf, handler, limits, drain, &mut answered).await;
    if answered > 0 {
        limits.plain_requests.increment(answered);
    }
    if ended == Ended::Closed {
        close(stream).await;
    }
    ended
}

async fn plain_loop<S: ClientIo, H: Handler>(
    stream: &mut S,
    mut buf: BytesMut,
    handler: &mut H,
    limits: &ClientLimits,
    drain: &mut DrainWatch,
    answered: &mut u64,
) -> Ended {
    let mut out = Vec::with_capacity(1024);
    let deadline = tokio::time::sleep(limits.head);
    let mut deadline = pin!(deadline);
    // When the connection became idle: at its start, then at the end of each answer.
    let mut idle_since = Instant::now();
    loop {
        deadline.as_mut().reset(idle_since + limits.head);
        // The head.
        let head = loop {
            if !buf.is_empty() {
                match h1::parse_request(&mut buf, limits.max_head) {
                    Parsed::Plain(head) => break head,
                    Parsed::Partial => {}
                    Parsed::NotPlain => return Ended::NotPlain(buf.freeze()),
                    Parsed::Bad => {
                        let refused = ForwardError::BadRequest("the request head does not convert");
                        refuse(stream, &mut out, refused, limits.send).await;
                        return Ended::Closed;
                    }
                    Parsed::TooLarge => {
                        refuse(stream, &mut out, ForwardError::HeadTooLarge, limits.send).await;
                        return Ended::Closed;
                    }
                }
            }
            make_room(&mut buf);
            let idle = buf.is_empty();
            tokio::select! {
                biased;
                read = stream.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => return Ended::Closed,
                    Ok(_) => {}
                },
                () = &mut deadline => return Ended::Closed,
                () = drain.reached(Phase::Closing), if idle => return Ended::Closed,
            }
        };
        let started = Instant::now();
        let RequestHead {
            parts,
            body_len,
            keep_alive,
        } = head;
        // The body, read whole, each read due within the body timeout of the last.
        while buf.len() < body_len {
            deadline.as_mut().reset(Instant::now() + limits.body);
            make_room(&mut buf);
            tokio::select! {
                biased;
                read = stream.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => return Ended::Closed,
                    Ok(_) => {}
                },
                () = &mut deadline => {
                    limits.stalled_bodies.increment(1);
                    let refusal = ForwardError::RequestBody { timed_out: true }.into_response();
                    let to = AnswerTo::default();
                    let _ = write_answer(stream, &mut out, refusal, to, true, limits.send).await;
                    // Its answer is out: the linger after it is the connection's, not its.
                    limits.request_duration.record(started.elapsed());
                    linger_close(stream).await;
                    return Ended::Closed;
                }
            }
        }
        let body = if body_len > 0 {
            RequestBody::Buffered {
                data: Some(buf.split_to(body_len).freeze()),
            }
        } else {
            RequestBody::Empty
        };
        let to = AnswerTo::request(&parts.method, parts.version);
        let resp = handler.handle(Request::from_parts(parts, body)).await;
        let close = !keep_alive || drain.is_draining();
        let sent = write_answer(stream, &mut out, resp, to, close, limits.send);
        let sent = sent.await;
        idle_since = Instant::now();
        let took = idle_since.saturating_duration_since(started);
        limits.request_duration.record(took);
        *answered += 1;
        match sent {
            Ok(true) => {}
            Ok(false) => {
                // Requests the client sent after this one will not be answered: close without
                // a reset that could destroy the answer before the client reads it.
                if !buf.is_empty() {
                    linger_close(stream).await;
                }
                return Ended::Closed;
            }
            Err(_) => return Ended::Closed,
        }
    }
}

/// Answer a request the front cannot take with `refused`'s answer, and close.
async fn refuse<S: ClientIo>(
    stream: &mut S,
    out: &mut Vec<u8>,
    refused: ForwardError,
    timeout: Duration,
) {
    let refusal = refused.into_response();
    let _ = write_answer(stream, out, refusal, AnswerTo::default(), true, timeout).await;
    linger_close(stream).await;
}

/// Write `resp`; `Ok(true)` when the connection can carry on (`close` was false and the body
/// went out whole and delimited).
async fn write_answer<S: ClientIo>(
    stream: &mut S,
    out: &mut Vec<u8>,
    resp: Response<ResponseBody>,
    to: AnswerTo,
    close: bool,
    send_timeout: Duration,
) -> std::io::Result<bool> {
    let size = resp.body().size_hint().exact();
    let head = h1::encode_answer(resp.status(), resp.headers(), size, to, close, out);
    let (framing, carry_on) = (head.framing, !head.close);
    let mut body = resp.into_body();
    if framing == Framing::Empty {
        send(stream, out, send_timeout).await?;
        return Ok(carry_on);
    }
    // A body already whole goes in the same write as the head.
    if let ResponseBody::Full { data } = &mut body {
        if let Some(d) = data.take() {
            out.extend_from_slice(&d);
        }
        send(stream, out, send_timeout).await?;
        return Ok(carry_on);
    }
    send(stream, out, send_timeout).await?;
    let mut sent = 0u64;
    loop {
        // A backend that stops sending holds the client as surely as a client that stops
        // reading: the same timeout bounds both.
        let frame = match tokio::time::timeout(send_timeout, body.frame()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(_) => return Ok(false),
        };
        let Ok(frame) = frame else {
            // The head is gone: all the client can learn is that the body broke off.
            return Ok(false);
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        if framing == Framing::Chunked {
            out.clear();
            h1::encode_chunk(&data, out);
            send(stream, out, send_timeout).await?;
        } else {
            send(stream, &data, send_timeout).await?;
        }
    }
    match framing {
        Framing::Chunked => {
            send(stream, h1::LAST_CHUNK, send_timeout).await?;
            Ok(carry_on)
        }
        // A body that did not match its announced length leaves the client unable to tell
        // where the next answer starts.
        Framing::Length(n) => Ok(carry_on && sent == n),
        // The end of the body is the end of the connection.
        Framing::Empty | Framing::UntilClose => Ok(false),
    }
}
