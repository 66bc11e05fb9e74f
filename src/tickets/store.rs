//! Where redeemed tickets are remembered, so each works once: in this process, or in Redis
//! when several replicas share tickets.

use std::time::Duration;

use super::codec::TicketId;
use super::memory::MemoryStore;
use super::redis::RedisStore;
use crate::config::StoreConfig;

/// Used ids one process remembers at most (some 40 MB); a million redemptions within one
/// ticket lifetime is far beyond one sidecar.
const MEMORY_CAPACITY: usize = 1_000_000;
const PURGE_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("ticket store is full")]
    Full,
    #[error("ticket store unreachable: {0}")]
    Unreachable(String),
    #[error("ticket store lock poisoned")]
    Poisoned,
}

pub enum Store {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl Store {
    pub fn new(config: &StoreConfig) -> Result<Self, StoreError> {
        Ok(match config {
            StoreConfig::Memory => Store::Memory(MemoryStore::new(MEMORY_CAPACITY)),
            StoreConfig::Redis(url) => Store::Redis(RedisStore::new(url)?),
        })
    }

    /// Marks the ticket used: `Ok(true)` for the one redemption that wins, `Ok(false)` for a
    /// replay, `Err` when the store cannot answer (the caller fails closed).
    pub async fn consume(
        &self,
        id: &TicketId,
        expires_at: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Memory(store) => store.consume(id, expires_at, now),
            Store::Redis(store) => store.consume(id, expires_at, now).await,
        }
    }

    /// Whether used tickets are remembered across a restart of this process.
    pub fn survives_restarts(&self) -> bool {
        matches!(self, Store::Redis(_))
    }

    pub fn is_healthy(&self) -> bool {
        match self {
            Store::Memory(_) => true,
            Store::Redis(store) => store.is_healthy(),
        }
    }

    /// The store's background work, run until shutdown: purging expired ids from memory, or
    /// keeping the Redis connection and its health current.
    pub async fn maintain(&self) {
        match self {
            Store::Memory(store) => loop {
                tokio::time::sleep(PURGE_EVERY).await;
                store.purge(super::unix_now());
            },
            Store::Redis(store) => store.keep_connected().await,
        }
    }
}
