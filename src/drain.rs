//! Graceful shutdown that ends as soon as it can. On SIGTERM Pingora stops accepting and then
//! sleeps the whole grace period, even with nothing left to finish — a terminating pod would
//! always take `shutdown_grace_seconds`. Requests in flight are counted here (a WebSocket
//! counts until it closes); once none are left, the access log is flushed and the process
//! exits 0. If some never finish, Pingora's grace period still ends them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::access_log::AccessLog;

const POLL: Duration = Duration::from_millis(50);

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

/// Waits for the shutdown signal, then for the last request, then exits.
pub struct Drain {
    pub in_flight: InFlight,
    pub access_log: Arc<AccessLog>,
}

#[async_trait]
impl BackgroundService for Drain {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if shutdown.changed().await.is_err() {
            return;
        }
        while !self.in_flight.is_idle() {
            tokio::time::sleep(POLL).await;
        }
        log::info!("no request left in flight: exiting before the grace period ends");
        self.access_log.flush();
        std::process::exit(0);
    }
}
