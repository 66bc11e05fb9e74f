//! Verified-token cache: a token that verified once is not verified again until it expires,
//! and its identity headers are not built again either. Signature checks dominate the cost of a JWT route (RS256/ES256 especially), and a browser
//! or service sends the same token for every request of its session.
//!
//! Only tokens that passed every check are stored, keyed by the whole token (exact equality,
//! no hash collisions to worry about), and each entry dies at the token's `exp`. A token with
//! leeway left after `exp` falls through to full verification, which decides as it would
//! without the cache, so no refusal changes. Bounded: the least recently used entry goes.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::{Caller, ForwardConfig};
use crate::auth::jwt::JwtVerifier;
use crate::auth::{Login, TokenProblem};

pub struct TokenCache {
    entries: Option<Mutex<LruCache<Box<str>, Verified>>>,
}

struct Verified {
    caller: Arc<Caller>,
    login: Login,
}

impl TokenCache {
    /// A cache of `capacity` tokens; 0 turns caching off.
    pub fn new(capacity: usize) -> Self {
        TokenCache {
            entries: NonZeroUsize::new(capacity).map(|c| Mutex::new(LruCache::new(c))),
        }
    }

    /// The caller of a token verified earlier and not expired at `now`.
    fn get(&self, token: &str, now: u64) -> Option<(Arc<Caller>, Login)> {
        let mut entries = self.entries.as_ref()?.lock().ok()?;
        match entries.get(token) {
            Some(hit) if now < hit.login.expires_at => Some((hit.caller.clone(), hit.login)),
            Some(_) => {
                entries.pop(token);
                None
            }
            None => None,
        }
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
        if let Some(hit) = self.get(token, now) {
            return Ok(hit);
        }
        let verified = verifier.verify(token, now).await?;
        let caller = Arc::new(Caller::new(verified.identity, forward)?);
        self.insert(token, &caller, verified.login);
        Ok((caller, verified.login))
    }

    fn insert(&self, token: &str, caller: &Arc<Caller>, login: Login) {
        let Some(entries) = &self.entries else { return };
        if let Ok(mut entries) = entries.lock() {
            entries.put(
                token.into(),
                Verified {
                    caller: caller.clone(),
                    login,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Identity;

    fn alice() -> Arc<Caller> {
        Arc::new(Caller {
            identity: Identity {
                subject: "alice".into(),
                claims: Default::default(),
            },
            headers: Vec::new(),
        })
    }

    fn subject(hit: Option<(Arc<Caller>, Login)>) -> Option<String> {
        hit.map(|(c, _)| c.identity.subject.clone())
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
        cache.insert("t", &alice(), until(100));
        assert_eq!(subject(cache.get("t", 99)), Some("alice".into()));
        assert!(cache.get("t", 100).is_none());
        assert!(
            cache.get("t", 50).is_none(),
            "an expired entry is dropped, not kept"
        );
    }

    #[test]
    fn only_the_exact_token_hits() {
        let cache = TokenCache::new(10);
        cache.insert("token-a", &alice(), until(100));
        assert!(cache.get("token-b", 1).is_none());
        assert!(cache.get("token-", 1).is_none());
        assert!(cache.get("token-a", 1).is_some());
    }

    #[test]
    fn it_is_bounded_and_can_be_off() {
        let cache = TokenCache::new(2);
        for token in ["a", "b", "c"] {
            cache.insert(token, &alice(), until(100));
        }
        assert!(cache.get("a", 1).is_none());
        assert!(cache.get("c", 1).is_some());
        let off = TokenCache::new(0);
        off.insert("a", &alice(), until(100));
        assert!(off.get("a", 1).is_none());
    }
}
