//! The Redis that replicas share, in whichever topology it runs: one node (`redis://`,
//! `rediss://`), a Cluster, or a master that Sentinel names. Used tickets
//! (`tickets::store::redis`) and revocations (`revocations::shared`) both talk to it through
//! here, so both get every topology, TLS, ACL users, `WAIT`, failover and the round-trip
//! metric, and neither knows which topology it talks to.
//!
//! Topology handling is the `redis` crate's: its cluster connection routes by slot and
//! follows redirects, its sentinel client finds and verifies the master. What is added here:
//! - **One connection per thread.** Pingora runs one runtime per worker thread; a connection
//!   shared across them cost two thread switches per redemption (a third of a handshake's CPU
//!   in bench/run.sh). Each thread's connection is driven by that thread's runtime.
//! - **Health that agrees with use.** A check every second (through Sentinel, the master's
//!   address first) keeps `is_healthy` current; a write that meets a broken connection drops
//!   it and retries once on a fresh one, so a store reported up also answers — after a restart
//!   or a failover, on every thread.
//! - **Fail closed.** With `wait_replicas`, a write counts only once that many replicas hold it.

mod connection;
pub mod topology;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{
    ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisError, TlsMode, Value,
};

pub use connection::Connection;
pub use topology::{SharedRedisConfig, Topology};

use crate::metrics::Metrics;

const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// The crate's own limit on an answer: longer than a blocking read or a `WAIT`; callers
/// bound their waits themselves.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a `WAIT` after a write gives the replicas.
const WAIT_TIMEOUT_MS: u64 = 500;
const CHECK_EVERY: Duration = Duration::from_secs(1);
const CHECK_DEADLINE: Duration = Duration::from_secs(2);
/// The operations `ticketgate_ticket_store_duration_seconds` is labelled with.
pub const OPERATIONS: [&str; 3] = ["redeem", "revoke", "check"];

#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("Redis unreachable ({0})")]
    Unreachable(String),
    #[error("only {acknowledged} of {wanted} Redis replicas acknowledged in time")]
    NotReplicated { acknowledged: u64, wanted: u32 },
    #[error("Redis settings unusable ({0})")]
    Settings(String),
}

/// What a Redis error says, without its detail (which may name addresses).
fn unreachable(e: RedisError) -> SharedError {
    SharedError::Unreachable(
        e.code()
            .map_or_else(|| format!("{:?}", e.kind()), str::to_string),
    )
}

fn no_answer() -> SharedError {
    SharedError::Unreachable("no answer in time".to_string())
}

pub struct SharedRedis {
    topology: Topology,
    wait_replicas: u32,
    reach: Reach,
    connections: Mutex<HashMap<ThreadId, Cached>>,
    /// Bumped when Sentinel names another master: every thread's connection is then stale.
    generation: AtomicU64,
    healthy: AtomicBool,
    /// The last check's finding, for `/readyz`.
    status: Mutex<String>,
    metrics: Arc<Metrics>,
}

/// How connections are made, per topology.
enum Reach {
    Node(redis::Client),
    Cluster(ClusterReach),
    Sentinel(SentinelReach),
}

struct ClusterReach {
    client: ClusterClient,
    /// The first node's settings (user, password, TLS), for reaching each master alone.
    seed: ConnectionInfo,
    /// The check's connection to each master, by address.
    masters: Mutex<HashMap<(String, u16), ConnectionManager>>,
}

impl ClusterReach {
    fn manager_for(&self, (host, port): &(String, u16)) -> redis::RedisResult<ConnectionManager> {
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

struct SentinelReach {
    sentinel: tokio::sync::Mutex<Sentinel>,
    master_name: String,
    node: SentinelNodeConnectionInfo,
    master: RwLock<Option<Master>>,
}

#[derive(Clone)]
struct Master {
    /// `host:port`, never with credentials.
    address: String,
    client: redis::Client,
}

struct Cached {
    generation: u64,
    connection: Connection,
}

impl SharedRedis {
    /// Connects lazily: nothing is asked of Redis before the first check or write.
    pub fn new(config: &SharedRedisConfig, metrics: Arc<Metrics>) -> Result<Self, SharedError> {
        let reach = match &config.topology {
            Topology::Node(url) => {
                Reach::Node(redis::Client::open(url.as_str()).map_err(settings)?)
            }
            Topology::Cluster(nodes) => Reach::Cluster(cluster_reach(nodes)?),
            Topology::Sentinel { master, nodes, db } => {
                Reach::Sentinel(sentinel_reach(master, nodes, *db)?)
            }
        };
        metrics.store_operations(&OPERATIONS);
        Ok(SharedRedis {
            topology: config.topology.clone(),
            wait_replicas: config.wait_replicas,
            reach,
            connections: Mutex::default(),
            generation: AtomicU64::new(0),
            healthy: AtomicBool::new(false),
            status: Mutex::new("not checked yet".to_string()),
            metrics,
        })
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Where the store is and what the last check found, for `/readyz`.
    pub fn status(&self) -> String {
        let found = self
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        format!("{}: {found}", self.topology)
    }

    /// Sends `pipeline` (followed by `WAIT` when replicas must acknowledge) within
    /// `deadline` and returns its answers, the `WAIT`'s taken off. Counted in the round-trip
    /// histogram under `operation`.
    pub async fn write(
        &self,
        operation: &'static str,
        mut pipeline: Pipeline,
        deadline: Duration,
    ) -> Result<Vec<Value>, SharedError> {
        if self.wait_replicas > 0 {
            pipeline
                .cmd("WAIT")
                .arg(self.wait_replicas)
                .arg(WAIT_TIMEOUT_MS);
        }
        let started = Instant::now();
        let answer = tokio::time::timeout(deadline, self.send(&pipeline))
            .await
            .unwrap_or_else(|_| Err(no_answer()));
        self.metrics.store_round_trip(operation, started.elapsed());
        let mut values = answer.map_err(|e| self.down(e))?;
        self.up();
        if self.wait_replicas > 0 {
            let acknowledged = match values.pop() {
                Some(Value::Int(n)) => u64::try_from(n).unwrap_or(0),
                _ => 0,
            };
            if acknowledged < u64::from(self.wait_replicas) {
                return Err(SharedError::NotReplicated {
                    acknowledged,
                    wanted: self.wait_replicas,
                });
            }
        }
        Ok(values)
    }

    /// A connection of its own, for a blocking read that must not hold up the writes
    /// multiplexed on this thread's.
    pub async fn dedicated(&self) -> Result<Connection, SharedError> {
        self.connect().await
    }

    /// One check, as a `lifecycle::repeat` round: through Sentinel, which master it names;
    /// then whether every master answers (and has its replicas, with `wait_replicas`).
    pub async fn check(&self) -> Duration {
        let started = Instant::now();
        let found = tokio::time::timeout(CHECK_DEADLINE, self.probe())
            .await
            .unwrap_or_else(|_| Err(no_answer()));
        self.metrics.store_round_trip("check", started.elapsed());
        let status = match found {
            Ok(status) => {
                self.up();
                status
            }
            Err(e) => {
                let status = format!("down: {e}");
                self.down(e);
                status
            }
        };
        *self.status.lock().unwrap_or_else(PoisonError::into_inner) = status;
        CHECK_EVERY
    }

    async fn probe(&self) -> Result<String, SharedError> {
        let master = match &self.reach {
            Reach::Sentinel(reach) => format!("master {}, ", self.follow_master(reach).await?),
            _ => String::new(),
        };
        let mut check = redis::cmd("PING");
        if self.wait_replicas > 0 {
            check = redis::cmd("WAIT");
            check.arg(self.wait_replicas).arg(100);
        }
        let mut connection = self.connection().await?;
        let asked = match connection.cluster_masters().await {
            Ok(None) => check.query_async(&mut connection).await.map(|a| vec![a]),
            Ok(Some(masters)) => self.ask_each_master(masters, &check).await,
            Err(e) => Err(e),
        };
        let answers = asked.map_err(|e| {
            self.forget();
            unreachable(e)
        })?;
        let up = match &self.reach {
            Reach::Cluster(_) => format!("{master}{} masters up", answers.len()),
            _ => format!("{master}up"),
        };
        if self.wait_replicas == 0 {
            return Ok(up);
        }
        let acknowledged = answers
            .iter()
            .map(|answer| match answer {
                Value::Int(n) => u64::try_from(*n).unwrap_or(0),
                _ => 0,
            })
            .min()
            .unwrap_or(0);
        if acknowledged < u64::from(self.wait_replicas) {
            return Err(SharedError::NotReplicated {
                acknowledged,
                wanted: self.wait_replicas,
            });
        }
        Ok(format!("{up}, {acknowledged} replicas attached"))
    }

    /// Sends `check` to each of a cluster's masters over a connection to that master alone:
    /// the cluster connection's routing would stand a replica in for a master it cannot
    /// reach, and hide the very outage a check is for.
    async fn ask_each_master(
        &self,
        masters: BTreeSet<(String, u16)>,
        check: &redis::Cmd,
    ) -> redis::RedisResult<Vec<Value>> {
        let Reach::Cluster(cluster) = &self.reach else {
            return Ok(Vec::new());
        };
        let managers: Vec<ConnectionManager> = {
            let mut known = cluster
                .masters
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            known.retain(|address, _| masters.contains(address));
            let mut managers = Vec::with_capacity(masters.len());
            for address in masters {
                let manager = match known.get(&address) {
                    Some(manager) => manager.clone(),
                    None => {
                        let manager = cluster.manager_for(&address)?;
                        known.insert(address, manager.clone());
                        manager
                    }
                };
                managers.push(manager);
            }
            managers
        };
        let mut answers = Vec::with_capacity(managers.len());
        for mut manager in managers {
            answers.push(check.query_async(&mut manager).await?);
        }
        Ok(answers)
    }

    /// Asks the sentinels for the master; a new one makes every thread reconnect.
    async fn follow_master(&self, reach: &SentinelReach) -> Result<String, SharedError> {
        let found = find_master(reach).await?;
        let mut master = reach.master.write().unwrap_or_else(PoisonError::into_inner);
        let moved = master.as_ref().is_none_or(|m| m.address != found.address);
        if moved {
            log::info!(
                "ticket store: sentinel names {} as master of {}",
                found.address,
                reach.master_name
            );
            *master = Some(found.clone());
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        Ok(found.address)
    }

    /// One attempt, and a second on a fresh connection when the first met a broken or
    /// demoted one. Should the first have landed before its answer was lost, the second
    /// meets its effect (a used ticket stays used): fail closed.
    async fn send(&self, pipeline: &Pipeline) -> Result<Vec<Value>, SharedError> {
        let mut connection = self.connection().await?;
        match pipeline.query_async::<Vec<Value>>(&mut connection).await {
            Ok(values) => Ok(values),
            Err(e) if worth_a_new_connection(&e) => {
                self.forget();
                let mut connection = self.connection().await?;
                pipeline.query_async(&mut connection).await.map_err(|e| {
                    self.forget();
                    unreachable(e)
                })
            }
            Err(e) => Err(unreachable(e)),
        }
    }

    /// This thread's connection, made on its first use or after the master moved. Must be
    /// called on a Tokio runtime, whose task then drives it.
    async fn connection(&self) -> Result<Connection, SharedError> {
        let thread = std::thread::current().id();
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(cached) = self.lock_connections().get(&thread)
            && cached.generation == generation
        {
            return Ok(cached.connection.clone());
        }
        let connection = self.connect().await?;
        self.lock_connections().insert(
            thread,
            Cached {
                generation,
                connection: connection.clone(),
            },
        );
        Ok(connection)
    }

    fn forget(&self) {
        self.lock_connections().remove(&std::thread::current().id());
    }

    fn lock_connections(&self) -> std::sync::MutexGuard<'_, HashMap<ThreadId, Cached>> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    async fn connect(&self) -> Result<Connection, SharedError> {
        match &self.reach {
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

    fn up(&self) {
        if !self.healthy.swap(true, Ordering::Relaxed) {
            log::info!("ticket store ({}) reachable", self.topology);
        }
    }

    fn down(&self, why: SharedError) -> SharedError {
        if self.healthy.swap(false, Ordering::Relaxed) {
            log::warn!("ticket store ({}) unusable: {why}", self.topology);
        }
        why
    }
}

fn settings(e: RedisError) -> SharedError {
    SharedError::Settings(format!("{:?}", e.kind()))
}

/// A broken or refused connection, a timeout, or a node that is no longer (or not yet) the
/// master: another connection may succeed where this one failed.
fn worth_a_new_connection(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.code(),
            Some("READONLY" | "MASTERDOWN" | "LOADING" | "CLUSTERDOWN" | "TRYAGAIN")
        )
}

fn cluster_reach(nodes: &[String]) -> Result<ClusterReach, SharedError> {
    let seed = nodes
        .first()
        .ok_or_else(|| SharedError::Settings("no cluster node".to_string()))?
        .as_str()
        .into_connection_info()
        .map_err(settings)?;
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
    let first = nodes
        .first()
        .ok_or_else(|| SharedError::Settings("no sentinel".to_string()))?
        .as_str()
        .into_connection_info()
        .map_err(settings)?;
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
async fn find_master(reach: &SentinelReach) -> Result<Master, SharedError> {
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
