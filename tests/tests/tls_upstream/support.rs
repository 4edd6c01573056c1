//! What the TLS upstream cases share: certificates made for each test, a TLS server
//! configuration from them, a TLS front that terminates TLS before a farm node and records each
//! handshake, and the proxy's log.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// A CA and a server certificate it signed.
pub(crate) struct Pki {
    pub(crate) ca_pem: String,
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: Vec<u8>,
}

/// A fresh CA, and a certificate from it for `127.0.0.1` and `farm.test`.
pub(crate) fn pki() -> Pki {
    pki_of("sessionwatch test farm CA")
}

/// As [`pki`], with a CA named `ca_name`.
pub(crate) fn pki_of(ca_name: &str) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "farm.test".to_owned()])
        .expect("server params");
    let cert = server
        .signed_by(&key, &ca_cert, &ca_key)
        .expect("server certificate");
    Pki {
        ca_pem: ca_cert.pem(),
        chain: vec![cert.der().clone()],
        key: key.serialize_der(),
    }
}

/// A TLS server configuration with `pki`'s certificate, offering HTTP/2 before HTTP/1.1 (so a
/// client that does not ask for HTTP/1.1 alone would get HTTP/2).
pub(crate) fn server_config(pki: &Pki) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key.clone()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(pki.chain.clone(), key)
        .expect("server certificate and key");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One handshake a front completed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Handshake {
    pub(crate) sni: Option<String>,
    pub(crate) alpn: Option<Vec<u8>>,
}

/// A TLS front for one node.
pub(crate) struct TlsFront {
    pub(crate) addr: SocketAddr,
    pub(crate) handshakes: Arc<Mutex<Vec<Handshake>>>,
    pub(crate) failed: Arc<AtomicUsize>,
}

impl TlsFront {
    /// Terminate TLS on 127.0.0.1:0 with `config` and pass each connection's bytes to `node`.
    pub(crate) async fn start(node: SocketAddr, config: Arc<rustls::ServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes: Arc<Mutex<Vec<Handshake>>> = Arc::default();
        let failed = Arc::new(AtomicUsize::new(0));
        let (seen, failures) = (handshakes.clone(), failed.clone());
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, seen, failures) = (acceptor.clone(), seen.clone(), failures.clone());
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(_) => {
                            failures.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    };
                    let session = tls.get_ref().1;
                    seen.lock().unwrap().push(Handshake {
                        sni: session.server_name().map(str::to_owned),
                        alpn: session.alpn_protocol().map(<[u8]>::to_vec),
                    });
                    if let Ok(mut plain) = TcpStream::connect(node).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        Self {
            addr,
            handshakes,
            failed,
        }
    }

    pub(crate) fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes.lock().unwrap().clone()
    }
}

/// The PEM of a CA that signed nothing here (and whose name no certificate names as issuer).
pub(crate) fn pki_ca_only() -> String {
    pki_of("some other CA").ca_pem
}
