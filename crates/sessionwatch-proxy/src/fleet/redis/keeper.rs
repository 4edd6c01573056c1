//! The keeper: connects, pings, and brings a degraded store back, writing back what Redis may
//! lack.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use sessionwatch_core::Timestamp;
use tokio::sync::watch;

use super::link::{Link, Target};
use super::{
    BACKGROUND_TIMEOUT, BACKOFF_FIRST, BACKOFF_MAX, BATCH, Inner, PING_EVERY, PING_TIMEOUT,
    WRITE_BACK_PACE,
};
use crate::report::lines::{AlertLine, LineKind, StoreLine};

/// The keeper: connects, pings, and brings a degraded store back.
pub(super) async fn keep(inner: Arc<Inner>, mut shutdown: watch::Receiver<bool>) {
    let target = &inner.target;
    let mut backoff = BACKOFF_FIRST;
    let mut first = true;
    loop {
        let healthy = inner.up.load(Ordering::Relaxed);
        let wait = if healthy { PING_EVERY } else { backoff };
        if !first {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = inner.wake.notified(), if healthy => {}
                _ = crate::shutdown::stopped(&mut shutdown) => return,
            }
        }
        let current = inner.link.read().ok().and_then(|l| l.clone());
        let link = match current {
            Some(link) => link,
            None => match tokio::time::timeout(BACKGROUND_TIMEOUT, target.connect()).await {
                Ok(Ok(link)) => {
                    if let Ok(mut slot) = inner.link.write() {
                        *slot = Some(link.clone());
                    }
                    link
                }
                Ok(Err(e)) => {
                    unreachable_at_start(&inner, &mut first, Some(e.to_string()));
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
                Err(_) => {
                    unreachable_at_start(&inner, &mut first, None);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            },
        };
        let mut ping_link = link;
        let allowed = if healthy {
            PING_TIMEOUT
        } else {
            BACKGROUND_TIMEOUT
        };
        let ping =
            tokio::time::timeout(allowed, ping_link.query::<String>(&redis::cmd("PING"))).await;
        match ping {
            Ok(Ok(_)) => {
                backoff = BACKOFF_FIRST;
                // Slow answers, not an outage.
                inner.succeeded();
                if !inner.up.load(Ordering::Relaxed) {
                    recover(&inner, target, ping_link, first).await;
                }
                first = false;
            }
            Ok(Err(e)) => {
                // A server that refuses us (a wrong password, say) is an outage like any other.
                let error = Some(e.to_string());
                if first {
                    unreachable_at_start(&inner, &mut first, error);
                } else {
                    inner.degrade("error", error);
                }
                // A fresh connection next time: the old one may never come back.
                if let Ok(mut slot) = inner.link.write() {
                    *slot = None;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            Err(_) => {
                if first {
                    unreachable_at_start(&inner, &mut first, None);
                } else {
                    inner.degrade("timeout", None);
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// A Redis that cannot be reached at start is an outage from the start: said once.
fn unreachable_at_start(inner: &Inner, first: &mut bool, error: Option<String>) {
    if !*first {
        return;
    }
    *first = false;
    // Marked up for a moment so that `degrade` reports the transition once.
    inner.up.store(true, Ordering::Relaxed);
    inner.degrade("unreachable", error);
}

/// Redis answers again: requests use it at once, and this task writes back what Redis may lack,
/// on a connection of its own so that the write-back never queues in front of a request.
async fn recover(inner: &Inner, target: &Target, link: Link, first: bool) {
    inner.succeeded();
    inner.up.store(true, Ordering::Relaxed);
    inner.counters.up.set(1.0);
    let since = inner.down_since.lock().ok().and_then(|mut s| s.take());
    // This replica's own: another replica's write-back after a restart would set a shared one
    // before this replica had written back what only it knew.
    let marker = {
        let mut key = inner.prefix.clone();
        key.extend_from_slice(format!("{{fleet}}:marker:{:016x}", inner.replica).as_bytes());
        key
    };
    let mut own = match tokio::time::timeout(BACKGROUND_TIMEOUT, target.connect()).await {
        Ok(Ok(own)) => own,
        _ => link,
    };
    if first && since.is_none() {
        // Connected at start: nothing was missed. The marker tells a later recovery whether
        // Redis kept its data meanwhile.
        let _ = tokio::time::timeout(
            BACKGROUND_TIMEOUT,
            own.query::<()>(redis::cmd("SET").arg(&marker).arg(1)),
        )
        .await;
        return;
    }
    let kept = matches!(
        tokio::time::timeout(
            BACKGROUND_TIMEOUT,
            own.query::<u8>(redis::cmd("EXISTS").arg(&marker))
        )
        .await,
        Ok(Ok(1))
    );
    // With its data kept, Redis lacks only what changed here while it was out (a second of
    // slack for clocks that read the same instant apart); without it, everything.
    let changed_after = match (kept, since) {
        (true, Some(since)) => {
            let out_for = since.elapsed() + Duration::from_secs(1);
            Timestamp::from_millis(
                Timestamp::now()
                    .as_millis()
                    .saturating_sub(u64::try_from(out_for.as_millis()).unwrap_or(u64::MAX)),
            )
        }
        _ => Timestamp::from_millis(0),
    };
    let removals = inner
        .pending_removals
        .lock()
        .map(|mut p| std::mem::take(&mut *p))
        .unwrap_or_default();
    let mut records = Vec::new();
    inner.near.for_each_record(|f, r| {
        if r.last_seen.as_millis() >= changed_after.as_millis() {
            records.push((f, r));
        }
    });
    let mut rewritten = 0u64;
    for chunk in records.chunks(BATCH) {
        let mut pipe = redis::pipe();
        for (f, record) in chunk {
            if let Some(mut cmd) = inner.set(*f, record) {
                cmd.arg("NX");
                pipe.add_command(cmd).ignore();
                rewritten += 1;
            }
        }
        if !matches!(
            tokio::time::timeout(BACKGROUND_TIMEOUT, own.pipe::<()>(&pipe)).await,
            Ok(Ok(()))
        ) {
            break;
        }
        tokio::time::sleep(WRITE_BACK_PACE).await;
    }
    for chunk in removals.chunks(BATCH) {
        let mut pipe = redis::pipe();
        for f in chunk {
            pipe.cmd("DEL").arg(inner.key(*f)).ignore();
        }
        let _ = tokio::time::timeout(BACKGROUND_TIMEOUT, own.pipe::<()>(&pipe)).await;
    }
    let _ = tokio::time::timeout(
        BACKGROUND_TIMEOUT,
        own.query::<()>(redis::cmd("SET").arg(&marker).arg(1)),
    )
    .await;
    let down_ms = since.map(|s| u64::try_from(s.elapsed().as_millis()).unwrap_or(u64::MAX));
    tracing::info!(down_ms, rewritten, kept, "session store recovered");
    inner.log.emit(AlertLine::new(
        LineKind::StoreRecovered,
        SystemTime::now(),
        &StoreLine {
            store: "redis",
            reason: if kept { "answering" } else { "answering_empty" },
            error: None,
            down_ms,
            rewritten: Some(rewritten),
        },
    ));
}
