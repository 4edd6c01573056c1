//! The scripted backend: records every byte the proxy sends it, cut into requests by their
//! own framing, and answers each by a script.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Framing, dechunk, find, framing_of, header_pairs};

/// One request as the backend received it, byte for byte.
#[derive(Debug, Clone)]
pub struct Received {
    /// Which connection (in accept order, from 0) it came on.
    pub conn: usize,
    /// The head, through its empty line.
    pub head: Vec<u8>,
    /// The body as it was on the wire (chunked coding included).
    pub body: Vec<u8>,
}

impl Received {
    /// The head as text.
    pub fn head_text(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }

    /// The request line.
    pub fn request_line(&self) -> String {
        self.head_text()
            .split("\r\n")
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    /// Every header line's value for `name` (any case), in order.
    pub fn values(&self, name: &str) -> Vec<String> {
        header_pairs(&self.head)
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }

    /// The body with any chunked coding removed.
    pub fn data(&self) -> Vec<u8> {
        match framing_of(&header_pairs(&self.head)) {
            Framing::Chunked => dechunk(&self.body)
                .ok()
                .flatten()
                .map_or_else(|| self.body.clone(), |(_, d)| d),
            _ => self.body.clone(),
        }
    }
}

/// What the backend does with a request it has received whole.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Send these bytes and wait for the next request on the connection.
    Send(Vec<u8>),
    /// Send these bytes, then close the connection.
    SendAndClose(Vec<u8>),
    /// Send nothing and close.
    Close,
}

/// How a [`RawBackend`] answers.
pub type Script = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

/// One connection to the backend: every byte it received, and whether the proxy closed it.
#[derive(Debug, Clone, Default)]
pub struct ConnRecord {
    /// Every byte the proxy sent on it.
    pub bytes: Vec<u8>,
    /// The proxy closed (or reset) its side.
    pub ended: bool,
}

#[derive(Default)]
struct Log {
    requests: Vec<Received>,
    conns: Vec<ConnRecord>,
}

/// A backend on 127.0.0.1 that records what it receives and answers by a script.
#[derive(Clone)]
pub struct RawBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    log: Arc<Mutex<Log>>,
}

impl RawBackend {
    /// A backend that answers every request with `answer` and keeps the connection.
    pub async fn fixed(answer: &[u8]) -> Self {
        let answer = answer.to_vec();
        Self::start(Arc::new(move |_| Reply::Send(answer.clone()))).await
    }

    /// A backend that answers every request with 200 and its request line as the body.
    pub async fn echo_line() -> Self {
        Self::start(Arc::new(|r: &Received| {
            let line = r.request_line();
            Reply::Send(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{line}",
                    line.len()
                )
                .into_bytes(),
            )
        }))
        .await
    }

    /// A backend answering by `script`.
    pub async fn start(script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend address");
        let log = Arc::new(Mutex::new(Log::default()));
        let shared = log.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let conn = {
                    let mut log = shared.lock().unwrap_or_else(PoisonError::into_inner);
                    log.conns.push(ConnRecord::default());
                    log.conns.len() - 1
                };
                tokio::spawn(serve_conn(s, conn, shared.clone(), script.clone()));
            }
        });
        Self { addr, log }
    }

    /// The requests received whole so far.
    pub fn requests(&self) -> Vec<Received> {
        self.lock().requests.clone()
    }

    /// Every connection so far.
    pub fn conns(&self) -> Vec<ConnRecord> {
        self.lock().conns.clone()
    }

    /// Every byte received on every connection, in accept order.
    pub fn all_bytes(&self) -> Vec<u8> {
        self.lock()
            .conns
            .iter()
            .flat_map(|c| c.bytes.clone())
            .collect()
    }

    /// Forget what was received so far (connections stay, emptied).
    pub fn clear(&self) {
        let mut log = self.lock();
        log.requests.clear();
        for c in &mut log.conns {
            c.bytes.clear();
        }
    }

    /// Wait a moment for anything still in flight to the backend, then its requests.
    pub async fn settled(&self) -> Vec<Received> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.requests()
    }

    /// Wait (bounded) until every connection that received bytes has been closed by the proxy;
    /// whether they all were.
    pub async fn wait_all_ended(&self, within: Duration) -> bool {
        let done = || self.lock().conns.iter().all(|c| c.ended);
        let _ = tokio::time::timeout(within, async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        done()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn serve_conn(mut s: TcpStream, conn: usize, log: Arc<Mutex<Log>>, script: Script) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let note = |bytes: &[u8], ended: bool| {
        let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
        log.conns[conn].bytes.extend_from_slice(bytes);
        log.conns[conn].ended |= ended;
    };
    loop {
        // Whole requests at the front of the buffer are taken first: a pipelined batch arrives
        // in one read.
        if let Some((head_len, body_len)) = request_extent(&buf) {
            let received = Received {
                conn,
                head: buf[..head_len].to_vec(),
                body: buf[head_len..head_len + body_len].to_vec(),
            };
            buf.drain(..head_len + body_len);
            log.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .requests
                .push(received.clone());
            match script(&received) {
                Reply::Send(bytes) => {
                    if s.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Reply::SendAndClose(bytes) => {
                    let _ = s.write_all(&bytes).await;
                    break;
                }
                Reply::Close => break,
            }
            continue;
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                note(&[], true);
                return;
            }
            Ok(n) => {
                note(&chunk[..n], false);
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
    // The backend closed: whatever else the proxy sent was still recorded as it came in.
    let _ = s.shutdown().await;
}

/// The head and body lengths of a whole request at the front of `buf`; `None` if not whole yet
/// (or its chunked body is broken, which the recording still shows).
fn request_extent(buf: &[u8]) -> Option<(usize, usize)> {
    let head_len = find(buf, b"\r\n\r\n")? + 4;
    let rest = &buf[head_len..];
    let body_len = match framing_of(&header_pairs(&buf[..head_len])) {
        Framing::Chunked => dechunk(rest).ok()??.0,
        Framing::Length(n) if rest.len() >= n => n,
        Framing::Length(_) => return None,
        // A request without a length has no body.
        Framing::None | Framing::Close => 0,
    };
    Some((head_len, body_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_cut_by_their_own_framing() {
        let two = b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n";
        assert_eq!(request_extent(two), Some((38, 3)));
        // Chunked wins over a length beside it, as a backend that smuggling fools would read.
        let both = b"POST / HTTP/1.1\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET";
        assert_eq!(request_extent(both), Some((both.len() - 8, 5)));
        assert_eq!(request_extent(b"GET / HTTP/1.1\r\n"), None);
    }
}
