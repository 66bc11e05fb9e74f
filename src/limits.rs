//! Deadlines for slow clients, which Pingora 0.9 does not set: an HTTP/1.1 keep-alive
//! connection waits for its next request with no timeout at all, and its read timeout
//! applies per read, so a header trickled a byte at a time is never cut.
//!
//! Every accepted connection is wrapped in a `Deadlined` stream that fails a pending read
//! once its deadline passes: `header_timeout` from the connection's start or from the first
//! byte of a later request until the header is complete, and `keepalive_timeout` while a
//! kept-alive connection waits for its next request. The proxy marks the phases
//! (`Phase::open` when a header is in, `Phase::idle` when a request ends); between the two —
//! bodies and upgraded WebSockets — no deadline applies here (a WebSocket has its own idle
//! timeout).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::tls::{ALPN, SslDigest};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, raw_connect::ProxyDigest,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The `limits:` settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
}

/// A Pingora app that gives every connection of `inner` its deadlines: those in force when
/// it was accepted (a reload changes them for new connections).
pub struct Bounded<A> {
    pub inner: Arc<A>,
    pub limits: Arc<ArcSwap<Limits>>,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Bounded<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let limits = **self.limits.load();
        let stream: Stream = Box::new(Deadlined::new(stream, limits));
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
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
    fn new(limits: Limits) -> Self {
        let phase = Phase {
            state: AtomicU8::new(WAITING_FOR_HEADER),
            deadline: AtomicU64::new(0),
            start: Instant::now(),
            limits,
        };
        phase.set(WAITING_FOR_HEADER, limits.header_timeout);
        phase
    }

    /// The request header is in: no deadline until the request ends.
    pub fn open(&self) {
        self.state.store(OPEN, Ordering::Relaxed);
    }

    /// The request ended: a kept-alive connection may now wait `keepalive_timeout`.
    pub fn idle(&self) {
        self.set(IDLE, self.limits.keepalive_timeout);
    }

    fn set(&self, state: u8, within: Duration) {
        let deadline = (Instant::now() + within).duration_since(self.start);
        self.deadline
            .store(deadline.as_nanos() as u64, Ordering::Relaxed);
        self.state.store(state, Ordering::Relaxed);
    }

    /// Bytes arrived: an idle connection's next request has begun, and its header has
    /// `header_timeout` to complete.
    fn bytes_arrived(&self) {
        if self.state.load(Ordering::Relaxed) == IDLE {
            self.set(WAITING_FOR_HEADER, self.limits.header_timeout);
        }
    }

    fn deadline(&self) -> Option<Instant> {
        (self.state.load(Ordering::Relaxed) != OPEN)
            .then(|| self.start + Duration::from_nanos(self.deadline.load(Ordering::Relaxed)))
    }
}

/// The phase of a downstream connection accepted through `Bounded`.
pub fn phase(session: &pingora::proxy::Session) -> Option<&Phase> {
    Deadlined::phase_of(session.as_downstream().stream()?)
}

/// A stream whose reads fail with `TimedOut` past its phase's deadline.
pub struct Deadlined {
    inner: Stream,
    phase: Phase,
    timer: Pin<Box<Sleep>>,
    timer_at: Instant,
}

impl Deadlined {
    fn new(inner: Stream, limits: Limits) -> Self {
        let phase = Phase::new(limits);
        let now = Instant::now();
        Deadlined {
            inner,
            phase,
            timer: Box::pin(tokio::time::sleep_until(now)),
            timer_at: now,
        }
    }

    /// The phase of the connection `stream` is, when it is a `Deadlined` one.
    fn phase_of(stream: &Stream) -> Option<&Phase> {
        stream
            .as_any()
            .downcast_ref::<Deadlined>()
            .map(|d| &d.phase)
    }

    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some(deadline) = self.phase.deadline() else {
            return Poll::Pending;
        };
        if deadline != self.timer_at {
            self.timer.as_mut().reset(deadline);
            self.timer_at = deadline;
        }
        self.timer
            .as_mut()
            .poll(cx)
            .map(|()| io::Error::new(io::ErrorKind::TimedOut, "client too slow"))
    }
}

impl fmt::Debug for Deadlined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deadlined")
            .field("inner", &self.inner)
            .finish()
    }
}

impl AsyncRead for Deadlined {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Checked first: a trickle that always has a byte ready must still meet its deadline.
        if let Poll::Ready(error) = this.poll_deadline(cx) {
            return Poll::Ready(Err(error));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if read.is_ready() && buf.filled().len() > before {
            this.phase.bytes_arrived();
        }
        read
    }
}

impl AsyncWrite for Deadlined {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Deadlined {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for Deadlined {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Deadlined {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Deadlined {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Deadlined {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for Deadlined {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for Deadlined {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
