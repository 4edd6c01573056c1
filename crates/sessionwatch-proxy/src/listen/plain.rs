//! The client side of a connection: plain HTTP/1.1 requests (no body, or a short one whose
//! length is announced) are read, answered and kept alive here, in the connection's own task;
//! everything else goes to hyper.
//!
//! What counts as plain is narrow on purpose: an origin-form target, HTTP/1.0 or 1.1, at most one
//! `Content-Length` of at most [`BUFFER_BODY_LIMIT`], and no `Transfer-Encoding`, `Expect` or
//! `Upgrade`. The first request that is anything else (HTTP/2's preface, a chunked or long body,
//! a protocol switch, a head httparse will not take) hands the connection, with the bytes already
//! read, to hyper's server for the rest of its life. So the cases that need care (smuggling
//! attempts, streamed uploads, `100-continue`, WebSockets, HTTP/2) all meet hyper's code.

use std::mem::MaybeUninit;
use std::pin::pin;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::io::{linger_close, send};
use super::{ClientLimits, Handler};
use crate::respond::ForwardError;
use crate::upstream::BUFFER_BODY_LIMIT;
use crate::upstream::body::{RequestBody, ResponseBody};
use crate::wire::{
    self, INITIAL_BUF, MAX_HEAD, MAX_HEADERS, Span, lists, make_room, parse_decimal, push_decimal,
    push_hex,
};

/// A plain request's head, parsed.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) request: Request<RequestBody>,
    /// Bytes of body that follow the head.
    pub(crate) body_len: usize,
    /// Whether the client wants the connection kept after the answer.
    pub(crate) keep_alive: bool,
}

/// What the front made of the bytes at the start of its buffer.
// Returned once per request and taken apart at once: boxing the request would only add an
// allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Parsed {
    /// A plain request; its head has been consumed.
    Plain(Head),
    /// Not a whole head yet.
    Partial,
    /// Something for hyper: nothing has been consumed.
    NotPlain,
    /// A head that looked plain but whose target or a header would not convert (consumed): the
    /// answer is 400 and the connection closes.
    Bad,
    /// A head longer than the limit, whole or not: the answer is 431 and the connection closes.
    TooLarge,
}

/// Parse a plain request head of at most `max_head` bytes from the front of `buf`.
///
/// The limit holds for every request, plain or not: a head for hyper is measured here first,
/// and hyper, given the same limit, measures the heads it reads itself.
pub(crate) fn parse_request(buf: &mut BytesMut, max_head: usize) -> Parsed {
    let max_head = max_head.min(MAX_HEAD);
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() <= max_head => return Parsed::Partial,
        Ok(httparse::Status::Partial) => return Parsed::TooLarge,
        _ => return Parsed::NotPlain,
    };
    if len > max_head {
        return Parsed::TooLarge;
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::NotPlain;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::NotPlain;
    };
    if method == Method::CONNECT || !target.starts_with('/') {
        return Parsed::NotPlain;
    }
    let version = if version == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut body_len = None;
    let (mut close, mut keep) = (false, false);
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            match (body_len, parse_decimal(h.value)) {
                (None, Some(n)) if n <= BUFFER_BODY_LIMIT => body_len = Some(n as usize),
                _ => return Parsed::NotPlain,
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            if lists(h.value, "upgrade") {
                return Parsed::NotPlain;
            }
            close |= lists(h.value, "close");
            keep |= lists(h.value, "keep-alive");
        } else if name.eq_ignore_ascii_case(TRANSFER_ENCODING.as_str().as_bytes())
            || name.eq_ignore_ascii_case(EXPECT.as_str().as_bytes())
            || name.eq_ignore_ascii_case(UPGRADE.as_str().as_bytes())
        {
            return Parsed::NotPlain;
        }
    }
    let target_span = {
        let start = target.as_ptr() as usize - buf.as_ptr() as usize;
        start..start + target.len()
    };
    let mut spans: [Span; MAX_HEADERS] = [(0, 0, 0, 0); MAX_HEADERS];
    let count = req.headers.len();
    wire::spans(buf, req.headers, &mut spans);
    let head = buf.split_to(len).freeze();
    let (Ok(uri), Some(headers)) = (
        Uri::from_maybe_shared(head.slice(target_span)),
        // Room for the forwarding headers and the request id.
        wire::header_map(&head, &spans[..count], 6),
    ) else {
        return Parsed::Bad;
    };
    let mut request = Request::new(RequestBody::Empty);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Parsed::Plain(Head {
        request,
        body_len: body_len.unwrap_or(0),
        keep_alive: match version {
            Version::HTTP_11 => !close,
            _ => keep && !close,
        },
    })
}

/// How an answer's body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    /// No body (a HEAD request, 1xx, 204, 304): the headers pass as they are.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked (an HTTP/1.1 client, length unknown).
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client, length unknown).
    UntilClose,
}

/// Append an answer's status line and headers, with `out` framing and the connection's fate;
/// returns whether the connection closes after it (`close`, or the answer is one of the proxy's
/// own refusals, which say `Connection: close`: a backend's `Connection` was removed already).
fn encode_head(
    resp: &Response<ResponseBody>,
    framing: Out,
    mut close: bool,
    http10_keep_alive: bool,
    buf: &mut Vec<u8>,
) -> bool {
    let status = resp.status();
    buf.extend_from_slice(b"HTTP/1.1 ");
    buf.extend_from_slice(status.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    buf.extend_from_slice(b"\r\n");
    let headers = resp.headers();
    // A 1xx or 204 never carries framing (RFC 9110 8.6, RFC 9112 6.1); a 304 or an answer to
    // HEAD keeps the length of the body it stands for.
    let never_framed = status.is_informational() || status == StatusCode::NO_CONTENT;
    for (name, value) in headers {
        let framing_header = *name == CONTENT_LENGTH || *name == TRANSFER_ENCODING;
        if *name == CONNECTION {
            close = true;
            continue;
        }
        if framing_header && (framing != Out::None || never_framed) {
            continue;
        }
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    match framing {
        Out::Length(n) => {
            buf.extend_from_slice(b"content-length: ");
            push_decimal(buf, n);
            buf.extend_from_slice(b"\r\n");
        }
        Out::Chunked => buf.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Out::None | Out::UntilClose => {}
    }
    if !headers.contains_key(DATE) {
        buf.extend_from_slice(b"date: ");
        buf.extend_from_slice(http_date().as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    if close {
        buf.extend_from_slice(b"connection: close\r\n");
    } else if http10_keep_alive {
        buf.extend_from_slice(b"connection: keep-alive\r\n");
    }
    buf.extend_from_slice(b"\r\n");
    close
}

/// The current time as an HTTP date, formatted at most once a second per thread.
fn http_date() -> HeaderValue {
    thread_local! {
        static CACHED: std::cell::RefCell<(u64, HeaderValue)> =
            const { std::cell::RefCell::new((u64::MAX, HeaderValue::from_static(""))) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|(at, value)| {
        if *at != secs {
            *at = secs;
            *value = HeaderValue::from_str(&httpdate::fmt_http_date(now))
                .unwrap_or_else(|_| HeaderValue::from_static(""));
        }
        value.clone()
    })
}

/// Why the plain loop stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The connection is over (closed by either side, timed out, or shut down).
    Closed,
    /// The next request is not plain: hyper takes the connection, starting with these bytes.
    NotPlain(Bytes),
}

/// Serve plain requests on `stream` until it closes or a request is not plain. (`handler` is
/// borrowed mutably only so that the future is `Send` without the handler being `Sync`.)
/// `limits` bound the wait for each request's head, then for its body (past it: 408);
/// `shutdown` closes an idle connection, and a busy one after the answer in progress.
pub(crate) async fn serve_plain<H: Handler>(
    stream: &mut TcpStream,
    handler: &mut H,
    limits: &ClientLimits,
    shutdown: &mut watch::Receiver<bool>,
) -> Ended {
    let mut buf = BytesMut::with_capacity(INITIAL_BUF);
    let mut out = Vec::with_capacity(1024);
    let deadline = tokio::time::sleep(limits.head);
    let mut deadline = pin!(deadline);
    loop {
        deadline.as_mut().reset(Instant::now() + limits.head);
        // The head.
        let head = loop {
            if !buf.is_empty() {
                match parse_request(&mut buf, limits.max_head) {
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
                _ = shutdown.changed(), if idle => return Ended::Closed,
            }
        };
        let Head {
            mut request,
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
                    let refused = ForwardError::RequestBody { timed_out: true };
                    refuse(stream, &mut out, refused, limits.send).await;
                    return Ended::Closed;
                }
            }
        }
        if body_len > 0 {
            *request.body_mut() = RequestBody::Buffered {
                data: Some(buf.split_to(body_len).freeze()),
            };
        }
        let head_request = request.method() == Method::HEAD;
        let http10 = request.version() == Version::HTTP_10;
        let resp = handler.handle(request).await;
        let close = !keep_alive || *shutdown.borrow();
        let sent = write_answer(
            stream,
            &mut out,
            resp,
            head_request,
            http10,
            close,
            limits.send,
        );
        match sent.await {
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
async fn refuse(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    refused: ForwardError,
    timeout: Duration,
) {
    let _ = write_answer(
        stream,
        out,
        refused.into_response(),
        false,
        false,
        true,
        timeout,
    )
    .await;
    linger_close(stream).await;
}

/// Write `resp`; `Ok(true)` when the connection can carry on (`close` was false and the body
/// went out whole and delimited).
async fn write_answer(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    resp: Response<ResponseBody>,
    head_request: bool,
    http10: bool,
    close: bool,
    send_timeout: Duration,
) -> std::io::Result<bool> {
    let status = resp.status();
    let no_body = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let size = resp.body().size_hint().exact();
    let framing = match size {
        _ if no_body => Out::None,
        Some(n) => Out::Length(n),
        None if http10 => Out::UntilClose,
        None => Out::Chunked,
    };
    let close = close || framing == Out::UntilClose;
    out.clear();
    let close = encode_head(&resp, framing, close, http10 && !close, out);
    let carry_on = !close;
    // A HEAD answer the proxy wrote itself still says how long its body would be.
    if head_request
        && !resp.headers().contains_key(CONTENT_LENGTH)
        && let Some(n) = size.filter(|n| *n > 0)
    {
        out.truncate(out.len() - 2);
        out.extend_from_slice(b"content-length: ");
        push_decimal(out, n);
        out.extend_from_slice(b"\r\n\r\n");
    }
    let mut body = resp.into_body();
    if framing == Out::None {
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
        if framing == Out::Chunked {
            out.clear();
            push_hex(out, data.len() as u64);
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\r\n");
            send(stream, out, send_timeout).await?;
        } else {
            send(stream, &data, send_timeout).await?;
        }
    }
    match framing {
        Out::Chunked => {
            send(stream, b"0\r\n\r\n", send_timeout).await?;
            Ok(carry_on)
        }
        // A body that did not match its announced length leaves the client unable to tell
        // where the next answer starts.
        Out::Length(n) => Ok(carry_on && sent == n),
        // The end of the body is the end of the connection.
        Out::None | Out::UntilClose => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(raw);
        (parse_request(&mut buf, MAX_HEAD), buf)
    }

    #[test]
    fn a_plain_request_is_parsed_and_its_head_consumed() {
        let (parsed, rest) = parse(
            b"POST /login?next=%2F HTTP/1.1\r\nHost: shop\r\nCookie: a=1\r\nCookie: b=2\r\n\
              Content-Length: 5\r\n\r\nuser=GET / HTTP/1.1\r\n",
        );
        let Parsed::Plain(head) = parsed else {
            panic!("{parsed:?}");
        };
        assert_eq!(head.request.method(), Method::POST);
        assert_eq!(head.request.uri(), "/login?next=%2F");
        assert_eq!(head.request.version(), Version::HTTP_11);
        let cookies: Vec<_> = head.request.headers().get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(head.body_len, 5);
        assert!(head.keep_alive);
        assert_eq!(&rest[..], b"user=GET / HTTP/1.1\r\n");
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        let keep = |raw: &[u8]| match parse(raw).0 {
            Parsed::Plain(h) => h.keep_alive,
            other => panic!("{other:?}"),
        };
        assert!(keep(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(!keep(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!keep(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(keep(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn anything_but_a_plain_request_is_left_whole_for_hyper() {
        for raw in [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -3\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 65537\r\n\r\n",
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
            b"GET http://elsewhere/ HTTP/1.1\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ] {
            let (parsed, rest) = parse(raw);
            assert!(matches!(parsed, Parsed::NotPlain), "{raw:?}: {parsed:?}");
            assert_eq!(&rest[..], raw, "bytes were consumed");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(parse(raw.as_bytes()).0, Parsed::NotPlain));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: x\r\n").0,
            Parsed::Partial
        ));
    }

    #[test]
    fn answer_heads_carry_their_framing() {
        let mut resp = Response::new(ResponseBody::full("hi"));
        resp.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("99"));
        resp.headers_mut().insert(
            DATE,
            HeaderValue::from_static("Tue, 24 Nov 2026 10:00:00 GMT"),
        );
        let mut out = Vec::new();
        encode_head(&resp, Out::Length(2), true, false, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\ndate: Tue, 24 Nov 2026 10:00:00 GMT\r\ncontent-length: 2\r\n\
             connection: close\r\n\r\n"
        );
        let mut out = Vec::new();
        encode_head(&resp, Out::None, false, true, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("content-length: 99\r\n"), "{text}");
        assert!(text.ends_with("connection: keep-alive\r\n\r\n"), "{text}");
        let mut out = Vec::new();
        encode_head(
            &Response::new(ResponseBody::full("")),
            Out::Chunked,
            false,
            false,
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
        assert!(text.contains("date: "), "{text}");
    }
}
