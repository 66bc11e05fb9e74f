//! Session refresh across replicas sharing a Redis store: a refresh at any replica extends
//! the socket wherever it is held.
//!
//! The holder writes the session's record when the socket opens —
//! `ticketgate:session:{<handle>}` = who opened it and what the upstream was told (the two
//! digests `live::Sessions` compares), until the login's end plus a minute — and deletes it
//! when the socket closes. A refresh at a replica that does not hold the socket reads that
//! record and its per-session refresh count (one round trip), and when the caller matches
//! publishes the extension on the stream `ticketgate:sessions` and moves the record's expiry
//! (a second round trip). Every replica follows the stream and extends the sockets it holds.
//!
//! Redis operations: per socket opened one `SET`, per socket closed one `DEL`, per refresh at
//! another replica two round trips (GET+INCR+PEXPIRE+PTTL, then XADD+SET) and one entry every
//! replica reads; per socket reaching its expiry none, since the extension was pushed to its
//! holder before. Nothing grows with open sockets per unit of time. A refresh at the holder
//! itself moves its record's expiry (one `PEXPIRE`). The stream is trimmed to its last
//! minute.

use std::time::Duration;

use redis::Value;

use crate::live::{REFRESH_WINDOW_MS, REFRESHES_PER_WINDOW, Refreshed, Sessions};
use crate::shared_redis::stream::Cursor;
use crate::shared_redis::{SharedError, SharedRedis};

const STREAM: &str = "ticketgate:sessions";
const FIELD: &str = "s";
const DEADLINE: Duration = Duration::from_secs(1);
const BLOCK_MS: u64 = 1000;
/// A record outlives the login it was written for by this much.
const RECORD_MARGIN_MS: u64 = 60_000;
/// Stream entries older than this are trimmed: a follower reads within moments.
const STREAM_KEEP_MS: u64 = 60_000;
/// After following failed: wait this long before reading again.
const FOLLOW_AGAIN_AFTER: Duration = Duration::from_secs(1);

fn record_key(handle: &str) -> String {
    format!("ticketgate:session:{{{handle}}}")
}

fn count_key(handle: &str) -> String {
    format!("ticketgate:refreshes:{{{handle}}}")
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub struct SharedSessions {
    redis: SharedRedis,
    /// Where this replica is in the stream.
    last_read: Cursor,
}

impl SharedSessions {
    /// Follows what is published from `now_ms` on (less a second, for the clocks of Redis
    /// and this host): an extension is for a socket open now.
    pub fn new(redis: SharedRedis, now_ms: u64) -> Self {
        SharedSessions {
            redis,
            last_read: Cursor::at(format!("{}-0", now_ms.saturating_sub(1000))),
        }
    }

    /// The holder: the socket held under `handle` is `who`, was told `told`, and its login
    /// ends at `until_ms`.
    pub async fn opened(
        &self,
        handle: &str,
        who: &[u8; 32],
        told: &[u8; 32],
        until_ms: u64,
        now_ms: u64,
    ) -> Result<(), SharedError> {
        let mut write = redis::pipe();
        write
            .cmd("SET")
            .arg(record_key(handle))
            .arg(format!("{} {}", hex(who), hex(told)))
            .arg("PX")
            .arg(until_ms.saturating_sub(now_ms) + RECORD_MARGIN_MS);
        self.redis.write("refresh", write, DEADLINE).await?;
        Ok(())
    }

    /// The holder extended its own socket to `at_ms`: the record lives on with it, for
    /// refreshes at other replicas later.
    pub async fn extended_here(
        &self,
        handle: &str,
        at_ms: u64,
        now_ms: u64,
    ) -> Result<(), SharedError> {
        let mut write = redis::pipe();
        write
            .cmd("PEXPIRE")
            .arg(record_key(handle))
            .arg(at_ms.saturating_sub(now_ms) + RECORD_MARGIN_MS)
            .arg("GT");
        self.redis.write("refresh", write, DEADLINE).await?;
        Ok(())
    }

    /// The holder: the socket held under `handle` closed.
    pub async fn closed(&self, handle: &str) -> Result<(), SharedError> {
        let mut write = redis::pipe();
        write.cmd("DEL").arg(record_key(handle));
        self.redis.write("refresh", write, DEADLINE).await?;
        Ok(())
    }

    /// A refresh at a replica that does not hold the socket: checks the caller against the
    /// record and the session's budget, then tells the holder.
    pub async fn refresh(
        &self,
        handle: &str,
        who: &[u8; 32],
        told: &[u8; 32],
        at_ms: u64,
        now_ms: u64,
    ) -> Result<Refreshed, SharedError> {
        let (record, count, ttl_ms) = self.look_up(handle).await?;
        let Some(record) = record else {
            return Ok(Refreshed::Unknown);
        };
        // The same per-session budget as a refresh at the holder (`live::Sessions`).
        if usize::try_from(count).unwrap_or(0) > REFRESHES_PER_WINDOW {
            let ms = u64::try_from(ttl_ms).unwrap_or(REFRESH_WINDOW_MS);
            return Ok(Refreshed::TooMany(ms.div_ceil(1000).max(1)));
        }
        let (recorded_who, recorded_told) = record.split_once(' ').unwrap_or_default();
        if recorded_who != hex(who) {
            return Ok(Refreshed::Mismatch);
        }
        if recorded_told != hex(told) {
            return Ok(Refreshed::IdentityChanged);
        }
        let mut publish = redis::pipe();
        publish
            .cmd("XADD")
            .arg(STREAM)
            .arg("MINID")
            .arg("~")
            .arg(now_ms.saturating_sub(STREAM_KEEP_MS))
            .arg("*")
            .arg(FIELD)
            .arg(format!("{at_ms} {handle}"))
            .cmd("PEXPIRE")
            .arg(record_key(handle))
            .arg(at_ms.saturating_sub(now_ms) + RECORD_MARGIN_MS)
            .arg("GT");
        self.redis.write("refresh", publish, DEADLINE).await?;
        Ok(Refreshed::Extended(Some(at_ms)))
    }

    /// The record of `handle`, this refresh counted in its window, and the window's rest.
    async fn look_up(&self, handle: &str) -> Result<(Option<String>, i64, i64), SharedError> {
        let counter = count_key(handle);
        let mut read = redis::pipe();
        read.cmd("GET")
            .arg(record_key(handle))
            .cmd("INCR")
            .arg(&counter)
            .cmd("PEXPIRE")
            .arg(&counter)
            .arg(REFRESH_WINDOW_MS)
            .arg("NX")
            .cmd("PTTL")
            .arg(&counter);
        let values = self.redis.write("refresh", read, DEADLINE).await?;
        let record = match values.first() {
            Some(Value::BulkString(bytes)) => String::from_utf8(bytes.clone()).ok(),
            _ => None,
        };
        let int = |i: usize| match values.get(i) {
            Some(Value::Int(n)) => *n,
            _ => 0,
        };
        Ok((record, int(1), int(3)))
    }

    /// Follows the stream, extending the sockets held here, until the connection fails;
    /// returns the wait before following again.
    pub async fn follow(&self, sessions: &Sessions) -> Duration {
        if let Err(e) = self.follow_until_failed(sessions).await {
            log::warn!("session refreshes from other replicas: {e}; reading again");
        }
        FOLLOW_AGAIN_AFTER
    }

    async fn follow_until_failed(&self, sessions: &Sessions) -> Result<(), SharedError> {
        let mut connection = self.redis.dedicated().await?;
        loop {
            self.last_read
                .read(&mut connection, STREAM, FIELD, Some(BLOCK_MS), |text| {
                    if let Some((at_ms, handle)) = decode(text) {
                        sessions.extend_held(handle, at_ms);
                    }
                })
                .await?;
        }
    }
}

/// An extension as it travels: `<at_ms> <handle>`.
fn decode(text: &str) -> Option<(u64, &str)> {
    let (at_ms, handle) = text.split_once(' ')?;
    Some((at_ms.parse().ok()?, handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_extension_travels_and_a_record_key_keeps_its_handle_in_one_slot() {
        assert_eq!(
            decode("1700000000000 AbC-_9"),
            Some((1_700_000_000_000, "AbC-_9"))
        );
        assert_eq!(decode("x AbC"), None);
        assert_eq!(decode("12"), None);
        assert_eq!(record_key("h"), "ticketgate:session:{h}");
        assert_eq!(count_key("h"), "ticketgate:refreshes:{h}");
        assert_eq!(hex(&[0xab; 32]).len(), 64);
    }
}
