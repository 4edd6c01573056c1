//! The writer: the changes requests do not wait for, sent as pipelines.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::{BACKGROUND_TIMEOUT, BATCH, Change, Fault, GATHER, Inner};

/// The writer: sends batched changes as pipelines.
pub(super) async fn write(
    inner: Arc<Inner>,
    mut rx: mpsc::Receiver<Change>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => n,
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        };
        if first == 0 {
            return;
        }
        if batch.len() < BATCH {
            tokio::time::sleep(GATHER).await;
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(change) => batch.push(change),
                    Err(_) => break,
                }
            }
        }
        let n = batch.len();
        let mut pipe = redis::pipe();
        for change in batch.drain(..) {
            match change {
                Change::Put(f, record) => {
                    if let Some(cmd) = inner.set(f, &record) {
                        pipe.add_command(cmd).ignore();
                    }
                }
                Change::Remove(f) => {
                    pipe.cmd("DEL").arg(inner.key(f)).ignore();
                }
            }
        }
        let Some(mut link) = inner.link() else {
            inner.counters.dropped.increment(n as u64);
            continue;
        };
        match tokio::time::timeout(BACKGROUND_TIMEOUT, link.pipe::<()>(&pipe)).await {
            Ok(Ok(())) => {
                inner.succeeded();
                inner.counters.batch_ok.increment(n as u64);
            }
            Ok(Err(e)) => {
                inner.counters.batch_failed.increment(n as u64);
                inner.failed(Fault::Error(e));
            }
            Err(_) => {
                inner.counters.batch_failed.increment(n as u64);
                inner.failed(Fault::Timeout);
            }
        }
    }
}
