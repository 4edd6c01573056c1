//! Backends discovered by DNS, through the real proxy, with a DNS server started by the test
//! whose answers change mid-run: SRV records carrying the farm's port-0 ports, or A records
//! pointing at other loopback addresses on one port.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use sessionwatch_proxy::RunningProxy;
use sessionwatch_test_support::{
    DnsServer, Farm, FarmConfig, MeOutcome, StoreMode, UserClient, wait_until,
};
use sessionwatch_tests::{Scratch, config_toml, lines_of, metric_sum, start_proxy};

const SRV: &str = "_http._tcp.app.test";
const WAIT: Duration = Duration::from_secs(10);

/// The farm's node `i` as an SRV target: its own name, resolving to 127.0.0.1.
fn target(i: usize) -> String {
    format!("pod-{i}.app.test")
}

/// SRV answers of `nodes` of `farm`, each target with its A record.
fn publish(dns: &DnsServer, farms: &[(&Farm, usize)]) {
    let mut targets = Vec::new();
    for (farm, base) in farms {
        for (i, addr) in farm.addrs().into_iter().enumerate() {
            let name = target(base + i);
            dns.set_ips(&name, &[addr.ip()]);
            targets.push((name, addr.port()));
        }
    }
    let targets: Vec<(&str, u16)> = targets.iter().map(|(n, p)| (n.as_str(), *p)).collect();
    dns.set_srv(SRV, &targets);
}

/// A proxy whose only backends come from `entry` (a `[[backends]]` body), with `extra`.
async fn proxy(scratch: &Scratch, entry: &str, extra: &str) -> RunningProxy {
    let mut toml = config_toml(&[], "SID", &scratch.alert_log(), extra);
    toml.push_str(&format!("[[backends]]\n{entry}\nrefresh = \"100ms\"\n"));
    start_proxy(&toml).await
}

fn srv_entry(dns: &DnsServer) -> String {
    format!("srv = \"{SRV}\"\nresolver = \"{}\"", dns.addr())
}

fn name(addr: SocketAddr) -> String {
    addr.to_string()
}

/// A user signed in through the proxy, and the node that answered its first `/me`.
async fn signed_in(p: &RunningProxy) -> (UserClient, String) {
    let mut u = UserClient::new(p.addr(), "SID");
    u.login().await.unwrap();
    let (_, headers, _) = u.get("/me").await.unwrap();
    let node = headers["x-served-by"].to_str().unwrap().to_owned();
    (u, node)
}

fn lines(p: &RunningProxy, log: &Path, kind: &str) -> Vec<serde_json::Value> {
    p.flush_alerts();
    lines_of(log, kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_that_join_get_new_sessions_and_those_that_leave_redistribute_their_pins() {
    let farm = Farm::start(FarmConfig::new(3, StoreMode::PerNode))
        .await
        .unwrap();
    let addrs = farm.addrs();
    let dns = DnsServer::start().await.unwrap();
    // node-a and node-b to begin with.
    for (i, addr) in addrs.iter().enumerate().take(2) {
        dns.set_ips(&target(i), &[addr.ip()]);
    }
    let srv = |n: usize| {
        let t: Vec<(String, u16)> = (0..n).map(|i| (target(i), addrs[i].port())).collect();
        t
    };
    let set = |t: &[(String, u16)]| {
        let t: Vec<(&str, u16)> = t.iter().map(|(n, p)| (n.as_str(), *p)).collect();
        dns.set_srv(SRV, &t);
    };
    set(&srv(2));
    let scratch = Scratch::new("discovery-join-leave");
    let p = proxy(
        &scratch,
        &srv_entry(&dns),
        "[pin]\npolicy = \"learn\"\nwhen_unhealthy = \"redistribute\"\n",
    )
    .await;
    let mut first = vec![name(addrs[0]), name(addrs[1])];
    first.sort();
    assert_eq!(p.members(), first, "the farm, in name order");

    let mut users = Vec::new();
    for _ in 0..12 {
        users.push(signed_in(&p).await);
    }
    assert_eq!(farm.served(2), 0);

    // node-c joins: new sessions go to it too.
    dns.set_ips(&target(2), &[addrs[2].ip()]);
    set(&srv(3));
    assert!(wait_until(WAIT, || p.members().len() == 3).await);
    for _ in 0..12 {
        users.push(signed_in(&p).await);
    }
    assert!(farm.served(2) > 0, "the new pod gets new sessions");
    let joined = lines(&p, &scratch.alert_log(), "backend_joined");
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0]["backend"], name(addrs[2]));
    assert_eq!(joined[0]["members"], 3);

    // node-a leaves: it gets nothing more, and its users are sent elsewhere, counted.
    set(&[srv(3)[1].clone(), srv(3)[2].clone()]);
    assert!(wait_until(WAIT, || p.members().len() == 2).await);
    let served_a = farm.served(0);
    let on_a = users.iter().filter(|(_, n)| n == "node-a").count();
    assert!(on_a > 0);
    let mut relogged = 0;
    for (u, node) in &mut users {
        let outcome = u.me().await.unwrap();
        if node == "node-a" {
            // Another node does not know node-a's sessions (per-node store): logged out once.
            assert!(matches!(outcome, MeOutcome::LoggedOut { .. }));
            u.login().await.unwrap();
            relogged += 1;
            assert_eq!(u.me().await.unwrap(), MeOutcome::LoggedIn);
        } else {
            assert_eq!(outcome, MeOutcome::LoggedIn, "{node}'s users stay pinned");
        }
    }
    assert_eq!(relogged, on_a);
    assert_eq!(farm.served(0), served_a, "a pod that left gets no traffic");
    let metrics = p.metrics_text();
    assert_eq!(
        metric_sum(&metrics, "sessionwatch_pins_left_total", &[]),
        2.0 * on_a as f64,
        "each request of a session pinned to the pod that left is counted: the /me that found \
         it lost, and the login that still carried it; then the new session is pinned anew"
    );
    assert_eq!(
        metric_sum(&metrics, "sessionwatch_backends", &["state=\"left\""]),
        1.0
    );
    let left = lines(&p, &scratch.alert_log(), "backend_left");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["backend"], name(addrs[0]));
    p.shutdown().await;
}

/// A free port on 127.0.0.2 (also free, in practice, on the other loopback addresses).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind((Ipv4Addr::new(127, 0, 0, 2), 0)).unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_on_one_port_a_failing_server_and_two_replicas_name_the_farm_alike() {
    let port = free_port();
    let ips: Vec<IpAddr> = (2..=4)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
        .collect();
    let _farm = Farm::start(
        FarmConfig::new(3, StoreMode::Shared)
            .with_bind(ips.iter().map(|ip| SocketAddr::new(*ip, port))),
    )
    .await
    .unwrap();
    // Two replicas, each asking its own server, which lists the pods in other orders.
    let (one, two) = (
        DnsServer::start().await.unwrap(),
        DnsServer::start().await.unwrap(),
    );
    one.set_ips("app.test", &ips);
    two.set_ips("app.test", &[ips[2], ips[0], ips[1]]);
    let entry =
        |dns: &DnsServer| format!("dns = \"app.test:{port}\"\nresolver = \"{}\"", dns.addr());
    let (s1, s2) = (Scratch::new("discovery-a-1"), Scratch::new("discovery-a-2"));
    let p1 = proxy(&s1, &entry(&one), "").await;
    let p2 = proxy(&s2, &entry(&two), "").await;
    let expected: Vec<String> = ips.iter().map(|ip| format!("{ip}:{port}")).collect();
    assert_eq!(p1.members(), expected);
    assert_eq!(
        p2.members(),
        expected,
        "names and order do not depend on the answer's order"
    );

    // The server fails: the last known set stays, and traffic flows.
    one.set_failing(true);
    let asked = one.queries();
    assert!(wait_until(WAIT, || one.queries() >= asked + 3).await);
    assert_eq!(p1.members(), expected);
    for _ in 0..6 {
        let (mut u, _) = signed_in(&p1).await;
        assert_eq!(u.me().await.unwrap(), MeOutcome::LoggedIn);
    }
    let metrics = p1.metrics_text();
    let target = format!("target=\"app.test:{port}\"");
    assert!(
        metric_sum(
            &metrics,
            "sessionwatch_discovery_failures_total",
            &[&target]
        ) >= 2.0
    );
    assert_eq!(
        metric_sum(&metrics, "sessionwatch_discovery_up", &[&target]),
        0.0
    );
    assert!(lines(&p1, &s1.alert_log(), "backend_left").is_empty());

    // Back, with one pod fewer.
    one.set_ips("app.test", &ips[1..]);
    one.set_failing(false);
    assert!(wait_until(WAIT, || p1.members().len() == 2).await);
    assert_eq!(p1.members(), expected[1..]);
    p1.shutdown().await;
    p2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_to_pods_that_do_not_share_the_store_is_named_in_the_hint() {
    // Three pods sharing a store; the rollout brings two whose store is their own.
    let old = Farm::start(FarmConfig::new(3, StoreMode::Shared))
        .await
        .unwrap();
    let new = Farm::start(
        FarmConfig::new(2, StoreMode::Shared).with_node_names(["node-new-1", "node-new-2"]),
    )
    .await
    .unwrap();
    let dns = DnsServer::start().await.unwrap();
    publish(&dns, &[(&old, 0)]);
    let scratch = Scratch::new("discovery-rollout");
    let p = proxy(
        &scratch,
        &srv_entry(&dns),
        "[pin]\npolicy = \"learn\"\nwhen_unhealthy = \"redistribute\"\n\
         [incident]\nmax_reset_lines_per_sec = 1000000\n",
    )
    .await;
    let mut users = Vec::new();
    for _ in 0..60 {
        users.push(signed_in(&p).await);
    }
    for (u, _) in &mut users {
        assert_eq!(u.me().await.unwrap(), MeOutcome::LoggedIn);
    }
    assert!(!p.incident_open(), "a shared store loses nobody");

    // The rollout: node-b and node-c are replaced by the new pods.
    let (kept, new_addrs) = (old.addrs()[0], new.addrs());
    dns.set_ips(&target(10), &[new_addrs[0].ip()]);
    dns.set_ips(&target(11), &[new_addrs[1].ip()]);
    dns.set_srv(
        SRV,
        &[
            (&target(0), kept.port()),
            (&target(10), new_addrs[0].port()),
            (&target(11), new_addrs[1].port()),
        ],
    );
    assert!(
        wait_until(WAIT, || p.members().contains(&name(new_addrs[1]))
            && p.members().len() == 3)
        .await
    );
    let moved = users.iter().filter(|(_, n)| n != "node-a").count();
    assert!(moved > 20, "{moved} users were on the pods that left");
    for (u, _) in &mut users {
        let _ = u.me().await.unwrap();
    }
    assert!(wait_until(WAIT, || p.incident_open()).await, "no incident");
    let metrics = p.metrics_text();
    assert_eq!(
        metric_sum(&metrics, "sessionwatch_pins_left_total", &[]),
        moved as f64,
        "every user pinned to a removed pod is redistributed once, and counted"
    );
    let opened = lines(&p, &scratch.alert_log(), "incident_opened");
    assert_eq!(opened.len(), 1);
    let hint = &opened[0]["hint"];
    assert_eq!(hint["code"], "new_backends_differ", "{hint}");
    let text = hint["text"].as_str().unwrap();
    let (n1, n2) = (name(new_addrs[0]), name(new_addrs[1]));
    let (first, second) = if n1 < n2 { (n1, n2) } else { (n2, n1) };
    assert!(
        text.contains(&format!("after {first} and {second} joined")),
        "{text}"
    );
    assert!(text.contains("the new pods do not share the session store or keys"));
    let left: Vec<String> = lines(&p, &scratch.alert_log(), "backend_left")
        .iter()
        .map(|l| l["backend"].as_str().unwrap().to_owned())
        .collect();
    let mut gone = vec![name(old.addrs()[1]), name(old.addrs()[2])];
    gone.sort();
    assert_eq!(left, gone);
    p.shutdown().await;
}

/// Keeps every cookie it is given and sends them all back.
#[derive(Default)]
struct Browser {
    jar: std::collections::BTreeMap<String, String>,
}

impl Browser {
    async fn send(&mut self, to: SocketAddr, method: http::Method, path: &str) -> (u16, String) {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("http://{to}{path}"))
            .header("content-type", "application/x-www-form-urlencoded");
        if !self.jar.is_empty() {
            let pairs: Vec<String> = self.jar.iter().map(|(n, v)| format!("{n}={v}")).collect();
            req = req.header("cookie", pairs.join("; "));
        }
        let body = http_body_util::Full::new(bytes::Bytes::from_static(b"user=u"));
        let client = sessionwatch_test_support::shared_client();
        let resp = client.request(req.body(body).unwrap()).await.unwrap();
        for line in resp.headers().get_all("set-cookie") {
            let line = line.to_str().unwrap();
            let (name, rest) = line.split_once('=').unwrap();
            let value = rest.split(';').next().unwrap().trim();
            if value.is_empty() || line.contains("Max-Age=0") {
                self.jar.remove(name);
            } else {
                self.jar.insert(name.to_owned(), value.to_owned());
            }
        }
        let node = resp
            .headers()
            .get("x-served-by")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (resp.status().as_u16(), node)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_naming_a_pod_this_replica_has_not_resolved_makes_it_look_again() {
    let farm = Farm::start(FarmConfig::new(2, StoreMode::PerNode))
        .await
        .unwrap();
    let (dns_a, dns_b) = (
        DnsServer::start().await.unwrap(),
        DnsServer::start().await.unwrap(),
    );
    publish(&dns_a, &[(&farm, 0)]);
    // B's server does not list node-a yet.
    publish(&dns_b, &[(&farm, 0)]);
    let node_b = farm.addrs()[1];
    dns_b.set_srv(SRV, &[(&target(1), node_b.port())]);
    // Refreshes far apart: only a wake explains a question before the test ends.
    let extra = "[session]\ncookies = [{ name = \"SID\" }]\n\
                 fingerprint_key = \"a fleet's shared fingerprint key\"\naffinity_cookie = true\n\
                 [pin]\npolicy = \"learn\"\n";
    let entry = |dns: &DnsServer| format!("{}\nrefresh = \"60s\"", srv_entry(dns));
    let (sa, sb) = (
        Scratch::new("discovery-wake-a"),
        Scratch::new("discovery-wake-b"),
    );
    let mut toml_a = config_toml(&[], "SID", &sa.alert_log(), extra);
    toml_a.push_str(&format!("[[backends]]\n{}\n", entry(&dns_a)));
    let mut toml_b = config_toml(&[], "SID", &sb.alert_log(), extra);
    toml_b.push_str(&format!("[[backends]]\n{}\n", entry(&dns_b)));
    let (a, b) = (start_proxy(&toml_a).await, start_proxy(&toml_b).await);
    assert_eq!(b.members(), [name(node_b)]);

    // A user whose session node-a issued, through A.
    let mut user = Browser::default();
    for _ in 0..4 {
        user = Browser::default();
        if user.send(a.addr(), http::Method::POST, "/login").await.1 == "node-a" {
            break;
        }
    }
    assert!(user.jar.contains_key("swaff"), "{:?}", user.jar.keys());
    assert_eq!(
        user.send(a.addr(), http::Method::GET, "/me").await,
        (200, "node-a".into())
    );

    // Now node-a is published to B too, but B would see it only in a minute.
    publish(&dns_b, &[(&farm, 0)]);
    let asked = dns_b.queries();
    let (status, _) = user.send(b.addr(), http::Method::GET, "/me").await;
    assert_ne!(status, 200, "B cannot reach a pod it does not know");
    let metrics = b.metrics_text();
    assert_eq!(
        metric_sum(
            &metrics,
            "sessionwatch_affinity_cookies_total",
            &["result=\"unresolved\""]
        ),
        1.0
    );
    assert!(
        wait_until(WAIT, || b.members().len() == 2).await,
        "the unknown tag made B resolve again ({} questions before, {} now)",
        asked,
        dns_b.queries()
    );
    b.flush_alerts();
    assert!(
        lines_of(&sb.alert_log(), "session_reset").is_empty(),
        "an unresolved issuer is no verdict"
    );
    // Once resolved, the cookie pins the session to its pod on B as on A.
    assert_eq!(
        user.send(b.addr(), http::Method::GET, "/me").await,
        (200, "node-a".into())
    );
    assert_eq!(
        metric_sum(
            &b.metrics_text(),
            "sessionwatch_affinity_cookies_total",
            &["result=\"adopted\""]
        ),
        1.0
    );
    a.shutdown().await;
    b.shutdown().await;
}
