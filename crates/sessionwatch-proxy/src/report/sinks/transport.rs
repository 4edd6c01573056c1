//! How a sink's post reaches its receiver: a connection of its own for each post, TLS over it
//! for an `https://` URL. Posts come a re-send period apart (a minute by default), so a kept
//! connection would save nothing worth its idle socket, and a new one never finds a connection
//! the receiver has closed in between.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{Request, StatusCode, Uri};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::TlsClient;

/// A sink's way to its receiver.
pub(super) struct Transport {
    /// For an `https://` URL.
    tls: Option<TlsConnector>,
}

impl Transport {
    /// The transport for a sink with `tls` (its `ca_file`'s client, for an `https://` URL).
    pub(super) fn new(tls: Option<&TlsClient>) -> Self {
        Self {
            tls: tls.map(|t| TlsConnector::from(t.config())),
        }
    }

    /// POST `body` as JSON to `uri`; the status of the answer, whose body is not read.
    pub(super) async fn post(&self, uri: &Uri, body: Bytes) -> Result<StatusCode, String> {
        let authority = uri
            .authority()
            .ok_or_else(|| "the URL has no host".to_owned())?;
        let host = authority.host();
        // An IPv6 literal comes with its brackets.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = authority
            .port_u16()
            .unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let req = Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(HOST, authority.as_str())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connect failed: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => send(TokioIo::new(tcp), req).await,
            Some(tls) => {
                let name = ServerName::try_from(host.to_owned())
                    .map_err(|_| format!("{host:?} is not a name a certificate can be for"))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("the TLS handshake failed: {e}"))?;
                send(TokioIo::new(stream), req).await
            }
        }
    }
}

/// `req` over a new HTTP/1.1 connection on `io`, driven here until the answer's head arrives.
async fn send<I>(io: I, req: Request<Full<Bytes>>) -> Result<StatusCode, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        answer = sender.send_request(req) => answer
            .map(|resp| resp.status())
            .map_err(|e| e.to_string()),
        ended = &mut conn => Err(match ended {
            Err(e) => e.to_string(),
            Ok(()) => "the receiver closed the connection without answering".to_owned(),
        }),
    }
}
