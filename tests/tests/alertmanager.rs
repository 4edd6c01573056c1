//! The Alertmanager sink against a real Alertmanager: a per-node farm opens an incident, the
//! alert shows up firing with the "store not shared" hint, `on_incident` pinning stops the losses,
//! the incident resolves and Alertmanager drops the alert before its advertised `endsAt`, which
//! only an explicit resolve (not a missed re-send) can do. And two replicas in front of one farm:
//! one alert for the farm, firing while either sees the incident, resolved when neither does.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use sessionwatch_proxy::{Config, InProcessFleet, RunningProxy, StartOptions};
use sessionwatch_test_support::{DriveConfig, Farm, FarmConfig, StoreMode, drive_users};
use sessionwatch_tests::{Scratch, config_toml, farm_backends, http_get, lines_of, start_proxy};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

const POLL: Duration = Duration::from_millis(100);

/// A running `prometheus-alertmanager`, killed when dropped.
struct Alertmanager {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Alertmanager {
    /// The binary on PATH or in /usr/bin; the test fails (never skips) without it.
    fn binary() -> PathBuf {
        let on_path = std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("prometheus-alertmanager"))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        on_path
            .into_iter()
            .chain([PathBuf::from("/usr/bin/prometheus-alertmanager")])
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "prometheus-alertmanager is not installed: install the Debian package \
                     `prometheus-alertmanager` (scripts/test-all does)"
                )
            })
    }

    /// Start one with a null receiver and clustering off, and wait until it is ready.
    async fn start(dir: &Path) -> Self {
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n",
        )
        .expect("write alertmanager config");
        let storage = dir.join("am-data");
        std::fs::create_dir_all(&storage).expect("create alertmanager storage");
        let addr = free_port();
        let log = dir.join("alertmanager.log");
        let out = std::fs::File::create(&log).expect("create alertmanager log");
        let err = out.try_clone().expect("clone log handle");
        let child = Command::new(Self::binary())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", storage.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn prometheus-alertmanager");
        let mut am = Self { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = am.child.try_wait() {
                panic!("alertmanager exited with {status}:\n{}", am.output());
            }
            if http_get(addr, "/-/ready").await.0 == 200 {
                return am;
            }
            assert!(
                Instant::now() < deadline,
                "alertmanager not ready on {addr} within 20s:\n{}",
                am.output()
            );
            sleep(Duration::from_millis(50)).await;
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /api/v2/alerts` (active, silenced, inhibited and unprocessed alike): Alertmanager
    /// leaves out alerts whose `endsAt` has passed, i.e. resolved ones.
    async fn alerts(&self) -> Vec<Value> {
        let (status, body) = http_get(self.addr, "/api/v2/alerts").await;
        assert_eq!(status, 200, "GET /api/v2/alerts answered {status}: {body}");
        match serde_json::from_str::<Value>(&body) {
            Ok(Value::Array(a)) => a,
            other => panic!("GET /api/v2/alerts is not a JSON array: {other:?}\n{body}"),
        }
    }
}

/// A port nobody listens on right now (bind :0, read it, let it go).
fn free_port() -> SocketAddr {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    l.local_addr().expect("local addr")
}

/// An Alertmanager timestamp: RFC 3339 in UTC, `YYYY-MM-DDTHH:MM:SS[.frac]Z`.
fn parse_time(v: &Value) -> SystemTime {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    let s = s
        .strip_suffix('Z')
        .unwrap_or_else(|| panic!("timestamp not in UTC: {s}"));
    let (date, time) = s
        .split_once('T')
        .unwrap_or_else(|| panic!("bad timestamp {s}"));
    let num = |t: &str| -> i64 { t.parse().unwrap_or_else(|_| panic!("bad timestamp {s}")) };
    let d: Vec<i64> = date.split('-').map(num).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(num).collect();
    // Days from civil date (Howard Hinnant's algorithm).
    let (y, m, day) = (if d[1] <= 2 { d[0] - 1 } else { d[0] }, d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2];
    let nanos: u32 = format!("{frac:0<9}")[..9].parse().unwrap_or(0);
    SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(secs).expect("after 1970"))
        + Duration::from_nanos(u64::from(nanos))
}

/// The alerts about one incident (the replica's incident id is an annotation).
fn of_incident<'a>(alerts: &'a [Value], incident: &str) -> Vec<&'a Value> {
    alerts
        .iter()
        .filter(|a| {
            a["labels"]["alertname"] == "SessionLossIncident"
                && a["annotations"]["incident"] == incident
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_fires_and_resolves_in_a_real_alertmanager() {
    let test_deadline = Instant::now() + Duration::from_secs(55);
    let scratch = Scratch::new("alertmanager");
    let am = Alertmanager::start(scratch.path()).await;

    let farm = Farm::start(FarmConfig::new(2, StoreMode::PerNode))
        .await
        .expect("farm starts");
    let extra = format!(
        "[alertmanager]\nurl = \"http://{}\"\nresend_every = \"1s\"\n\
         [incident]\nresolve_after = \"2s\"\nwindow = \"3s\"\nupdate_every = \"1s\"\n\
         [pin]\npolicy = \"on_incident\"\n",
        am.addr
    );
    let toml = config_toml(
        &farm_backends(&farm),
        farm.cookie_name(),
        &scratch.alert_log(),
        &extra,
    );
    let proxy = start_proxy(&toml).await;
    let log = scratch.alert_log();

    // Users keep coming in the background until told to stop.
    let driving = Arc::new(AtomicBool::new(true));
    let driver = {
        let driving = driving.clone();
        let (target, cookie) = (proxy.addr(), farm.cookie_name().to_owned());
        tokio::spawn(async move {
            let mut cookie_values = Vec::new();
            while driving.load(Ordering::Relaxed) {
                let report = drive_users(target, &cookie, DriveConfig::new(8, 5)).await;
                cookie_values.extend(report.cookie_values);
                sleep(Duration::from_millis(20)).await;
            }
            cookie_values
        })
    };

    // 1. The incident opens.
    let opened = loop {
        proxy.flush_alerts();
        if let Some(line) = lines_of(&log, "incident_opened").into_iter().next() {
            break line;
        }
        assert!(
            Instant::now() < test_deadline,
            "no incident opened; alert log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        sleep(POLL).await;
    };
    let incident = opened["incident_id"]
        .as_str()
        .expect("incident_id")
        .to_owned();
    assert_eq!(
        opened["hint"]["code"], "store_not_shared",
        "unexpected hint: {opened}"
    );

    // 2. Alertmanager shows it firing, with the hint as an annotation.
    let firing = loop {
        let alerts = am.alerts().await;
        if let Some(a) = of_incident(&alerts, &incident).first() {
            break (*a).clone();
        }
        assert!(
            Instant::now() < test_deadline,
            "alert for incident {incident} never reached Alertmanager; it holds {alerts:?}\nproxy metrics:\n{}",
            proxy.metrics_text()
        );
        sleep(POLL).await;
    };
    assert_eq!(firing["status"]["state"], "active", "{firing}");
    let hint = firing["annotations"]["hint"].as_str().unwrap_or_default();
    assert!(
        hint.contains("not shared"),
        "hint annotation {hint:?} in {firing}"
    );
    assert_eq!(firing["labels"]["service"], "sessionwatch", "{firing}");
    assert_eq!(firing["labels"]["farm"], "default", "{firing}");
    assert!(
        parse_time(&firing["endsAt"]) > SystemTime::now(),
        "a firing alert must end in the future: {firing}"
    );

    // 3. Pinning on the incident stops the losses; it resolves. Meanwhile the alert stays one
    // alert (stable labels) and keeps its endsAt ahead of now through the re-sends.
    let mut last_ends_at = parse_time(&firing["endsAt"]);
    let resolved_line = loop {
        proxy.flush_alerts();
        if let Some(line) = lines_of(&log, "incident_resolved")
            .into_iter()
            .find(|l| l["incident_id"] == incident.as_str())
        {
            break line;
        }
        let alerts = am.alerts().await;
        let ours = of_incident(&alerts, &incident);
        assert!(
            ours.len() <= 1,
            "one incident became several alerts (unstable labels): {ours:?}"
        );
        if let Some(a) = ours.first() {
            last_ends_at = last_ends_at.max(parse_time(&a["endsAt"]));
        }
        assert!(
            Instant::now() < test_deadline,
            "incident {incident} never resolved; alert log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        sleep(POLL).await;
    };
    driving.store(false, Ordering::Relaxed);
    assert!(
        lines_of(&log, "pinning_started")
            .iter()
            .any(|l| l["incident_id"] == incident.as_str()),
        "on_incident pinning did not start"
    );
    assert_eq!(resolved_line["incident_id"], incident.as_str());

    // 4. Alertmanager drops it, before the endsAt it last advertised: an explicit resolve.
    loop {
        let alerts = am.alerts().await;
        let ours = of_incident(&alerts, &incident);
        if ours.is_empty() {
            break;
        }
        assert!(
            SystemTime::now() < last_ends_at && Instant::now() < test_deadline,
            "the alert was not resolved, only left to expire: {ours:?}"
        );
        sleep(POLL).await;
    }
    assert!(
        SystemTime::now() < last_ends_at,
        "the alert vanished only once its endsAt passed: the resolve did not reach Alertmanager"
    );

    let cookie_values = driver.await.expect("driver task");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    for raw in &cookie_values {
        assert!(
            !log_text.contains(raw.as_str()),
            "a raw session value leaked into the alert log"
        );
    }
    assert!(
        proxy
            .metrics_text()
            .lines()
            .all(|l| !l.starts_with("sessionwatch_alert_sink_failures_total") || l.ends_with(" 0")),
        "deliveries to Alertmanager failed:\n{}",
        proxy.metrics_text()
    );

    proxy.shutdown().await;
    farm.shutdown().await;
    drop(am);
}

/// One replica of a fleet: its proxy, its own alert log, and users that keep coming through it
/// until told to stop.
struct Replica {
    proxy: RunningProxy,
    log: PathBuf,
    driving: Arc<AtomicBool>,
    driver: JoinHandle<()>,
}

impl Replica {
    /// A replica in front of `farm` for farm "shop", taking its member of `fleet`; `every` is
    /// both its re-send period and its incident update period.
    async fn start(
        farm: &Farm,
        scratch: &Scratch,
        name: &str,
        am: SocketAddr,
        every: &str,
        fleet: &InProcessFleet,
    ) -> Self {
        let log = scratch.path().join(format!("alerts-{name}.jsonl"));
        let extra = format!(
            "[alertmanager]\nurl = \"http://{am}\"\nfarm = \"shop\"\nresend_every = \"{every}\"\n\
             [incident]\nresolve_after = \"2s\"\nwindow = \"3s\"\nupdate_every = \"{every}\"\n"
        );
        let toml = config_toml(&farm_backends(farm), farm.cookie_name(), &log, &extra);
        let config = Config::parse(&toml, Path::new("test.toml"))
            .unwrap_or_else(|e| panic!("bad test config:\n{e}\n---\n{toml}"));
        let proxy = sessionwatch_proxy::start(
            config,
            StartOptions {
                incident_tick: Some(Duration::from_millis(100)),
                fleet_incidents: Some(fleet.member()),
                ..StartOptions::default()
            },
        )
        .await
        .expect("proxy starts");
        let driving = Arc::new(AtomicBool::new(true));
        let driver = {
            let driving = driving.clone();
            let (target, cookie) = (proxy.addr(), farm.cookie_name().to_owned());
            tokio::spawn(async move {
                while driving.load(Ordering::Relaxed) {
                    drive_users(target, &cookie, DriveConfig::new(8, 5)).await;
                    sleep(Duration::from_millis(20)).await;
                }
            })
        };
        Self {
            proxy,
            log,
            driving,
            driver,
        }
    }

    /// Its incident lines of one type.
    fn lines(&self, kind: &str) -> Vec<Value> {
        self.proxy.flush_alerts();
        lines_of(&self.log, kind)
    }

    async fn stop_users(&mut self) {
        self.driving.store(false, Ordering::Relaxed);
        (&mut self.driver).await.expect("driver task");
    }
}

/// The session-loss alerts Alertmanager holds, checked to be at most one: the farm's.
async fn farm_alert(am: &Alertmanager) -> Option<Value> {
    let alerts = am.alerts().await;
    let ours: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["labels"]["alertname"] == "SessionLossIncident")
        .collect();
    assert!(
        ours.len() <= 1,
        "the replicas' incidents became several alerts: {ours:?}"
    );
    let alert = ours.first().map(|a| (*a).clone())?;
    assert_eq!(
        alert["labels"],
        serde_json::json!({
            "alertname": "SessionLossIncident",
            "severity": "critical",
            "service": "sessionwatch",
            "farm": "shop",
        }),
        "labels must be the farm's, alike from every replica: {alert}"
    );
    Some(alert)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_make_one_alert_that_ends_when_neither_sees_the_incident() {
    let test_deadline = Instant::now() + Duration::from_secs(90);
    let scratch = Scratch::new("alertmanager-fleet");
    let am = Alertmanager::start(scratch.path()).await;
    let farm = Farm::start(FarmConfig::new(2, StoreMode::PerNode))
        .await
        .expect("farm starts");
    let fleet = InProcessFleet::new();
    // The first replica to close re-sends every second; the other only every 30 s, so an
    // alert the first one ended would stay ended long enough to be seen.
    let mut first = Replica::start(&farm, &scratch, "first", am.addr, "1s", &fleet).await;
    let mut other = Replica::start(&farm, &scratch, "other", am.addr, "30s", &fleet).await;

    // 1. Both replicas see the incident; Alertmanager holds one alert for it, which starts when
    // the earlier of the two incidents did.
    let (first_opened, other_opened) = loop {
        if let (Some(a), Some(b)) = (
            first.lines("incident_opened").into_iter().next(),
            other.lines("incident_opened").into_iter().next(),
        ) {
            break (a, b);
        }
        assert!(
            Instant::now() < test_deadline,
            "both replicas must see the incident; opened: {:?} / {:?}",
            first.lines("incident_opened"),
            other.lines("incident_opened")
        );
        sleep(POLL).await;
    };
    assert_ne!(first_opened["incident_id"], other_opened["incident_id"]);
    let earliest = parse_time(&first_opened["started"]).min(parse_time(&other_opened["started"]));
    loop {
        let alert = farm_alert(&am).await;
        if let Some(a) = &alert {
            assert_eq!(a["status"]["state"], "active", "{a}");
            if parse_time(&a["startsAt"]) == earliest {
                break;
            }
        }
        assert!(
            Instant::now() < test_deadline,
            "no alert starting at the earlier incident's start {earliest:?}: {alert:?}"
        );
        sleep(POLL).await;
    }
    assert_eq!(fleet.open_count(), 2);

    // 2. The first replica's users leave; its incident resolves. The alert keeps firing: the
    // other replica still sees the incident. Watched until the first replica's own last
    // endsAt (three of its re-send periods) has passed.
    first.stop_users().await;
    let first_resolved_at = loop {
        let alert = farm_alert(&am).await;
        assert!(
            alert.is_some(),
            "the farm's alert ended while the other replica still sees the incident"
        );
        if !first.lines("incident_resolved").is_empty() {
            break Instant::now();
        }
        assert!(
            Instant::now() < test_deadline,
            "the first replica's incident never resolved; its log:\n{}",
            std::fs::read_to_string(&first.log).unwrap_or_default()
        );
        sleep(POLL).await;
    };
    let mut last_ends_at = SystemTime::UNIX_EPOCH;
    while first_resolved_at.elapsed() < Duration::from_secs(4) {
        let alert = farm_alert(&am).await.unwrap_or_else(|| {
            panic!("one replica's resolution ended the farm's alert while the other still sees the incident")
        });
        assert_eq!(alert["status"]["state"], "active", "{alert}");
        last_ends_at = last_ends_at.max(parse_time(&alert["endsAt"]));
        sleep(POLL).await;
    }
    assert!(
        other.lines("incident_resolved").is_empty(),
        "the other replica's users are still coming: its incident must still be open"
    );

    // 3. The other replica's users leave too; when its incident resolves, Alertmanager drops
    // the alert before the endsAt it last advertised: an explicit resolve, from the last one.
    other.stop_users().await;
    loop {
        let alert = farm_alert(&am).await;
        let Some(alert) = alert else { break };
        last_ends_at = last_ends_at.max(parse_time(&alert["endsAt"]));
        assert!(
            SystemTime::now() < last_ends_at && Instant::now() < test_deadline,
            "the alert was not resolved, only left to expire: {alert}"
        );
        sleep(POLL).await;
    }
    assert!(
        !other.lines("incident_resolved").is_empty(),
        "the alert ended before the last replica's incident did"
    );
    assert!(
        SystemTime::now() < last_ends_at,
        "the resolve did not reach Alertmanager"
    );
    assert_eq!(fleet.open_count(), 0);

    // Each replica's alert log has its own incident, opened and resolved.
    for r in [&first, &other] {
        let opened = r.lines("incident_opened");
        let resolved = r.lines("incident_resolved");
        assert_eq!(opened.len(), 1, "{opened:?}");
        assert_eq!(resolved.len(), 1, "{resolved:?}");
        assert_eq!(opened[0]["incident_id"], resolved[0]["incident_id"]);
    }

    first.proxy.shutdown().await;
    other.proxy.shutdown().await;
    farm.shutdown().await;
    drop(am);
}
