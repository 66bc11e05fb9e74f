//! SIGHUP: the config file is read again, validated as `check` does, and — once every issuer
//! it names has usable keys — becomes the policy new requests are decided by. Requests and
//! WebSockets in flight keep the snapshot they were admitted under (`proxy::Policy`), so a
//! reload drops nothing. An invalid file, or one that changes what needs a restart, changes
//! nothing: the error log names the key, and the failure is counted.
//!
//! The same service keeps the policy's background work going — each `jwks_url` issuer's
//! refresh and the ticket store's upkeep — and moves it to the new policy on a swap.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;

use crate::access_log::AccessLog;
use crate::auth::jwt::JwtVerifier;
use crate::clock::unix_now;
use crate::config::{self, Config, ConfigError};
use crate::lifecycle;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::proxy::Policy;
use crate::proxy::policy::{BuildError, PolicySettings};
use crate::shared_redis::Topology;
use crate::tickets::StoreConfig;
use crate::tickets::store::UsedTickets;
use crate::tls::Tls;

/// How often the files under `tls:` are compared with what is being served: a renewal by
/// cert-manager (a Secret volume updates in place, sending no signal) or certbot then
/// takes effect without a SIGHUP.
const CERTIFICATE_POLL: Duration = Duration::from_secs(10);

/// How long a reload may wait for the JWK Sets of the issuers it names.
const KEYS_DEADLINE: Duration = Duration::from_secs(10);

/// What a running process cannot change without a restart, with the key that sets it.
#[derive(PartialEq, Eq)]
pub struct RestartOnly {
    listen: SocketAddr,
    admin_listen: SocketAddr,
    threads: usize,
    shutdown_grace: Duration,
    /// Whether `listen` speaks TLS: turning it on or off changes what clients must speak.
    tls: bool,
    /// The Redis that remembers used tickets and carries revocations (`None`: this process
    /// alone, in memory). Moving it in place would break both promises: a ticket used in the
    /// old store opens a second socket in the new one, and revocations would still travel
    /// through the old one. Replicas must move together anyway, or each store lets a ticket
    /// through once, so it is a restart (a rolling one), like `listen`.
    ticket_store: Option<Topology>,
}

impl RestartOnly {
    /// Every setting is sorted here, by destructuring: one added to `Config` or
    /// `PolicySettings` does not compile until it is named below, as restart-only or as
    /// taking effect on a reload.
    pub fn of(config: &Config) -> Self {
        let Config {
            listen,
            admin_listen,
            threads,
            shutdown_grace,
            tls,
            policy,
            // Reloaded: new connections take the new limits, the log is reopened.
            limits: _,
            access_log: _,
        } = config;
        let PolicySettings {
            tickets,
            // Reloaded: a new policy is built from them (`Policy::build`).
            upstream: _,
            routes: _,
            jwt: _,
            forward: _,
            cors_allowed_origins: _,
            websocket: _,
            admin_token: _,
            revocations: _,
            admission: _,
        } = policy;
        RestartOnly {
            listen: *listen,
            admin_listen: *admin_listen,
            threads: *threads,
            shutdown_grace: *shutdown_grace,
            tls: tls.is_some(),
            ticket_store: match tickets.as_ref().map(|t| &t.store) {
                Some(StoreConfig::Redis(redis)) => Some(redis.topology.clone()),
                Some(StoreConfig::Memory) | None => None,
            },
        }
    }

    /// The first key whose value differs, if any.
    fn changed_key(&self, other: &RestartOnly) -> Option<&'static str> {
        [
            (self.listen != other.listen, "listen"),
            (self.admin_listen != other.admin_listen, "admin.listen"),
            (self.threads != other.threads, "threads"),
            (
                self.shutdown_grace != other.shutdown_grace,
                "shutdown_grace_seconds",
            ),
            (self.tls != other.tls, "tls"),
            (self.ticket_store != other.ticket_store, "tickets.store"),
        ]
        .into_iter()
        .find_map(|(changed, key)| changed.then_some(key))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}: changing it needs a restart")]
    RestartOnly(&'static str),
    #[error("{0}")]
    Policy(#[from] BuildError),
    #[error("jwt.issuers: no usable keys for issuer {0} within {KEYS_DEADLINE:?}")]
    Keys(String),
    #[error("access_log.path: cannot open it: {0}")]
    AccessLog(std::io::Error),
}

/// Everything a reload replaces, and what it reads.
pub struct Reloader {
    pub path: PathBuf,
    pub running: RestartOnly,
    pub policy: Arc<ArcSwap<Policy>>,
    pub limits: Arc<ArcSwap<Limits>>,
    /// The handshake settings of new connections, certificates included.
    pub tls: Arc<ArcSwapOption<Tls>>,
    pub access_log: Arc<AccessLog>,
    pub metrics: Arc<Metrics>,
}

impl Reloader {
    /// Reads, validates and applies the file; the new policy when it took effect.
    pub async fn reload(&self) -> Result<Arc<Policy>, ReloadError> {
        let mut config = config::load(&self.path)?;
        if let Some(key) = self.running.changed_key(&RestartOnly::of(&config)) {
            return Err(ReloadError::RestartOnly(key));
        }
        let current = self.policy.load_full();
        let policy = Policy::build(
            &config.policy,
            Some(&current),
            current.revocations.clone(),
            &self.metrics,
        )?;
        load_keys(&policy.verifier).await?;
        self.access_log
            .reopen(&config.access_log)
            .map_err(ReloadError::AccessLog)?;
        let policy = Arc::new(policy);
        self.limits.store(Arc::new(config.limits));
        if let Some(tls) = config.tls.take() {
            self.metrics.tls_certificate(tls.expires_at());
            self.tls.store(Some(Arc::new(tls)));
        }
        self.policy.store(policy.clone());
        Ok(policy)
    }
}

/// Fetches every `jwks_url` issuer's keys, all within `KEYS_DEADLINE`.
async fn load_keys(verifier: &JwtVerifier) -> Result<(), ReloadError> {
    let mut loads = JoinSet::new();
    for keys in verifier.issuer_keys() {
        let keys = keys.clone();
        loads.spawn(async move { (keys.load().await, keys.issuer().to_string()) });
    }
    let all = async {
        while let Some(loaded) = loads.join_next().await {
            if let Ok((false, issuer)) = loaded {
                return Err(ReloadError::Keys(issuer));
            }
        }
        Ok(())
    };
    match tokio::time::timeout(KEYS_DEADLINE, all).await {
        Ok(result) => result,
        Err(_) => Err(ReloadError::Keys(
            verifier
                .issuer_keys()
                .find(|keys| !keys.is_ready())
                .map_or_else(String::new, |keys| keys.issuer().to_string()),
        )),
    }
}

/// The background work of one policy: JWKS refreshes, and the ticket store's upkeep, which
/// outlives a reload whenever the store itself does.
/// The policy's periodic work, each a `lifecycle::repeat` loop that ends on shutdown.
struct Upkeep {
    shutdown: ShutdownWatch,
    jwks: JoinSet<()>,
    store: Option<(Arc<dyn UsedTickets>, JoinSet<()>)>,
}

impl Upkeep {
    fn new(shutdown: ShutdownWatch) -> Self {
        Upkeep {
            shutdown,
            jwks: JoinSet::new(),
            store: None,
        }
    }

    /// Refreshes the JWK Sets `policy` names; keeps the store's upkeep unless its store
    /// changed.
    fn follow(&mut self, policy: &Policy) {
        self.jwks.abort_all();
        for keys in policy.verifier.issuer_keys() {
            let Some(first) = keys.first_refresh() else {
                continue;
            };
            let keys = keys.clone();
            let shutdown = self.shutdown.clone();
            self.jwks.spawn(async move {
                lifecycle::repeat(shutdown, first, || keys.refresh()).await;
            });
        }
        let store = policy.tickets.as_ref().map(|t| t.tickets.store().clone());
        let same = match (&store, &self.store) {
            (Some(new), Some((running, _))) => Arc::ptr_eq(new, running),
            (None, None) => true,
            _ => false,
        };
        if !same {
            self.store = store.map(|store| {
                let mut task = JoinSet::new();
                let maintained = store.clone();
                let shutdown = self.shutdown.clone();
                task.spawn(async move {
                    lifecycle::repeat(shutdown, Duration::ZERO, || maintained.maintain(unix_now()))
                        .await;
                });
                (store, task)
            });
        }
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut upkeep = Upkeep::new(shutdown.clone());
        upkeep.follow(&self.policy.load());
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(e) => {
                log::error!("cannot listen for SIGHUP, reloading is off: {e}");
                let _ = shutdown.changed().await;
                return;
            }
        };
        let mut certificates = tokio::time::interval(CERTIFICATE_POLL);
        // What the TLS files held at the last reload, so a broken renewal is tried once.
        let mut tried = None;
        loop {
            let polled = tokio::select! {
                _ = hangups.recv() => false,
                _ = certificates.tick() => true,
                _ = shutdown.changed() => break,
            };
            let on_disk = self
                .tls
                .load()
                .as_ref()
                .and_then(|tls| tls.files().changed());
            if polled {
                if on_disk.is_none() || on_disk == tried {
                    continue;
                }
                log::info!("the TLS certificate or key file changed: reloading");
            }
            tried = on_disk;
            match self.reload().await {
                Ok(policy) => {
                    upkeep.follow(&policy);
                    self.metrics.reloaded(true);
                    log::info!("config reloaded from {}", self.path.display());
                }
                Err(e) => {
                    self.metrics.reloaded(false);
                    log::error!("reload refused, the previous config stays in force: {e}");
                }
            }
        }
    }
}
