//! The Redis store, for several replicas: redeeming is `SET <id> 1 NX PX <ms to expiry>`,
//! which Redis executes atomically, so exactly one replica's `SET` succeeds per ticket.
//!
//! Timeouts are short because a redemption waits on them; reconnection is the connection
//! manager's. Health is known from the last answer (redemptions and a ping every second),
//! so issuance and `/readyz` can refuse while Redis is down without asking it each time.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::codec::TicketId;
use super::store::StoreError;

const TIMEOUT: Duration = Duration::from_millis(500);
const PING_EVERY: Duration = Duration::from_secs(1);
/// Replicas' clocks differ a little: keep a used id a bit past its ticket's expiry.
const CLOCK_SKEW_MS: u64 = 5_000;
const KEY_PREFIX: &str = "ticketgate:used:";

pub struct RedisStore {
    client: redis::Client,
    /// Created on the background task's runtime, which then drives the connection.
    connection: OnceLock<ConnectionManager>,
    healthy: AtomicBool,
}

impl RedisStore {
    pub fn new(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Unreachable(format!("{:?}", e.kind())))?;
        Ok(RedisStore {
            client,
            connection: OnceLock::new(),
            healthy: AtomicBool::new(false),
        })
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub async fn consume(
        &self,
        id: &TicketId,
        expires_at: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        let mut connection = self
            .connection
            .get()
            .cloned()
            .ok_or_else(|| StoreError::Unreachable("not connected yet".into()))?;
        let key = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(id));
        let keep_ms = expires_at.saturating_sub(now) * 1000 + CLOCK_SKEW_MS;
        let mut set = redis::cmd("SET");
        set.arg(key).arg(1).arg("NX").arg("PX").arg(keep_ms);
        let answer =
            tokio::time::timeout(TIMEOUT, set.query_async::<Option<String>>(&mut connection)).await;
        match answer {
            Ok(Ok(reply)) => {
                self.healthy.store(true, Ordering::Relaxed);
                Ok(reply.is_some())
            }
            Ok(Err(e)) => Err(self.down(format!("{:?}", e.kind()))),
            Err(_) => Err(self.down("timed out".into())),
        }
    }

    fn down(&self, why: String) -> StoreError {
        if self.healthy.swap(false, Ordering::Relaxed) {
            log::warn!("ticket store (Redis) unreachable: {why}");
        }
        StoreError::Unreachable(why)
    }

    /// Connects and pings every second until the process ends, keeping `healthy` current.
    pub async fn keep_connected(&self) {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(TIMEOUT);
        match ConnectionManager::new_lazy_with_config(self.client.clone(), config) {
            Ok(manager) => {
                let _ = self.connection.set(manager);
            }
            Err(e) => {
                log::error!("ticket store (Redis) cannot be set up: {:?}", e.kind());
                return;
            }
        }
        loop {
            self.ping().await;
            tokio::time::sleep(PING_EVERY).await;
        }
    }

    async fn ping(&self) {
        let Some(mut connection) = self.connection.get().cloned() else {
            return;
        };
        let ping = redis::cmd("PING");
        match tokio::time::timeout(TIMEOUT, ping.query_async::<String>(&mut connection)).await {
            Ok(Ok(_)) => {
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    log::info!("ticket store (Redis) reachable");
                }
            }
            Ok(Err(e)) => {
                self.down(format!("{:?}", e.kind()));
            }
            Err(_) => {
                self.down("ping timed out".into());
            }
        }
    }
}
