//! Just enough HTTP/1.1 for the soak, on raw sockets, so that both ends see exactly what the
//! connection carries: heads parsed with httparse, bodies framed by length or chunks (or, for
//! answers, by the close), and a truncated answer told apart from a whole one.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest head either side accepts.
const MAX_HEAD: usize = 64 * 1024;

/// A parsed head: the request line's method and target, or the status line's code.
#[derive(Debug, Clone, Default)]
pub(crate) struct Head {
    /// Request method (empty for an answer).
    pub(crate) method: String,
    /// Request target (empty for an answer).
    pub(crate) target: String,
    /// Answer status (0 for a request).
    pub(crate) status: u16,
    /// HTTP/1.0 (`false`) or 1.1 (`true`).
    pub http11: bool,
    /// Header names lower-cased, in order.
    pub(crate) headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of header `name` (lower case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, v)| n == name && v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }

    /// Whether the body is chunked.
    pub(crate) fn chunked(&self) -> bool {
        self.has_token("transfer-encoding", "chunked")
    }

    /// The `content-length`, if one is given and valid.
    pub(crate) fn content_length(&self) -> Option<usize> {
        self.header("content-length").and_then(|v| v.parse().ok())
    }

    /// Whether the sender keeps the connection after this message.
    pub(crate) fn keep_alive(&self) -> bool {
        if self.has_token("connection", "close") {
            return false;
        }
        self.http11 || self.has_token("connection", "keep-alive")
    }
}

/// One side of a connection: the socket and what has been read but not used yet. A slow
/// reader takes at most `read_limit` bytes at a time and pauses after each read.
#[derive(Debug)]
pub(crate) struct Conn {
    /// The socket.
    pub(crate) stream: TcpStream,
    buf: Vec<u8>,
    read_limit: usize,
    pause: Option<Duration>,
}

/// How a body ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BodyEnd {
    /// All of it, as framed.
    Whole,
    /// The connection ended first.
    Cut,
}

impl Conn {
    /// A connection that reads as fast as it can.
    pub(crate) fn new(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        Self {
            stream,
            buf: Vec::with_capacity(16 * 1024),
            read_limit: 64 * 1024,
            pause: None,
        }
    }

    /// Read at most `limit` bytes at a time, pausing `pause` after each read.
    pub(crate) fn slow(mut self, limit: usize, pause: Duration) -> Self {
        self.read_limit = limit.max(1);
        self.pause = Some(pause);
        self
    }

    /// Read more; `Ok(0)` at the end of the stream, a reset included (for both ends of the
    /// soak, a reset is just an abrupt end).
    async fn fill(&mut self) -> io::Result<usize> {
        let start = self.buf.len();
        self.buf.resize(start + self.read_limit, 0);
        let got = match self.stream.read(&mut self.buf[start..]).await {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) =>
            {
                Ok(0)
            }
            other => other,
        };
        self.buf.truncate(start + *got.as_ref().unwrap_or(&0));
        if let (Ok(n), Some(pause)) = (&got, self.pause)
            && *n > 0
        {
            tokio::time::sleep(pause).await;
        }
        got
    }

    /// Send `bytes`.
    pub(crate) async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Read a head; `Ok(None)` if the connection ended before a byte of one.
    pub(crate) async fn read_head(&mut self) -> io::Result<Option<Head>> {
        loop {
            if !self.buf.is_empty()
                && let Some((head, used)) = parse_head(&self.buf)?
            {
                self.buf.drain(..used);
                return Ok(Some(head));
            }
            if self.buf.len() > MAX_HEAD {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
            }
            if self.fill().await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
    }

    /// Read a body of `len` bytes into `out`.
    pub(crate) async fn read_sized(
        &mut self,
        len: usize,
        out: &mut Vec<u8>,
    ) -> io::Result<BodyEnd> {
        while self.buf.len() < len {
            if self.fill().await? == 0 {
                out.append(&mut self.buf);
                return Ok(BodyEnd::Cut);
            }
        }
        out.extend(self.buf.drain(..len));
        Ok(BodyEnd::Whole)
    }

    /// Read a body until the connection ends.
    pub(crate) async fn read_to_end(&mut self, out: &mut Vec<u8>) -> io::Result<BodyEnd> {
        while self.fill().await? > 0 {}
        out.append(&mut self.buf);
        Ok(BodyEnd::Whole)
    }

    /// A line ending in CRLF, without it; `None` if the connection ended first.
    async fn read_line(&mut self) -> io::Result<Option<String>> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(Some(line));
            }
            if self.buf.len() > MAX_HEAD {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
            if self.fill().await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Decode a chunked body into `out`.
    pub(crate) async fn read_chunked(&mut self, out: &mut Vec<u8>) -> io::Result<BodyEnd> {
        loop {
            let Some(line) = self.read_line().await? else {
                return Ok(BodyEnd::Cut);
            };
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                // Trailers, then the blank line.
                loop {
                    match self.read_line().await? {
                        None => return Ok(BodyEnd::Cut),
                        Some(l) if l.is_empty() => return Ok(BodyEnd::Whole),
                        Some(_) => {}
                    }
                }
            }
            let mut chunk = Vec::with_capacity(size);
            if self.read_sized(size + 2, &mut chunk).await? == BodyEnd::Cut {
                chunk.truncate(size);
                out.append(&mut chunk);
                return Ok(BodyEnd::Cut);
            }
            if !chunk.ends_with(b"\r\n") {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "chunk without CRLF",
                ));
            }
            chunk.truncate(size);
            out.append(&mut chunk);
        }
    }
}

/// Parse a request or answer head at the start of `buf`: the head and its length, or `None` if
/// it is not all there yet.
fn parse_head(buf: &[u8]) -> io::Result<Option<(Head, usize)>> {
    let invalid = |e: httparse::Error| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
    let mut storage = [httparse::EMPTY_HEADER; 64];
    let headers_of = |hs: &[httparse::Header<'_>]| -> Vec<(String, String)> {
        hs.iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).trim().to_owned(),
                )
            })
            .collect()
    };
    if buf.starts_with(b"HTTP/") {
        let mut resp = httparse::Response::new(&mut storage);
        return match resp.parse(buf).map_err(invalid)? {
            httparse::Status::Partial => Ok(None),
            httparse::Status::Complete(n) => Ok(Some((
                Head {
                    status: resp.code.unwrap_or(0),
                    http11: resp.version == Some(1),
                    headers: headers_of(resp.headers),
                    ..Head::default()
                },
                n,
            ))),
        };
    }
    let mut req = httparse::Request::new(&mut storage);
    match req.parse(buf).map_err(invalid)? {
        httparse::Status::Partial => Ok(None),
        httparse::Status::Complete(n) => Ok(Some((
            Head {
                method: req.method.unwrap_or("").to_owned(),
                target: req.path.unwrap_or("").to_owned(),
                http11: req.version == Some(1),
                headers: headers_of(req.headers),
                ..Head::default()
            },
            n,
        ))),
    }
}

/// The value of `key` in the query of `target`.
pub(crate) fn query<'a>(target: &'a str, key: &str) -> Option<&'a str> {
    let (_, q) = target.split_once('?')?;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then_some(v)
    })
}

/// The path of `target`.
pub(crate) fn path(target: &str) -> &str {
    target.split('?').next().unwrap_or(target)
}

/// `n` bytes that depend on `token` all the way through: the token and a running count, so
/// that a byte out of place anywhere shows.
pub(crate) fn pattern(token: &str, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 64);
    let mut i = 0u64;
    while out.len() < n {
        out.extend_from_slice(token.as_bytes());
        out.push(b':');
        out.extend_from_slice(i.to_string().as_bytes());
        out.push(b'\n');
        i += 1;
    }
    out.truncate(n);
    out
}

/// FNV-1a, 64 bits: what the backend reports of an upload, so the client can check it got the
/// answer to its own body without the body coming back.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The answer the backend gives to an upload of `body` with `token`.
pub(crate) fn upload_receipt(token: &str, body: &[u8]) -> Vec<u8> {
    format!("upload {token} {} {:016x}\n", body.len(), fnv1a(body)).into_bytes()
}

/// The body of `GET /echo` for `token`.
pub(crate) fn echo_body(token: &str) -> Vec<u8> {
    format!("echo {token}\n").into_bytes()
}

/// The chunks of `GET /chunked` for `token`.
pub(crate) fn chunk_parts(token: &str) -> [Vec<u8>; 3] {
    [1, 2, 3].map(|i| format!("chunk{i} {token}\n").into_bytes())
}
