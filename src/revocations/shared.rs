//! Revocations across replicas sharing a Redis ticket store, as entries of one stream,
//! `ticketgate:revocations`. Each replica reads the stream from its start when it starts (so
//! a replica that starts later still refuses) and then follows it with blocking reads (so
//! every running replica closes the subject's sockets within moments).
//!
//! A stream rather than keys and pub/sub: one key lives in one slot, so a Cluster needs
//! nothing more; a follower that lost its connection resumes after the last entry it read,
//! so a reconnect or a failover misses nothing; and with `wait_replicas` a revocation is
//! acknowledged only once replicas hold it, as a redemption is. Each write trims the entries
//! older than its revocation's lifetime.

use std::time::Duration;

use super::{Revocations, Revoked};
use crate::shared_redis::stream::{BATCH, Cursor};
use crate::shared_redis::{Connection, SharedError, SharedRedis};

const STREAM: &str = "ticketgate:revocations";
const FIELD: &str = "r";
const PUBLISH_DEADLINE: Duration = Duration::from_secs(1);
const BLOCK_MS: u64 = 1000;
/// After following failed: wait this long before reading again.
const FOLLOW_AGAIN_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("revocation not shared: {0}")]
    Redis(#[from] SharedError),
}

/// A revocation as it travels: `<at_ms> <until_ms> <subject>` (the subject last, since it
/// may hold spaces).
fn encode(subject: &str, revoked: Revoked) -> String {
    format!("{} {} {subject}", revoked.at_ms, revoked.until_ms)
}

fn decode(message: &str) -> Option<(&str, Revoked)> {
    let mut parts = message.splitn(3, ' ');
    let at_ms = parts.next()?.parse().ok()?;
    let until_ms = parts.next()?.parse().ok()?;
    Some((parts.next()?, Revoked { at_ms, until_ms }))
}

pub struct Shared {
    redis: SharedRedis,
    /// Where this replica is in the stream.
    last_read: Cursor,
}

impl Shared {
    pub fn new(redis: SharedRedis) -> Self {
        Shared {
            redis,
            last_read: Cursor::at("0-0".to_string()),
        }
    }

    /// Tells every replica (and every later one, until it expires) of `revoked`.
    pub async fn publish(
        &self,
        subject: &str,
        revoked: Revoked,
        now_ms: u64,
    ) -> Result<(), ShareError> {
        let lifetime_ms = revoked.until_ms.saturating_sub(revoked.at_ms);
        let mut append = redis::pipe();
        append
            .cmd("XADD")
            .arg(STREAM)
            .arg("MINID")
            .arg("~")
            .arg(now_ms.saturating_sub(lifetime_ms))
            .arg("*")
            .arg(FIELD)
            .arg(encode(subject, revoked));
        self.redis.write("revoke", append, PUBLISH_DEADLINE).await?;
        Ok(())
    }

    /// Follows the stream: catches up, says the revocations are loaded, then records each
    /// new entry until the connection fails; returns the wait before following again.
    pub async fn follow(&self, revocations: &Revocations) -> Duration {
        if let Err(e) = self.catch_up_and_follow(revocations).await {
            log::warn!("revocations from other replicas: {e}; reading again");
        }
        FOLLOW_AGAIN_AFTER
    }

    async fn catch_up_and_follow(&self, revocations: &Revocations) -> Result<(), SharedError> {
        let mut connection = self.redis.dedicated().await?;
        while self.read(&mut connection, revocations, None).await? == BATCH {}
        revocations.mark_loaded();
        loop {
            self.read(&mut connection, revocations, Some(BLOCK_MS))
                .await?;
        }
    }

    /// One `XREAD` after the last entry read, blocking up to `block_ms` when given; returns
    /// how many entries it read.
    async fn read(
        &self,
        connection: &mut Connection,
        revocations: &Revocations,
        block_ms: Option<u64>,
    ) -> Result<usize, SharedError> {
        self.last_read
            .read(connection, STREAM, FIELD, block_ms, |text| {
                if let Some((subject, revoked)) = decode(text) {
                    revocations.record(subject, revoked);
                }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_travels_with_any_subject() {
        let revoked = Revoked {
            at_ms: 10,
            until_ms: 20,
        };
        for subject in ["alice", "a b c", "", "ünïcode 123"] {
            assert_eq!(decode(&encode(subject, revoked)), Some((subject, revoked)));
        }
        assert_eq!(decode("x 1 alice"), None);
        assert_eq!(decode("1 2"), None);
    }
}
