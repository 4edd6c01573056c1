//! HTTP/1.1 spoken by hand on raw sockets, for tests that need to see (or cause) exactly what a
//! connection carries: a backend that answers, stalls, truncates or resets at a chosen point, and
//! a client that tells a complete answer from a truncated one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as a backend received it (the body decoded if it was chunked).
#[derive(Debug, Clone)]
pub struct Seen {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target.
    pub target: String,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Seen {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Read more bytes into `buf`; false at the end of the stream or on an error.
async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match s.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Header lines after the first line of `head`, names lower-cased.
fn parse_headers(head: &str) -> Vec<(String, String)> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect()
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"))
}

fn content_length(headers: &[(String, String)]) -> Option<usize> {
    headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
}

/// Read a head ending in a blank line from `s`, with `buf` holding bytes already read; the head
/// is removed from `buf`. `None` if the stream ended first.
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            return Some(head);
        }
        if !fill(s, buf).await {
            return None;
        }
    }
}

/// Decode a chunked body from `s` into `out`; false if the stream ended before its last chunk.
async fn read_chunked(s: &mut TcpStream, buf: &mut Vec<u8>, out: &mut Vec<u8>) -> bool {
    loop {
        let line_end = loop {
            if let Some(i) = find(buf, b"\r\n") {
                break i;
            }
            if !fill(s, buf).await {
                return false;
            }
        };
        let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size_text = line.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return false;
        };
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers (none expected), then the blank line.
            loop {
                if let Some(i) = find(buf, b"\r\n") {
                    buf.drain(..i + 2);
                    if i == 0 {
                        return true;
                    }
                    continue;
                }
                if !fill(s, buf).await {
                    return false;
                }
            }
        }
        while buf.len() < size + 2 {
            if !fill(s, buf).await {
                out.extend_from_slice(&buf[..buf.len().min(size)]);
                buf.clear();
                return false;
            }
        }
        out.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

/// Read `len` bytes of body into `out`; false if the stream ended first (what came is kept).
async fn read_sized(s: &mut TcpStream, buf: &mut Vec<u8>, len: usize, out: &mut Vec<u8>) -> bool {
    while buf.len() < len {
        if !fill(s, buf).await {
            out.append(buf);
            return false;
        }
    }
    out.extend(buf.drain(..len));
    true
}

/// Read one request (head and body) from `s`; `buf` carries bytes between requests. `None`
/// when the connection ended before a whole request.
pub async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Seen> {
    let head = read_head(s, buf).await?;
    let mut first = head.split("\r\n").next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_owned();
    let target = first.next().unwrap_or("").to_owned();
    let headers = parse_headers(&head);
    let mut body = Vec::new();
    let whole = if is_chunked(&headers) {
        read_chunked(s, buf, &mut body).await
    } else {
        let len = content_length(&headers).unwrap_or(0);
        read_sized(s, buf, len, &mut body).await
    };
    whole.then_some(Seen {
        method,
        target,
        headers,
        body,
    })
}

/// Abort `s`: `SO_LINGER` 0, so closing it sends a reset instead of a FIN.
pub fn reset(s: TcpStream) {
    let _ = s.set_zero_linger();
    drop(s);
}

/// An answer's status line and headers.
#[derive(Debug, Clone)]
pub struct AnswerHead {
    /// The status code.
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
}

impl AnswerHead {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the sender said it closes the connection after this answer.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("close"))
    }
}

/// What a client read where it expected an answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A whole answer, framed as its head said.
    Complete {
        /// Status and headers.
        head: AnswerHead,
        /// The body (decoded if chunked).
        body: Vec<u8>,
    },
    /// The connection ended inside the answer: after its head (`Some`) or inside it (`None`).
    Truncated {
        /// The head, if it arrived whole.
        head: Option<AnswerHead>,
        /// The body bytes that arrived.
        body: Vec<u8>,
    },
    /// The connection ended before a byte of an answer.
    Closed,
}

/// A client connection that reads answers one by one.
#[derive(Debug)]
pub struct ClientConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl ClientConn {
    /// Connect to `addr`.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        Ok(Self {
            stream,
            buf: Vec::new(),
        })
    }

    /// Send raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Read one answer; `head_request` when it answers a HEAD (no body follows the head).
    pub async fn read_answer(&mut self, head_request: bool) -> Reply {
        let s = &mut self.stream;
        let buf = &mut self.buf;
        let Some(text) = read_head(s, buf).await else {
            return if buf.is_empty() {
                Reply::Closed
            } else {
                Reply::Truncated {
                    head: None,
                    body: Vec::new(),
                }
            };
        };
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let head = AnswerHead {
            status,
            headers: parse_headers(&text),
        };
        let mut body = Vec::new();
        let bodiless = head_request || status == 204 || status == 304 || status < 200;
        let whole = if bodiless {
            true
        } else if is_chunked(&head.headers) {
            read_chunked(s, buf, &mut body).await
        } else if let Some(len) = content_length(&head.headers) {
            read_sized(s, buf, len, &mut body).await
        } else {
            // Delimited by the close: whatever arrives until then is the whole body.
            while fill(s, buf).await {}
            body.append(buf);
            true
        };
        if whole {
            Reply::Complete { head, body }
        } else {
            Reply::Truncated {
                head: Some(head),
                body,
            }
        }
    }

    /// Read until the peer closes (EOF or an error), within `within`; the bytes that came, or
    /// `None` if the connection was still open at the deadline.
    pub async fn read_to_close(&mut self, within: Duration) -> Option<Vec<u8>> {
        let s = &mut self.stream;
        let buf = &mut self.buf;
        tokio::time::timeout(within, async { while fill(s, buf).await {} })
            .await
            .ok()?;
        Some(std::mem::take(buf))
    }
}

/// What a scripted backend does with one request.
#[derive(Debug)]
pub enum Act {
    /// Send these bytes (a whole answer) and keep the connection for the next request.
    Answer(Vec<u8>),
    /// Send these bytes, wait a little so they reach the peer, then close (`reset`: abort with a
    /// reset instead of a FIN).
    SendThenClose {
        /// What goes out before the close.
        bytes: Vec<u8>,
        /// Reset rather than FIN.
        reset: bool,
    },
    /// Send nothing, ever: hold the connection open until the backend is dropped.
    Stall,
}

/// A raw backend on 127.0.0.1 that runs `script` for every request it reads, counting the
/// connections it accepted.
#[derive(Debug)]
pub struct ScriptedBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedBackend {
    /// Start it.
    pub async fn start<F>(script: F) -> Self
    where
        F: Fn(&Seen) -> Act + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a backend");
        let addr = listener.local_addr().expect("backend address");
        let accepts = Arc::new(AtomicUsize::new(0));
        let script = Arc::new(script);
        let counted = accepts.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((s, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                conns.spawn(serve_scripted(s, script.clone()));
                while conns.try_join_next().is_some() {}
            }
        });
        Self {
            addr,
            accepts,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }
}

impl Drop for ScriptedBackend {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

async fn serve_scripted<F>(mut s: TcpStream, script: Arc<F>)
where
    F: Fn(&Seen) -> Act + Send + Sync + 'static,
{
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut s, &mut buf).await {
        match script(&req) {
            Act::Answer(bytes) => {
                if s.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Act::SendThenClose {
                bytes,
                reset: abort,
            } => {
                let _ = s.write_all(&bytes).await;
                // Long enough for the bytes to be read before the close overtakes them (a
                // reset discards what the peer has not read yet).
                tokio::time::sleep(Duration::from_millis(50)).await;
                if abort {
                    reset(s);
                }
                return;
            }
            Act::Stall => {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// A whole `200 OK` answer with `body` and a `content-length`, and `extra` header lines (each
/// ending in CRLF).
pub fn ok_answer(extra: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A whole `200 OK` answer with `body` sent as two chunks, and `extra` header lines.
pub fn chunked_answer(extra: &str, body: &[u8]) -> Vec<u8> {
    let (a, b) = body.split_at(body.len() / 2);
    let mut out =
        format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n{extra}\r\n").into_bytes();
    for part in [a, b] {
        if !part.is_empty() {
            out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            out.extend_from_slice(part);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}
