//! The Django-style sign-in on the in-process CSRF farm: the token from the form or the cookie,
//! the credentials from the environment, the refusals said as such; a bad `[probe]`; and the
//! backends of an SRV entry, resolved as discovery resolves them.

use super::*;

/// The Django sign-in: the form fetched, then posted with its token and the credentials the
/// environment holds.
fn django_probe(csrf: &str) -> String {
    format!(
        "[probe]\ncheck = \"/me\"\ntimeout = \"{PROBE_TIMEOUT}\"\n\
         [[probe.sign_in]]\npath = \"/accounts/login/\"\n\
         [[probe.sign_in]]\nmethod = \"POST\"\npath = \"/accounts/login/\"\n\
         form_env = {{ username = \"PROBE_USER\", password = \"PROBE_PASSWORD\" }}\n{csrf}\n"
    )
}

const FROM_FIELD: &str =
    "csrf = { from_field = \"csrfmiddlewaretoken\", to_field = \"csrfmiddlewaretoken\" }";
const PASSWORD: &str = "correct-horse-battery";
const CREDENTIALS: [(&str, &str); 2] = [("PROBE_USER", "probe"), ("PROBE_PASSWORD", PASSWORD)];

/// Nothing secret in what the command printed: not the password, not a session or CSRF value
/// (the farm's start `s0000…` and `c0000…`).
fn assert_no_secrets(run: &Run) {
    for out in [&run.stdout, &run.stderr] {
        assert!(!out.contains(PASSWORD), "{out}");
        assert!(!out.contains("s0000") && !out.contains("c0000"), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_csrf_sign_in_takes_the_token_from_the_form_and_the_credentials_from_the_environment() {
    let scratch = Scratch::new("probe-csrf");
    let farm = CsrfFarm::start(2, StoreMode::Shared, "probe", PASSWORD)
        .await
        .expect("farm");
    let file = write(
        &scratch,
        &config(&farm.backends(), "django", &django_probe(FROM_FIELD)),
    );
    let run = probe_async(&file, &["--json"], &CREDENTIALS).await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.json()["result"], "kept");
    assert_eq!(farm.refused_csrf(), 0);
    assert_no_secrets(&run);

    // The token from the cookie, sent in a header, works as well.
    let header = "csrf = { from_cookie = \"csrftoken\", to_header = \"X-CSRFToken\" }";
    let file = write(
        &scratch,
        &config(&farm.backends(), "django", &django_probe(header)),
    );
    let run = probe_async(&file, &["--json"], &CREDENTIALS).await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(farm.refused_csrf(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_csrf_sign_in_on_a_per_node_django_farm_shows_the_lost_pairs() {
    let scratch = Scratch::new("probe-csrf-per-node");
    let farm = CsrfFarm::start(2, StoreMode::PerNode, "probe", PASSWORD)
        .await
        .expect("farm");
    let file = write(
        &scratch,
        &config(&farm.backends(), "django", &django_probe(FROM_FIELD)),
    );
    let run = probe_async(&file, &["--json"], &CREDENTIALS).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert_store_not_shared(&run.json(), "django-a", "django-b");
    assert_no_secrets(&run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_sign_in_is_a_probe_that_could_not_run_with_why() {
    let scratch = Scratch::new("probe-csrf-refused");
    let farm = CsrfFarm::start(2, StoreMode::Shared, "probe", PASSWORD)
        .await
        .expect("farm");
    let error_of = |run: &Run| run.json()["error"].as_str().unwrap_or_default().to_owned();

    // Without the token the farm refuses the form.
    let file = write(
        &scratch,
        &config(&farm.backends(), "django", &django_probe("")),
    );
    let run = probe_async(&file, &["--json"], &CREDENTIALS).await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        error_of(&run).contains("sign-in step 2 (POST /accounts/login/) was answered 403"),
        "{run:#?}"
    );
    assert_eq!(farm.refused_csrf(), 1);

    // The wrong password: the form again, and no session.
    let file = write(
        &scratch,
        &config(&farm.backends(), "django", &django_probe(FROM_FIELD)),
    );
    let wrong = [
        ("PROBE_USER", "probe"),
        ("PROBE_PASSWORD", "wrong-password"),
    ];
    let run = probe_async(&file, &["--json"], &wrong).await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        error_of(&run).contains("the sign-in issued no session cookie (watched: sessionid)"),
        "{run:#?}"
    );
    assert!(!run.stdout.contains("wrong-password") && !run.stderr.contains("wrong-password"));
    assert_eq!(farm.refused_credentials(), 1);
    assert_eq!(farm.refused_csrf(), 1, "the token was right this time");

    // No credentials in the environment: said so, and nothing sent.
    let run = probe_async(&file, &["--json"], &[("PROBE_USER", "probe")]).await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        error_of(&run).contains("the environment variable PROBE_PASSWORD is not set"),
        "{run:#?}"
    );
    assert_eq!(farm.refused_credentials(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_probe_configuration_exits_64_as_for_serve() {
    let scratch = Scratch::new("probe-bad-config");
    let farm = CsrfFarm::start(1, StoreMode::Shared, "probe", PASSWORD)
        .await
        .expect("farm");
    let file = write(
        &scratch,
        &config(&farm.backends(), "django", "[probe]\ncheck = \"me\"\n"),
    );
    let run = probe_async(&file, &[], &[]).await;
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(
        run.stderr.contains("probe.check: must start with '/'"),
        "{}",
        run.stderr
    );
    // check-config says the same of the same file.
    let out = Command::new(sessionwatch_binary())
        .arg("check-config")
        .arg(&file)
        .output()
        .expect("run check-config");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("probe.check: must start with '/'"));
    let file = write(&scratch, &config(&farm.backends(), "django", ""));
    let run = probe_async(&file, &[], &[]).await;
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(run.stderr.contains("no check path"), "{}", run.stderr);
    let run = probe_async(&file, &["--check", "/me", "--backend", "a=ftp://x"], &[]).await;
    assert_eq!(run.code, 64, "{run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backends_of_an_srv_entry_are_resolved_and_probed_by_address() {
    let scratch = Scratch::new("probe-srv");
    let farm = CsrfFarm::start(2, StoreMode::PerNode, "probe", PASSWORD)
        .await
        .expect("farm");
    let dns = sessionwatch_test_support::DnsServer::start()
        .await
        .expect("dns");
    let nodes = farm.backends();
    let mut targets = Vec::new();
    for (i, (_, addr)) in nodes.iter().enumerate() {
        let name = format!("node-{i}.app.test");
        dns.set_ips(&name, &[addr.ip()]);
        targets.push((name, addr.port()));
    }
    let targets: Vec<(&str, u16)> = targets.iter().map(|(n, p)| (n.as_str(), *p)).collect();
    dns.set_srv("_http._tcp.app.test", &targets);
    let toml = format!(
        "{}[[backends]]\nsrv = \"_http._tcp.app.test\"\nresolver = \"{}\"\n",
        config(&[], "django", &django_probe(FROM_FIELD)),
        dns.addr()
    );
    let file = write(&scratch, &toml);
    let run = probe_async(&file, &["--json"], &CREDENTIALS).await;
    assert_eq!(run.code, 1, "{run:#?}");
    let report = run.json();
    let mut names: Vec<String> = nodes.iter().map(|(_, a)| a.to_string()).collect();
    names.sort();
    assert_eq!(report["backends"], serde_json::json!(names), "{report}");
    assert_store_not_shared(&report, &names[0], &names[1]);
    assert!(dns.queries() > 0);
}
