//! Tests of reading and validating configuration files: where each kind of problem is reported,
//! that every problem is reported at once, the defaults, the fingerprint key and the presets.

use std::path::Path;
use std::time::Duration;

use sessionwatch_core::{CookieSpec, Framework, IncidentConfig, PinPolicy, SessionProfile};

use super::*;

const BACKEND: &str = "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:8081\"\n";

fn parse(src: &str) -> Result<Config, ConfigError> {
    Config::parse(src, Path::new("farm.toml"))
}

fn errors(src: &str) -> Vec<String> {
    match parse(src) {
        Ok(_) => panic!("expected errors for:\n{src}"),
        Err(e) => e.to_string().lines().map(str::to_owned).collect(),
    }
}

/// The one error of `src`, which must start with `prefix` and contain `fragment`.
#[track_caller]
fn one_error(src: &str, prefix: &str, fragment: &str) {
    let errs = errors(src);
    assert_eq!(
        errs.len(),
        1,
        "expected one error, got {errs:#?}\nfor:\n{src}"
    );
    assert!(
        errs[0].starts_with(prefix) && errs[0].contains(fragment),
        "expected {prefix:?} ... {fragment:?}, got {:?}\nfor:\n{src}",
        errs[0]
    );
}

#[test]
fn each_kind_of_error_names_file_line_column_and_field() {
    // Syntax: a place, no field.
    one_error(
        "[[backends]\nname = \"a\"\n",
        "farm.toml:1:12: ",
        "expected `]`",
    );
    // Unknown keys: at the key, at any depth, in inline tables too.
    one_error(
        &format!("colour = 1\n{BACKEND}"),
        "farm.toml:1:1: colour: ",
        "unknown field `colour`",
    );
    one_error(
        &format!("{BACKEND}[bogus]\nx = 1\n"),
        "farm.toml:4:2: bogus: ",
        "unknown field `bogus`",
    );
    one_error(
        &format!("{BACKEND}[pin]\npolcy = \"learn\"\n"),
        "farm.toml:5:1: pin.polcy: ",
        "unknown field `polcy`, expected one of `policy`",
    );
    one_error(
        &format!("{BACKEND}[session]\ncookies = [{{ name = \"SID\", rotate = true }}]\n"),
        "farm.toml:5:28: session.cookies[0].rotate: ",
        "unknown field `rotate`, expected `name` or `rotates`",
    );
    // Wrong types: at the value; no Rust type names.
    one_error(
        "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\nweight = \"x\"\n",
        "farm.toml:4:10: backends[0].weight: ",
        "invalid type: string \"x\", expected a whole number, 0 or more",
    );
    one_error(
        &format!("[listen]\nworkers = -1\n{BACKEND}"),
        "farm.toml:2:11: listen.workers: ",
        "invalid value: integer `-1`, expected a whole number, 0 or more",
    );
    one_error(
        &format!("{BACKEND}[session]\nmax_sessions = 1.5\n"),
        "farm.toml:5:16: session.max_sessions: ",
        "invalid type: floating point `1.5`, expected a whole number, 0 or more",
    );
    one_error(
        &format!("listen = 3\n{BACKEND}"),
        "farm.toml:1:10: listen: ",
        "expected a table",
    );
    // Missing required fields: at the table that lacks them.
    one_error(
        "[[backends]]\nname = \"a\"\n",
        "farm.toml:1:1: backends[0].url: ",
        "required, but missing",
    );
    one_error(
        &format!("{BACKEND}[webhook]\ntimeout = \"1s\"\n"),
        "farm.toml:4:1: webhook.url: ",
        "required, but missing",
    );
    // Values that do not validate: at the value.
    let cases: &[(&str, &str, &str)] = &[
        (
            "[health]\ninterval = \"5 parsecs\"\n",
            "farm.toml:5:12: health.interval: ",
            "unknown time unit \"parsecs\"",
        ),
        (
            "[upstream]\nconnect_timeout = \"0s\"\n",
            "farm.toml:5:19: upstream.connect_timeout: ",
            "must be above zero",
        ),
        (
            "[listen]\nmax_header_bytes = 100\n",
            "farm.toml:5:20: listen.max_header_bytes: ",
            "must be from 8192 to 65535 bytes",
        ),
        (
            "[upstream]\nreuse = \"sometimes\"\n",
            "farm.toml:5:9: upstream.reuse: ",
            "unknown value \"sometimes\"; expected one of: safe, always",
        ),
        (
            "[listen]\nsend_timeout = \"soon\"\n",
            "farm.toml:5:16: listen.send_timeout: ",
            "expected number at 0",
        ),
        (
            "[pin]\npolicy = \"sometimes\"\n",
            "farm.toml:5:10: pin.policy: ",
            "expected one of: off, learn, on_reset, on_incident",
        ),
        (
            "[pin]\nwhen_unhealthy = \"panic\"\n",
            "farm.toml:5:18: pin.when_unhealthy: ",
            "expected one of: redistribute, fail",
        ),
        (
            "[balance]\npolicy = \"random\"\n",
            "farm.toml:5:10: balance.policy: ",
            "round_robin, least_requests",
        ),
        (
            "[listen]\naddress = \"localhost\"\n",
            "farm.toml:5:11: listen.address: ",
            "is not an IP address and port",
        ),
        (
            "[session]\npreset = \"rails\"\n",
            "farm.toml:5:10: session.preset: ",
            "expected one of: aspnetcore, php, django, express, java",
        ),
        (
            "[session]\ncookies = [{ name = \"a b\" }]\n",
            "farm.toml:5:21: session.cookies[0].name: ",
            "is not a valid cookie name",
        ),
        (
            "[session]\nmarker_statuses = [419, 700]\n",
            "farm.toml:5:25: session.marker_statuses[1]: ",
            "700 is not an HTTP status",
        ),
        (
            "[session]\nmarker_header = \"x y\"\n",
            "farm.toml:5:17: session.marker_header: ",
            "is not a header name",
        ),
        (
            "[session]\nfingerprint_key = \"short\"\n",
            "farm.toml:5:19: session.fingerprint_key: ",
            "at least 16 characters",
        ),
        (
            "[session]\nlogin_paths = [\"login\"]\n",
            "farm.toml:5:15: session.login_paths: ",
            "must start with '/'",
        ),
        (
            "[health]\npath = \"health\"\n",
            "farm.toml:5:8: health.path: ",
            "must start with '/'",
        ),
        (
            "[health]\nrise = 0\n",
            "farm.toml:5:8: health.rise: ",
            "must be at least 1",
        ),
        (
            "[incident]\nthreshold = 1.5\n",
            "farm.toml:5:13: incident.threshold: ",
            "at most 1",
        ),
        (
            "[alertmanager]\nurl = \"ftp://am:9093\"\n",
            "farm.toml:5:7: alertmanager.url: ",
            "must be an http:// or https:// URL",
        ),
        (
            "[alertmanager]\nurl = \"http://am:9093\"\nfarm = \" shop\"\n",
            "farm.toml:6:8: alertmanager.farm: ",
            "no space at either end",
        ),
        (
            "[alertmanager]\nurl = \"http://am:9093\"\nfarm = \"\"\n",
            "farm.toml:6:8: alertmanager.farm: ",
            "must be 1 to 128 bytes",
        ),
    ];
    for (tail, prefix, fragment) in cases {
        one_error(&format!("{BACKEND}{tail}"), prefix, fragment);
    }
    let backend_cases: &[(&str, &str, &str)] = &[
        (
            "url = \"ftp://x\"",
            "farm.toml:3:7: backends[0].url: ",
            "\"ftp://x\" is not an http://host:port or https://host:port URL",
        ),
        (
            "url = \"https://b:443\"",
            "farm.toml:3:7: backends[0].url: ",
            "a backend over TLS needs [upstream.tls] ca_file",
        ),
        (
            "url = \"http://b:80/app\"",
            "farm.toml:3:7: backends[0].url: ",
            "must not have a path",
        ),
        (
            "url = \"http://b:1\"\nweight = 0",
            "farm.toml:4:10: backends[0].weight: ",
            "must be at least 1",
        ),
    ];
    for (tail, prefix, fragment) in backend_cases {
        one_error(
            &format!("[[backends]]\nname = \"b\"\n{tail}\n"),
            prefix,
            fragment,
        );
    }
    one_error(
        &format!("{BACKEND}{}", BACKEND.replace("8081", "8082")),
        "farm.toml:5:8: backends[1].name: ",
        "duplicate backend name \"a\"",
    );
    // A problem with no place in the file: no line or column.
    one_error(
        "[pin]\npolicy = \"learn\"\n",
        "farm.toml: backends: ",
        "at least one backend",
    );
}

#[test]
fn every_problem_is_reported_at_once_in_file_order() {
    let src = "\
colour = \"red\"
[listen]
address = \"127.0.0.1:0\"
port = 8080

[[backends]]
name = \"a\"
url = \"http://127.0.0.1:8081\"
wieght = 2

[[backends]]
name = 3
url = \"ftp://x\"

[session]
preset = \"php\"
cookies = [{ rotate = true, name = \"SID\" }, { name = \"B\", extra = 1 }]

[bogus]
a = 1
[bogus.sub]
b = \"\"\"
multi
\"\"\"

[health]
interval = \"5 parsecs\"

[pin]
policy = \"sometimes\"
";
    let errs = errors(src);
    let (places, fields): (Vec<&str>, Vec<&str>) = errs
        .iter()
        .map(|l| {
            let mut parts = l.split(": ");
            (parts.next().unwrap_or(""), parts.next().unwrap_or(""))
        })
        .unzip();
    assert_eq!(
        fields,
        [
            "colour",
            "listen.port",
            "backends[0].wieght",
            "backends[1].name",
            "backends[1].url",
            "session.cookies[0].rotate",
            "session.cookies[1].extra",
            "bogus",
            "health.interval",
            "pin.policy",
        ],
        "{errs:#?}"
    );
    assert_eq!(
        places,
        [
            "farm.toml:1:1",
            "farm.toml:4:1",
            "farm.toml:9:1",
            "farm.toml:12:8",
            "farm.toml:13:7",
            "farm.toml:17:14",
            "farm.toml:17:59",
            "farm.toml:19:2",
            "farm.toml:27:12",
            "farm.toml:30:10",
        ],
        "{errs:#?}"
    );
    // The mistyped required name is reported once, not again as missing.
    assert!(errs[3].ends_with("invalid type: integer `3`, expected a string"));
}

#[test]
fn the_error_keeps_structured_issues() {
    let Err(e) = parse(&format!("{BACKEND}[pin]\npolicy = \"x\"\n")) else {
        panic!("expected an error");
    };
    assert_eq!(e.file, Path::new("farm.toml"));
    assert_eq!(
        e.issues,
        vec![ConfigIssue {
            line: Some(5),
            column: Some(10),
            field: "pin.policy".into(),
            message: "unknown value \"x\"; expected one of: off, learn, on_reset, on_incident"
                .into(),
        }]
    );
}

#[test]
fn an_unreadable_file_is_one_problem_without_a_place() {
    let path = Path::new("/nonexistent/sessionwatch/farm.toml");
    let Err(e) = Config::load(path) else {
        panic!("expected an error");
    };
    assert_eq!(e.issues.len(), 1);
    assert_eq!(e.issues[0].line, None);
    assert!(
        e.to_string()
            .starts_with("/nonexistent/sessionwatch/farm.toml: cannot read: "),
        "{e}"
    );
}

#[test]
fn defaults_are_filled_in() {
    let c = parse(BACKEND).unwrap();
    assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(
        c.workers,
        std::thread::available_parallelism().unwrap().get()
    );
    assert_eq!(c.send_timeout, Duration::from_secs(60));
    assert_eq!(c.admin, None);
    assert_eq!(
        c.backends,
        vec![BackendConfig {
            name: "a".into(),
            authority: "127.0.0.1:8081".parse().unwrap(),
            weight: 1,
            tls: None,
        }]
    );
    assert_eq!(c.balance, BalancePolicy::RoundRobin);
    assert_eq!(
        c.upstream,
        UpstreamConfig {
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(30),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 256,
            reuse: ReusePolicy::Safe,
            request_body_timeout: Duration::from_secs(10),
        }
    );
    assert_eq!(c.max_header_bytes, 32 * 1024);
    assert_eq!(
        c.max_connections,
        ConnectionLimit {
            max: 10_000,
            explicit: false
        }
    );
    assert_eq!(c.session.profile, SessionProfile::preset(Framework::Php));
    assert_eq!(c.session.max_sessions, 1_000_000);
    assert_eq!(c.session.store, StoreKind::Moka);
    assert_eq!(c.session.key, KeySource::Random);
    assert_eq!(
        c.pin,
        PinConfig {
            policy: PinPolicy::Off,
            when_unhealthy: WhenUnhealthy::Redistribute,
            retry_after: Duration::from_secs(5),
        }
    );
    assert!(!c.rescue);
    assert_eq!(
        c.health,
        HealthConfig {
            active: Some(ActiveHealth {
                path: "/health".into(),
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(1),
                rise: 2,
                fall: 3,
            }),
            passive_fall: 3,
            eject_for: Duration::from_secs(10),
        }
    );
    assert_eq!(
        c.alerts,
        AlertsConfig {
            log_file: Some("sessionwatch-alerts.jsonl".into()),
            stdout: false,
        }
    );
    assert_eq!(c.incident, IncidentConfig::default());
    assert_eq!(c.alertmanager, None);
    assert_eq!(c.webhook, None);

    // An [admin] section with no address listens on the default admin port; an empty log file
    // name turns the file off; active checks can be turned off.
    let c = parse(&format!(
        "{BACKEND}[admin]\n[alerts]\nlog_file = \"\"\nstdout = true\n[health]\nactive = false\n"
    ))
    .unwrap();
    assert_eq!(c.admin, Some("127.0.0.1:9090".parse().unwrap()));
    assert_eq!(c.alerts.log_file, None);
    assert!(c.alerts.stdout);
    assert_eq!(c.health.active, None);

    // One farm per Alertmanager, one replica: no fleet settings needed.
    let c = parse(&format!(
        "{BACKEND}[alertmanager]\nurl = \"http://am:9093\"\n"
    ))
    .unwrap();
    let am = c.alertmanager.unwrap();
    assert_eq!(am.farm, "default");
    assert!(!am.fleet);

    let c = parse(&format!(
        "{BACKEND}[webhook]\nurl = \"http://hooks:8080/x\"\n"
    ))
    .unwrap();
    let w = c.webhook.unwrap();
    assert_eq!(w.resend_every, Duration::from_secs(60));
    assert_eq!(w.timeout, Duration::from_secs(5));
}

#[test]
fn every_field_is_read() {
    let c = parse(
        "\
[listen]
address = \"0.0.0.0:80\"
workers = 3
send_timeout = \"45s\"
max_header_bytes = 16384
max_connections = 500
[admin]
address = \"127.0.0.1:9100\"
[[backends]]
name = \"web-1\"
url = \"http://10.0.0.1:8080\"
weight = 3
[balance]
policy = \"least_requests\"
[upstream]
connect_timeout = \"500ms\"
response_timeout = \"10s\"
pool_idle_timeout = \"1m\"
pool_max_idle_per_host = 8
reuse = \"always\"
request_body_timeout = \"3s\"
[session]
preset = \"django\"
idle_timeout = \"2h\"
max_sessions = 500
store = \"compact\"
fingerprint_key = \"0123456789abcdef\"
marker_header = \"X-Session-Lost\"
marker_statuses = [419, 440]
logout_paths = [\"/bye\"]
[pin]
policy = \"on_incident\"
when_unhealthy = \"fail\"
retry_after = \"3s\"
[rescue]
enabled = true
[health]
path = \"/up\"
interval = \"1s\"
timeout = \"300ms\"
rise = 1
fall = 5
passive_fall = 4
eject_for = \"20s\"
[alerts]
log_file = \"/var/log/sw.jsonl\"
[incident]
window = \"1m\"
min_requests = 50
min_resets = 10
threshold = 0.1
update_every = \"30s\"
resolve_after = \"2m\"
max_reset_lines_per_sec = 5
[alertmanager]
url = \"http://am:9093\"
resend_every = \"5m\"
timeout = \"2s\"
farm = \"shop\"
fleet = true
",
    )
    .unwrap();
    assert_eq!(c.listen, "0.0.0.0:80".parse().unwrap());
    assert_eq!(c.workers, 3);
    assert_eq!(c.send_timeout, Duration::from_secs(45));
    assert_eq!(c.admin, Some("127.0.0.1:9100".parse().unwrap()));
    assert_eq!(c.backends[0].weight, 3);
    assert_eq!(c.balance, BalancePolicy::LeastRequests);
    assert_eq!(c.upstream.connect_timeout, Duration::from_millis(500));
    assert_eq!(c.upstream.pool_max_idle_per_host, 8);
    assert_eq!(c.upstream.reuse, ReusePolicy::Always);
    assert_eq!(c.upstream.request_body_timeout, Duration::from_secs(3));
    assert_eq!(c.max_header_bytes, 16384);
    assert_eq!(
        c.max_connections,
        ConnectionLimit {
            max: 500,
            explicit: true
        }
    );
    let profile = &c.session.profile;
    assert_eq!(profile.cookies()[0].name(), "sessionid");
    assert_eq!(profile.login_paths(), ["/accounts/login/"]);
    assert_eq!(profile.logout_paths(), ["/bye"]);
    assert_eq!(profile.idle_timeout(), Duration::from_secs(7200));
    assert_eq!(
        profile.marker().header.as_ref().map(|h| h.as_str()),
        Some("x-session-lost")
    );
    assert_eq!(profile.marker().statuses.len(), 2);
    assert_eq!(c.session.max_sessions, 500);
    assert_eq!(c.session.store, StoreKind::Compact);
    assert_eq!(
        c.session.key,
        KeySource::Configured(b"0123456789abcdef".to_vec())
    );
    assert_eq!(c.pin.policy, PinPolicy::OnIncident);
    assert_eq!(c.pin.when_unhealthy, WhenUnhealthy::Fail);
    assert_eq!(c.pin.retry_after, Duration::from_secs(3));
    assert!(c.rescue);
    assert_eq!(c.health.active.as_ref().map(|a| a.fall), Some(5));
    assert_eq!(c.health.passive_fall, 4);
    assert_eq!(c.health.eject_for, Duration::from_secs(20));
    assert_eq!(c.alerts.log_file, Some("/var/log/sw.jsonl".into()));
    assert_eq!(
        c.incident,
        IncidentConfig {
            window: Duration::from_secs(60),
            min_requests: 50,
            min_resets: 10,
            threshold: 0.1,
            update_every: Duration::from_secs(30),
            resolve_after: Duration::from_secs(120),
            max_reset_lines_per_sec: 5,
        }
    );
    let am = c.alertmanager.unwrap();
    assert_eq!(am.sink.url, "http://am:9093");
    assert_eq!(am.sink.resend_every, Duration::from_secs(300));
    assert_eq!(am.farm, "shop");
    assert!(am.fleet);
}

#[test]
fn the_fingerprint_key_is_read_from_the_environment() {
    // Cargo sets CARGO_PKG_NAME for the test process; the tests cannot set variables themselves
    // (that needs `unsafe` in this edition, and the workspace forbids it).
    let expected = std::env::var("CARGO_PKG_NAME").unwrap();
    assert!(expected.len() >= 16);
    let c = parse(&format!(
        "{BACKEND}[session]\nfingerprint_key_env = \"CARGO_PKG_NAME\"\n"
    ))
    .unwrap();
    assert_eq!(c.session.key, KeySource::Configured(expected.into_bytes()));
    // The Debug form never shows the key.
    assert_eq!(format!("{:?}", c.session.key), "Configured(<redacted>)");

    one_error(
        &format!(
            "{BACKEND}[session]\nfingerprint_key_env = \"SESSIONWATCH_TEST_KEY_THAT_IS_NEVER_SET\"\n"
        ),
        "farm.toml:5:23: session.fingerprint_key_env: ",
        "environment variable SESSIONWATCH_TEST_KEY_THAT_IS_NEVER_SET is not set",
    );
    one_error(
        &format!("{BACKEND}[session]\nfingerprint_key_env = \"CARGO_PKG_VERSION_MAJOR\"\n"),
        "farm.toml:5:23: session.fingerprint_key_env: ",
        "must hold at least 16 characters",
    );
    one_error(
        &format!(
            "{BACKEND}[session]\nfingerprint_key = \"0123456789abcdef\"\nfingerprint_key_env = \"CARGO_PKG_NAME\"\n"
        ),
        "farm.toml:6:23: session.fingerprint_key_env: ",
        "not both",
    );
}

#[test]
fn presets_set_cookies_paths_and_timeouts() {
    for f in Framework::ALL {
        let c = parse(&format!("{BACKEND}[session]\npreset = \"{}\"\n", f.name())).unwrap();
        assert_eq!(c.session.profile, SessionProfile::preset(f), "{}", f.name());
    }
    let asp = parse(&format!("{BACKEND}[session]\npreset = \"aspnetcore\"\n")).unwrap();
    let cookies = asp.session.profile.cookies();
    assert_eq!(
        cookies,
        [
            CookieSpec::new(".AspNetCore.Session"),
            CookieSpec::new(".AspNetCore.Cookies").rotating(true),
        ]
    );
    assert_eq!(
        asp.session.profile.idle_timeout(),
        Duration::from_secs(1200)
    );

    // Own cookies on top of a preset keep the preset's paths and timeout.
    let c = parse(&format!(
        "{BACKEND}[session]\npreset = \"java\"\ncookies = [{{ name = \"SID\" }}, {{ name = \"AUTH\", rotates = true }}]\n"
    ))
    .unwrap();
    let java = SessionProfile::preset(Framework::Java);
    let p = &c.session.profile;
    assert_eq!(
        p.cookies(),
        [
            CookieSpec::new("SID"),
            CookieSpec::new("AUTH").rotating(true)
        ]
    );
    assert_eq!(p.login_paths(), java.login_paths());
    assert_eq!(p.idle_timeout(), java.idle_timeout());

    // Own cookies without a preset: the custom defaults.
    let c = parse(&format!(
        "{BACKEND}[session]\ncookies = [{{ name = \"SID\" }}]\nlogin_paths = [\"/signin\"]\n"
    ))
    .unwrap();
    assert_eq!(
        c.session.profile,
        SessionProfile::custom(vec![CookieSpec::new("SID")])
            .with_login_paths(vec!["/signin".into()])
    );

    one_error(
        &format!("{BACKEND}[session]\ncookies = [{{ name = \"A\" }}, {{ name = \"A\" }}]\n"),
        "farm.toml:5:11: session.cookies: ",
        "cookie \"A\" is listed twice",
    );
}

#[test]
fn the_affinity_cookie_is_off_by_default_and_read_when_on() {
    let key = "fingerprint_key = \"a fleet's shared key 0123\"\n";
    let config = parse(&format!("[session]\n{key}{BACKEND}")).unwrap();
    assert_eq!(config.session.affinity, None);
    let config = parse(&format!(
        "[session]\n{key}affinity_cookie = true\n{BACKEND}"
    ))
    .unwrap();
    assert_eq!(
        config.session.affinity,
        Some(AffinityCookieConfig {
            name: "swaff".into(),
            secure: false,
        })
    );
    let config = parse(&format!(
        "[session]\n{key}affinity_cookie = true\naffinity_cookie_name = \"__sw\"\n\
         affinity_cookie_secure = true\n{BACKEND}"
    ))
    .unwrap();
    assert_eq!(
        config.session.affinity,
        Some(AffinityCookieConfig {
            name: "__sw".into(),
            secure: true,
        })
    );
}

#[test]
fn a_bad_affinity_cookie_setting_is_reported_at_its_field() {
    let key = "fingerprint_key = \"a fleet's shared key 0123\"\n";
    one_error(
        &format!(
            "[session]\n{key}affinity_cookie = true\naffinity_cookie_name = \"a b\"\n{BACKEND}"
        ),
        "farm.toml:4:24: session.affinity_cookie_name: ",
        "not a cookie name",
    );
    one_error(
        &format!(
            "[session]\n{key}cookies = [{{ name = \"SID\" }}]\naffinity_cookie = true\n\
             affinity_cookie_name = \"SID\"\n{BACKEND}"
        ),
        "farm.toml:5:24: session.affinity_cookie_name: ",
        "session cookie's name",
    );
    // A random key differs per replica: no other replica could verify the cookie.
    one_error(
        &format!("[session]\naffinity_cookie = true\n{BACKEND}"),
        "farm.toml:2:19: session.affinity_cookie: ",
        "needs fingerprint_key",
    );
}

#[test]
fn the_redis_store_is_read_with_its_defaults() {
    let key = "fingerprint_key = \"a fleet's shared key 0123\"\n";
    let config = parse(&format!(
        "[session]\n{key}store = \"redis\"\n[redis]\nurl = \"redis://10.0.0.5:6379/2\"\n{BACKEND}"
    ))
    .unwrap();
    assert_eq!(config.session.store, StoreKind::Redis);
    let redis = config.session.redis.unwrap();
    assert_eq!(redis.urls, ["redis://10.0.0.5:6379/2"]);
    assert!(!redis.cluster);
    assert_eq!(redis.key_prefix, "sw:");
    assert_eq!(redis.timeout, Duration::from_millis(5));
    assert_eq!(redis.password, None);
    assert_eq!(redis.max_lookups_per_second, 10_000);

    let config = parse(&format!(
        "[session]\n{key}store = \"redis\"\n[redis]\n\
         cluster = [\"redis://127.0.0.1:7000\", \"redis://127.0.0.1:7001\"]\n\
         key_prefix = \"shop:\"\ntimeout = \"20ms\"\nmax_lookups_per_second = 50\n{BACKEND}"
    ))
    .unwrap();
    let redis = config.session.redis.unwrap();
    assert!(redis.cluster);
    assert_eq!(redis.urls.len(), 2);
    assert_eq!(redis.key_prefix, "shop:");
    assert_eq!(redis.timeout, Duration::from_millis(20));
    assert_eq!(redis.max_lookups_per_second, 50);
}

#[test]
fn a_redis_store_without_its_section_a_key_or_a_good_url_is_refused() {
    let key = "fingerprint_key = \"a fleet's shared key 0123\"\n";
    one_error(
        &format!("[session]\n{key}store = \"redis\"\n{BACKEND}"),
        "farm.toml:3:9: session.store: ",
        "needs a [redis] section",
    );
    one_error(
        &format!("[session]\n{key}[redis]\nurl = \"redis://127.0.0.1\"\n{BACKEND}"),
        "farm.toml:3:1: redis: ",
        "only with [session] store = \"redis\"",
    );
    // Replicas with random keys fingerprint apart and would share nothing.
    let errs = errors(&format!(
        "[session]\nstore = \"redis\"\n[redis]\nurl = \"redis://127.0.0.1\"\n{BACKEND}"
    ));
    assert!(
        errs.iter()
            .any(|e| e.contains("needs a fingerprint key every replica shares")),
        "{errs:?}"
    );
    one_error(
        &format!(
            "[session]\n{key}store = \"redis\"\n[redis]\nurl = \"http://127.0.0.1\"\n{BACKEND}"
        ),
        "farm.toml:5:7: redis.url: ",
        "must start with redis:// or rediss://",
    );
    let errs = errors(&format!(
        "[session]\n{key}store = \"redis\"\n[redis]\nurl = \"redis://:sekrit@h:notaport\"\n{BACKEND}"
    ));
    assert!(
        errs.iter().any(|e| e.contains("not a Redis URL")),
        "{errs:?}"
    );
    assert!(
        errs.iter().all(|e| !e.contains("sekrit")),
        "a password reached the error: {errs:?}"
    );
    one_error(
        &format!(
            "[session]\n{key}store = \"redis\"\n[redis]\nurl = \"redis://h\"\n\
             password_env = \"SESSIONWATCH_TEST_UNSET_REDIS_PASSWORD\"\n{BACKEND}"
        ),
        "farm.toml:6:16: redis.password_env: ",
        "is not set",
    );
}

#[test]
fn discovery_entries_resolve_names_with_defaults_and_a_shared_resolver() {
    let src = "[discovery]\nresolver = \"10.96.0.10:53\"\n\
               [[backends]]\ndns = \"app-headless.shop.svc.cluster.local:8080\"\n\
               [[backends]]\nsrv = \"_http._tcp.app.shop.svc.cluster.local\"\nrefresh = \"1s\"\nresolver = \"127.0.0.1:5353\"\nweight = 2\n";
    let c = parse(src).unwrap();
    assert!(c.backends.is_empty());
    assert_eq!(
        c.discovery,
        [
            DiscoveryConfig {
                target: DnsTarget::Host {
                    host: "app-headless.shop.svc.cluster.local".into(),
                    port: 8080
                },
                text: "app-headless.shop.svc.cluster.local:8080".into(),
                refresh: Duration::from_secs(5),
                resolver: Some("10.96.0.10:53".parse().unwrap()),
                weight: 1,
                tls: None,
            },
            DiscoveryConfig {
                target: DnsTarget::Srv {
                    name: "_http._tcp.app.shop.svc.cluster.local".into()
                },
                text: "_http._tcp.app.shop.svc.cluster.local".into(),
                refresh: Duration::from_secs(1),
                resolver: Some("127.0.0.1:5353".parse().unwrap()),
                weight: 2,
                tls: None,
            }
        ]
    );
    // Without a resolver: the system's.
    let c = parse("[[backends]]\ndns = \"app:80\"\n").unwrap();
    assert_eq!(c.discovery[0].resolver, None);
}

#[test]
fn discovery_entries_say_what_is_wrong_where() {
    one_error(
        "[[backends]]\ndns = \"app.shop\"\n",
        "farm.toml:2:7: backends[0].dns: ",
        "is not a DNS name and port",
    );
    one_error(
        "[[backends]]\ndns = \"app:80\"\nname = \"a\"\n",
        "farm.toml:3:8: backends[0].name: ",
        "named by its address",
    );
    one_error(
        "[[backends]]\ndns = \"app:80\"\nsrv = \"_http._tcp.app\"\n",
        "farm.toml:3:7: backends[0].srv: ",
        "not both",
    );
    one_error(
        "[[backends]]\nsrv = \"_http._tcp.app:80\"\n",
        "farm.toml:2:7: backends[0].srv: ",
        "the port comes from the records",
    );
    one_error(
        "[[backends]]\ndns = \"app:80\"\nrefresh = \"10ms\"\n",
        "farm.toml:3:11: backends[0].refresh: ",
        "at least 100ms",
    );
    one_error(
        "[[backends]]\ndns = \"app:80\"\nresolver = \"dns.local\"\n",
        "farm.toml:3:12: backends[0].resolver: ",
        "is not an IP address and port",
    );
    one_error(
        &format!("{BACKEND}refresh = \"1s\"\n"),
        "farm.toml:4:11: backends[0].refresh: ",
        "only for a backend discovered by DNS",
    );
}

#[test]
fn a_backend_url_without_a_port_is_refused() {
    one_error(
        "[[backends]]\nname = \"a\"\nurl = \"http://app.internal\"\n",
        "farm.toml:3:7: backends[0].url: ",
        "give the port: http://app.internal:PORT",
    );
    one_error(
        "[[backends]]\nname = \"a\"\nurl = \"http://[fd00::7]/\"\n",
        "farm.toml:3:7: backends[0].url: ",
        "give the port",
    );
}

#[test]
fn the_admin_listener_cannot_share_the_traffic_listeners_address() {
    one_error(
        &format!(
            "[listen]\naddress = \"127.0.0.1:8080\"\n[admin]\naddress = \"127.0.0.1:8080\"\n{BACKEND}"
        ),
        "farm.toml:4:11: admin.address: ",
        "the traffic listener's address too",
    );
    // The wildcard takes the port on every address.
    one_error(
        &format!(
            "[listen]\naddress = \"0.0.0.0:8080\"\n[admin]\naddress = \"127.0.0.1:8080\"\n{BACKEND}"
        ),
        "farm.toml:4:11: admin.address: ",
        "a port of its own",
    );
    // Port 0 picks a free port for each; other ports or addresses do not clash.
    for (listen, admin) in [
        ("127.0.0.1:0", "127.0.0.1:0"),
        ("127.0.0.1:8080", "127.0.0.1:9090"),
        ("127.0.0.1:8080", "127.0.0.2:8080"),
    ] {
        parse(&format!(
            "[listen]\naddress = \"{listen}\"\n[admin]\naddress = \"{admin}\"\n{BACKEND}"
        ))
        .unwrap_or_else(|e| panic!("{listen} and {admin}: {e}"));
    }
}
