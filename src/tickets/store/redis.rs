//! The Redis store, for several replicas: redeeming is `SET <id> 1 NX PX <ms to expiry>`,
//! which Redis executes atomically, so exactly one replica's `SET` succeeds per ticket.
//!
//! Timeouts are short because a redemption waits on them; reconnection is the connection
//! manager's. Health is known from the last answer (redemptions and a ping every second),
//! so issuance and `/readyz` can refuse while Redis is down without asking it each time.
//!
//! Each thread that talks to Redis gets its own connection, driven by that thread's runtime:
//! Pingora runs one runtime per worker thread, and a connection shared across them cost two
//! thread switches per redemption (a third of a handshake's CPU in bench/run.sh).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::ThreadId;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use async_trait::async_trait;

use super::{StoreError, UsedTickets};
use crate::tickets::codec::TicketId;

const TIMEOUT: Duration = Duration::from_millis(500);
const PING_EVERY: Duration = Duration::from_secs(1);
/// A redemption's whole wait on Redis, a reconnection and its retry included.
const REDEEM_DEADLINE: Duration = Duration::from_millis(1500);
/// Replicas' clocks differ a little: keep a used id a bit past its ticket's expiry.
const CLOCK_SKEW_MS: u64 = 5_000;
const KEY_PREFIX: &str = "ticketgate:used:";

pub struct RedisStore {
    client: redis::Client,
    connections: Mutex<HashMap<ThreadId, ConnectionManager>>,
    healthy: AtomicBool,
}

impl RedisStore {
    pub fn new(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Unreachable(format!("{:?}", e.kind())))?;
        Ok(RedisStore {
            client,
            connections: Mutex::new(HashMap::new()),
            healthy: AtomicBool::new(false),
        })
    }

    /// One `SET NX`. A connection found broken (Redis restarted since this thread last used
    /// it) is reconnected and the command sent once more, within `REDEEM_DEADLINE`, so that
    /// a store `/readyz` reports as up also redeems. Should the first `SET` have landed
    /// before its answer was lost, the retry sees the ticket as used: fail closed.
    async fn set_nx(&self, id: &TicketId, expires_at: u64, now: u64) -> Result<bool, StoreError> {
        let mut connection = self.connection()?;
        let key = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(id));
        let keep_ms = expires_at.saturating_sub(now) * 1000 + CLOCK_SKEW_MS;
        let mut set = redis::cmd("SET");
        set.arg(key).arg(1).arg("NX").arg("PX").arg(keep_ms);
        let attempts = async {
            match set.query_async::<Option<String>>(&mut connection).await {
                Err(e) if e.is_io_error() || e.is_connection_dropped() => {
                    set.query_async::<Option<String>>(&mut connection).await
                }
                answer => answer,
            }
        };
        match tokio::time::timeout(REDEEM_DEADLINE, attempts).await {
            Ok(Ok(reply)) => {
                self.healthy.store(true, Ordering::Relaxed);
                Ok(reply.is_some())
            }
            Ok(Err(e)) => Err(self.down(format!("{:?}", e.kind()))),
            Err(_) => Err(self.down("no answer in time".to_string())),
        }
    }

    fn down(&self, why: String) -> StoreError {
        if self.healthy.swap(false, Ordering::Relaxed) {
            log::warn!("ticket store (Redis) unreachable: {why}");
        }
        StoreError::Unreachable(why)
    }

    /// This thread's connection, created (lazily connecting) on its first use. Must be called
    /// on a Tokio runtime, whose task then drives the connection.
    fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let mut connections = self.connections.lock().map_err(|_| StoreError::Poisoned)?;
        let thread = std::thread::current().id();
        if let Some(connection) = connections.get(&thread) {
            return Ok(connection.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(TIMEOUT);
        let connection = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(|e| StoreError::Unreachable(format!("{:?}", e.kind())))?;
        connections.insert(thread, connection.clone());
        Ok(connection)
    }

    async fn ping(&self) {
        let answer = match self.connection() {
            Ok(mut connection) => redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
                .map_err(|e| format!("{:?}", e.kind())),
            Err(e) => Err(e.to_string()),
        };
        match answer {
            Ok(_) => {
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    log::info!("ticket store (Redis) reachable");
                }
            }
            Err(why) => {
                self.down(why);
            }
        }
    }
}

#[async_trait]
impl UsedTickets for RedisStore {
    async fn consume(&self, id: &TicketId, expires_at: u64, now: u64) -> Result<bool, StoreError> {
        self.set_nx(id, expires_at, now).await
    }

    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn survives_restarts(&self) -> bool {
        true
    }

    /// A ping, every second, keeps `healthy` current.
    async fn maintain(&self, _now: u64) -> Duration {
        self.ping().await;
        PING_EVERY
    }
}
