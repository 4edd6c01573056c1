//! Which certificate a client gets: the one on disk now (rotation without a restart), and the
//! one SNI picks.

use super::*;

/// The kubelet's way of updating a mounted Secret: the files are links into `..data`, a link
/// to a timestamped directory; a new directory is written, then `..data` swapped to it by a
/// rename.
struct MountedSecret {
    dir: PathBuf,
    generation: u32,
}

impl MountedSecret {
    fn new(dir: &Path, leaf: &Leaf) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let mut s = Self {
            dir: dir.to_owned(),
            generation: 0,
        };
        s.update(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes());
        std::os::unix::fs::symlink("..data/tls.crt", dir.join("tls.crt")).unwrap();
        std::os::unix::fs::symlink("..data/tls.key", dir.join("tls.key")).unwrap();
        s
    }

    fn update(&mut self, cert: &[u8], key: &[u8]) {
        self.generation += 1;
        let version = format!("..2026_{}", self.generation);
        let target = self.dir.join(&version);
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("tls.crt"), cert).unwrap();
        std::fs::write(target.join("tls.key"), key).unwrap();
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&version, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }

    fn files(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("tls.crt"), self.dir.join("tls.key"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_replaced_on_disk_reaches_new_connections_and_open_ones_keep_working() {
    let pki = Pki::new("tls-reload");
    let first = pki.leaf(&["localhost"]);
    let mut secret = MountedSecret::new(&pki.scratch.path().join("secret"), &first);
    let s = Setup::new(&tls_section(
        &[secret.files()],
        "reload_interval = \"100ms\"",
    ))
    .await;
    // A new client each time: one that resumed its last session would not be sent a
    // certificate at all.
    let client = || pki.client(&[b"http/1.1"]);
    let reloads = |s: &Setup, result: &str| {
        s.metric(
            "sessionwatch_tls_certificate_reloads_total",
            &[&format!("result=\"{result}\"")],
        )
    };

    let tls = connect(s.proxy.addr(), client(), "localhost")
        .await
        .unwrap();
    assert_eq!(served(&tls), first.der);
    let mut open = Client::over(tls).await;
    assert_eq!(open.get("/headers").await.0, 200);

    let second = pki.leaf(&["localhost"]);
    secret.update(second.cert_pem.as_bytes(), second.key_pem.as_bytes());
    eventually("the new certificate is reloaded", || {
        reloads(&s, "reloaded") == 1.0
    })
    .await;
    let tls = connect(s.proxy.addr(), client(), "localhost")
        .await
        .unwrap();
    assert_eq!(
        served(&tls),
        second.der,
        "a new connection gets the new certificate"
    );
    let mut fresh = Client::over(tls).await;
    assert_eq!(fresh.get("/headers").await.0, 200);
    // The connection opened before the swap carries on, on the certificate it got.
    for _ in 0..3 {
        assert_eq!(open.get("/headers").await.0, 200);
    }

    // A replacement whose key is not its certificate's: the second certificate stays.
    let third = pki.leaf(&["localhost"]);
    secret.update(third.cert_pem.as_bytes(), first.key_pem.as_bytes());
    eventually("the bad replacement is refused", || {
        reloads(&s, "failed") == 1.0
    })
    .await;
    // Looked at again and again, the same bad files are refused once.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(reloads(&s, "failed"), 1.0);
    assert_eq!(reloads(&s, "reloaded"), 1.0);
    let tls = connect(s.proxy.addr(), client(), "localhost")
        .await
        .unwrap();
    assert_eq!(
        served(&tls),
        second.der,
        "the last good certificate is still served"
    );
    // Fixed: served.
    secret.update(third.cert_pem.as_bytes(), third.key_pem.as_bytes());
    eventually("the fixed files are reloaded", || {
        reloads(&s, "reloaded") == 2.0
    })
    .await;
    let tls = connect(s.proxy.addr(), client(), "localhost")
        .await
        .unwrap();
    assert_eq!(served(&tls), third.der);
    assert_eq!(fresh.get("/headers").await.0, 200);
    s.stop().await;
}

/// Accepts any certificate: the SNI test looks at which one came, not whether it fits the
/// name asked for (the default's does not).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_and_the_first_is_the_default() {
    let pki = Pki::new("tls-sni");
    let shop = pki.leaf(&["shop.example", "127.0.0.1"]);
    let api = pki.leaf(&["*.api.example"]);
    let admin = pki.leaf(&["admin.example"]);
    let certs = [
        pki.write("shop", &shop),
        pki.write("api", &api),
        pki.write("admin", &admin),
    ];
    let s = Setup::new(&tls_section(&certs, "")).await;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let any = Arc::new(
        ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
    );
    for (name, expect, which) in [
        ("admin.example", &admin.der, "admin"),
        ("eu.api.example", &api.der, "api"),
        ("shop.example", &shop.der, "shop"),
        // A name no certificate is for, and no SNI at all (an address): the first.
        ("other.example", &shop.der, "shop"),
        ("127.0.0.1", &shop.der, "shop"),
    ] {
        let tls = connect(s.proxy.addr(), any.clone(), name).await.unwrap();
        assert!(
            served(&tls) == **expect,
            "{name} should get the {which} certificate"
        );
    }
    // With verification on, each name's certificate checks out for it.
    let trusting = pki.client(&[b"http/1.1"]);
    for name in [
        "admin.example",
        "x.api.example",
        "shop.example",
        "127.0.0.1",
    ] {
        let tls = connect(s.proxy.addr(), trusting.clone(), name)
            .await
            .unwrap();
        assert_eq!(
            Client::over(tls).await.get("/headers").await.0,
            200,
            "{name}"
        );
    }
    s.stop().await;
}
