//! How ticketgate's background work runs and how the process ends.
//!
//! All periodic work (JWKS refresh, the ticket store's upkeep, the access log's flush) has
//! one shape, `repeat`: a domain offers one round that says when it wants the next, and the
//! loop ends on shutdown. Nothing here knows what a round does.
//!
//! Ending: on SIGTERM Pingora stops accepting and then sleeps its whole grace period, even
//! with nothing left to finish, so a terminating pod would always take
//! `shutdown_grace_seconds`. `Drain` counts the requests in flight (a WebSocket counts until
//! it closes) and, with `OnceIdle::Exit`, ends the process as soon as none is left — the one
//! place that exits early. With `OnceIdle::Stay` it only returns, and Pingora's grace period
//! decides; that is also how its logic runs under a test's paused clock.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::access_log::{self, AccessLog};
use crate::admission::{self, Admission};
use crate::live::{CloseReason, Sessions};
use crate::refreshes::SharedSessions;
use crate::revocations::Revocations;

/// How often the drain looks at the count of requests in flight.
const DRAIN_POLL: Duration = Duration::from_millis(50);
const SOCKETS_CLOSE_BEFORE_GRACE_ENDS: Duration = Duration::from_secs(1);

/// Runs `round` after `first_wait`, then again after each wait it returns, until shutdown
/// is signalled (a round in progress is abandoned at its next await).
pub async fn repeat<F, Fut>(mut shutdown: ShutdownWatch, first_wait: Duration, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Duration>,
{
    let mut wait = first_wait;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stopped(&mut shutdown) => return,
        }
        tokio::select! {
            next = round() => wait = next,
            () = stopped(&mut shutdown) => return,
        }
    }
}

/// Resolves once shutdown has been signalled, or can no longer be.
async fn stopped(shutdown: &mut ShutdownWatch) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// Writes the access log's batch out every `FLUSH_EVERY` until shutdown; from then on the
/// drain flushes while it waits.
pub struct AccessLogFlush(pub Arc<AccessLog>);

#[async_trait]
impl BackgroundService for AccessLogFlush {
    async fn start(&self, shutdown: ShutdownWatch) {
        repeat(shutdown, access_log::FLUSH_EVERY, || async {
            self.0.flush();
            access_log::FLUSH_EVERY
        })
        .await;
    }
}

/// The revocation record's upkeep, and with Redis the subscription to other replicas'
/// revocations, until shutdown.
pub struct RevocationUpkeep(pub Arc<Revocations>);

#[async_trait]
impl BackgroundService for RevocationUpkeep {
    async fn start(&self, shutdown: ShutdownWatch) {
        let revocations = &self.0;
        let purge = repeat(shutdown.clone(), Duration::ZERO, || async {
            revocations.purge(crate::clock::unix_now_ms())
        });
        match revocations.shared() {
            Some(shared) => {
                let follow = repeat(shutdown, Duration::ZERO, || shared.follow(revocations));
                tokio::join!(purge, follow);
            }
            None => purge.await,
        }
    }
}

/// Follows the session refreshes other replicas publish, extending the sockets held here.
pub struct SessionRefreshes {
    pub shared: Arc<SharedSessions>,
    pub sessions: Arc<Sessions>,
}

#[async_trait]
impl BackgroundService for SessionRefreshes {
    async fn start(&self, shutdown: ShutdownWatch) {
        repeat(shutdown, Duration::ZERO, || {
            self.shared.follow(&self.sessions)
        })
        .await;
    }
}

/// While the upstream is known down, tries to reach it every second (`admission::probe`).
pub struct UpstreamProbe {
    pub admission: Arc<Admission>,
    /// The current policy's upstream.
    pub upstream: Box<dyn Fn() -> SocketAddr + Send + Sync>,
}

#[async_trait]
impl BackgroundService for UpstreamProbe {
    async fn start(&self, shutdown: ShutdownWatch) {
        repeat(shutdown, admission::PROBE_EVERY, || {
            admission::probe(&self.admission, (self.upstream)())
        })
        .await;
    }
}

/// Renews this replica's lease, under which its sockets count for their subjects on every
/// replica (`subjects`).
pub struct ReplicaLease(pub Arc<Admission>);

#[async_trait]
impl BackgroundService for ReplicaLease {
    async fn start(&self, shutdown: ShutdownWatch) {
        repeat(shutdown, Duration::ZERO, || self.0.subjects.renew()).await;
    }
}

/// How many requests are between their start and their end.
#[derive(Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

/// Held by a request for its whole life; counted while it exists.
pub struct InFlightGuard(Arc<AtomicUsize>);

impl InFlight {
    pub fn enter(&self) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.0.clone())
    }

    fn is_idle(&self) -> bool {
        self.0.load(Ordering::Acquire) == 0
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the drain does once the last request in flight has finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnceIdle {
    /// Flush the access log and exit 0 without waiting out Pingora's grace period.
    Exit,
    /// Flush the access log and leave the rest to Pingora's grace period.
    Stay,
}

/// Waits for the shutdown signal, then for the last request in flight. WebSockets still open
/// when the grace period is about to end get a close frame (1001, reason `shutdown` in the
/// access log) rather than a cut connection, so clients reconnect elsewhere at once. With
/// `admission:` set (`paced`), the sockets open at the signal are closed one by one, spread
/// evenly over the first `PACED_SHARE` of the grace period, so their reconnects spread too.
pub struct Drain {
    pub in_flight: InFlight,
    pub sessions: Arc<Sessions>,
    /// `shutdown_grace_seconds`.
    pub grace: Duration,
    pub access_log: Arc<AccessLog>,
    pub once_idle: OnceIdle,
    /// Whether the current policy paces the drain (`admission:` is set).
    pub paced: Box<dyn Fn() -> bool + Send + Sync>,
}

/// The share of the grace period a paced drain spreads its closes over.
const PACED_SHARE: f64 = 0.8;

/// Closes `open` one by one from `start`, evenly over `over`: the i-th of n at `i * over / n`.
async fn close_paced(
    open: Vec<Arc<crate::live::Ending>>,
    start: tokio::time::Instant,
    over: Duration,
) {
    let count = open.len().max(1) as u32;
    for (i, ending) in open.into_iter().enumerate() {
        tokio::time::sleep_until(start + over * i as u32 / count).await;
        ending.close(CloseReason::Shutdown);
    }
}

impl Drain {
    /// When, after the shutdown signal, open WebSockets are closed: a second before the grace
    /// period ends, so their close frames and log lines still go out.
    fn close_sockets_after(&self) -> Duration {
        self.grace.saturating_sub(SOCKETS_CLOSE_BEFORE_GRACE_ENDS)
    }
}

#[async_trait]
impl BackgroundService for Drain {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        stopped(&mut shutdown).await;
        let start = crate::clock::now();
        if (self.paced)() {
            let open = self.sessions.open_now();
            log::info!(
                "shutting down: closing {} open WebSocket(s) over the grace period",
                open.len()
            );
            tokio::spawn(close_paced(open, start, self.grace.mul_f64(PACED_SHARE)));
        }
        let close_sockets_at = start + self.close_sockets_after();
        let mut sockets_closed = false;
        while !self.in_flight.is_idle() {
            if !sockets_closed && crate::clock::now() >= close_sockets_at {
                let closed = self.sessions.close_all(CloseReason::Shutdown);
                log::info!("grace period ending: closing {closed} open WebSocket(s)");
                sockets_closed = true;
            }
            self.access_log.flush();
            tokio::time::sleep(DRAIN_POLL).await;
        }
        self.access_log.flush();
        if self.once_idle == OnceIdle::Exit {
            log::info!("no request left in flight: exiting before the grace period ends");
            std::process::exit(0);
        }
        log::info!("no request left in flight");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;
    use crate::access_log::AccessLogTarget;

    fn shutdown() -> (tokio::sync::watch::Sender<bool>, ShutdownWatch) {
        tokio::sync::watch::channel(false)
    }

    #[tokio::test(start_paused = true)]
    async fn repeat_waits_what_each_round_asks_and_ends_on_shutdown() {
        let (stop, watch) = shutdown();
        let rounds = Arc::new(AtomicU32::new(0));
        let counted = rounds.clone();
        let task = tokio::spawn(repeat(watch, Duration::from_secs(5), move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                Duration::from_secs(2)
            }
        }));
        tokio::time::sleep(Duration::from_millis(4_900)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 0, "first wait not honoured");
        // Rounds at 5, 7, 9 and 11 s.
        tokio::time::sleep(Duration::from_millis(6_200)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 4);
        stop.send(true).expect("send");
        tokio::time::timeout(Duration::from_millis(1), task)
            .await
            .expect("repeat ended on shutdown")
            .expect("no panic");
        assert_eq!(rounds.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn repeat_abandons_a_round_that_hangs_at_shutdown() {
        let (stop, watch) = shutdown();
        let task = tokio::spawn(repeat(watch, Duration::ZERO, || async {
            std::future::pending::<()>().await;
            Duration::ZERO
        }));
        tokio::time::sleep(Duration::from_secs(60)).await;
        stop.send(true).expect("send");
        tokio::time::timeout(Duration::from_millis(1), task)
            .await
            .expect("repeat ended on shutdown")
            .expect("no panic");
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_returns_only_after_the_last_request_and_flushes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("access.log");
        let access_log = Arc::new(
            AccessLog::open(&AccessLogTarget::File(path.clone())).expect("open access log"),
        );
        let in_flight = InFlight::default();
        let websocket = in_flight.enter();
        let drain = Drain {
            in_flight: in_flight.clone(),
            sessions: Arc::default(),
            grace: Duration::from_secs(3600),
            access_log: access_log.clone(),
            once_idle: OnceIdle::Stay,
            paced: Box::new(|| false),
        };
        let (stop, watch) = shutdown();
        let task = tokio::spawn(async move { drain.start(watch).await });
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!task.is_finished(), "drained before shutdown");
        stop.send(true).expect("send");
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!task.is_finished(), "drained with a request in flight");
        access_log.write(&access_log::Entry {
            ts: "t".into(),
            method: "GET",
            protocol: "HTTP/1.1",
            path: "/ws",
            route: "/ws",
            status: 101,
            duration_ms: 1.0,
            subject: None,
            auth: "ticket",
            reason: None,
        });
        drop(websocket);
        tokio::time::timeout(DRAIN_POLL * 2, task)
            .await
            .expect("drain ended once idle")
            .expect("no panic");
        let written = std::fs::read_to_string(&path).expect("read access log");
        assert!(written.contains(r#""status":101"#), "{written}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_paced_drain_spreads_its_closes_over_four_fifths_of_the_grace() {
        let dir = tempfile::tempdir().expect("temp dir");
        let access_log = Arc::new(
            AccessLog::open(&AccessLogTarget::File(dir.path().join("a.log"))).expect("log"),
        );
        let sessions = Arc::new(Sessions::default());
        let open: Vec<Arc<crate::live::Ending>> = (0..4).map(|_| Arc::default()).collect();
        for ending in &open {
            sessions.add(ending);
        }
        let in_flight = InFlight::default();
        let _websockets = in_flight.enter();
        let drain = Drain {
            in_flight,
            sessions,
            grace: Duration::from_secs(10),
            access_log,
            once_idle: OnceIdle::Stay,
            paced: Box::new(|| true),
        };
        let (stop, watch) = shutdown();
        tokio::spawn(async move { drain.start(watch).await });
        // The paused clock does not move until the test sleeps: the drain starts now.
        let start = crate::clock::now();
        stop.send(true).expect("send");
        let closed = || open.iter().filter(|e| e.closing().is_some()).count();
        // 8 s over 4 sockets: one at 0, 2, 4 and 6 s.
        for (at_ms, expected) in [
            (100, 1),
            (1_900, 1),
            (2_100, 2),
            (4_100, 3),
            (5_900, 3),
            (6_100, 4),
        ] {
            tokio::time::sleep_until(start + Duration::from_millis(at_ms)).await;
            assert_eq!(closed(), expected, "at {at_ms} ms");
        }
    }
}
