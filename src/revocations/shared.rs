//! Revocations across replicas sharing a Redis ticket store. A revocation is written twice:
//! as a key that expires with it (`ticketgate:revoked:<subject>`, so a replica that starts
//! later still refuses) and as a message on `ticketgate:revocations` (so every running
//! replica closes the subject's sockets within moments). Each replica subscribes first and
//! then reads the keys, so no revocation falls between the two.

use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;

use super::{Revocations, Revoked};

const KEY_PREFIX: &str = "ticketgate:revoked:";
const CHANNEL: &str = "ticketgate:revocations";
const TIMEOUT: Duration = Duration::from_secs(1);
/// After the subscription fails: wait this long before subscribing again.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("revocation not shared: Redis unreachable ({0})")]
    Unreachable(String),
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
    client: redis::Client,
}

fn unreachable(e: impl std::fmt::Display) -> ShareError {
    ShareError::Unreachable(e.to_string())
}

impl Shared {
    pub fn new(client: redis::Client) -> Self {
        Shared { client }
    }

    /// Tells every replica (and every later one, until it expires) of `revoked`.
    pub async fn publish(
        &self,
        subject: &str,
        revoked: Revoked,
        now_ms: u64,
    ) -> Result<(), ShareError> {
        let value = encode(subject, revoked);
        let ttl_seconds = revoked
            .until_ms
            .saturating_sub(now_ms)
            .div_ceil(1000)
            .max(1);
        tokio::time::timeout(TIMEOUT, async {
            let mut connection = self.client.get_multiplexed_async_connection().await?;
            let () = connection
                .set_ex(format!("{KEY_PREFIX}{subject}"), &value, ttl_seconds)
                .await?;
            let _receivers: u64 = connection.publish(CHANNEL, &value).await?;
            Ok::<(), redis::RedisError>(())
        })
        .await
        .map_err(unreachable)?
        .map_err(unreachable)
    }

    /// One subscription: records every revocation already stored and every one announced
    /// from now on, until the connection fails; returns the wait before the next.
    pub async fn follow(&self, revocations: &Revocations) -> Duration {
        if let Err(e) = self.subscribe_and_record(revocations).await {
            log::warn!("revocations from other replicas: {e}; subscribing again");
        }
        RESUBSCRIBE_AFTER
    }

    async fn subscribe_and_record(&self, revocations: &Revocations) -> Result<(), ShareError> {
        let mut pubsub = tokio::time::timeout(TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(unreachable)?
            .map_err(unreachable)?;
        pubsub.subscribe(CHANNEL).await.map_err(unreachable)?;
        self.record_stored(revocations).await?;
        revocations.mark_loaded();
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            if let Ok(text) = message.get_payload::<String>()
                && let Some((subject, revoked)) = decode(&text)
            {
                revocations.record(subject, revoked);
            }
        }
        Err(ShareError::Unreachable("subscription closed".into()))
    }

    async fn record_stored(&self, revocations: &Revocations) -> Result<(), ShareError> {
        let mut connection = self
            .client
            .get_multiplexed_async_connection()
            .await
            .map_err(unreachable)?;
        let keys: Vec<String> = {
            let mut found = connection
                .scan_match::<_, String>(format!("{KEY_PREFIX}*"))
                .await
                .map_err(unreachable)?;
            let mut keys = Vec::new();
            while let Some(key) = found.next().await {
                keys.push(key.map_err(unreachable)?);
            }
            keys
        };
        for key in keys {
            let value: Option<String> = connection.get(&key).await.map_err(unreachable)?;
            if let Some((subject, revoked)) = value.as_deref().and_then(decode) {
                revocations.record(subject, revoked);
            }
        }
        Ok(())
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
