//! The real PHP farm: the command on the per-node farm (exit 1, the lost pairs), the shared one
//! (exit 0) and with a node stopped (exit 2); `POST /probe` on the same three (422, 200, 503);
//! and the front door, through a proxy that pins and one that does not.

use super::*;

#[test]
fn on_the_per_node_php_farm_the_probe_exits_1_with_the_lost_pairs() {
    let scratch = Scratch::new("probe-php-per-node");
    let farm = PhpFarm::start(&scratch, Store::PerNode, false);
    let file = write(&scratch, &config(&farm.backends(), "php", &php_probe()));
    let run = probe(&file, &["--json"], &[]);
    assert_eq!(run.code, 1, "{run:#?}\n{}", farm.logs());
    assert_store_not_shared(&run.json(), "php-a", "php-b");

    // The table for people says the same.
    let run = probe(&file, &[], &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stdout.contains("LOST 3/3 (login_redirect)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("hint (store_not_shared): every loss is a session issued by one backend"),
        "{}",
        run.stdout
    );
}

#[test]
fn on_the_shared_php_farm_the_probe_exits_0() {
    let scratch = Scratch::new("probe-php-shared");
    let farm = PhpFarm::start(&scratch, Store::Shared, false);
    let file = write(&scratch, &config(&farm.backends(), "php", &php_probe()));
    let run = probe(&file, &["--json"], &[]);
    assert_eq!(run.code, 0, "{run:#?}\n{}", farm.logs());
    let report = run.json();
    assert_eq!(report["result"], "kept");
    assert_eq!(lost_pairs(&report), Vec::<(String, String)>::new());
    assert_eq!(
        report["pairs"].as_array().map(Vec::len),
        Some(4),
        "{report}"
    );
    for p in report["pairs"].as_array().into_iter().flatten() {
        assert_eq!(p["kept"], true, "{p}");
        assert_eq!(p["status"], 200, "{p}");
    }
    assert_eq!(report["hint"], Value::Null);
    assert_fingerprints(&report);
    let run = probe(&file, &[], &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stdout.contains("kept: every session survived"),
        "{}",
        run.stdout
    );
}

#[test]
fn with_a_php_node_down_the_probe_exits_2_and_says_which() {
    let scratch = Scratch::new("probe-php-down");
    let mut farm = PhpFarm::start(&scratch, Store::Shared, false);
    let file = write(&scratch, &config(&farm.backends(), "php", &php_probe()));
    farm.stop_node("php-b");
    let run = probe(&file, &["--json"], &[]);
    assert_eq!(run.code, 2, "{run:#?}");
    let report = run.json();
    assert_eq!(report["result"], "failed");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(error.contains("php-b is unreachable"), "{report}");
    assert!(
        run.stderr.contains("could not run: php-b is unreachable"),
        "{}",
        run.stderr
    );
}

async fn php_proxy(farm: &PhpFarm, scratch: &Scratch) -> sessionwatch_proxy::RunningProxy {
    proxy_with_sections(farm, &scratch.alert_log(), "off", "", &php_probe()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_probe_answers_422_with_the_lost_pairs_on_the_per_node_farm() {
    let scratch = Scratch::new("probe-endpoint-per-node");
    let farm = PhpFarm::start(&scratch, Store::PerNode, false);
    let proxy = php_proxy(&farm, &scratch).await;
    let admin = proxy.admin_addr().expect("admin listener");
    let (status, _, report) = post_probe(admin, http::Method::POST).await;
    assert_eq!(status, 422, "{report}\n{}", farm.logs());
    assert_store_not_shared(&report, "php-a", "php-b");
    // Only POST runs it.
    let (status, allow, _) = post_probe(admin, http::Method::GET).await;
    assert_eq!((status, allow.as_deref()), (405, Some("POST")));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_probe_answers_200_on_the_shared_farm_and_503_with_a_node_down() {
    let scratch = Scratch::new("probe-endpoint-shared");
    let mut farm = PhpFarm::start(&scratch, Store::Shared, false);
    let proxy = php_proxy(&farm, &scratch).await;
    let admin = proxy.admin_addr().expect("admin listener");
    let (status, _, report) = post_probe(admin, http::Method::POST).await;
    assert_eq!(status, 200, "{report}\n{}", farm.logs());
    assert_eq!(report["result"], "kept");
    assert_eq!(report["backends"], serde_json::json!(["php-a", "php-b"]));
    assert_eq!(lost_pairs(&report), Vec::<(String, String)>::new());

    farm.stop_node("php-b");
    let (status, _, report) = post_probe(admin, http::Method::POST).await;
    assert_eq!(status, 503, "{report}");
    assert_eq!(report["result"], "failed");
    assert!(
        report["error"]
            .as_str()
            .unwrap_or_default()
            .contains("php-b is unreachable"),
        "{report}"
    );
    proxy.shutdown().await;
}

#[test]
fn through_the_front_door_the_probe_counts_the_losses_of_one_session() {
    let scratch = Scratch::new("probe-front-door");
    let farm = PhpFarm::start(&scratch, Store::PerNode, false);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let file = write(&scratch, &config(&farm.backends(), "php", &php_probe()));
    for (pin, lost_some) in [("off", true), ("learn", false)] {
        let log = scratch.path().join(format!("alerts-{pin}.jsonl"));
        let proxy = rt.block_on(proxy_with_sections(&farm, &log, pin, "", ""));
        let door = format!("http://{}", proxy.addr());
        let args = [
            "--json",
            "--mode",
            "front-door",
            "--front-door",
            &door,
            "--requests",
            "10",
        ];
        let run = probe(&file, &args, &[]);
        let report = run.json();
        let front = &report["front_door"];
        assert_eq!(front["requests"], 10, "{run:#?}");
        assert_eq!(
            report["pairs"],
            serde_json::json!([]),
            "no matrix in this mode"
        );
        if lost_some {
            // Round robin over a farm whose nodes do not share sessions: the one session is
            // lost on every request the other node serves.
            assert_eq!(run.code, 1, "{run:#?}");
            let lost = front["lost"].as_u64().unwrap_or(0);
            assert!((1..10).contains(&lost), "{front}");
            assert_eq!(front["signals"]["login_redirect"], lost, "{front}");
        } else {
            // Pinned to its issuer, the session survives the same farm.
            assert_eq!(run.code, 0, "{run:#?}");
            assert_eq!(front["lost"], 0, "{front}");
        }
        rt.block_on(proxy.shutdown());
    }
}
