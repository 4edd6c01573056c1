//! What `check-config` says of TLS settings that cannot work.

use std::path::{Path, PathBuf};

use sessionwatch_proxy::Config;
use sessionwatch_tests::Scratch;

use crate::support::pki;

/// `check-config`'s verdict on `toml`: `Ok`, or every problem as `serve` prints them.
pub(crate) fn check(toml: &str) -> Result<(), String> {
    Config::parse(toml, Path::new("farm.toml"))
        .map(drop)
        .map_err(|e| e.to_string())
}

pub(crate) fn ca_file_in(scratch: &Scratch, pem: &str) -> PathBuf {
    let path = scratch.path().join("ca.pem");
    std::fs::write(&path, pem).unwrap();
    path
}

#[test]
fn check_config_explains_what_an_https_backend_needs() {
    let scratch = Scratch::new("tls-config");
    let good = ca_file_in(&scratch, &pki().ca_pem).display().to_string();
    let backend = "[[backends]]\nname = \"a\"\nurl = \"https://10.0.0.7:8443\"\n";
    let with_ca = |file: &str| format!("[upstream.tls]\nca_file = {file:?}\n{backend}");
    assert_eq!(check(&with_ca(&good)), Ok(()));

    let cases: Vec<(String, &str)> = vec![
        (
            "[[backends]]\nname = \"a\"\nurl = \"https://app.internal\"\n".into(),
            "backends[0].url: give the port: https://app.internal:PORT",
        ),
        (
            backend.into(),
            "backends[0].url: a backend over TLS needs [upstream.tls] ca_file",
        ),
        (
            with_ca("/nonexistent/ca.pem"),
            "upstream.tls.ca_file: cannot read /nonexistent/ca.pem",
        ),
        (with_ca(&ca_file_in(&scratch, "not a certificate\n").display().to_string()), "holds no certificate"),
        (
            "[[backends]]\nname = \"a\"\nurl = \"http://10.0.0.7:8080\"\nserver_name = \"a.test\"\n"
                .into(),
            "backends[0].server_name: only for an https:// backend",
        ),
        (
            "[[backends]]\nsrv = \"_https._tcp.app.test\"\ntls = true\n".into(),
            "backends[0].server_name: an srv entry with tls = true needs server_name",
        ),
        (
            "[[backends]]\ndns = \"app.test:8443\"\ntls = true\n".into(),
            "backends[0].tls: a backend over TLS needs [upstream.tls] ca_file",
        ),
        (
            "[[backends]]\ndns = \"app.test:8080\"\nserver_name = \"a.test\"\n".into(),
            "backends[0].server_name: only with tls = true",
        ),
        (
            "[[backends]]\nname = \"a\"\nurl = \"https://10.0.0.7:8443\"\ntls = true\n".into(),
            "backends[0].tls: only for a backend discovered by DNS",
        ),
        (
            format!("[upstream.tls]\nca_file = {good:?}\nserver_name = \"not a name\"\n{backend}"),
            "upstream.tls.server_name: \"not a name\" is not a DNS name",
        ),
    ];
    for (toml, want) in cases {
        let got = check(&toml).expect_err(&toml);
        assert!(got.contains(want), "{want:?} not in:\n{got}\n---\n{toml}");
    }
}

#[test]
fn check_config_explains_what_an_https_sink_needs() {
    let scratch = Scratch::new("tls-sink-config");
    let good = ca_file_in(&scratch, &pki().ca_pem).display().to_string();
    let backend = "[[backends]]\nname = \"a\"\nurl = \"http://10.0.0.7:8080\"\n";
    for section in ["alertmanager", "webhook"] {
        let ok =
            format!("{backend}[{section}]\nurl = \"https://am.test:9093\"\nca_file = {good:?}\n");
        assert_eq!(check(&ok), Ok(()));
        let no_ca = format!("{backend}[{section}]\nurl = \"https://am.test:9093\"\n");
        let got = check(&no_ca).unwrap_err();
        assert!(
            got.contains(&format!("{section}.ca_file: an https:// URL needs ca_file")),
            "{got}"
        );
        let plain =
            format!("{backend}[{section}]\nurl = \"http://am.test:9093\"\nca_file = {good:?}\n");
        let got = check(&plain).unwrap_err();
        assert!(
            got.contains(&format!("{section}.ca_file: only for an https:// URL")),
            "{got}"
        );
    }
}
