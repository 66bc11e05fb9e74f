//! Where redeemed tickets are remembered, so each works once: the `UsedTickets` trait, with
//! its backends beneath it — in this process (`memory`), or in Redis (`redis`) when several
//! replicas share tickets. Backends know nothing of each other or of who picks them; the
//! clock is passed in, so expiry is tested without waiting.

pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;

use super::codec::TicketId;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("ticket store is full")]
    Full,
    #[error("ticket store unreachable: {0}")]
    Unreachable(String),
    #[error("ticket store lock poisoned")]
    Poisoned,
    #[error(transparent)]
    Shared(#[from] crate::shared_redis::SharedError),
}

/// The used-ticket store.
#[async_trait]
pub trait UsedTickets: Send + Sync {
    /// Marks the ticket used: `Ok(true)` for the one redemption that wins, `Ok(false)` for a
    /// replay, `Err` when the store cannot answer (the caller fails closed). `now` and
    /// `expires_at` are Unix seconds.
    async fn consume(&self, id: &TicketId, expires_at: u64, now: u64) -> Result<bool, StoreError>;

    /// Whether the store is known to answer, without asking it now.
    fn is_healthy(&self) -> bool;

    /// What the store is and how it is doing, for `/readyz`; never a credential.
    fn status(&self) -> String;

    /// Whether used tickets are remembered across a restart of this process.
    fn survives_restarts(&self) -> bool;

    /// One round of the store's background work — purging ids expired by `now` from
    /// memory, or checking the Redis connection and its health; returns the wait before the
    /// next round.
    async fn maintain(&self, now: u64) -> Duration;
}
