//! The keys of one issuer: the static ones from the config plus, for a `jwks_url`, the last
//! JWK Set fetched. Identity providers rotate keys by publishing a new `kid` first, so an
//! unknown `kid` triggers an early fetch — at most one per `MIN_REFETCH_INTERVAL`, so a
//! flood of tokens with made-up kids cannot become a flood of fetches. A failed fetch keeps
//! the last good keys.
//!
//! Each fetch that changes the set moves the issuer's `generation`: a token verified under an
//! earlier generation (`identity::cache`) is verified again, so a key withdrawn from the set
//! stops vouching for the tokens it signed within one refresh, not at their `exp`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::Algorithm;

use super::keys::{self, KeyError, VerifyKey};
use crate::metrics::Metrics;

const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Until the first fetch succeeds the issuer is not ready; retry sooner than the period.
const RETRY_BEFORE_FIRST_LOAD: Duration = Duration::from_secs(2);

pub struct IssuerKeys {
    issuer: String,
    static_keys: Vec<Arc<VerifyKey>>,
    url: Option<String>,
    refresh: Duration,
    fetched: RwLock<Option<Arc<Vec<Arc<VerifyKey>>>>>,
    /// The SHA-256 of the JWK Set behind `fetched`, to tell a changed set from the same one.
    fetched_digest: RwLock<Option<Vec<u8>>>,
    /// Moves each time the fetched set changes.
    generation: AtomicU64,
    /// When the last unknown-kid fetch started; held across the fetch so concurrent
    /// unknown-kid requests wait for one fetch instead of each starting their own. The
    /// periodic refresh does not count: a key rotated just after it must still be found.
    last_early_fetch: tokio::sync::Mutex<Option<tokio::time::Instant>>,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
}

#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("body larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("{0}")]
    Keys(#[from] KeyError),
}

impl IssuerKeys {
    pub fn new(
        issuer: &str,
        static_keys: Vec<VerifyKey>,
        url: Option<String>,
        refresh: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        if url.is_some() {
            metrics.jwks_issuer(issuer);
        }
        IssuerKeys {
            issuer: issuer.to_string(),
            static_keys: static_keys.into_iter().map(Arc::new).collect(),
            url,
            refresh,
            fetched: RwLock::new(None),
            fetched_digest: RwLock::new(None),
            generation: AtomicU64::new(0),
            last_early_fetch: tokio::sync::Mutex::new(None),
            client: reqwest::Client::new(),
            metrics,
        }
    }

    /// Ready once there is at least one key to verify with.
    pub fn is_ready(&self) -> bool {
        !self.static_keys.is_empty() || self.snapshot().is_some()
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Which version of the key set is in force; read before a verification, so a change
    /// during it makes the result stale rather than current.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn snapshot(&self) -> Option<Arc<Vec<Arc<VerifyKey>>>> {
        self.fetched
            .read()
            .map(|guard| guard.clone())
            .unwrap_or(None)
    }

    /// Keys that may verify a token with this header, fetching the JWK Set early when the
    /// token names a `kid` nobody has published yet.
    pub async fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<Arc<VerifyKey>> {
        let found = self.matching(kid, alg);
        let knows_kid = kid.is_none_or(|kid| found.iter().any(|k| k.kid.as_deref() == Some(kid)));
        if knows_kid || self.url.is_none() {
            return found;
        }
        self.refetch_unless_recent().await;
        self.matching(kid, alg)
    }

    /// With a `kid`, the keys published under it plus static keys that carry none (a PEM
    /// file is not tied to a kid); without one, every key of the algorithm's family.
    fn matching(&self, kid: Option<&str>, alg: Algorithm) -> Vec<Arc<VerifyKey>> {
        let fetched = self.snapshot();
        let fetched = fetched.as_deref().map(Vec::as_slice).unwrap_or_default();
        self.static_keys
            .iter()
            .chain(fetched)
            .filter(|k| k.accepts(alg))
            .filter(|k| match (kid, &k.kid) {
                (Some(wanted), Some(has)) => wanted == has,
                _ => true,
            })
            .cloned()
            .collect()
    }

    async fn refetch_unless_recent(&self) {
        let mut last = self.last_early_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < MIN_REFETCH_INTERVAL) {
            return;
        }
        *last = Some(crate::clock::now());
        self.fetch_and_store().await;
    }

    /// When the periodic refresh should first run, or `None` for an issuer without a
    /// `jwks_url`. Keys loaded already (`load`, before a reload's swap) are refreshed one
    /// period later.
    pub fn first_refresh(&self) -> Option<Duration> {
        self.url.as_ref()?;
        Some(if self.snapshot().is_some() {
            self.refresh
        } else {
            Duration::ZERO
        })
    }

    /// One round of the periodic refresh; returns the wait before the next (shorter while
    /// the issuer has never had keys).
    pub async fn refresh(&self) -> Duration {
        self.fetch_and_store().await;
        if self.snapshot().is_some() {
            self.refresh
        } else {
            RETRY_BEFORE_FIRST_LOAD.min(self.refresh)
        }
    }

    /// Fetches the JWK Set now (once); true when the issuer then has usable keys.
    pub async fn load(&self) -> bool {
        if !self.is_ready() {
            self.fetch_and_store().await;
        }
        self.is_ready()
    }

    async fn fetch_and_store(&self) {
        let Some(url) = &self.url else { return };
        match self.fetch(url).await {
            Ok((keys, digest)) => {
                log::info!(
                    "JWKS for issuer {} loaded: {} key(s)",
                    self.issuer,
                    keys.len()
                );
                self.store(keys, digest);
                self.metrics.jwks_refresh(&self.issuer, true);
            }
            Err(e) => {
                log::warn!(
                    "JWKS fetch for issuer {} failed, keeping the last good keys: {e}",
                    self.issuer
                );
                self.metrics.jwks_refresh(&self.issuer, false);
            }
        }
    }

    /// Puts a fetched set in force; a set that differs from the one before moves the
    /// generation (after the keys are replaced, so no verification with the old keys can
    /// be recorded under the new generation).
    fn store(&self, keys: Vec<VerifyKey>, digest: Vec<u8>) {
        if let Ok(mut slot) = self.fetched.write() {
            *slot = Some(Arc::new(keys.into_iter().map(Arc::new).collect()));
        }
        let changed = match self.fetched_digest.write() {
            Ok(mut last) => last
                .replace(digest.clone())
                .is_some_and(|old| old != digest),
            // A poisoned record cannot say the set is the same: treat it as changed.
            Err(_) => true,
        };
        if changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The keys of the JWK Set at `url`, with the set's digest.
    async fn fetch(&self, url: &str) -> Result<(Vec<VerifyKey>, Vec<u8>), FetchError> {
        let mut response = self.client.get(url).timeout(FETCH_TIMEOUT).send().await?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body);
        Ok((keys::from_jwk_set(&body)?, digest.as_ref().to_vec()))
    }
}
