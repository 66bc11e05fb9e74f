//! WebSocket tickets: minted statelessly for a verified caller (`codec`), redeemed once on
//! an upgrade (`store`: in memory or in Redis).

pub mod codec;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use crate::auth::Identity;
use crate::auth::error::{TicketProblem, TicketRejection};
use crate::clock::{unix_now, unix_now_ms};
use crate::metrics::Metrics;
use crate::shared_redis::{SharedRedis, SharedRedisConfig};
use codec::{Codec, Lifetime, RunId, SealError};
use store::memory::MemoryStore;
use store::redis::RedisStore;
use store::{StoreError, UsedTickets};

/// Used ids one process remembers at most (some 40 MB); a million redemptions within one
/// ticket lifetime is far beyond one sidecar.
const MEMORY_CAPACITY: usize = 1_000_000;

/// The `tickets:` settings.
pub struct TicketsConfig {
    pub issue_path: String,
    pub ttl: Duration,
    pub secret: Vec<u8>,
    pub store: StoreConfig,
    pub query_param: String,
}

#[derive(Clone, PartialEq, Eq)]
pub enum StoreConfig {
    Memory,
    Redis(SharedRedisConfig),
}

impl std::fmt::Display for StoreConfig {
    /// Where the store is, never with a user name or password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreConfig::Memory => write!(f, "memory"),
            StoreConfig::Redis(redis) if redis.wait_replicas > 0 => {
                write!(f, "{}, WAIT {}", redis.topology, redis.wait_replicas)
            }
            StoreConfig::Redis(redis) => write!(f, "{}", redis.topology),
        }
    }
}

pub struct Tickets {
    codec: Codec,
    secret: Vec<u8>,
    /// After a reload that changed the secret: the previous codec, until the last ticket it
    /// sealed has expired (Unix seconds), so tickets already handed out stay redeemable.
    previous: Option<Arc<Previous>>,
    /// Sealed into every ticket minted by this run of the process. A store that forgets
    /// used tickets on restart (memory) accepts only this run's tickets, so a ticket used
    /// before a restart cannot be replayed after it.
    run: RunId,
    store: Arc<dyn UsedTickets>,
    store_config: StoreConfig,
    ttl: Duration,
    metrics: Arc<Metrics>,
}

/// A secret replaced by a reload, and until when (Unix seconds) its tickets may be out.
struct Previous {
    codec: Codec,
    until: u64,
}

/// A ticket redeemed: who it was minted for, and when the login that bought it expires.
pub struct Redeemed {
    pub identity: Identity,
    pub login_expires_at: u64,
    /// When the ticket was minted (Unix milliseconds): a revocation after it voids the
    /// socket the ticket opens, however long the upgrade took.
    pub minted_at_ms: u64,
    /// The handle of the socket it opens.
    pub session: String,
    /// The socket's first resume token.
    pub resume: String,
}

pub struct Issued {
    pub ticket: String,
    /// The handle of the socket the ticket opens, for `websocket.refresh_path`.
    pub session: String,
    /// The socket's first resume token, for `websocket.resume_window_seconds`.
    pub resume: String,
    pub expires_in: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// A ticket that cannot be redeemed is no use to the client.
    #[error("ticket store unavailable")]
    StoreUnavailable,
    #[error(transparent)]
    Seal(#[from] SealError),
}

#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    #[error("{0}")]
    Ticket(TicketProblem),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn used_tickets(
    config: &StoreConfig,
    metrics: &Arc<Metrics>,
) -> Result<Arc<dyn UsedTickets>, StoreError> {
    Ok(match config {
        StoreConfig::Memory => Arc::new(MemoryStore::new(MEMORY_CAPACITY)),
        StoreConfig::Redis(redis) => {
            Arc::new(RedisStore::new(SharedRedis::new(redis, metrics.clone())?))
        }
    })
}

impl Tickets {
    pub fn new(config: &TicketsConfig, metrics: Arc<Metrics>) -> Result<Self, StoreError> {
        let codec = Codec::new(&config.secret);
        let run = codec
            .random()
            .map_err(|e| StoreError::Unreachable(e.to_string()))?;
        Ok(Tickets {
            codec,
            secret: config.secret.clone(),
            previous: None,
            run,
            store: used_tickets(&config.store, &metrics)?,
            store_config: config.store.clone(),
            ttl: config.ttl,
            metrics,
        })
    }

    /// The ticket service `config` describes after a reload. It keeps this run's id and,
    /// when the store settings are unchanged, this very store: what it remembers must
    /// survive a reload, or a used ticket would work again. A changed secret keeps the
    /// previous one for the tickets already out, until they expire.
    pub fn reloaded(&self, config: &TicketsConfig) -> Result<Self, StoreError> {
        let store = if config.store == self.store_config {
            self.store.clone()
        } else {
            used_tickets(&config.store, &self.metrics)?
        };
        let now = unix_now();
        let previous = if config.secret == self.secret {
            self.previous.clone().filter(|p| p.until > now)
        } else {
            Some(Arc::new(Previous {
                codec: Codec::new(&self.secret),
                until: now + self.ttl.as_secs(),
            }))
        };
        Ok(Tickets {
            codec: Codec::new(&config.secret),
            secret: config.secret.clone(),
            previous,
            run: self.run,
            store,
            store_config: config.store.clone(),
            ttl: config.ttl,
            metrics: self.metrics.clone(),
        })
    }

    /// A ticket for `identity`, whose login expires at `login_expires_at` (Unix seconds), to
    /// be used after `connect_after` (admission's pacing): it stays valid the whole TTL from
    /// that moment.
    pub fn issue(
        &self,
        identity: &Identity,
        login_expires_at: u64,
        connect_after: Duration,
    ) -> Result<Issued, IssueError> {
        if !self.store.is_healthy() {
            return Err(IssueError::StoreUnavailable);
        }
        let now_ms = unix_now_ms();
        let delay_ms = u64::try_from(connect_after.as_millis()).unwrap_or(u64::MAX);
        let usable_from = now_ms.saturating_add(delay_ms) / 1000;
        let expires_at = usable_from + self.ttl.as_secs();
        let expires_in = expires_at - now_ms / 1000;
        let lifetime = Lifetime {
            minted_at_ms: now_ms,
            expires_at,
            login_expires_at,
        };
        let sealed = self.codec.seal(identity, lifetime, &self.run)?;
        self.metrics.ticket_issued();
        Ok(Issued {
            ticket: sealed.ticket,
            session: sealed.session,
            resume: sealed.resume,
            expires_in,
        })
    }

    /// Verifies the ticket and consumes it atomically; the identity it carries is the caller.
    /// A ticket sent on anything but a WebSocket upgrade is refused unopened and stays unused;
    /// one that `revoked(subject, minted_at_ms)` says was revoked is refused unused too.
    pub async fn redeem(
        &self,
        ticket: &str,
        on_upgrade: bool,
        revoked: &(dyn Fn(&str, u64) -> bool + Sync),
    ) -> Result<Redeemed, RedeemError> {
        let result = if on_upgrade {
            self.open_and_consume(ticket, revoked).await
        } else {
            Err(RedeemError::Ticket(TicketProblem::NotUpgrade))
        };
        match &result {
            Ok(_) => self.metrics.ticket_redeemed(),
            Err(RedeemError::Ticket(problem)) => {
                self.metrics
                    .ticket_rejected(TicketRejection::Ticket(*problem).label());
            }
            Err(RedeemError::Store(_)) => {
                self.metrics
                    .ticket_rejected(TicketRejection::StoreUnavailable.label());
            }
        }
        result
    }

    async fn open_and_consume(
        &self,
        ticket: &str,
        revoked: &(dyn Fn(&str, u64) -> bool + Sync),
    ) -> Result<Redeemed, RedeemError> {
        let now = unix_now();
        let opened = self.open(ticket, now).map_err(RedeemError::Ticket)?;
        if !self.store.survives_restarts() && opened.run != self.run {
            return Err(RedeemError::Ticket(TicketProblem::EarlierRun));
        }
        if revoked(&opened.identity.subject, opened.lifetime.minted_at_ms) {
            return Err(RedeemError::Ticket(TicketProblem::Revoked));
        }
        if self
            .store
            .consume(&opened.id, opened.lifetime.expires_at, now)
            .await?
        {
            Ok(Redeemed {
                identity: opened.identity,
                login_expires_at: opened.lifetime.login_expires_at,
                minted_at_ms: opened.lifetime.minted_at_ms,
                session: opened.session,
                resume: opened.resume,
            })
        } else {
            Err(RedeemError::Ticket(TicketProblem::Replayed))
        }
    }

    /// Opens with the current secret, or with the previous one while its tickets may be out.
    fn open(&self, ticket: &str, now: u64) -> Result<codec::Ticket, TicketProblem> {
        match (self.codec.open(ticket, now), &self.previous) {
            (Err(TicketProblem::Invalid), Some(previous)) if now < previous.until => {
                previous.codec.open(ticket, now)
            }
            (opened, _) => opened,
        }
    }

    /// The store, for its background upkeep (`UsedTickets::maintain`).
    pub fn store(&self) -> &Arc<dyn UsedTickets> {
        &self.store
    }

    /// The store's state, for `/readyz`.
    pub fn store_status(&self) -> String {
        self.store.status()
    }

    pub fn is_ready(&self) -> bool {
        self.store.is_healthy()
    }
}
