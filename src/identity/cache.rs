//! Verified-token cache: a token that verified once is not verified again until it expires,
//! and its identity headers are not built again either. Signature checks dominate the cost of a JWT route (RS256/ES256 especially), and a browser
//! or service sends the same token for every request of its session.
//!
//! Only tokens that passed every check are stored, keyed by the whole token (exact equality,
//! no hash collisions to worry about), and each entry dies at the token's `exp`. A token with
//! leeway left after `exp` falls through to full verification, which decides as it would
//! without the cache, so no refusal changes. Bounded: `quick_cache` evicts by its
//! frequency-aware CLOCK (a scan of one-off tokens does not flush the tokens in steady use).
//!
//! An entry also records which version of its issuer's key set verified it
//! (`KeySetVersion`): once a refresh changes the set, the token is verified again, so a key
//! withdrawn from a JWK Set stops vouching for tokens it signed.
//!
//! Every worker thread looks tokens up in the one cache, so it is `quick_cache`'s sharded
//! one (a single `Mutex<LruCache>` made every hit a write under one lock), built with its
//! `sharded-lock` feature. parking_lot's `RwLock` has every reader write the shard's one lock
//! word, which two threads hitting different tokens of one shard then pass between their
//! cores; crossbeam's `ShardedLock` gives each shard eight cache-padded locks and a reader
//! takes the one its thread maps to, so up to eight workers read without meeting. An insert
//! (after a signature check, tens of µs) takes all eight (BENCHMARKS.md, "cache hit").

use std::sync::Arc;

use quick_cache::sync::Cache;

use super::{Caller, ForwardConfig};
use crate::auth::jwt::{JwtVerifier, KeySetVersion};
use crate::auth::{Login, TokenProblem};

pub struct TokenCache {
    entries: Option<Cache<Box<str>, Verified>>,
}

#[derive(Clone)]
struct Verified {
    caller: Arc<Caller>,
    login: Login,
    keys: KeySetVersion,
}

impl TokenCache {
    /// A cache of `capacity` tokens; 0 turns caching off.
    pub fn new(capacity: usize) -> Self {
        TokenCache {
            entries: (capacity > 0).then(|| Cache::new(capacity)),
        }
    }

    /// The caller of a token verified earlier, not expired at `now`, by a key set the
    /// verifier still holds (`current`): the hot path of every repeated token.
    pub fn cached(
        &self,
        token: &str,
        now: u64,
        current: impl Fn(KeySetVersion) -> bool,
    ) -> Option<(Arc<Caller>, Login)> {
        let entries = self.entries.as_ref()?;
        let hit = entries.get(token)?;
        if now < hit.login.expires_at && current(hit.keys) {
            return Some((hit.caller, hit.login));
        }
        entries.remove(token);
        None
    }

    /// The caller of `token` and its login at `now`: from the cache, or verified now and its
    /// headers built.
    pub async fn caller(
        &self,
        token: &str,
        verifier: &JwtVerifier,
        forward: &ForwardConfig,
        now: u64,
    ) -> Result<(Arc<Caller>, Login), TokenProblem> {
        if let Some(hit) = self.cached(token, now, |keys| verifier.is_current(keys)) {
            return Ok(hit);
        }
        let verified = verifier.verify(token, now).await?;
        let caller = Arc::new(Caller::new(verified.identity, forward)?);
        self.insert(token, &caller, verified.login, verified.keys);
        Ok((caller, verified.login))
    }

    fn insert(&self, token: &str, caller: &Arc<Caller>, login: Login, keys: KeySetVersion) {
        let Some(entries) = &self.entries else { return };
        entries.insert(
            token.into(),
            Verified {
                caller: caller.clone(),
                login,
                keys,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Identity;

    fn alice() -> Arc<Caller> {
        Arc::new(Caller {
            identity: Identity {
                issuer: Default::default(),
                subject: "alice".into(),
                claims: Default::default(),
                lists: Default::default(),
            },
            headers: Vec::new(),
        })
    }

    fn subject(hit: Option<(Arc<Caller>, Login)>) -> Option<String> {
        hit.map(|(c, _)| c.identity.subject.clone())
    }

    const V0: KeySetVersion = KeySetVersion::new(0, 0);

    fn current(keys: KeySetVersion) -> bool {
        keys == V0
    }

    fn until(expires_at: u64) -> Login {
        Login {
            expires_at,
            issued_at: None,
        }
    }

    #[test]
    fn entries_die_at_the_tokens_expiry() {
        let cache = TokenCache::new(10);
        cache.insert("t", &alice(), until(100), V0);
        assert_eq!(
            subject(cache.cached("t", 99, current)),
            Some("alice".into())
        );
        assert!(cache.cached("t", 100, current).is_none());
        assert!(
            cache.cached("t", 50, current).is_none(),
            "an expired entry is dropped, not kept"
        );
    }

    #[test]
    fn an_entry_of_a_key_set_that_changed_is_dropped() {
        let cache = TokenCache::new(10);
        cache.insert("t", &alice(), until(100), V0);
        assert!(cache.cached("t", 1, |_| false).is_none(), "set changed");
        assert!(
            cache.cached("t", 1, current).is_none(),
            "the stale entry was dropped, not kept for later"
        );
    }

    #[test]
    fn only_the_exact_token_hits() {
        let cache = TokenCache::new(10);
        cache.insert("token-a", &alice(), until(100), V0);
        assert!(cache.cached("token-b", 1, current).is_none());
        assert!(cache.cached("token-", 1, current).is_none());
        assert!(cache.cached("token-a", 1, current).is_some());
    }

    #[test]
    fn it_is_bounded_and_can_be_off() {
        let cache = TokenCache::new(100);
        let tokens: Vec<String> = (0..1_000).map(|i| format!("token-{i}")).collect();
        for token in &tokens {
            cache.insert(token, &alice(), until(100), V0);
        }
        let kept = tokens
            .iter()
            .filter(|t| cache.cached(t, 1, current).is_some())
            .count();
        assert!(
            (1..=100).contains(&kept),
            "{kept} of 1000 kept in a cache of 100"
        );
        assert!(
            cache.cached("token-999", 1, current).is_some(),
            "the newest entry is kept"
        );
        let off = TokenCache::new(0);
        off.insert("a", &alice(), until(100), V0);
        assert!(off.cached("a", 1, current).is_none());
    }

    #[test]
    fn threads_share_one_cache() {
        let cache = TokenCache::new(10);
        cache.insert("t", &alice(), until(100), V0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    assert_eq!(subject(cache.cached("t", 1, current)), Some("alice".into()))
                });
            }
        });
    }
}
