//! Assembles the Pingora server from a validated `Config`: the proxy service on `listen`,
//! the admin service on `admin.listen`, and the background work (`reload`: SIGHUP, JWKS
//! refresh and the ticket store's upkeep; `lifecycle`: the access-log flush and the drain
//! on SIGTERM).

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use pingora::apps::HttpServerOptions;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::Server;
use pingora::server::configuration::ServerConf;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::access_log::AccessLog;
use crate::admin::Admin;
use crate::admission::{self, Admission};
use crate::auth::error::TicketRejection;
use crate::config::Config;
use crate::connection::Watch;
use crate::lifecycle::{
    AccessLogFlush, Drain, InFlight, OnceIdle, ReplicaLease, RevocationUpkeep, SessionRefreshes,
    UpstreamProbe,
};
use crate::live::Sessions;
use crate::metrics::{Family, Metrics};
use crate::proxy::policy::BuildError;
use crate::proxy::{Policy, TicketGate};
use crate::refreshes::SharedSessions;
use crate::refusal::RefreshResult;
use crate::reload::{Reloader, RestartOnly};
use crate::revocations::{Revocations, Shared};
use crate::shared_redis::SharedRedis;
use crate::subjects::Subjects;
use crate::tickets::StoreConfig;
use crate::tickets::store::StoreError;
use crate::tls::handshake::Terminate;
use crate::tls::refusal::Refusal;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the access log: {0}")]
    AccessLog(std::io::Error),
    #[error("cannot set up the revocation stream: {0}")]
    Revocations(#[from] StoreError),
    #[error("{0}")]
    Policy(#[from] BuildError),
}

/// Builds every service and runs until SIGTERM (graceful) or SIGINT (immediate). `path` is
/// the config file `config` came from, read again on SIGHUP; `once_idle` says whether a
/// graceful shutdown ends the process as soon as no request is left.
pub fn run(mut config: Config, path: PathBuf, once_idle: OnceIdle) -> Result<(), StartError> {
    ignore_hangups_until_reloading();
    let metrics = Arc::new(Metrics::new());
    metrics.start_at_zero_for(
        Family::TicketRejections,
        &TicketRejection::ALL.map(TicketRejection::label),
    );
    metrics.start_at_zero_for(Family::TlsRefusals, &Refusal::ALL.map(Refusal::label));
    metrics.start_at_zero_for(
        Family::SessionRefreshes,
        &RefreshResult::ALL.map(RefreshResult::label),
    );
    metrics.start_at_zero_for(
        Family::AdmissionRefusals,
        &admission::Refusal::ALL.map(admission::Refusal::label),
    );
    metrics.start_at_zero_for(Family::StompRefusals, &crate::stomp::guard::Refused::LABELS);
    let access_log = Arc::new(AccessLog::open(&config.access_log).map_err(StartError::AccessLog)?);
    let revocations = Arc::new(Revocations::new(shared_revocations(&config, &metrics)?));
    let shared_sessions = shared_sessions(&config, &metrics)?;
    let policy = Policy::build(&config.policy, None, revocations.clone(), &metrics)?;
    let upstream = policy.upstream;
    let policy = Arc::new(ArcSwap::from_pointee(policy));
    let limits = Arc::new(ArcSwap::from_pointee(config.limits));
    let scheme = config
        .tls
        .as_ref()
        .map_or_else(|| "plain HTTP".to_string(), |tls| tls.summary());
    let running = RestartOnly::of(&config);
    let tls = Arc::new(ArcSwapOption::from(config.tls.take().map(Arc::new)));
    if let Some(tls) = tls.load().as_deref() {
        metrics.tls_certificate(tls.expires_at());
    }

    let in_flight = InFlight::default();
    let admission = Arc::new(Admission::with_subjects(Subjects::new(
        shared_subjects(&config, &metrics)?,
        replica_name(),
    )));
    let sessions = Arc::new(Sessions::default());
    let mut server = Server::new_with_opt_and_conf(None, pingora_conf(&config));
    server.bootstrap();

    let gate = TicketGate {
        resumes: Arc::default(),
        policy: policy.clone(),
        metrics: metrics.clone(),
        access_log: access_log.clone(),
        in_flight: in_flight.clone(),
        sessions: sessions.clone(),
        limits: limits.clone(),
        shared_sessions: shared_sessions.clone(),
        admission: admission.clone(),
    };
    let mut http = pingora::proxy::http_proxy(&server.configuration, gate);
    http.server_options = Some(http_options(&config));
    let proxy = Terminate {
        inner: Arc::new(Watch {
            inner: Arc::new(http),
            limits: limits.clone(),
        }),
        tls: tls.clone(),
        limits: limits.clone(),
        metrics: metrics.clone(),
    };
    let mut proxy = Service::new("ticketgate".to_string(), proxy);
    proxy.add_listener(listener(&config.listen.to_string(), tls.load().is_some()));

    let mut admin = Service::new(
        "admin".to_string(),
        Admin {
            metrics: metrics.clone(),
            policy: policy.clone(),
            revocations: revocations.clone(),
        },
    );
    admin.add_tcp(&config.admin_listen.to_string());
    admin.threads = Some(1);

    let (probed, paced) = (policy.clone(), policy.clone());
    let reloader = Reloader {
        path,
        running,
        policy,
        limits,
        tls,
        access_log: access_log.clone(),
        metrics,
    };
    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(background_service("policy and reload", reloader));
    server.add_service(background_service(
        "revocations",
        RevocationUpkeep(revocations),
    ));
    if let Some(shared) = shared_sessions {
        server.add_service(background_service(
            "session refreshes",
            SessionRefreshes {
                shared,
                sessions: sessions.clone(),
            },
        ));
    }
    if admission.subjects.is_shared() {
        server.add_service(background_service(
            "replica lease",
            ReplicaLease(admission.clone()),
        ));
    }
    server.add_service(background_service(
        "upstream probe",
        UpstreamProbe {
            admission,
            upstream: Box::new(move || probed.load().upstream),
        },
    ));
    server.add_service(background_service(
        "access log flush",
        AccessLogFlush(access_log.clone()),
    ));
    server.add_service(background_service(
        "drain",
        Drain {
            in_flight,
            sessions,
            grace: config.shutdown_grace,
            access_log: access_log.clone(),
            once_idle,
            paced: Box::new(move || paced.load().admission.is_some()),
        },
    ));
    log::info!(
        "ticketgate listening on {} ({scheme}), admin on {}, upstream {}",
        config.listen,
        config.admin_listen,
        upstream
    );
    server.run(pingora::server::RunArgs::default());
    access_log.flush();
    Ok(())
}

/// With a Redis ticket store, revocations travel through the same Redis to every replica.
/// It is the store of the file the process started with, which a reload cannot move
/// (`reload::RestartOnly`).
fn shared_revocations(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<Option<Shared>, StoreError> {
    match config.policy.tickets.as_ref().map(|t| &t.store) {
        Some(StoreConfig::Redis(redis)) => {
            Ok(Some(Shared::new(SharedRedis::new(redis, metrics.clone())?)))
        }
        _ => Ok(None),
    }
}

/// With a Redis store and `websocket.refresh_path`, a refresh at any replica extends the
/// socket wherever it is held (`refreshes`); the store of the file the process started with.
fn shared_sessions(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<Option<Arc<SharedSessions>>, StoreError> {
    let store = config.policy.tickets.as_ref().map(|t| &t.store);
    match (store, &config.policy.websocket.refresh_path) {
        (Some(StoreConfig::Redis(redis)), Some(_)) => Ok(Some(Arc::new(SharedSessions::new(
            SharedRedis::new(redis, metrics.clone())?,
            crate::clock::unix_now_ms(),
        )))),
        _ => Ok(None),
    }
}

/// With a Redis store and `admission.max_websockets_per_subject`, each subject's sockets are
/// counted on every replica sharing it (`subjects`); the store of the file the process
/// started with.
fn shared_subjects(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<Option<SharedRedis>, StoreError> {
    let store = config.policy.tickets.as_ref().map(|t| &t.store);
    let capped = config
        .policy
        .admission
        .is_some_and(|a| a.max_websockets_per_subject.is_some());
    match store {
        Some(StoreConfig::Redis(redis)) if capped => {
            Ok(Some(SharedRedis::new(redis, metrics.clone())?))
        }
        _ => Ok(None),
    }
}

/// This process's name among the replicas: random, so a restarted process is a new one.
fn replica_name() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 9];
    // A failed generator leaves a name of zeros: only replicas that also failed share it.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// SIGHUP's default action ends the process. Taking it over here, before any service runs,
/// means a SIGHUP that arrives before the reload service listens is lost, not fatal.
fn ignore_hangups_until_reloading() {
    let registered = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|runtime| {
            runtime.block_on(async {
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).is_ok()
            })
        });
    if !matches!(registered, Ok(true)) {
        log::warn!(
            "cannot take over SIGHUP: a SIGHUP before the reload service starts ends the process"
        );
    }
}

/// Pingora puts a 64 KiB read buffer under each accepted connection, for the life of the
/// connection. Over plain TCP its HTTP layer reads into buffers of its own (request head,
/// body), so that buffer only adds a copy: plain listeners read unbuffered (an idle
/// WebSocket holds less; BENCHMARKS.md, memory). TLS keeps it: rustls reads record by
/// record, and the buffer turns those small reads into one system call.
fn listener(address: &str, tls: bool) -> ListenerConfig {
    let config = ListenerConfig::tcp(address);
    if tls {
        return config;
    }
    config.l4_buffer(L4BufferSettings::default().read(0))
}

/// An h2 connection is outside the phases `limits` marks (see `connection::Watched::new`):
/// Pingora closes it once it has been idle for `keepalive_timeout`, as read at start.
fn http_options(config: &Config) -> HttpServerOptions {
    let mut options = HttpServerOptions::default();
    options.h2_idle_timeout = Some(config.limits.keepalive_timeout);
    options
}

/// Pingora's own settings, derived from ours. Pingora's default grace period would keep a
/// terminating pod around for five minutes; ours is `shutdown_grace_seconds`. Without work
/// stealing each worker thread keeps its connections: measured faster for a proxy whose
/// requests are short and independent.
fn pingora_conf(config: &Config) -> ServerConf {
    ServerConf {
        threads: config.threads,
        work_stealing: false,
        grace_period_seconds: Some(config.shutdown_grace.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    }
}
