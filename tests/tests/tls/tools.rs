//! `curl --http2` and `openssl s_client` against the proxy: both must be installed.

use super::*;

/// `program`'s output, failing the test loudly when it is not installed.
fn run_tool(program: &str, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} is needed for this test and cannot run: {e}"));
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.as_bytes());
    }
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_http2_and_openssl_s_client_talk_to_the_proxy() {
    let pki = Pki::new("tls-tools");
    let files = pki.write("server", &pki.leaf(&["localhost"]));
    let s = Setup::new(&tls_section(&[files], "")).await;
    let port = s.proxy.addr().port().to_string();
    let ca = pki.ca_file().display().to_string();
    let resolve = format!("localhost:{port}:127.0.0.1");
    let url = format!("https://localhost:{port}/headers");
    for (flag, version) in [("--http2", "HTTP/2"), ("--http1.1", "HTTP/1.1")] {
        let out = tokio::task::spawn_blocking({
            let args: Vec<String> = [
                "-sS",
                "--max-time",
                "10",
                flag,
                "--cacert",
                &ca,
                "--resolve",
                &resolve,
                "-i",
                &url,
            ]
            .iter()
            .map(|a| (*a).to_owned())
            .collect();
            move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                run_tool("curl", &args, "")
            }
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "curl {flag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.starts_with(&format!("{version} 200")), "{stdout}");
        assert!(stdout.contains("x-forwarded-proto: https"), "{stdout}");
    }

    let connect_to = format!("127.0.0.1:{port}");
    let out = tokio::task::spawn_blocking(move || {
        run_tool(
            "openssl",
            &[
                "s_client",
                "-connect",
                &connect_to,
                "-servername",
                "localhost",
                "-verify_hostname",
                "localhost",
                "-CAfile",
                &ca,
                "-alpn",
                "http/1.1",
                "-verify_return_error",
                "-quiet",
            ],
            "GET /headers HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stdout.starts_with("HTTP/1.1 200"), "{stdout}\n{stderr}");
    assert!(stdout.contains("x-forwarded-proto: https"), "{stdout}");
    assert!(stderr.contains("verify return:1"), "{stderr}");
    s.stop().await;
}
