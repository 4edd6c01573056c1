//! The raw client: writes exact bytes, reads answers by their framing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::{Framing, QUIET, READ_TIMEOUT, dechunk, find, framing_of, header_pairs};

/// One answer as the client received it.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The head, through its empty line.
    pub head: String,
    /// The body, chunked coding removed.
    pub body: Vec<u8>,
    /// How the body was delimited.
    pub framing: Framing,
}

impl Answer {
    /// Every header line's value for `name` (any case), in order.
    pub fn values(&self, name: &str) -> Vec<String> {
        header_pairs(self.head.as_bytes())
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }

    /// Whether the head has a header `name` (any case).
    pub fn has(&self, name: &str) -> bool {
        !self.values(name).is_empty()
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Parse one answer from the front of `buf`: `Ok(None)` if it is not whole yet (with `eof`, the
/// connection has closed and a body delimited by the close ends here). `head_request`: the
/// answer is to a HEAD request and has no body.
#[allow(clippy::result_unit_err)]
pub fn parse_answer(
    buf: &[u8],
    head_request: bool,
    eof: bool,
) -> Result<Option<(usize, Answer)>, String> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head_len = end + 4;
    let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
    let status = head
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("not an answer: {head:?}"))?;
    let headers = header_pairs(head.as_bytes());
    let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    let framing = if no_body {
        Framing::None
    } else {
        framing_of(&headers)
    };
    let rest = &buf[head_len..];
    let (body_len, body) = match framing {
        Framing::None => (0, Vec::new()),
        Framing::Length(n) if rest.len() >= n => (n, rest[..n].to_vec()),
        Framing::Length(_) => return Ok(None),
        Framing::Chunked => match dechunk(rest) {
            Ok(Some((n, data))) => (n, data),
            Ok(None) => return Ok(None),
            Err(()) => {
                return Err(format!(
                    "bad chunked body: {:?}",
                    String::from_utf8_lossy(rest)
                ));
            }
        },
        Framing::Close if eof => (rest.len(), rest.to_vec()),
        Framing::Close => return Ok(None),
    };
    Ok(Some((
        head_len + body_len,
        Answer {
            status,
            head,
            body,
            framing,
        },
    )))
}

/// What a connection to the proxy gave back after a request was written.
#[derive(Debug)]
pub struct Outcome {
    /// The answers, in order.
    pub answers: Vec<Answer>,
    /// Whether the proxy closed the connection (rather than leaving it open and silent).
    pub closed: bool,
    /// Bytes after the last whole answer.
    pub rest: Vec<u8>,
}

impl Outcome {
    /// The statuses, in order.
    pub fn statuses(&self) -> Vec<u16> {
        self.answers.iter().map(|a| a.status).collect()
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for a in &self.answers {
            writeln!(f, "{}{}", a.head, String::from_utf8_lossy(&a.body))?;
        }
        write!(
            f,
            "[closed: {}; after the answers: {:?}]",
            self.closed,
            String::from_utf8_lossy(&self.rest)
        )
    }
}

/// A client connection that writes exact bytes.
#[derive(Debug)]
pub struct RawClient {
    read: OwnedReadHalf,
    write: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    buf: Vec<u8>,
    eof: bool,
}

impl RawClient {
    /// Connect to `addr`.
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = tokio::time::timeout(READ_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect within the timeout")
            .expect("connect");
        Self::from_stream(stream)
    }

    /// A client on a connection already made.
    pub fn from_stream(stream: TcpStream) -> Self {
        let (read, write) = stream.into_split();
        Self {
            read,
            write: Arc::new(tokio::sync::Mutex::new(write)),
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Write `bytes` (a write error, as after a reset, is ignored: what was read tells).
    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.write.lock().await.write_all(bytes).await;
    }

    /// Write `bytes` while the caller reads: a proxy that answers before it has read a large
    /// request, then closes, is seen answering rather than blocking the writer.
    pub fn send_in_background(&self, bytes: Vec<u8>) {
        let write = self.write.clone();
        tokio::spawn(async move {
            let _ = write.lock().await.write_all(&bytes).await;
        });
    }

    /// Read more; false at the end of the stream or after `within` without a byte.
    async fn fill(&mut self, within: Duration) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = vec![0u8; 64 * 1024];
        match tokio::time::timeout(within, self.read.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.eof = true;
                false
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => false,
        }
    }

    /// The next answer (an interim 1xx counts as one), or `None` if the connection ended or
    /// stayed silent for [`READ_TIMEOUT`] first. Panics on bytes that are not an answer.
    pub async fn answer(&mut self, head_request: bool) -> Option<Answer> {
        loop {
            match parse_answer(&self.buf, head_request, self.eof) {
                Ok(Some((n, answer))) => {
                    self.buf.drain(..n);
                    return Some(answer);
                }
                Ok(None) => {}
                Err(e) => panic!("{e}"),
            }
            if !self.fill(READ_TIMEOUT).await {
                if self.eof {
                    // A body delimited by the close ends here.
                    if let Ok(Some((n, answer))) = parse_answer(&self.buf, head_request, true) {
                        self.buf.drain(..n);
                        return Some(answer);
                    }
                }
                return None;
            }
        }
    }

    /// The next final answer, interim ones skipped; panics if none comes.
    pub async fn final_answer(&mut self, head_request: bool) -> Answer {
        loop {
            let answer = self.answer(head_request).await.unwrap_or_else(|| {
                panic!(
                    "no answer; read so far: {:?}",
                    String::from_utf8_lossy(&self.buf)
                )
            });
            if !(100..200).contains(&answer.status) {
                return answer;
            }
        }
    }

    /// Whether the proxy closes the connection: reads (and keeps) until the end of the stream,
    /// or until it is silent for [`QUIET`].
    pub async fn closes(&mut self) -> bool {
        while self.fill(QUIET).await {}
        self.eof
    }

    /// Read everything until the proxy closes or falls silent, and parse it as answers to
    /// requests that were not HEAD.
    pub async fn outcome(mut self) -> Outcome {
        let closed = self.closes().await;
        let mut answers = Vec::new();
        let mut at = 0;
        while let Ok(Some((n, answer))) = parse_answer(&self.buf[at..], false, closed) {
            answers.push(answer);
            at += n;
            if n == 0 {
                break;
            }
        }
        Outcome {
            answers,
            closed,
            rest: self.buf[at..].to_vec(),
        }
    }
}

/// Write `request` on a new connection to `addr` and see what comes back.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> Outcome {
    let c = RawClient::connect(addr).await;
    c.send_in_background(request.to_vec());
    c.outcome().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_framed_by_status_method_and_headers() {
        let (n, a) = parse_answer(
            b"HTTP/1.1 204 No Content\r\nContent-Length: 40\r\n\r\nX",
            false,
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!((n, a.status, a.framing), (47, 204, Framing::None));
        assert_eq!(a.values("content-length"), ["40"]);
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n";
        assert_eq!(
            parse_answer(head, true, false).unwrap().unwrap().0,
            head.len()
        );
        assert!(parse_answer(head, false, false).unwrap().is_none());
        let close = b"HTTP/1.0 200 OK\r\n\r\nrest";
        assert!(parse_answer(close, false, false).unwrap().is_none());
        let (_, a) = parse_answer(close, false, true).unwrap().unwrap();
        assert_eq!((a.framing, a.text().as_str()), (Framing::Close, "rest"));
        assert!(parse_answer(b"garbage\r\n\r\n", false, false).is_err());
    }
}
