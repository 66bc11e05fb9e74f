//! The in-process store: the ids of tickets already redeemed, each kept until its ticket
//! expires (after that the ticket is refused as too old anyway). Fits one replica; several
//! replicas need the Redis store, or a ticket could be redeemed once at each.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::{StoreError, UsedTickets};
use crate::tickets::codec::TicketId;

const PURGE_EVERY: Duration = Duration::from_secs(1);

pub struct MemoryStore {
    used: Mutex<Used>,
    capacity: usize,
}

/// The used ids, and the same ids in the order they were used, with their expiry. Tickets
/// share one lifetime, so that order is (nearly) the order of expiry: a purge pops what
/// expired from the front instead of scanning every entry under the lock redemptions take.
/// An entry queued behind a later-expiring one (after a TTL change) is merely kept longer.
#[derive(Default)]
struct Used {
    ids: HashSet<TicketId>,
    by_expiry: VecDeque<(u64, TicketId)>,
}

impl Used {
    fn purge(&mut self, now: u64) {
        while let Some((expires_at, id)) = self.by_expiry.front() {
            if *expires_at > now {
                break;
            }
            self.ids.remove(id);
            self.by_expiry.pop_front();
        }
    }
}

impl MemoryStore {
    pub fn new(capacity: usize) -> Self {
        MemoryStore {
            used: Mutex::new(Used::default()),
            capacity,
        }
    }

    /// Marks `id` used; `Ok(true)` the first time. When full even after dropping expired
    /// entries it refuses (fail closed): forgetting a live entry would allow a replay.
    pub fn mark_used(&self, id: &TicketId, expires_at: u64, now: u64) -> Result<bool, StoreError> {
        let mut used = self.used.lock().map_err(|_| StoreError::Poisoned)?;
        if used.ids.contains(id) {
            return Ok(false);
        }
        if used.ids.len() >= self.capacity {
            used.purge(now);
            if used.ids.len() >= self.capacity {
                return Err(StoreError::Full);
            }
        }
        used.ids.insert(*id);
        used.by_expiry.push_back((expires_at, *id));
        Ok(true)
    }

    /// Forgets every entry whose ticket has expired, and gives the memory back.
    pub fn purge(&self, now: u64) {
        if let Ok(mut used) = self.used.lock() {
            used.purge(now);
            if used.ids.capacity() > 2 * used.ids.len() + 1024 {
                used.ids.shrink_to_fit();
                used.by_expiry.shrink_to_fit();
            }
        }
    }
}

#[async_trait]
impl UsedTickets for MemoryStore {
    async fn consume(&self, id: &TicketId, expires_at: u64, now: u64) -> Result<bool, StoreError> {
        self.mark_used(id, expires_at, now)
    }

    fn is_healthy(&self) -> bool {
        true
    }

    fn survives_restarts(&self) -> bool {
        false
    }

    fn status(&self) -> String {
        "memory: up".to_string()
    }

    async fn maintain(&self, now: u64) -> Duration {
        self.purge(now);
        PURGE_EVERY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remembered(store: &MemoryStore) -> usize {
        store.used.lock().map_or(0, |used| used.ids.len())
    }

    #[test]
    fn a_ticket_is_consumed_once() {
        let store = MemoryStore::new(10);
        assert!(matches!(store.mark_used(&[1; 16], 100, 50), Ok(true)));
        assert!(matches!(store.mark_used(&[1; 16], 100, 51), Ok(false)));
        assert!(matches!(store.mark_used(&[2; 16], 100, 51), Ok(true)));
    }

    #[test]
    fn expired_entries_are_purged_and_do_not_accumulate() {
        let store = MemoryStore::new(1_000_000);
        // Redeemed over time, each ticket 30 s after it was minted: expiries in use order.
        for i in 0..10_000u32 {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            let used_at = u64::from(i / 100);
            store.mark_used(&id, used_at + 30, used_at).expect("room");
        }
        store.purge(80);
        assert_eq!(remembered(&store), 5_000 - 100);
        assert!(
            matches!(store.mark_used(&[0; 16], 200, 80), Ok(true)),
            "purged"
        );
        let mut kept = [0u8; 16];
        kept[..4].copy_from_slice(&9_999u32.to_be_bytes());
        assert!(
            matches!(store.mark_used(&kept, 200, 80), Ok(false)),
            "still used"
        );
        store.purge(200);
        assert_eq!(remembered(&store), 0);
    }

    /// An entry queued behind a later-expiring one (the TTL was shortened) is kept until
    /// the purge reaches it: longer than needed, never shorter.
    #[test]
    fn a_shorter_ttl_behind_a_longer_one_is_kept_not_lost() {
        let store = MemoryStore::new(10);
        store.mark_used(&[1; 16], 100, 0).expect("room");
        store.mark_used(&[2; 16], 50, 0).expect("room");
        store.purge(60);
        assert_eq!(remembered(&store), 2);
        assert!(matches!(store.mark_used(&[2; 16], 50, 40), Ok(false)));
        store.purge(100);
        assert_eq!(remembered(&store), 0);
    }

    #[test]
    fn a_full_store_refuses_rather_than_forgets() {
        let store = MemoryStore::new(2);
        store.mark_used(&[1; 16], 100, 0).expect("room");
        store.mark_used(&[2; 16], 200, 0).expect("room");
        assert!(matches!(
            store.mark_used(&[3; 16], 100, 50),
            Err(StoreError::Full)
        ));
        // Once the first entry's ticket has expired its slot is reused.
        assert!(matches!(store.mark_used(&[3; 16], 300, 150), Ok(true)));
    }
}
