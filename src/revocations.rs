//! Revoked logins. `POST /revoke` (the app behind ticketgate calls it on logout or a password
//! change) makes a subject's logins up to that moment void for `revocations.ttl_seconds`
//! (the longest a login token lives): bearer JWTs issued before it (or without `iat`) and
//! tickets minted before it are refused, and the subject's open WebSockets are closed.
//!
//! This replica's record is kept here; `shared` carries revocations between replicas that
//! share a Redis ticket store.

pub mod shared;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use crate::live::{CloseReason, Ending};
pub use shared::{ShareError, Shared};

/// How often expired revocations and closed sockets are dropped from the record.
const PURGE_EVERY: Duration = Duration::from_secs(10);

/// The bearer token `POST /revoke` must present (`admin.token_file`), kept as its SHA-256.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(Vec<u8>);

fn sha256(bytes: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

impl AdminToken {
    pub fn new(token: Vec<u8>) -> Self {
        AdminToken(sha256(&token))
    }

    /// Compares digests of one length in constant time, so the comparison's duration says
    /// nothing about the token, its length included (a comparison of the raw bytes returns
    /// at once on a length mismatch).
    pub fn matches(&self, presented: &[u8]) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(&self.0, &sha256(presented)).is_ok()
    }
}

/// The `revocations:` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevocationsConfig {
    pub ttl: Duration,
}

pub struct Revocations {
    /// Subject -> its revocation; read on every authenticated request.
    revoked: RwLock<HashMap<String, Revoked>>,
    /// Whether `revoked` holds anything: the common case, none, costs one atomic load.
    any: AtomicBool,
    /// Subject -> the live-session state of its open WebSockets on this replica.
    open: Mutex<HashMap<String, Vec<Weak<Ending>>>>,
    /// The other replicas, with a Redis ticket store.
    shared: Option<Shared>,
    /// Whether the revocations stored in Redis have been read (at once without Redis): a
    /// replica is not ready before, or it would let revoked logins through.
    loaded: AtomicBool,
}

/// A revocation at `now_ms` that lasts `ttl`.
fn revocation_at(now_ms: u64, ttl: Duration) -> Revoked {
    Revoked {
        at_ms: now_ms,
        until_ms: now_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
    }
}

/// A subject's logins before `at_ms` are void until `until_ms` (Unix milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revoked {
    pub at_ms: u64,
    pub until_ms: u64,
}

impl Revocations {
    pub fn new(shared: Option<Shared>) -> Self {
        Revocations {
            revoked: RwLock::default(),
            any: AtomicBool::new(false),
            open: Mutex::default(),
            loaded: AtomicBool::new(shared.is_none()),
            shared,
        }
    }

    /// Revokes `subject`'s logins up to `now_ms` for `ttl` (the policy's
    /// `revocations.ttl_seconds`): here at once, and on the other replicas through Redis when
    /// there are any (an error then means only this replica knows).
    pub async fn revoke(
        &self,
        subject: &str,
        now_ms: u64,
        ttl: Duration,
    ) -> Result<Revoked, ShareError> {
        let revoked = revocation_at(now_ms, ttl);
        self.record(subject, revoked);
        if let Some(shared) = &self.shared {
            shared.publish(subject, revoked, now_ms).await?;
        }
        Ok(revoked)
    }

    /// The other replicas' revocations, as a `lifecycle::repeat` round: `None` without any.
    pub fn shared(&self) -> Option<&Shared> {
        self.shared.as_ref()
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    fn mark_loaded(&self) {
        self.loaded.store(true, Ordering::Release);
    }

    /// Whether a login of `subject` issued at `issued_at_ms` (`None`: it does not say) is
    /// void at `now_ms` (Unix milliseconds).
    pub fn refuses(&self, subject: &str, issued_at_ms: Option<u64>, now_ms: u64) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let Ok(revoked) = self.revoked.read() else {
            // A poisoned record cannot vouch for anyone: fail closed.
            return true;
        };
        revoked
            .get(subject)
            .is_some_and(|r| now_ms < r.until_ms && issued_at_ms.is_none_or(|iat| iat < r.at_ms))
    }

    /// Records `revocation` of `subject` (from this replica's admin listener or from
    /// another replica) and closes the subject's open WebSockets here.
    pub fn record(&self, subject: &str, revocation: Revoked) {
        if let Ok(mut revoked) = self.revoked.write() {
            let entry = revoked.entry(subject.to_string()).or_insert(revocation);
            if revocation.at_ms >= entry.at_ms {
                *entry = revocation;
            }
            self.any.store(true, Ordering::Release);
        }
        let sockets = self
            .open
            .lock()
            .ok()
            .and_then(|mut open| open.remove(subject))
            .unwrap_or_default();
        for ending in sockets.iter().filter_map(Weak::upgrade) {
            ending.close(CloseReason::Revoked);
        }
    }

    /// Follows an open WebSocket of `subject`, so a revocation can close it.
    pub fn watch(&self, subject: &str, ending: &Arc<Ending>) {
        if let Ok(mut open) = self.open.lock() {
            let sockets = open.entry(subject.to_string()).or_default();
            sockets.retain(|s| s.strong_count() > 0);
            sockets.push(Arc::downgrade(ending));
        }
    }

    /// One round of upkeep: drops revocations past their time and sockets that closed.
    pub fn purge(&self, now_ms: u64) -> Duration {
        if let Ok(mut revoked) = self.revoked.write() {
            revoked.retain(|_, r| now_ms < r.until_ms);
            self.any.store(!revoked.is_empty(), Ordering::Release);
        }
        if let Ok(mut open) = self.open.lock() {
            open.retain(|_, sockets| {
                sockets.retain(|s| s.strong_count() > 0);
                !sockets.is_empty()
            });
        }
        PURGE_EVERY
    }

    /// How many subjects have open WebSockets followed here (for tests of the upkeep).
    #[cfg(test)]
    fn followed(&self) -> usize {
        self.open.lock().map_or(0, |open| open.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revocations() -> Revocations {
        Revocations::new(None)
    }

    fn at(now_ms: u64) -> Revoked {
        revocation_at(now_ms, Duration::from_secs(100))
    }

    #[test]
    fn the_admin_token_matches_itself_only() {
        let token = AdminToken::new(b"0123456789abcdef0123456789abcdef".to_vec());
        assert!(token.matches(b"0123456789abcdef0123456789abcdef"));
        assert!(!token.matches(b"0123456789abcdef0123456789abcdee"));
        assert!(!token.matches(b"0123456789abcdef0123456789abcdef0"));
        assert!(!token.matches(b""));
    }

    #[test]
    fn logins_before_the_revocation_are_refused_until_it_expires() {
        let r = revocations();
        assert!(!r.refuses("alice", None, 1_000));
        r.record("alice", at(1_000));
        assert!(r.refuses("alice", Some(999), 1_001));
        assert!(r.refuses("alice", None, 1_001), "no iat: refused");
        assert!(
            !r.refuses("alice", Some(1_000), 1_001),
            "issued at the revocation"
        );
        assert!(
            !r.refuses("alice", Some(1_005), 1_006),
            "a later login works"
        );
        assert!(!r.refuses("bob", None, 1_001), "other subjects untouched");
        assert!(!r.refuses("alice", Some(999), 101_000), "past the TTL");
    }

    #[test]
    fn a_later_revocation_wins_and_an_earlier_one_does_not_undo_it() {
        let r = revocations();
        r.record("alice", at(2_000));
        r.record("alice", at(1_000));
        assert!(r.refuses("alice", Some(1_500), 2_001));
    }

    #[test]
    fn open_sockets_of_the_subject_are_closed() {
        let r = revocations();
        let (alice, bob) = (Arc::new(Ending::default()), Arc::new(Ending::default()));
        r.watch("alice", &alice);
        r.watch("bob", &bob);
        r.record("alice", at(1_000));
        assert_eq!(alice.closing(), Some(CloseReason::Revoked));
        assert_eq!(bob.closing(), None);
    }

    #[test]
    fn the_upkeep_forgets_what_expired_and_what_closed() {
        let r = revocations();
        r.record("alice", at(1_000));
        let gone = Arc::new(Ending::default());
        r.watch("bob", &gone);
        drop(gone);
        r.purge(1_050);
        assert!(r.refuses("alice", None, 1_050));
        assert_eq!(r.followed(), 0);
        r.purge(101_000);
        assert!(!r.any.load(Ordering::Acquire));
    }
}
