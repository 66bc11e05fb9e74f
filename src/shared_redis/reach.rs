//! How the shared Redis is reached, per topology: the `redis` crate's client for a node or a
//! Cluster, its Sentinel client and the master it last named.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, RwLock};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisError, TlsMode};

use super::{
    CHECK_DEADLINE, CONNECT_TIMEOUT, Connection, RESPONSE_TIMEOUT, SharedError, Topology,
    no_answer, unreachable,
};

/// How connections are made, per topology.
pub(super) enum Reach {
    Node(redis::Client),
    Cluster(ClusterReach),
    Sentinel(SentinelReach),
}

pub(super) struct ClusterReach {
    pub(super) client: ClusterClient,
    /// The first node's settings (user, password, TLS), for reaching each master alone.
    pub(super) seed: ConnectionInfo,
    /// The check's connection to each master, by address.
    pub(super) masters: Mutex<HashMap<(String, u16), ConnectionManager>>,
}

impl ClusterReach {
    pub(super) fn manager_for(
        &self,
        (host, port): &(String, u16),
    ) -> redis::RedisResult<ConnectionManager> {
        let addr = match self.seed.addr() {
            ConnectionAddr::TcpTls { .. } => ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: false,
                tls_params: None,
            },
            _ => ConnectionAddr::Tcp(host.clone(), *port),
        };
        let client = redis::Client::open(self.seed.clone().set_addr(addr))?;
        manager(client)
    }
}

pub(super) struct SentinelReach {
    pub(super) sentinel: tokio::sync::Mutex<Sentinel>,
    pub(super) master_name: String,
    pub(super) node: SentinelNodeConnectionInfo,
    pub(super) master: RwLock<Option<Master>>,
}

#[derive(Clone)]
pub(super) struct Master {
    /// `host:port`, never with credentials.
    pub(super) address: String,
    pub(super) client: redis::Client,
}

impl Reach {
    pub(super) fn new(topology: &Topology) -> Result<Reach, SharedError> {
        Ok(match topology {
            Topology::Node(url) => {
                Reach::Node(redis::Client::open(url.as_str()).map_err(settings)?)
            }
            Topology::Cluster(nodes) => Reach::Cluster(cluster_reach(nodes)?),
            Topology::Sentinel { master, nodes, db } => {
                Reach::Sentinel(sentinel_reach(master, nodes, *db)?)
            }
        })
    }

    /// A new connection: to the node, the cluster, or the master Sentinel names (asking the
    /// sentinels first when none is known yet).
    pub(super) async fn connect(&self) -> Result<Connection, SharedError> {
        match self {
            Reach::Node(client) => Ok(Connection::Node(
                manager(client.clone()).map_err(unreachable)?,
            )),
            Reach::Cluster(cluster) => {
                tokio::time::timeout(CHECK_DEADLINE, cluster.client.get_async_connection())
                    .await
                    .map_err(|_| no_answer())?
                    .map(Connection::Cluster)
                    .map_err(unreachable)
            }
            Reach::Sentinel(reach) => {
                let known = reach
                    .master
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                let master = match known {
                    Some(master) => master,
                    None => find_master(reach).await?,
                };
                Ok(Connection::Node(
                    manager(master.client).map_err(unreachable)?,
                ))
            }
        }
    }
}

fn settings(e: RedisError) -> SharedError {
    SharedError::Settings(format!("{:?}", e.kind()))
}

/// The first URL's settings (address, user, password, TLS), which the crate applies to all.
fn first_settings(urls: &[String], none: &str) -> Result<ConnectionInfo, SharedError> {
    urls.first()
        .ok_or_else(|| SharedError::Settings(none.to_string()))?
        .as_str()
        .into_connection_info()
        .map_err(settings)
}

fn cluster_reach(nodes: &[String]) -> Result<ClusterReach, SharedError> {
    let seed = first_settings(nodes, "no cluster node")?;
    let client = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .retries(2)
        .min_retry_wait(50)
        .max_retry_wait(250)
        .build()
        .map_err(settings)?;
    Ok(ClusterReach {
        client,
        seed,
        masters: Mutex::default(),
    })
}

fn manager(client: redis::Client) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(CONNECT_TIMEOUT);
    ConnectionManager::new_lazy_with_config(client, config)
}

/// The sentinels and what they need to reach the master: the first sentinel URL's user,
/// password and scheme, with the configured `db`.
fn sentinel_reach(master: &str, nodes: &[String], db: i64) -> Result<SentinelReach, SharedError> {
    let first = first_settings(nodes, "no sentinel")?;
    let mut node = SentinelNodeConnectionInfo::default()
        .set_redis_connection_info(first.redis_settings().clone().set_db(db));
    if matches!(first.addr(), ConnectionAddr::TcpTls { .. }) {
        node = node.set_tls_mode(TlsMode::Secure);
    }
    let sentinel = Sentinel::build(nodes.iter().map(String::as_str).collect()).map_err(settings)?;
    Ok(SentinelReach {
        sentinel: tokio::sync::Mutex::new(sentinel),
        master_name: master.to_string(),
        node,
        master: RwLock::new(None),
    })
}

/// The master the sentinels name, once it confirms its role itself.
pub(super) async fn find_master(reach: &SentinelReach) -> Result<Master, SharedError> {
    let mut sentinel = reach.sentinel.lock().await;
    let client = tokio::time::timeout(
        CHECK_DEADLINE,
        sentinel.async_master_for(&reach.master_name, Some(&reach.node)),
    )
    .await
    .map_err(|_| no_answer())?
    .map_err(unreachable)?;
    Ok(Master {
        address: client.get_connection_info().addr().to_string(),
        client,
    })
}
