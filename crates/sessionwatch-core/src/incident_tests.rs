//! Each hint built from synthetic traffic, a noisy case with no confident hint, and the
//! open / update / resolve state machine.

use std::time::Duration;

use crate::*;

const A: BackendId = BackendId(0);
const B: BackendId = BackendId(1);
const C: BackendId = BackendId(2);

fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(1_795_478_400_000 + ms)
}

fn fp(i: u64) -> ShortFingerprint {
    Fingerprint(u128::from(i)).short()
}

/// `requests` requests on the pair at `now`, the first `resets` of them lost.
fn traffic(
    tr: &mut IncidentTracker,
    issuer: BackendId,
    server: BackendId,
    requests: u64,
    resets: u64,
    now: Timestamp,
) {
    for i in 0..requests {
        tr.record_request(issuer, server, now);
        if i < resets {
            tr.record_reset(
                issuer,
                server,
                Duration::from_millis(500 + i * 37),
                Duration::from_secs(5 + i),
                fp(i),
                now,
            );
        }
    }
}

fn names(b: BackendId) -> String {
    ["node-a", "node-b", "node-c"][b.index()].to_owned()
}

#[test]
fn losses_only_across_backends_mean_the_store_is_not_shared() {
    let mut tr = IncidentTracker::new(IncidentConfig::default(), 2);
    // Round robin over a per-node store: half the requests land on the issuer.
    traffic(&mut tr, A, A, 50, 0, t(0));
    traffic(&mut tr, A, B, 50, 50, t(0));
    traffic(&mut tr, B, A, 50, 50, t(0));
    traffic(&mut tr, B, B, 50, 0, t(0));
    let Some(IncidentEvent::Opened(s)) = tr.evaluate(t(100)) else {
        panic!("no incident opened");
    };
    assert_eq!(s.hint, Hint::StoreNotShared);
    assert!((s.share - 0.5).abs() < 1e-9);
    assert_eq!(s.dominant, None, "two pairs share the losses");
    assert!(s.hint.text(&names).contains("not shared across the farm"));
    assert_eq!(s.samples.len(), 5);
}

#[test]
fn one_odd_backend_is_named() {
    let mut tr = IncidentTracker::new(IncidentConfig::default(), 3);
    for (i, s) in [(A, B), (B, A)] {
        traffic(&mut tr, i, s, 30, 0, t(0));
    }
    // C's keys differ: nobody reads C's sessions and C reads nobody's.
    for (i, s) in [(A, C), (B, C), (C, A), (C, B)] {
        traffic(&mut tr, i, s, 30, 30, t(0));
    }
    for b in [A, B, C] {
        traffic(&mut tr, b, b, 30, 0, t(0));
    }
    let s = tr.snapshot(t(100));
    assert_eq!(
        s.hint,
        Hint::BackendDiffers {
            backend: C,
            direction: Direction::Both
        }
    );
    assert!(
        s.hint
            .text(&names)
            .contains("node-c's configuration differs")
    );

    // Only C rejects others (its reads fail; its own sessions work elsewhere).
    let mut tr = IncidentTracker::new(IncidentConfig::default(), 3);
    for (i, s) in [(A, B), (B, A), (C, A), (C, B)] {
        traffic(&mut tr, i, s, 30, 0, t(0));
    }
    for (i, s) in [(A, C), (B, C)] {
        traffic(&mut tr, i, s, 30, 30, t(0));
    }
    assert_eq!(
        tr.snapshot(t(100)).hint,
        Hint::BackendDiffers {
            backend: C,
            direction: Direction::RejectsOthers
        }
    );
}

#[test]
fn same_backend_losses_after_a_restart_mean_an_in_process_store() {
    let mut tr = IncidentTracker::new(IncidentConfig::default(), 2);
    // Sessions issued at t=0..; node-b comes back at 20 s; its old sessions are lost on it.
    tr.note_restart(B, t(20_000));
    for i in 0..30 {
        tr.record_request(B, B, t(21_000));
        tr.record_reset(
            B,
            B,
            Duration::from_secs(2),
            Duration::from_secs(15 + i % 5),
            fp(i),
            t(21_000),
        );
        tr.record_request(A, A, t(21_000));
    }
    assert_eq!(
        tr.snapshot(t(21_000)).hint,
        Hint::LostOnRestart { backend: B }
    );

    // The same losses with no restart seen: no confident guess.
    let mut tr = IncidentTracker::new(IncidentConfig::default(), 2);
    for i in 0..30 {
        tr.record_request(B, B, t(21_000));
        tr.record_reset(
            B,
            B,
            Duration::from_secs(2),
            Duration::from_secs(15 + i % 5),
            fp(i),
            t(21_000),
        );
    }
    assert!(matches!(
        tr.snapshot(t(21_000)).hint,
        Hint::Unclear { same: 30, cross: 0 }
    ));
}

#[test]
fn losses_at_one_idle_time_mean_a_short_timeout() {
    let mut tr = IncidentTracker::new(IncidentConfig::default(), 2);
    for i in 0..20u64 {
        let (issuer, server) = if i % 2 == 0 { (A, B) } else { (B, B) };
        tr.record_request(issuer, server, t(1000));
        tr.record_reset(
            issuer,
            server,
            Duration::from_secs(20 * 60 + i),
            Duration::from_secs(3600 + i * 300),
            fp(i),
            t(1000),
        );
    }
    for _ in 0..100 {
        tr.record_request(A, A, t(1000));
    }
    let s = tr.snapshot(t(1000));
    assert!(
        matches!(s.hint, Hint::Timeout { idle: true, at } if at.as_secs() / 60 == 20),
        "{:?}",
        s.hint
    );
    assert!(s.hint.text(&names).contains("timeout is shorter"));
}

#[test]
fn a_noisy_mixed_pattern_gives_no_confident_hint() {
    let mut tr = IncidentTracker::new(IncidentConfig::default(), 3);
    // A little loss everywhere, some cross, some same, short idle times: nothing stands out.
    let pairs = [
        (A, A, 40, 6),
        (A, B, 40, 5),
        (A, C, 40, 3),
        (B, A, 40, 4),
        (B, B, 40, 5),
        (B, C, 40, 2),
        (C, A, 40, 6),
        (C, B, 40, 3),
        (C, C, 40, 4),
    ];
    for (i, s, r, l) in pairs {
        traffic(&mut tr, i, s, r, l, t(0));
    }
    let s = tr.snapshot(t(10));
    assert!(matches!(s.hint, Hint::Unclear { .. }), "{:?}", s.hint);
    assert!(s.hint.text(&names).contains("no single pattern"));
}

#[test]
fn thresholds_keep_a_healthy_farm_quiet() {
    let mut tr = IncidentTracker::new(IncidentConfig::default(), 2);
    traffic(&mut tr, A, B, 1000, 2, t(0));
    assert_eq!(tr.evaluate(t(500)), None, "2 resets are below min_resets");
    let mut tr = IncidentTracker::new(IncidentConfig::default(), 2);
    traffic(&mut tr, A, B, 10, 8, t(0));
    assert_eq!(
        tr.evaluate(t(500)),
        None,
        "10 requests are below min_requests"
    );
}

#[test]
fn opens_updates_resolves_and_rate_limits_lines() {
    let cfg = IncidentConfig {
        max_reset_lines_per_sec: 3,
        ..IncidentConfig::default()
    };
    let mut tr = IncidentTracker::new(cfg, 2);
    traffic(&mut tr, A, B, 40, 20, t(0));
    assert!(matches!(tr.evaluate(t(0)), Some(IncidentEvent::Opened(_))));
    assert!(tr.is_open());
    // While open, at most 3 lines a second; the rest are counted.
    let allowed: Vec<bool> = (0..5)
        .map(|i| tr.record_reset(A, B, Duration::ZERO, Duration::ZERO, fp(i), t(2000)))
        .collect();
    assert_eq!(allowed, vec![true, true, true, false, false]);
    assert!(
        tr.record_reset(A, B, Duration::ZERO, Duration::ZERO, fp(9), t(3000)),
        "a new second"
    );
    assert_eq!(tr.evaluate(t(5_000)), None, "no update before update_every");
    let Some(IncidentEvent::Updated(u)) = tr.evaluate(t(10_000)) else {
        panic!("expected an update")
    };
    assert_eq!(u.suppressed, 2);
    assert_eq!(u.total_resets, 20 + 6);
    // The window (30 s) empties; the share stays below for resolve_after (30 s).
    traffic(&mut tr, A, A, 100, 0, t(40_000));
    assert!(!matches!(
        tr.evaluate(t(40_000)),
        Some(IncidentEvent::Resolved(_))
    ));
    let mut resolved = None;
    for s in 41..=75 {
        traffic(&mut tr, A, A, 10, 0, t(s * 1000));
        if let Some(IncidentEvent::Resolved(r)) = tr.evaluate(t(s * 1000)) {
            resolved = Some((s, r));
            break;
        }
    }
    let (at, r) = resolved.expect("resolved");
    assert_eq!(at, 70, "30 s after the share first fell below");
    assert_eq!(r.resets, 0);
    assert!(!tr.is_open());
}

const D: BackendId = BackendId(3);
const E: BackendId = BackendId(4);

fn pods(b: BackendId) -> String {
    [
        "node-a",
        "node-b",
        "10.1.2.7:8080",
        "10.1.2.8:8080",
        "10.1.2.9:8080",
    ][b.index()]
    .to_owned()
}

/// A farm of node-a, node-b and 10.1.2.9:8080 (E, which joined at 0 s), where C and D join at
/// `joined` ms. From `began` ms on, `rejected` sessions issued by the older backends are lost on
/// C and D, and `other` sessions of node-a's are lost on node-b; the rest of the traffic is
/// clean.
fn rollout(joined: u64, began: u64, rejected: u64, other: u64) -> IncidentTracker {
    let mut tr = IncidentTracker::new(IncidentConfig::default(), 5);
    tr.note_joined(E, t(0));
    tr.note_joined(C, t(joined));
    tr.note_joined(D, t(joined));
    for b in [A, B, C, D, E] {
        traffic(&mut tr, b, b, 20, 0, t(joined));
    }
    traffic(&mut tr, A, C, rejected / 2, rejected / 2, t(began));
    traffic(
        &mut tr,
        E,
        D,
        rejected - rejected / 2,
        rejected - rejected / 2,
        t(began),
    );
    traffic(&mut tr, A, B, other + 20, other, t(began));
    tr
}

#[test]
fn resets_soon_after_backends_joined_on_the_older_ones_sessions_mean_a_rollout() {
    // Joined at 50 s, resets from 62 s: 80 of 100 resets are the older backends' sessions
    // rejected by the new ones.
    let tr = rollout(50_000, 62_000, 80, 20);
    let s = tr.snapshot(t(63_000));
    assert_eq!(
        s.hint,
        Hint::NewBackendsDiffer {
            joined: vec![C, D],
            after: Duration::from_secs(12)
        }
    );
    assert_eq!(s.hint.code(), "new_backends_differ");
    // Exactly the two new backends: not E, which joined 62 s before the resets began.
    assert_eq!(
        s.hint.text(&pods),
        "resets began 12 s after 10.1.2.7:8080 and 10.1.2.8:8080 joined; sessions issued by the \
         other backends are rejected by them: the new pods do not share the session store or keys"
    );
    let mut tr = tr;
    let Some(IncidentEvent::Opened(o)) = tr.evaluate(t(63_000)) else {
        panic!("no incident opened");
    };
    assert_eq!(o.hint.code(), "new_backends_differ");
}

#[test]
fn a_rollout_just_under_four_fifths_of_the_resets_is_not_named() {
    let s = rollout(50_000, 62_000, 79, 21).snapshot(t(63_000));
    assert!(
        !matches!(s.hint, Hint::NewBackendsDiffer { .. }),
        "{:?}",
        s.hint
    );
}

#[test]
fn resets_that_began_over_a_minute_after_the_join_are_not_the_rollout() {
    let s = rollout(50_000, 111_000, 100, 0).snapshot(t(112_000));
    assert!(
        !matches!(s.hint, Hint::NewBackendsDiffer { .. }),
        "{:?}",
        s.hint
    );
    // At a minute, still the rollout.
    let s = rollout(50_000, 110_000, 100, 0).snapshot(t(111_000));
    assert_eq!(s.hint.code(), "new_backends_differ", "{:?}", s.hint);
}

#[test]
fn losses_of_the_new_backends_sessions_are_not_the_rollout() {
    let mut tr = IncidentTracker::new(IncidentConfig::default(), 4);
    tr.note_joined(C, t(50_000));
    tr.note_joined(D, t(50_000));
    for b in [A, B, C, D] {
        traffic(&mut tr, b, b, 20, 0, t(50_000));
    }
    // The older backends reject what the new ones issued; the new ones lose a few.
    traffic(&mut tr, C, A, 50, 50, t(62_000));
    traffic(&mut tr, D, B, 50, 50, t(62_000));
    traffic(&mut tr, A, C, 50, 5, t(62_000));
    let s = tr.snapshot(t(63_000));
    assert!(
        !matches!(s.hint, Hint::NewBackendsDiffer { .. }),
        "{:?}",
        s.hint
    );
}

#[test]
fn the_seconds_count_from_the_last_join_and_one_new_backend_reads_singular() {
    let mut tr = IncidentTracker::new(IncidentConfig::default(), 3);
    for (i, s) in [(A, B), (B, A), (A, A), (B, B)] {
        traffic(&mut tr, i, s, 30, 0, t(10_000));
    }
    // Without the join, the same losses read as one odd backend; a join explains them better.
    let mut plain = tr.clone();
    tr.note_joined(C, t(20_000));
    for (i, s) in [(A, C), (B, C)] {
        traffic(&mut plain, i, s, 30, 30, t(27_400));
        traffic(&mut tr, i, s, 30, 30, t(27_400));
    }
    assert_eq!(
        plain.snapshot(t(28_000)).hint,
        Hint::BackendDiffers {
            backend: C,
            direction: Direction::RejectsOthers
        }
    );
    let s = tr.snapshot(t(28_000));
    assert_eq!(
        s.hint.text(&pods),
        "resets began 7 s after 10.1.2.7:8080 joined; sessions issued by the other backends are \
         rejected by it: the new pod does not share the session store or keys"
    );

    // Two joins five seconds apart: counted from the later one.
    let mut tr = IncidentTracker::new(IncidentConfig::default(), 4);
    tr.note_joined(C, t(20_000));
    tr.note_joined(D, t(25_000));
    traffic(&mut tr, A, C, 30, 30, t(37_000));
    traffic(&mut tr, B, D, 30, 30, t(38_000));
    assert_eq!(
        tr.snapshot(t(38_000)).hint,
        Hint::NewBackendsDiffer {
            joined: vec![C, D],
            after: Duration::from_secs(12)
        }
    );
}

#[test]
fn a_stray_reset_after_an_older_join_does_not_hide_a_rollout() {
    let mut tr = IncidentTracker::new(IncidentConfig::default(), 4);
    // C joined at 0 s and lost one session at 10 s; D's rollout is at 100 s.
    tr.note_joined(C, t(0));
    traffic(&mut tr, A, C, 1, 1, t(10_000));
    tr.note_joined(D, t(100_000));
    traffic(&mut tr, A, D, 30, 30, t(103_000));
    traffic(&mut tr, B, D, 30, 30, t(103_000));
    traffic(&mut tr, A, B, 30, 0, t(103_000));
    assert_eq!(
        tr.snapshot(t(104_000)).hint,
        Hint::NewBackendsDiffer {
            joined: vec![D],
            after: Duration::from_secs(3)
        }
    );
}

#[test]
fn replicas_that_share_their_window_counts_open_on_the_fleets_traffic() {
    // Three replicas each see a third of a per-node farm's losses: 3 resets each, under
    // min_resets (5) alone.
    let mut replicas: Vec<IncidentTracker> = (0..3)
        .map(|_| IncidentTracker::new(IncidentConfig::default(), 2))
        .collect();
    for tr in &mut replicas {
        traffic(tr, A, A, 4, 0, t(0));
        traffic(tr, A, B, 3, 3, t(0));
    }
    for tr in &mut replicas {
        assert_eq!(
            tr.clone().evaluate(t(100)),
            None,
            "one replica alone stays quiet"
        );
    }
    let own: Vec<WindowCounts> = replicas.iter().map(|tr| tr.own_counts(t(100))).collect();
    for (i, tr) in replicas.iter_mut().enumerate() {
        let mut peers = WindowCounts {
            requests: vec![0; 4],
            resets: vec![0; 4],
        };
        for (_, counts) in own.iter().enumerate().filter(|(j, _)| *j != i) {
            for (t, v) in peers.requests.iter_mut().zip(&counts.requests) {
                *t += v;
            }
            for (t, v) in peers.resets.iter_mut().zip(&counts.resets) {
                *t += v;
            }
        }
        tr.set_peer_counts(Some(peers));
        let Some(IncidentEvent::Opened(s)) = tr.evaluate(t(100)) else {
            panic!("replica {i} did not open on the fleet's counts");
        };
        assert_eq!((s.requests, s.resets), (21, 9));
        assert_eq!(s.hint, Hint::StoreNotShared);
        // Its own counts are still its own: what it shares does not echo the others'.
        assert_eq!(tr.own_counts(t(100)), own[i]);
    }
}

#[test]
fn peer_counts_for_another_farm_size_are_ignored() {
    let mut tr = IncidentTracker::new(IncidentConfig::default(), 2);
    traffic(&mut tr, A, B, 3, 3, t(0));
    tr.set_peer_counts(Some(WindowCounts {
        requests: vec![100; 9],
        resets: vec![100; 9],
    }));
    assert_eq!(tr.evaluate(t(100)), None);
    assert_eq!(tr.snapshot(t(100)).requests, 3);
}

#[test]
fn a_tracker_grows_for_backends_that_join_and_keeps_its_counts() {
    // Made for node-a and node-b; two pods join at run time, past its size.
    let mut tr = IncidentTracker::new(IncidentConfig::default(), 2);
    traffic(&mut tr, A, B, 30, 2, t(40_000));
    tr.record_request(A, C, t(45_000));
    assert!(
        tr.snapshot(t(45_000)).matrix.iter().all(|p| p.server != C),
        "a backend past the size is not counted until it joins"
    );
    tr.note_joined(C, t(50_000));
    tr.note_joined(D, t(50_000));
    // The counts from before the growth are where they were.
    let before = tr.snapshot(t(50_000));
    let ab = before
        .matrix
        .iter()
        .find(|p| (p.issuer, p.server) == (A, B));
    assert_eq!(ab.map(|p| (p.requests, p.resets)), Some((30, 2)));
    // And the new backends' rejections make the rollout hint.
    for b in [A, B, C, D] {
        traffic(&mut tr, b, b, 20, 0, t(50_000));
    }
    traffic(&mut tr, A, C, 40, 40, t(62_000));
    traffic(&mut tr, B, D, 40, 40, t(62_000));
    assert_eq!(
        tr.snapshot(t(63_000)).hint,
        Hint::NewBackendsDiffer {
            joined: vec![C, D],
            after: Duration::from_secs(12)
        }
    );
}

#[test]
fn an_incident_that_recovers_keeps_its_cause_and_resolves_with_its_whole_story() {
    let mut tr = IncidentTracker::new(IncidentConfig::default(), 2);
    // A per-node store: every cross-backend request loses its session.
    traffic(&mut tr, A, A, 50, 0, t(0));
    traffic(&mut tr, A, B, 50, 50, t(0));
    traffic(&mut tr, B, A, 50, 50, t(0));
    traffic(&mut tr, B, B, 50, 0, t(0));
    let Some(IncidentEvent::Opened(opened)) = tr.evaluate(t(100)) else {
        panic!("no incident opened");
    };
    assert_eq!(opened.hint, Hint::StoreNotShared);
    // Five more seconds broken, then the store is shared and users keep browsing.
    for sec in 1..=5 {
        traffic(&mut tr, A, B, 20, 20, t(sec * 1000));
        traffic(&mut tr, A, A, 20, 0, t(sec * 1000));
        assert!(
            tr.evaluate(t(sec * 1000 + 100))
                .is_none_or(|e| matches!(e, IncidentEvent::Updated(_)))
        );
    }
    let mut updates = Vec::new();
    let mut resolved = None;
    for sec in 6..=120 {
        for (i, s) in [(A, A), (A, B), (B, A), (B, B)] {
            traffic(&mut tr, i, s, 10, 0, t(sec * 1000));
        }
        match tr.evaluate(t(sec * 1000 + 100)) {
            Some(IncidentEvent::Updated(s)) => updates.push(s),
            Some(IncidentEvent::Resolved(s)) => {
                resolved = Some((sec, s));
                break;
            }
            Some(IncidentEvent::Opened(_)) => panic!("a second incident opened"),
            None => {}
        }
    }
    // The window emptied long before the end: judged on it alone, the cause would be `unclear`.
    assert!(updates.iter().any(|u| u.resets == 0), "{updates:?}");
    for u in &updates {
        assert_eq!(u.hint, Hint::StoreNotShared, "{u:?}");
    }
    let (sec, end) = resolved.expect("the incident resolves once the farm is fixed");
    assert_eq!(end.hint, Hint::StoreNotShared);
    assert_eq!(end.resets, 0, "the last window saw no loss");
    assert_eq!(end.started, t(100));
    assert_eq!(end.ended, Some(t(sec * 1000 + 100)));
    let life = end.life.expect("the resolved incident's life");
    assert_eq!(life.resets, 100 + 5 * 20);
    assert_eq!(life.requests, 200 + 5 * 40 + (sec - 5) * 40);
    // fp(0..50) were lost on both cross pairs, then fp(0..20) again: 50 sessions in all.
    assert_eq!(life.sessions, 50);
    assert!(!life.sessions_capped);
    assert_eq!(life.first_loss, Some(t(0)));
    assert_eq!(life.last_loss, Some(t(5000)));
    assert!((life.peak_share - 0.5).abs() < 1e-9, "{}", life.peak_share);
    let ab = life
        .matrix
        .iter()
        .find(|p| (p.issuer, p.server) == (A, B))
        .unwrap();
    assert_eq!((ab.resets, ab.requests), (150, 150 + (sec - 5) * 10));
    let aa = life
        .matrix
        .iter()
        .find(|p| (p.issuer, p.server) == (A, A))
        .unwrap();
    assert_eq!(aa.resets, 0);
}

#[test]
fn an_incident_s_life_survives_the_farm_growing() {
    let mut tr = IncidentTracker::new(IncidentConfig::default(), 2);
    traffic(&mut tr, A, B, 40, 40, t(0));
    traffic(&mut tr, B, A, 40, 40, t(0));
    assert!(matches!(
        tr.evaluate(t(100)),
        Some(IncidentEvent::Opened(_))
    ));
    tr.note_joined(C, t(1000));
    traffic(&mut tr, A, C, 10, 10, t(2000));
    let s = tr.snapshot(t(2100));
    let life = s.life.expect("open");
    let cell = |i, sv| {
        life.matrix
            .iter()
            .find(|p| (p.issuer, p.server) == (i, sv))
            .map(|p| (p.requests, p.resets))
    };
    assert_eq!(cell(A, B), Some((40, 40)));
    assert_eq!(cell(B, A), Some((40, 40)));
    assert_eq!(cell(A, C), Some((10, 10)));
    assert_eq!(life.resets, 90);
}
