//! The HTTP/1.1 exchange for a request whose body is already in hand (no body, or a small one
//! read whole first): most of the traffic a session farm sees.
//!
//! The request goes out in one write and the answer is read by the request's own task, on a
//! connection it holds alone: no connection task, no channel between the two, no second wake-up
//! per request. The answer's body is framed as RFC 9112 section 6.3 says (no body, a length,
//! chunked, or until the backend closes) and handed on as it arrives; once it has been read to
//! its end, the connection goes back to its pool.
//!
//! Requests that stream their body, and protocol switches, go through hyper's client instead
//! (see the parent module).

use std::future::Future as _;
use std::io;
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method, StatusCode, Version};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) use super::chunked::{Chunked, Decoded};
use super::pool::Home;
use crate::wire::{
    self, INITIAL_BUF, MAX_HEAD, MAX_HEADERS, READ_GROW, has_token, make_room, parse_decimal,
    push_decimal,
};

/// What went wrong in an exchange with a backend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request could not be written; `partly` when some of it had gone out.
    #[error("writing the request failed")]
    Write {
        /// Whether the backend may have received part of the request.
        partly: bool,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The connection failed while the answer was read.
    #[error("reading the answer failed")]
    Read(#[source] io::Error),
    /// The backend closed the connection before sending a byte of its answer.
    #[error("the backend closed the connection without answering")]
    ClosedBeforeAnswer,
    /// The backend closed the connection before its answer was complete.
    #[error("the backend closed the connection in the middle of its answer")]
    ClosedEarly,
    /// The answer is not valid HTTP/1.1.
    #[error("invalid answer: {0}")]
    Invalid(&'static str),
}

impl Error {
    /// Whether the request may be sent again on another connection: none of it went out, or
    /// it is idempotent and the connection failed before a byte of the answer arrived. (A
    /// backend can act on a request whose head it has while its body is still arriving, so a
    /// request written in part counts as sent.)
    pub(crate) fn may_retry(&self, idempotent: bool) -> bool {
        match self {
            Error::Write { partly: false, .. } => true,
            Error::Write { partly: true, .. } => idempotent,
            Error::ClosedBeforeAnswer => idempotent,
            Error::Read(e) => idempotent && e.kind() == io::ErrorKind::ConnectionReset,
            _ => false,
        }
    }
}

/// Methods a client may send twice with the effect of once (RFC 9110 section 9.2.2).
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// A keep-alive connection to a backend and the bytes read from it but not yet used.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

/// What an idle connection is fit for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdleState {
    /// Open, and silent since its last answer: it can take a request.
    Usable,
    /// The backend closed it (or it failed).
    Closed,
    /// The backend sent bytes nobody asked for: the next request would read them as its
    /// answer. It must be closed, never reused.
    Stray,
}

/// What becomes of a connection once an answer's body has been read to its end.
#[derive(Debug)]
pub(crate) enum AfterAnswer {
    /// Back to the pool.
    Reuse(Conn),
    /// Closed: the answer or the backend said so.
    Close,
    /// Closed because bytes followed the answer's framed end.
    Poisoned,
}

/// A request encoded for the wire. Its buffer is the thread's, lent for the request and given
/// back when done, so encoding allocates nothing once a thread has served a request.
#[derive(Debug)]
pub(crate) struct Encoded(Vec<u8>);

thread_local! {
    static SPARE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Encoded {
    pub(crate) fn new(parts: &http::request::Parts, body: &[u8]) -> Self {
        let mut out = SPARE.with_borrow_mut(std::mem::take);
        encode_request(parts, body, &mut out);
        Encoded(out)
    }
}

impl Drop for Encoded {
    fn drop(&mut self) {
        // A large body's buffer is not worth keeping around.
        if self.0.capacity() <= READ_GROW {
            let out = std::mem::take(&mut self.0);
            let _ = SPARE.try_with(|spare| {
                if let Ok(mut spare) = spare.try_borrow_mut()
                    && spare.capacity() < out.capacity()
                {
                    *spare = out;
                }
            });
        }
    }
}

impl Conn {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(INITIAL_BUF),
        }
    }

    /// What became of an idle connection while it waited in the pool, as far as the event loop
    /// has seen. Costs no system call unless the socket became readable while idle; bytes the
    /// event loop has not noticed yet (a busy worker polls for events every so many tasks) are
    /// missed: see [`Conn::idle_state_now`].
    pub(crate) fn idle_state(&self) -> IdleState {
        if !self.buf.is_empty() {
            return IdleState::Stray;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => IdleState::Usable,
            Poll::Ready(Err(_)) => IdleState::Closed,
            Poll::Ready(Ok(())) => self.idle_state_now(),
        }
    }

    /// What became of an idle connection, asked of the socket itself: one system call (a
    /// non-blocking peek), whatever the event loop has seen.
    pub(crate) fn idle_state_now(&self) -> IdleState {
        use rustix::net::{RecvFlags, recv};
        if !self.buf.is_empty() {
            return IdleState::Stray;
        }
        let mut probe = [0u8; 1];
        match recv(
            &self.stream,
            &mut probe,
            RecvFlags::PEEK | RecvFlags::DONTWAIT,
        ) {
            Err(e) if e == rustix::io::Errno::AGAIN => IdleState::Usable,
            Ok((0, _)) | Err(_) => IdleState::Closed,
            Ok(_) => IdleState::Stray,
        }
    }

    /// Send `request` and read the answer's head, skipping interim (1xx) answers.
    pub(crate) async fn exchange(
        &mut self,
        request: &Encoded,
        head_request: bool,
    ) -> Result<Head, Error> {
        let mut sent = 0;
        while sent < request.0.len() {
            match self.stream.write(&request.0[sent..]).await {
                Ok(0) => {
                    return Err(Error::Write {
                        partly: sent > 0,
                        source: io::ErrorKind::WriteZero.into(),
                    });
                }
                Ok(n) => sent += n,
                Err(source) => {
                    return Err(Error::Write {
                        partly: sent > 0,
                        source,
                    });
                }
            }
        }
        let mut received = false;
        loop {
            if !self.buf.is_empty() {
                received = true;
                if let Some(head) = parse_head(&mut self.buf, head_request)? {
                    if head.status.is_informational() {
                        if head.status == StatusCode::SWITCHING_PROTOCOLS {
                            return Err(Error::Invalid("a protocol switch nobody asked for"));
                        }
                        continue;
                    }
                    return Ok(head);
                }
                if self.buf.len() >= MAX_HEAD {
                    return Err(Error::Invalid("answer head too large"));
                }
            }
            make_room(&mut self.buf);
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(Error::Read)?;
            if n == 0 {
                return Err(if received {
                    Error::ClosedEarly
                } else {
                    Error::ClosedBeforeAnswer
                });
            }
        }
    }

    /// Read more bytes into the buffer; `Ok(0)` is the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        make_room(&mut self.buf);
        // The future only borrows the stream and the buffer: a fresh one per poll loses nothing.
        pin!(self.stream.read_buf(&mut self.buf)).poll(cx)
    }
}

/// Append the request line, the headers, the framing and `body` to `out` (cleared first). The
/// target is the URI's path and query; `Content-Length` and `Transfer-Encoding` are written from
/// the body in hand, whatever the headers said.
pub(crate) fn encode_request(parts: &http::request::Parts, body: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(256 + body.len());
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut had_length = false;
    for (name, value) in &parts.headers {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            had_length = true;
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let says_length = had_length
        || !body.is_empty()
        || matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
    if says_length {
        out.extend_from_slice(b"content-length: ");
        push_decimal(out, body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// How the answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (a HEAD request, 1xx, 204, 304).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the backend closes the connection.
    UntilClose,
}

/// An answer's head.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    pub(crate) framing: Framing,
    /// Whether the connection can take another request once the body has been read.
    pub(crate) keep_alive: bool,
}

/// Parse an answer head from the front of `buf`, consuming it: `Ok(None)` when it is not complete
/// yet. Header values share the head's bytes rather than being copied.
pub(crate) fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, Error> {
    // Left uninitialised: httparse fills what it uses, and zeroing 3 KiB per answer is not free.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::Invalid("too many headers")),
        Err(_) => return Err(Error::Invalid("malformed answer head")),
    };
    let status = resp
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(Error::Invalid("bad status code"))?;
    let version = match resp.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    if len > MAX_HEAD {
        return Err(Error::Invalid("answer head too large"));
    }
    let mut spans = [(0u16, 0u16, 0u16, 0u16); MAX_HEADERS];
    let count = resp.headers.len();
    wire::spans(buf, resp.headers, &mut spans);
    let head = buf.split_to(len).freeze();
    let mut headers =
        wire::header_map(&head, &spans[..count], 2).ok_or(Error::Invalid("bad header"))?;
    // A transfer coding in an HTTP/1.0 answer is faulty framing (RFC 9112 6.1): read it, then
    // close the connection.
    let http10_coded = version == Version::HTTP_10 && headers.contains_key(TRANSFER_ENCODING);
    let (framing, mut keep_alive) = framing(status, head_request, &mut headers)?;
    keep_alive &= !http10_coded
        && match version {
            Version::HTTP_11 => !has_token(&headers, "close"),
            // Both listed: close wins (RFC 9112 9.3).
            _ => has_token(&headers, "keep-alive") && !has_token(&headers, "close"),
        };
    Ok(Some(Head {
        status,
        version,
        headers,
        framing,
        keep_alive,
    }))
}

/// The body's framing (RFC 9112 section 6.3), and whether it leaves the connection reusable.
fn framing(
    status: StatusCode,
    head_request: bool,
    headers: &mut HeaderMap,
) -> Result<(Framing, bool), Error> {
    if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, true));
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        let chunked = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(|t| t.trim_ascii())
            .rfind(|t| !t.is_empty())
            .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        // A length next to a transfer coding is wrong by definition: drop it, and the
        // connection after this answer.
        let both = headers.remove(CONTENT_LENGTH).is_some();
        return Ok(if chunked {
            (Framing::Chunked, !both)
        } else {
            (Framing::UntilClose, false)
        });
    }
    let mut length = None;
    for v in headers.get_all(CONTENT_LENGTH) {
        for part in v.as_bytes().split(|&b| b == b',') {
            let n = parse_decimal(part.trim_ascii()).ok_or(Error::Invalid("bad content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Invalid("conflicting content-length"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => (Framing::Empty, true),
        Some(n) => (Framing::Length(n), true),
        None => (Framing::UntilClose, false),
    })
}

/// How a body still on the wire is delimited, and how much of it is left.
#[derive(Debug)]
enum Left {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

/// An answer's body read from its connection as it arrives. When it has been read to its end
/// the connection goes back to its pool; a body dropped before its end, or failing, closes the
/// connection.
pub struct Body {
    conn: Option<Conn>,
    left: Left,
    reuse: bool,
    home: Option<Home>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("left", &self.left)
            .finish_non_exhaustive()
    }
}

/// What becomes of an answer's body once the head has been read.
pub(crate) enum Answer {
    /// The whole body is in hand (possibly empty), and what becomes of the connection.
    Whole(Bytes, AfterAnswer),
    /// The body is still arriving.
    Streaming(Body),
}

/// The fate of `conn` after an answer read to its framed end: any byte beyond that end is
/// something the backend sent unasked, and poisons the connection.
fn after_answer(conn: Conn, reuse: bool) -> AfterAnswer {
    if !conn.buf.is_empty() {
        AfterAnswer::Poisoned
    } else if reuse {
        AfterAnswer::Reuse(conn)
    } else {
        AfterAnswer::Close
    }
}

impl Body {
    /// The body of an answer with `framing`, whose first bytes (if any) are in `conn`'s buffer.
    /// `reuse` is whether the connection may serve another request after it, going back to the
    /// pool through `home` once a body still arriving has been read (`home` also hears of a
    /// connection poisoned by bytes past the body's end).
    pub(crate) fn start(
        mut conn: Conn,
        framing: Framing,
        reuse: bool,
        home: impl FnOnce() -> Home,
    ) -> Answer {
        let left = match framing {
            Framing::Empty => return Answer::Whole(Bytes::new(), after_answer(conn, reuse)),
            Framing::Length(n) if (conn.buf.len() as u64) >= n => {
                let data = conn.buf.split_to(n as usize).freeze();
                return Answer::Whole(data, after_answer(conn, reuse));
            }
            Framing::Length(n) => Left::Length(n),
            Framing::Chunked => Left::Chunked(Chunked::Size),
            Framing::UntilClose => Left::UntilClose,
        };
        Answer::Streaming(Body {
            conn: Some(conn),
            left,
            reuse,
            home: Some(home()),
        })
    }

    fn finish(&mut self) {
        if let (Some(conn), Some(home)) = (self.conn.take(), self.home.take()) {
            home.settle(after_answer(conn, self.reuse));
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Error;

    fn is_end_stream(&self) -> bool {
        self.conn.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.conn, &self.left) {
            (None, _) => SizeHint::with_exact(0),
            (Some(_), Left::Length(n)) => SizeHint::with_exact(*n),
            _ => SizeHint::default(),
        }
    }

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let step = match &mut this.left {
                Left::Length(left) => {
                    if conn.buf.is_empty() {
                        Decoded::NeedMore
                    } else {
                        let n = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(conn.buf.len());
                        *left -= n as u64;
                        Decoded::Data(conn.buf.split_to(n).freeze())
                    }
                }
                Left::Chunked(state) => match state.decode(&mut conn.buf) {
                    Ok(step) => step,
                    Err(e) => {
                        this.conn = None;
                        return Poll::Ready(Some(Err(e)));
                    }
                },
                Left::UntilClose => {
                    if conn.buf.is_empty() {
                        Decoded::NeedMore
                    } else {
                        Decoded::Data(conn.buf.split().freeze())
                    }
                }
            };
            match step {
                Decoded::Data(data) => {
                    if matches!(this.left, Left::Length(0)) {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decoded::End => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Decoded::NeedMore => match ready!(conn.poll_fill(cx)) {
                    Ok(0) => {
                        this.conn = None;
                        return Poll::Ready(match this.left {
                            Left::UntilClose => None,
                            _ => Some(Err(Error::ClosedEarly)),
                        });
                    }
                    Ok(_) => {}
                    Err(e) => {
                        this.conn = None;
                        return Poll::Ready(Some(Err(Error::Read(e))));
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str, head_request: bool) -> Result<Option<Head>, Error> {
        let mut buf = BytesMut::from(raw);
        parse_head(&mut buf, head_request)
    }

    fn complete(raw: &str) -> Head {
        head(raw, false).unwrap().unwrap()
    }

    #[test]
    fn an_answer_head_is_parsed_and_consumed() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Empty:\r\nset-cookie: b=2\r\nContent-Length: 5\r\n\r\nhello",
        );
        let h = parse_head(&mut buf, false).unwrap().unwrap();
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.version, Version::HTTP_11);
        let cookies: Vec<_> = h.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(h.headers["x-empty"], "");
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn a_partial_head_asks_for_more() {
        assert!(
            head("HTTP/1.1 200 OK\r\nContent-Len", false)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let chunked = complete("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(
            (chunked.framing, chunked.keep_alive),
            (Framing::Chunked, true)
        );
        // A length next to a transfer coding is dropped, and so is the connection afterwards.
        let both =
            complete("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
        assert_eq!((both.framing, both.keep_alive), (Framing::Chunked, false));
        assert!(!both.headers.contains_key(CONTENT_LENGTH));
        let not_chunked = complete("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!(
            (not_chunked.framing, not_chunked.keep_alive),
            (Framing::UntilClose, false)
        );
        let no_length = complete("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(
            (no_length.framing, no_length.keep_alive),
            (Framing::UntilClose, false)
        );
        assert_eq!(
            complete("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n").framing,
            Framing::Empty
        );
        assert_eq!(
            complete("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n").framing,
            Framing::Empty
        );
        let to_head = head("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(to_head.framing, Framing::Empty);
        assert_eq!(to_head.headers[CONTENT_LENGTH], "1000");
        assert_eq!(
            complete("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n").framing,
            Framing::Length(7)
        );
    }

    #[test]
    fn connection_reuse_follows_the_version_and_connection_header() {
        assert!(
            !complete("HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n")
                .keep_alive
        );
        assert!(!complete("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
        assert!(
            complete("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
                .keep_alive
        );
        assert!(
            !complete(
                "HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n"
            )
            .keep_alive
        );
    }

    #[test]
    fn bad_heads_are_errors_not_panics() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTX/1.1 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            "\0\0\0\0\r\n\r\n",
        ] {
            assert!(head(raw, false).is_err(), "{raw:?} was accepted");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        let raw = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert!(matches!(
            head(&raw, false),
            Err(Error::Invalid("too many headers"))
        ));
    }

    #[test]
    fn an_http_1_0_answer_with_a_transfer_coding_closes_its_connection() {
        let h = complete(
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n",
        );
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));
    }

    #[test]
    fn only_requests_the_backend_cannot_have_acted_on_are_sent_again() {
        let write = |partly| Error::Write {
            partly,
            source: io::ErrorKind::BrokenPipe.into(),
        };
        assert!(write(false).may_retry(false));
        assert!(!write(true).may_retry(false));
        assert!(write(true).may_retry(true));
        assert!(Error::ClosedBeforeAnswer.may_retry(true));
        assert!(!Error::ClosedBeforeAnswer.may_retry(false));
        assert!(!Error::ClosedEarly.may_retry(true));
    }

    fn request(method: Method, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn requests_are_encoded_with_a_length_from_the_body_in_hand() {
        let mut out = Vec::new();
        let get = request(
            Method::GET,
            "/a?b=1",
            &[("host", "farm"), ("cookie", "s=1")],
        );
        encode_request(&get, b"", &mut out);
        assert_eq!(
            out,
            b"GET /a?b=1 HTTP/1.1\r\nhost: farm\r\ncookie: s=1\r\n\r\n"
        );
        let post = request(
            Method::POST,
            "/login",
            &[
                ("host", "farm"),
                ("content-length", "999"),
                ("transfer-encoding", "chunked"),
            ],
        );
        encode_request(&post, b"user=a", &mut out);
        assert_eq!(
            out,
            b"POST /login HTTP/1.1\r\nhost: farm\r\ncontent-length: 6\r\n\r\nuser=a"
        );
        let empty_post = request(Method::POST, "/", &[]);
        encode_request(&empty_post, b"", &mut out);
        assert_eq!(out, b"POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parsers() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let pieces: [&[u8]; 12] = [
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.0 204 \r\n",
            b"Content-Length: 12\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"Connection: close\r\n",
            b"X-Empty:\r\n",
            b"\r\n",
            b"5\r\nhello\r\n",
            b"0\r\n\r\n",
            b"ffffffffffffffff\r\n",
            b"\n\r:;,=\0\xff",
            b"HTTP/1.1 1",
        ];
        for _ in 0..20_000 {
            let mut input = Vec::new();
            for _ in 0..rng.random_range(0..8) {
                if rng.random_bool(0.8) {
                    input.extend_from_slice(pieces[rng.random_range(0..pieces.len())]);
                } else {
                    input.push(rng.random());
                }
            }
            let mut buf = BytesMut::from(&input[..]);
            if let Ok(Some(h)) = parse_head(&mut buf, rng.random_bool(0.1)) {
                assert!(h.headers.len() <= MAX_HEADERS);
            }
            let mut state = Chunked::Size;
            let mut buf = BytesMut::from(&input[..]);
            for _ in 0..64 {
                match state.decode(&mut buf) {
                    Ok(Decoded::Data(_)) => {}
                    _ => break,
                }
            }
        }
    }
}
