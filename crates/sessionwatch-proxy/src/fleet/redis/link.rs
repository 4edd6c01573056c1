//! How the store reaches Redis: one server through the reconnecting connection manager, or a
//! cluster; and a worker's own connection, made on its first request.

use std::sync::atomic::AtomicBool;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{IntoConnectionInfo, RedisResult};

use super::BACKGROUND_TIMEOUT;
use crate::config::RedisConfig;

/// A connection: one server through the reconnecting manager, or a cluster.
#[derive(Clone)]
pub(crate) enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Link {
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
    ) -> RedisResult<T> {
        match self {
            Link::Single(c) => cmd.query_async(c).await,
            Link::Cluster(c) => cmd.query_async(c).await,
        }
    }

    pub(crate) async fn pipe<T: redis::FromRedisValue>(
        &mut self,
        pipe: &redis::Pipeline,
    ) -> RedisResult<T> {
        match self {
            Link::Single(c) => pipe.query_async(c).await,
            Link::Cluster(c) => pipe.query_async(c).await,
        }
    }
}

/// How to reach Redis, read from the configuration once.
pub(super) enum Target {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

impl Target {
    pub(super) fn new(config: &RedisConfig) -> RedisResult<Self> {
        let certs = || redis::TlsCertificates {
            client_tls: None,
            root_cert: config.ca.clone(),
        };
        let info = |url: &str| -> RedisResult<redis::ConnectionInfo> {
            let mut info = url.into_connection_info()?;
            if let Some(password) = &config.password {
                info.redis.password = Some(password.clone());
            }
            Ok(info)
        };
        if config.cluster {
            let nodes = config
                .urls
                .iter()
                .map(|u| info(u))
                .collect::<RedisResult<Vec<_>>>()?;
            let mut builder = redis::cluster::ClusterClientBuilder::new(nodes)
                .connection_timeout(BACKGROUND_TIMEOUT)
                .response_timeout(BACKGROUND_TIMEOUT)
                .retries(0);
            if config.ca.is_some() {
                builder = builder.certs(certs());
            }
            return Ok(Target::Cluster(builder.build()?));
        }
        let url = config.urls.first().map(String::as_str).unwrap_or_default();
        let client = match &config.ca {
            Some(_) => redis::Client::build_with_tls(info(url)?, certs())?,
            None => redis::Client::open(info(url)?)?,
        };
        Ok(Target::Single(client))
    }

    pub(super) async fn connect(&self) -> RedisResult<Link> {
        match self {
            Target::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(BACKGROUND_TIMEOUT)
                    .set_response_timeout(BACKGROUND_TIMEOUT)
                    .set_number_of_retries(1)
                    .set_max_delay(100);
                let manager = ConnectionManager::new_with_config(client.clone(), config).await?;
                Ok(Link::Single(manager))
            }
            Target::Cluster(client) => Ok(Link::Cluster(client.get_async_connection().await?)),
        }
    }
}

/// A connection of one worker thread's own.
#[derive(Default)]
pub(super) struct LocalLink {
    pub(super) link: std::sync::OnceLock<Link>,
    pub(super) started: AtomicBool,
}
