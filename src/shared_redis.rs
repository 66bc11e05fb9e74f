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
//!
//! `reach` makes connections per topology, `health` is the check, `connection` the one type
//! every topology's connection takes, `topology` the settings.

mod connection;
mod health;
mod reach;
pub mod stream;
pub mod topology;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::ThreadId;
use std::time::Duration;

use redis::{Pipeline, RedisError, Value};

use reach::Reach;

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
pub const OPERATIONS: [&str; 5] = ["redeem", "revoke", "check", "refresh", "sockets"];

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
pub(crate) fn unreachable(e: RedisError) -> SharedError {
    SharedError::Unreachable(
        e.code()
            .map_or_else(|| format!("{:?}", e.kind()), str::to_string),
    )
}

pub(crate) fn no_answer() -> SharedError {
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

struct Cached {
    generation: u64,
    connection: Connection,
}

impl SharedRedis {
    /// Connects lazily: nothing is asked of Redis before the first check or write.
    pub fn new(config: &SharedRedisConfig, metrics: Arc<Metrics>) -> Result<Self, SharedError> {
        let reach = Reach::new(&config.topology)?;
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
        let started = crate::clock::now();
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
        self.reach.connect().await
    }

    /// meets its effect (a used ticket stays used): fail closed.
    /// One attempt, and a second on a fresh connection when the first met a broken or
    /// demoted one. Should the first have landed before its answer was lost, the second
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
        let connection = self.reach.connect().await?;
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
