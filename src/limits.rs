//! Deadlines for slow clients, which Pingora 0.9 does not set: an HTTP/1.1 keep-alive
//! connection waits for its next request with no timeout at all, its read timeout applies
//! per read, so a header trickled a byte at a time is never cut, its h2 handshake and wait
//! for a first stream have no timeout, and its writes to the client have none either.
//!
//! Every accepted connection's stream (`connection::Watched`) fails a pending read once its
//! `Phase`'s deadline passes: `header_timeout` from the connection's start or from the first
//! byte of a later request until the header is complete, and `keepalive_timeout` while a
//! kept-alive connection waits for its next request. The proxy marks the phases
//! (`Phase::open` when a header is in, `Phase::idle` when a request ends); on h2, where the
//! proxy's hooks see streams and not the connection, the client's frames mark them (`h2`).
//! Between the two — bodies and upgraded WebSockets — no read deadline applies here (a
//! WebSocket has its own idle timeout). A write that makes no progress for `write_timeout`
//! fails in every phase, and the upstream's writes get the same bound.

mod h2;

pub use h2::H2Headers;

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::clock;

/// The `limits:` settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    /// A write to the client, or to the upstream, that makes no progress for this long
    /// fails the connection: a peer that stops reading cannot hold it open.
    pub write_timeout: Duration,
}

const WAITING_FOR_HEADER: u8 = 0;
const IDLE: u8 = 1;
const OPEN: u8 = 2;

/// Where a connection is in its request cycle, and the deadline that goes with it.
pub struct Phase {
    state: AtomicU8,
    /// Nanoseconds after `start`.
    deadline: AtomicU64,
    start: Instant,
    limits: Limits,
}

impl Phase {
    pub fn new(limits: Limits) -> Self {
        let phase = Phase {
            state: AtomicU8::new(WAITING_FOR_HEADER),
            deadline: AtomicU64::new(0),
            start: clock::now(),
            limits,
        };
        phase.set(WAITING_FOR_HEADER, limits.header_timeout);
        phase
    }

    /// The request header is in: no deadline until the request ends.
    /// The limits this connection was accepted with.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn open(&self) {
        self.state.store(OPEN, Ordering::Relaxed);
    }

    /// A header block began on a connection that had none pending (h2): it has
    /// `header_timeout` to complete. One already pending keeps its deadline.
    pub fn header_begun(&self) {
        if self.state.load(Ordering::Relaxed) == OPEN {
            self.set(WAITING_FOR_HEADER, self.limits.header_timeout);
        }
    }

    /// The request ended: a kept-alive connection may now wait `keepalive_timeout`.
    pub fn idle(&self) {
        self.set(IDLE, self.limits.keepalive_timeout);
    }

    fn set(&self, state: u8, within: Duration) {
        let deadline = (clock::now() + within).duration_since(self.start);
        self.deadline
            .store(deadline.as_nanos() as u64, Ordering::Relaxed);
        self.state.store(state, Ordering::Relaxed);
    }

    /// Bytes arrived: an idle connection's next request has begun, and its header has
    /// `header_timeout` to complete.
    pub fn bytes_arrived(&self) {
        if self.state.load(Ordering::Relaxed) == IDLE {
            self.set(WAITING_FOR_HEADER, self.limits.header_timeout);
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        (self.state.load(Ordering::Relaxed) != OPEN)
            .then(|| self.start + Duration::from_nanos(self.deadline.load(Ordering::Relaxed)))
    }
}
