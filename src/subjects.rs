//! How many WebSockets each subject has open, for `admission.max_websockets_per_subject`:
//! on this replica alone (no shared store), or on every replica sharing the Redis store.
//!
//! Shared: each subject's sockets are the members of a sorted set,
//! `ticketgate:sockets:{<subject>}`, one `<replica>:<socket>` member per socket, added when the
//! socket opens and removed when it closes. A replica that dies cannot remove its own, so each
//! replica keeps one lease, `ticketgate:replica:<replica>` (30 s, renewed every 10 s): a count
//! skips (and removes) the members of replicas whose lease is gone, so a dead replica's places
//! free within 30 s. Renewing a replica's lease, not each socket's, keeps Redis traffic to the
//! opens, the closes, the counts and one write per replica every 10 s.
//!
//! Redis operations: per socket opened one `ZADD`, per socket closed one `ZREM`, per count (a
//! ticket or a bearer upgrade of a capped subject) one `ZRANGE` and one pipeline of `EXISTS`
//! per distinct replica among its sockets, per replica one `SET` every 10 s.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::Value;

use crate::shared_redis::{SharedError, SharedRedis};

/// A replica's lease lives this long; renewed every `RENEW_EVERY`.
const LEASE: Duration = Duration::from_secs(30);
pub const RENEW_EVERY: Duration = Duration::from_secs(10);
const DEADLINE: Duration = Duration::from_secs(1);

fn sockets_key(subject: &str) -> String {
    format!("ticketgate:sockets:{{{subject}}}")
}

fn lease_key(replica: &str) -> String {
    format!("ticketgate:replica:{replica}")
}

/// The open sockets of each subject.
#[derive(Default)]
pub struct Subjects {
    /// This replica's sockets by subject (the whole count without a shared store).
    here: Mutex<HashMap<String, usize>>,
    shared: Option<Shared>,
    /// Numbers this replica's sockets.
    next: AtomicU64,
}

struct Shared {
    redis: SharedRedis,
    /// This process's name among the replicas: random, so a restart is a new replica.
    replica: String,
}

/// A socket counted for its subject; `Subjects::closed` takes it back.
#[derive(Debug, Clone)]
pub struct Counted {
    subject: String,
    member: String,
}

impl Subjects {
    pub fn new(shared: Option<SharedRedis>, replica: String) -> Self {
        Subjects {
            here: Mutex::default(),
            shared: shared.map(|redis| Shared { redis, replica }),
            next: AtomicU64::new(0),
        }
    }

    /// How many sockets `subject` has open (on every replica sharing the store).
    pub async fn open_of(&self, subject: &str) -> Result<usize, SharedError> {
        let Some(shared) = &self.shared else {
            return Ok(self.here_of(subject));
        };
        let mut read = redis::pipe();
        read.cmd("ZRANGE").arg(sockets_key(subject)).arg(0).arg(-1);
        let members: Vec<String> = match shared.redis.write("sockets", read, DEADLINE).await?.pop()
        {
            Some(Value::Array(values)) => values
                .into_iter()
                .filter_map(|v| match v {
                    Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let replicas: Vec<&str> = members
            .iter()
            .filter_map(|m| m.split_once(':').map(|(replica, _)| replica))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if replicas.is_empty() {
            return Ok(0);
        }
        let mut alive = redis::pipe();
        for replica in &replicas {
            alive.cmd("EXISTS").arg(lease_key(replica));
        }
        let answers = shared.redis.write("sockets", alive, DEADLINE).await?;
        let dead: HashSet<&str> = replicas
            .iter()
            .zip(answers)
            .filter(|(_, answer)| matches!(answer, Value::Int(0)))
            .map(|(replica, _)| *replica)
            .collect();
        let (gone, open): (Vec<&String>, Vec<&String>) = members.iter().partition(|m| {
            m.split_once(':')
                .is_some_and(|(replica, _)| dead.contains(replica))
        });
        if !gone.is_empty() {
            let mut forget = redis::pipe();
            forget.cmd("ZREM").arg(sockets_key(subject)).arg(gone);
            let _ = shared.redis.write("sockets", forget, DEADLINE).await;
        }
        Ok(open.len())
    }

    fn here_of(&self, subject: &str) -> usize {
        self.here
            .lock()
            .map_or(0, |here| here.get(subject).copied().unwrap_or(0))
    }

    /// A socket of `subject` opened here: counted here at once (`record` tells the store).
    pub fn opened(&self, subject: &str) -> Counted {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut here) = self.here.lock() {
            *here.entry(subject.to_string()).or_default() += 1;
        }
        let member = match &self.shared {
            Some(shared) => format!("{}:{n}", shared.replica),
            None => n.to_string(),
        };
        Counted {
            subject: subject.to_string(),
            member,
        }
    }

    /// Tells the shared store of a socket `opened` counted.
    pub async fn record(&self, counted: &Counted) {
        if let Some(shared) = &self.shared {
            let mut add = redis::pipe();
            add.cmd("ZADD")
                .arg(sockets_key(&counted.subject))
                .arg(crate::clock::unix_now_ms())
                .arg(&counted.member);
            if let Err(e) = shared.redis.write("sockets", add, DEADLINE).await {
                log::warn!("a socket was not counted for its subject: {e}");
            }
        }
    }

    /// The socket `counted` closed: its place frees here at once (`forget` tells the store).
    pub fn closed(&self, counted: &Counted) {
        if let Ok(mut here) = self.here.lock()
            && let Some(n) = here.get_mut(&counted.subject)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                here.remove(&counted.subject);
            }
        }
    }

    /// Tells the shared store a socket `closed`.
    pub async fn forget(&self, counted: &Counted) {
        if let Some(shared) = &self.shared {
            let mut remove = redis::pipe();
            remove
                .cmd("ZREM")
                .arg(sockets_key(&counted.subject))
                .arg(&counted.member);
            if let Err(e) = shared.redis.write("sockets", remove, DEADLINE).await {
                log::debug!("a closed socket stays counted until its replica's lease ends: {e}");
            }
        }
    }

    /// One renewal of this replica's lease; returns the wait before the next.
    pub async fn renew(&self) -> Duration {
        if let Some(shared) = &self.shared {
            let mut renew = redis::pipe();
            renew
                .cmd("SET")
                .arg(lease_key(&shared.replica))
                .arg(1)
                .arg("PX")
                .arg(LEASE.as_millis() as u64);
            if let Err(e) = shared.redis.write("sockets", renew, DEADLINE).await {
                log::warn!("this replica's lease was not renewed: {e}");
            }
        }
        RENEW_EVERY
    }

    /// Whether the counts are shared with other replicas (then the lease needs renewing).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_a_shared_store_a_subject_counts_its_sockets_here() {
        let subjects = Subjects::new(None, "r".into());
        assert_eq!(subjects.open_of("alice").await.ok(), Some(0));
        let a = subjects.opened("alice");
        let b = subjects.opened("alice");
        subjects.opened("bob");
        assert_eq!(subjects.open_of("alice").await.ok(), Some(2));
        subjects.closed(&a);
        assert_eq!(subjects.open_of("alice").await.ok(), Some(1));
        subjects.closed(&b);
        subjects.closed(&b);
        assert_eq!(
            subjects.open_of("alice").await.ok(),
            Some(0),
            "never below 0"
        );
        assert_eq!(subjects.open_of("bob").await.ok(), Some(1));
    }

    #[test]
    fn a_subjects_sockets_are_one_key_in_one_slot() {
        assert_eq!(sockets_key("alice"), "ticketgate:sockets:{alice}");
        assert_eq!(lease_key("r1"), "ticketgate:replica:r1");
    }
}
