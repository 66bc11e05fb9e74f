//! The Redis store, for several replicas: redeeming is `SET <id> 1 NX PX <ms to expiry>`,
//! one command on one key, which Redis executes atomically, so exactly one replica's `SET`
//! succeeds per ticket — on a single node, on a Cluster (the key's slot has one master) and
//! behind Sentinel alike. With `wait_replicas` the `SET` is followed by `WAIT` in the same
//! round trip, so a redemption a failover could forget is refused rather than acknowledged.
//!
//! Topologies, connections and health are `shared_redis`'s; this file is what a used ticket
//! is in Redis.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use redis::Value;

use super::{StoreError, UsedTickets};
use crate::shared_redis::SharedRedis;
use crate::tickets::codec::TicketId;

/// A redemption's whole wait on Redis, a reconnection, its retry and `WAIT` included.
const REDEEM_DEADLINE: Duration = Duration::from_millis(1500);
/// Replicas' clocks differ a little: keep a used id a bit past its ticket's expiry.
const CLOCK_SKEW_MS: u64 = 5_000;
const KEY_PREFIX: &str = "ticketgate:used:";

pub struct RedisStore {
    redis: SharedRedis,
}

impl RedisStore {
    pub fn new(redis: SharedRedis) -> Self {
        RedisStore { redis }
    }
}

/// The key that marks the ticket `id` used.
pub fn used_key(id: &TicketId) -> String {
    format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(id))
}

fn used_mark(id: &TicketId, expires_at: u64, now: u64) -> redis::Pipeline {
    let key = used_key(id);
    let keep_ms = expires_at.saturating_sub(now) * 1000 + CLOCK_SKEW_MS;
    let mut pipeline = redis::pipe();
    pipeline
        .cmd("SET")
        .arg(key)
        .arg(1)
        .arg("NX")
        .arg("PX")
        .arg(keep_ms);
    pipeline
}

#[async_trait]
impl UsedTickets for RedisStore {
    async fn consume(&self, id: &TicketId, expires_at: u64, now: u64) -> Result<bool, StoreError> {
        let answers = self
            .redis
            .write("redeem", used_mark(id, expires_at, now), REDEEM_DEADLINE)
            .await?;
        match answers.first() {
            Some(Value::Okay) => Ok(true),
            Some(Value::Nil) => Ok(false),
            _ => Err(StoreError::Unreachable(
                "unexpected answer to SET".to_string(),
            )),
        }
    }

    fn is_healthy(&self) -> bool {
        self.redis.is_healthy()
    }

    fn survives_restarts(&self) -> bool {
        true
    }

    fn status(&self) -> String {
        self.redis.status()
    }

    /// A check, every second, keeps the health current.
    async fn maintain(&self, _now: u64) -> Duration {
        self.redis.check().await
    }
}
