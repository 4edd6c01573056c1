//! `check-config` and `serve` on `[listen.tls]` certificates an operator could get wrong: a
//! missing file, an expired certificate, a key that is not the certificate's. Each is refused
//! with exit 64 (EX_USAGE) and a line naming the field and the file, before anything binds.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sessionwatch");
/// Generous for a debug build on a busy two-core machine; the checks take well under a second.
const DEADLINE: Duration = Duration::from_secs(60);

/// A directory for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "sessionwatch-tls-cli-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// A self-signed ECDSA P-256 certificate for `localhost` and its key, as `<name>.crt` and
    /// `<name>.key`; expired (in 2021) when `expired`.
    fn cert(&self, name: &str, expired: bool) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (
            self.0.join(format!("{name}.crt")),
            self.0.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c.display().to_string(), k.display().to_string())
    }

    /// A configuration serving `cert` and `key`, written as `<name>.toml`.
    fn config(&self, name: &str, cert: &str, key: &str) -> PathBuf {
        let text = format!(
            "[listen]\naddress = \"127.0.0.1:0\"\n\
             [listen.tls]\n[[listen.tls.certificates]]\ncert = {cert:?}\nkey = {key:?}\n\
             [[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n\
             [session]\npreset = \"php\"\nfingerprint_key = \"tls-cli-test-key-0123456789\"\n\
             [health]\nactive = false\n[alerts]\nlog_file = \"\"\n"
        );
        let path = self.0.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run the binary with `args` under the deadline: exit code, stderr.
fn run(args: &[&str], cwd: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`sessionwatch {args:?}` still running after {DEADLINE:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
    }
    (status.code(), stderr)
}

#[test]
fn check_config_and_serve_refuse_missing_expired_and_mismatched_certificates() {
    let scratch = Scratch::new("refused");
    let (good, good_key) = scratch.cert("good", false);
    let (_, other_key) = scratch.cert("other", false);
    let (old, old_key) = scratch.cert("old", true);
    let missing = scratch.0.join("missing.crt").display().to_string();

    let ok = scratch.config("ok", &good, &good_key);
    let (code, stderr) = run(&["check-config", ok.to_str().unwrap()], &scratch.0);
    assert_eq!(code, Some(0), "{stderr}");

    let cases = [
        (
            "missing",
            &missing,
            &good_key,
            "certificates[0].cert",
            "cannot read",
        ),
        (
            "expired",
            &old,
            &old_key,
            "certificates[0].cert",
            "expired on 2021-01-01",
        ),
        (
            "mismatched",
            &good,
            &other_key,
            "certificates[0].key",
            "does not match the certificate",
        ),
    ];
    for (name, cert, key, field, says) in cases {
        let file = scratch.config(name, cert, key);
        let f = file.to_str().unwrap();
        for command in ["check-config", "serve"] {
            let args = if command == "serve" {
                vec!["serve", "--config", f]
            } else {
                vec!["check-config", f]
            };
            let (code, stderr) = run(&args, &scratch.0);
            assert_eq!(code, Some(64), "{command} {name}: {stderr}");
            let line = stderr
                .lines()
                .find(|l| l.contains(&format!("listen.tls.{field}: ")))
                .unwrap_or_else(|| panic!("{command} {name}: no line for {field}:\n{stderr}"));
            assert!(line.starts_with(&format!("{f}:")), "{line}");
            assert!(line.contains(says), "{command} {name}: {line}");
        }
    }
}
