//! The in-process store: the ids of tickets already redeemed, each kept until its ticket
//! expires (after that the ticket is refused as too old anyway). Fits one replica; several
//! replicas need the Redis store, or a ticket could be redeemed once at each.

use std::collections::HashMap;
use std::sync::Mutex;

use super::codec::TicketId;
use super::store::StoreError;

pub struct MemoryStore {
    used: Mutex<HashMap<TicketId, u64>>,
    capacity: usize,
}

impl MemoryStore {
    pub fn new(capacity: usize) -> Self {
        MemoryStore {
            used: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// Marks `id` used; `Ok(true)` the first time. When full even after dropping expired
    /// entries it refuses (fail closed): forgetting a live entry would allow a replay.
    pub fn consume(&self, id: &TicketId, expires_at: u64, now: u64) -> Result<bool, StoreError> {
        let mut used = self.used.lock().map_err(|_| StoreError::Poisoned)?;
        if used.contains_key(id) {
            return Ok(false);
        }
        if used.len() >= self.capacity {
            used.retain(|_, expiry| *expiry > now);
            if used.len() >= self.capacity {
                return Err(StoreError::Full);
            }
        }
        used.insert(*id, expires_at);
        Ok(true)
    }

    /// Forgets every entry whose ticket has expired, and gives the memory back.
    pub fn purge(&self, now: u64) {
        if let Ok(mut used) = self.used.lock() {
            used.retain(|_, expiry| *expiry > now);
            if used.capacity() > 2 * used.len() + 1024 {
                used.shrink_to_fit();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remembered(store: &MemoryStore) -> usize {
        store.used.lock().map_or(0, |used| used.len())
    }

    #[test]
    fn a_ticket_is_consumed_once() {
        let store = MemoryStore::new(10);
        assert!(matches!(store.consume(&[1; 16], 100, 50), Ok(true)));
        assert!(matches!(store.consume(&[1; 16], 100, 51), Ok(false)));
        assert!(matches!(store.consume(&[2; 16], 100, 51), Ok(true)));
    }

    #[test]
    fn expired_entries_are_purged_and_do_not_accumulate() {
        let store = MemoryStore::new(1_000_000);
        for i in 0..10_000u32 {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            store
                .consume(&id, 100 + u64::from(i % 2) * 100, 50)
                .expect("room");
        }
        store.purge(150);
        assert_eq!(remembered(&store), 5_000);
        store.purge(250);
        assert_eq!(remembered(&store), 0);
    }

    #[test]
    fn a_full_store_refuses_rather_than_forgets() {
        let store = MemoryStore::new(2);
        store.consume(&[1; 16], 100, 0).expect("room");
        store.consume(&[2; 16], 200, 0).expect("room");
        assert!(matches!(
            store.consume(&[3; 16], 100, 50),
            Err(StoreError::Full)
        ));
        // Once the first entry's ticket has expired its slot is reused.
        assert!(matches!(store.consume(&[3; 16], 300, 150), Ok(true)));
    }
}
