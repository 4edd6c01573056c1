//! The soak's clients: many connections, each making requests of a random kind until the
//! deadline, each request with a token of its own, and every answer checked against the token:
//! an answer that names another request, or a body that is not the one asked for, is a mismatch.
//!
//! Kinds: a keep-alive GET, a GET on a new connection, uploads (sized, sized past the proxy's
//! buffering limit, chunked), HEAD, a 204, a chunked answer, and requests the backend resets
//! (before its head, or after part of its body). Every `slow_every`-th connection is a slow
//! reader: it asks for large answers and reads them a few KiB at a time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::summary::{Outcome, Summary};
use super::wire::{BodyEnd, Conn, Head, chunk_parts, echo_body, pattern, upload_receipt};

/// What the client is asked to do.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The proxy.
    pub(crate) target: SocketAddr,
    /// How long to keep going.
    pub(crate) duration: Duration,
    /// Connections (tasks) at once.
    pub(crate) connections: usize,
    /// Every this many connections, one is a slow reader (0: none).
    pub(crate) slow_every: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Login,
    KeepAlive,
    NewConnection,
    UploadSmall,
    UploadLarge,
    UploadChunked,
    Head,
    NoContent,
    ChunkedAnswer,
    ResetBefore,
    ResetAfter,
    SlowRead,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Login => "login",
            Kind::KeepAlive => "keepalive_get",
            Kind::NewConnection => "new_connection_get",
            Kind::UploadSmall => "upload_sized",
            Kind::UploadLarge => "upload_sized_large",
            Kind::UploadChunked => "upload_chunked",
            Kind::Head => "head",
            Kind::NoContent => "no_content_204",
            Kind::ChunkedAnswer => "chunked_answer",
            Kind::ResetBefore => "backend_reset_before_head",
            Kind::ResetAfter => "backend_reset_mid_body",
            Kind::SlowRead => "slow_reader",
        }
    }

    /// Whether it goes on a connection of its own, opened for it and closed after.
    fn fresh_connection(self) -> bool {
        matches!(
            self,
            Kind::NewConnection | Kind::ResetBefore | Kind::ResetAfter
        )
    }
}

/// The mix for ordinary connections: (kind, weight).
const MIX: &[(Kind, u32)] = &[
    (Kind::KeepAlive, 30),
    (Kind::NewConnection, 10),
    (Kind::UploadSmall, 12),
    (Kind::UploadLarge, 3),
    (Kind::UploadChunked, 8),
    (Kind::Head, 8),
    (Kind::NoContent, 8),
    (Kind::ChunkedAnswer, 8),
    (Kind::ResetBefore, 2),
    (Kind::ResetAfter, 2),
];

/// xorshift64*: each task's own stream of choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo + 1) as u64) as usize
    }

    fn kind(&mut self) -> Kind {
        let total: u32 = MIX.iter().map(|(_, w)| w).sum();
        let mut pick = self.below(u64::from(total)) as u32;
        for (kind, w) in MIX {
            if pick < *w {
                return *kind;
            }
            pick -= w;
        }
        Kind::KeepAlive
    }
}

/// Progress shared by the tasks, for the periodic line on standard error.
#[derive(Default)]
struct Progress {
    requests: AtomicU64,
    mismatches: AtomicU64,
    errors: AtomicU64,
}

/// Run the clients until the deadline.
pub(crate) async fn run(cfg: Config) -> Summary {
    let started = Instant::now();
    let deadline = started + cfg.duration;
    let progress = Arc::new(Progress::default());
    // Different every run, so that tokens never repeat across runs against one backend.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..cfg.connections {
        let slow = cfg.slow_every > 0 && id % cfg.slow_every == cfg.slow_every - 1;
        tasks.spawn(connection_task(
            id,
            slow,
            cfg.target,
            deadline,
            nonce,
            progress.clone(),
        ));
    }
    let reporter = {
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            loop {
                tick.tick().await;
                eprintln!(
                    "soak client: {:>4} s  requests {}  mismatches {}  errors {}",
                    started.elapsed().as_secs(),
                    progress.requests.load(Ordering::Relaxed),
                    progress.mismatches.load(Ordering::Relaxed),
                    progress.errors.load(Ordering::Relaxed),
                );
            }
        })
    };
    let mut summary = Summary::default();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(s) => summary.merge(s),
            Err(e) => summary.record(
                Kind::KeepAlive.name(),
                Outcome::Error(format!("task died: {e}")),
            ),
        }
    }
    reporter.abort();
    summary
}

/// The per-request time limit: far above anything a healthy proxy takes.
const REQUEST_LIMIT: Duration = Duration::from_secs(30);

async fn connection_task(
    id: usize,
    slow: bool,
    target: SocketAddr,
    deadline: Instant,
    nonce: u64,
    progress: Arc<Progress>,
) -> Summary {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ nonce ^ ((id as u64 + 1) << 20) | 1);
    let session = format!("soak{id:04x}{:012x}", nonce & 0xffff_ffff_ffff);
    let mut summary = Summary::default();
    let mut kept: Option<Conn> = None;
    let mut logged_in = false;
    let mut seq: u64 = 0;
    while Instant::now() < deadline {
        seq += 1;
        let token = format!("{id:x}.{seq:x}.{:x}", nonce & 0xffff_ffff);
        let kind = match (logged_in, slow) {
            (false, _) => Kind::Login,
            (true, true) => Kind::SlowRead,
            (true, false) => rng.kind(),
        };
        let request = Request::build(kind, &token, &session, &mut rng);
        let outcome =
            match tokio::time::timeout(REQUEST_LIMIT, exchange(&request, target, &mut kept, slow))
                .await
            {
                Ok(o) => o,
                Err(_) => {
                    kept = None;
                    Outcome::Error(format!("no answer within {REQUEST_LIMIT:?}"))
                }
            };
        if kind == Kind::Login && matches!(outcome, Outcome::Ok) {
            logged_in = true;
        }
        progress.requests.fetch_add(1, Ordering::Relaxed);
        match &outcome {
            Outcome::Mismatch(_) => {
                progress.mismatches.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Error(_) => {
                progress.errors.fetch_add(1, Ordering::Relaxed);
                // Do not spin on a proxy that is down.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            _ => {}
        }
        summary.record(kind.name(), outcome);
    }
    summary
}

/// One request, ready to send, and what its answer must be.
struct Request {
    kind: Kind,
    token: String,
    bytes: Vec<u8>,
    /// The status and body of the right answer (the body the client sees after decoding).
    status: u16,
    body: Vec<u8>,
}

impl Request {
    fn build(kind: Kind, token: &str, session: &str, rng: &mut Rng) -> Self {
        let cookie = format!("Cookie: SESSIONID={session}\r\n");
        let close = if kind.fresh_connection() {
            "Connection: close\r\n"
        } else {
            ""
        };
        let get = |target: String| {
            format!("GET {target} HTTP/1.1\r\nHost: soak\r\n{cookie}{close}\r\n").into_bytes()
        };
        let upload_head = |framing: String| {
            format!("POST /upload?t={token} HTTP/1.1\r\nHost: soak\r\n{cookie}{framing}\r\n")
                .into_bytes()
        };
        let (bytes, status, body) = match kind {
            Kind::Login => (
                format!("GET /login?t={token}&s={session} HTTP/1.1\r\nHost: soak\r\n\r\n")
                    .into_bytes(),
                200,
                b"welcome\n".to_vec(),
            ),
            Kind::KeepAlive | Kind::NewConnection => {
                (get(format!("/echo?t={token}")), 200, echo_body(token))
            }
            Kind::UploadSmall | Kind::UploadLarge => {
                let len = if kind == Kind::UploadSmall {
                    rng.range(1, 16 * 1024)
                } else {
                    rng.range(96 * 1024, 160 * 1024)
                };
                let data = pattern(&format!("up-{token}"), len);
                let mut bytes = upload_head(format!("Content-Length: {len}\r\n"));
                bytes.extend_from_slice(&data);
                (bytes, 200, upload_receipt(token, &data))
            }
            Kind::UploadChunked => {
                let mut bytes = upload_head("Transfer-Encoding: chunked\r\n".to_owned());
                let mut data = Vec::new();
                for i in 0..rng.range(1, 6) {
                    let part = pattern(&format!("up{i}-{token}"), rng.range(1, 8 * 1024));
                    bytes.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                    bytes.extend_from_slice(&part);
                    bytes.extend_from_slice(b"\r\n");
                    data.extend_from_slice(&part);
                }
                bytes.extend_from_slice(b"0\r\n\r\n");
                (bytes, 200, upload_receipt(token, &data))
            }
            Kind::Head => (
                format!("HEAD /echo?t={token} HTTP/1.1\r\nHost: soak\r\n{cookie}\r\n").into_bytes(),
                200,
                Vec::new(),
            ),
            Kind::NoContent => (get(format!("/nocontent?t={token}")), 204, Vec::new()),
            Kind::ChunkedAnswer => (
                get(format!("/chunked?t={token}")),
                200,
                chunk_parts(token).concat(),
            ),
            Kind::ResetBefore => (get(format!("/reset?t={token}&at=before")), 0, Vec::new()),
            Kind::ResetAfter => (
                get(format!("/reset?t={token}&at=after")),
                0,
                pattern(token, 1000),
            ),
            Kind::SlowRead => {
                let n = rng.range(64 * 1024, 512 * 1024);
                (get(format!("/big?t={token}&n={n}")), 200, pattern(token, n))
            }
        };
        Self {
            kind,
            token: token.to_owned(),
            bytes,
            status,
            body,
        }
    }
}

/// What came back where an answer was expected.
enum Reply {
    Complete(Head, Vec<u8>),
    Truncated(Option<Head>, Vec<u8>),
    Closed,
}

async fn read_reply(conn: &mut Conn, head_request: bool) -> std::io::Result<Reply> {
    let head = match conn.read_head().await {
        Ok(Some(h)) => h,
        Ok(None) => return Ok(Reply::Closed),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Ok(Reply::Truncated(None, Vec::new()));
        }
        Err(e) => return Err(e),
    };
    let mut body = Vec::new();
    let bodiless = head_request || head.status == 204 || head.status == 304 || head.status < 200;
    let end = if bodiless {
        BodyEnd::Whole
    } else if head.chunked() {
        conn.read_chunked(&mut body).await?
    } else if let Some(len) = head.content_length() {
        conn.read_sized(len, &mut body).await?
    } else {
        conn.read_to_end(&mut body).await?
    };
    Ok(match end {
        BodyEnd::Whole => Reply::Complete(head, body),
        BodyEnd::Cut => Reply::Truncated(Some(head), body),
    })
}

async fn connect(target: SocketAddr, slow: bool) -> std::io::Result<Conn> {
    let conn = Conn::new(TcpStream::connect(target).await?);
    Ok(if slow {
        conn.slow(4 * 1024, Duration::from_millis(5))
    } else {
        conn
    })
}

/// Send `req` (on the kept connection, or a fresh one) and judge what comes back.
async fn exchange(
    req: &Request,
    target: SocketAddr,
    kept: &mut Option<Conn>,
    slow: bool,
) -> Outcome {
    let mut fresh;
    let conn = if req.kind.fresh_connection() {
        fresh = match connect(target, false).await {
            Ok(c) => c,
            Err(e) => return Outcome::Error(format!("connect: {}", e.kind())),
        };
        &mut fresh
    } else {
        match kept {
            Some(c) => c,
            None => match connect(target, slow).await {
                Ok(c) => kept.insert(c),
                Err(e) => return Outcome::Error(format!("connect: {}", e.kind())),
            },
        }
    };
    if let Err(e) = conn.send(&req.bytes).await {
        *kept = None;
        return Outcome::Error(format!("send: {}", e.kind()));
    }
    let reply = match read_reply(conn, req.kind == Kind::Head).await {
        Ok(r) => r,
        Err(e) => {
            *kept = None;
            return Outcome::Error(format!("read: {}", e.kind()));
        }
    };
    let reusable = matches!(&reply, Reply::Complete(h, _) if h.keep_alive());
    let outcome = judge(req, &reply);
    if req.kind == Kind::NewConnection && matches!(outcome, Outcome::Ok) {
        // The proxy closes after the answer, as the request asked.
        let mut rest = Vec::new();
        match tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest)).await {
            Ok(Ok(_)) if rest.is_empty() => {}
            Ok(Ok(_)) => {
                return Outcome::Mismatch(format!(
                    "{} bytes after the answer to {}",
                    rest.len(),
                    req.token
                ));
            }
            Ok(Err(e)) => return Outcome::Error(format!("read after answer: {}", e.kind())),
            Err(_) => return Outcome::Error("connection: close not honoured".to_owned()),
        }
    }
    if !req.kind.fresh_connection() && !reusable {
        *kept = None;
    }
    outcome
}

/// Whether `reply` is the answer to `req`.
fn judge(req: &Request, reply: &Reply) -> Outcome {
    let token = req.token.as_str();
    let foreign = |head: &Head| match head.header("x-token") {
        Some(t) if t != token => Some(format!("asked {token}, got the answer to {t}")),
        _ => None,
    };
    match (req.kind, reply) {
        (Kind::ResetBefore | Kind::ResetAfter, Reply::Complete(head, _)) if head.status == 502 => {
            Outcome::ExpectedFault("502")
        }
        (Kind::ResetBefore | Kind::ResetAfter, Reply::Complete(head, body)) => {
            Outcome::Mismatch(match foreign(head) {
                Some(m) => m,
                None => format!(
                    "a reset request for {token} got a whole {} answer of {} bytes",
                    head.status,
                    body.len()
                ),
            })
        }
        (Kind::ResetAfter, Reply::Truncated(Some(head), body)) => {
            if let Some(m) = foreign(head) {
                Outcome::Mismatch(m)
            } else if head.status == 200 && req.body.starts_with(body) {
                Outcome::ExpectedFault("cut short")
            } else {
                Outcome::Mismatch(format!(
                    "a cut answer for {token} holds bytes not its own (status {})",
                    head.status
                ))
            }
        }
        (_, Reply::Complete(head, body)) => {
            if let Some(m) = foreign(head) {
                return Outcome::Mismatch(m);
            }
            if head.status != req.status {
                return if head.header("x-token").is_some() || (200..300).contains(&head.status) {
                    Outcome::Mismatch(format!(
                        "{token}: status {} from the backend, expected {}",
                        head.status, req.status
                    ))
                } else {
                    Outcome::Error(format!("status {}", head.status))
                };
            }
            if head.header("x-token").is_none() {
                return Outcome::Mismatch(format!("{token}: an answer without x-token"));
            }
            if req.kind == Kind::Head {
                let want = echo_body(token).len().to_string();
                if head.header("content-length") != Some(want.as_str()) {
                    return Outcome::Mismatch(format!(
                        "{token}: HEAD content-length {:?}, expected {want}",
                        head.header("content-length")
                    ));
                }
            }
            if *body != req.body {
                return Outcome::Mismatch(format!(
                    "{token}: body of {} bytes differs from the {} expected",
                    body.len(),
                    req.body.len()
                ));
            }
            Outcome::Ok
        }
        (_, Reply::Truncated(Some(head), _)) => match foreign(head) {
            Some(m) => Outcome::Mismatch(m),
            None => Outcome::Error(format!("cut short (status {})", head.status)),
        },
        (_, Reply::Truncated(None, _)) => Outcome::Error("cut inside the head".to_owned()),
        (_, Reply::Closed) => Outcome::Error("closed without an answer".to_owned()),
    }
}
