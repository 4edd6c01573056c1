//! The session side of the proxy: the table (and, for a fleet, the Redis store behind it as its
//! near cache), its housekeeping, and the session layer every worker copies.

use std::sync::Arc;
use std::time::Duration;

use sessionwatch_core::Fingerprinter;
use sessionwatch_tower::{CompactStore, MokaStore, PinSwitch, SessionLayer, SessionStore};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{StartError, farm};
use crate::backends::Backends;
use crate::config::{Config, KeySource, StoreKind};
use crate::fleet::redis::RedisStore;
use crate::metrics::Metrics;
use crate::report::alert_log::AlertLog;
use crate::report::reporter::Reporter;

/// The session table, and the Redis store behind it when there is one.
pub(super) struct Tables {
    /// What the layer looks up first: the table, or the fleet store's near cache.
    pub(super) store: Arc<dyn SessionStore>,
    /// The fleet's store, with `store = "redis"`.
    pub(super) fleet: Option<Arc<RedisStore>>,
}

/// The session table the configuration asks for, and the Redis store when it is one (its
/// keeper and writer join `tasks`).
pub(super) fn store(
    config: &Config,
    directory: &Arc<farm::Directory>,
    metrics: &Metrics,
    log: &AlertLog,
    shutdown_rx: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<Tables, StartError> {
    let idle = config.session.profile.idle_timeout();
    let mut fleet: Option<Arc<RedisStore>> = None;
    let store: Arc<dyn SessionStore> = match (config.session.store, &config.session.redis) {
        (StoreKind::Compact, _) => Arc::new(CompactStore::new(config.session.max_sessions, idle)),
        (StoreKind::Redis, Some(redis)) => {
            let near = Arc::new(MokaStore::new(config.session.max_sessions, idle));
            let (shared, keepers) = RedisStore::start(
                redis,
                idle,
                near.clone(),
                directory.clone(),
                metrics,
                log.clone(),
                shutdown_rx.clone(),
            )
            .map_err(|e| StartError::Store(e.to_string()))?;
            tasks.extend(keepers);
            fleet = Some(Arc::new(shared));
            near
        }
        _ => Arc::new(MokaStore::new(config.session.max_sessions, idle)),
    };
    Ok(Tables { store, fleet })
}

/// Store housekeeping (idle sweeps, pending evictions) every few seconds, off the request path.
pub(super) async fn maintain(store: Arc<dyn SessionStore>, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let store = store.clone();
                // A sweep of a large table takes milliseconds: keep it off the async workers.
                let _ = tokio::task::spawn_blocking(move || store.maintain()).await;
            }
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        }
    }
}

fn fingerprinter(key: &KeySource) -> Fingerprinter {
    match key {
        KeySource::Configured(secret) => Fingerprinter::from_secret(secret),
        KeySource::Random => {
            let mut key = [0u8; 32];
            if getrandom::fill(&mut key).is_err() {
                tracing::error!("the OS random source failed; fingerprints use a time-derived key");
                key[..16].copy_from_slice(
                    &std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_nanos()
                        .to_le_bytes(),
                );
            }
            tracing::warn!(
                "no fingerprint key configured (session.fingerprint_key or session.fingerprint_key_env): \
                 using a random key for this process; fingerprints in alerts will not match across restarts \
                 or between proxies"
            );
            Fingerprinter::from_key(key)
        }
    }
}

/// The session layer as the configuration asks for it, reporting to `reporter`.
pub(super) fn layer(
    config: &Config,
    store: Arc<dyn SessionStore>,
    reporter: Reporter,
    pin_switch: PinSwitch,
    backends: &Arc<Backends>,
    directory: Arc<farm::Directory>,
) -> SessionLayer {
    let mut session = SessionLayer::new(
        config.session.profile.clone(),
        fingerprinter(&config.session.key),
        store,
    )
    .with_events(Arc::new(reporter))
    .with_pin_policy(config.pin.policy)
    .with_pin_switch(pin_switch)
    .with_backend_directory(directory);
    if config.rescue {
        session = session.with_rescue(backends.clone());
    }
    if let Some(affinity) = &config.session.affinity {
        session = session.with_affinity_cookie(affinity.name.clone(), affinity.secure);
    }
    if config.access_log {
        session = session.with_session_marks();
    }
    session
}
