//! The stream every accepted connection is wrapped in (`Watched`, put there by the `Watch`
//! app), because two of ticketgate's rules live below what Pingora's hooks see:
//! - `limits`: a pending read fails once the connection's `Phase` deadline has passed (a
//!   header too slow, a keep-alive connection idle too long);
//! - `live`: once the 101 is out, the server-to-client frames are followed, and when the
//!   session must end (login expired, subject revoked, idle) the close frame is written at the
//!   next frame boundary and the connection is failed, which makes Pingora drop the upstream
//!   too. A silent socket is reached through its pending read, which Pingora always waits on.
//! - the WebSocket idle timeout, from the admitted upgrade request on: each read and write
//!   notes the time, and one timer, moved only when it fires early, ends a quiet connection.
//!
//! The proxy hooks find their connection's state with `phase` and `ending`.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
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

use crate::clock;
use crate::limits::{Limits, Phase};
use crate::live::{self, CloseReason, Ending, Outgoing, Registration};

/// How long a close waits for the upstream's frame in progress to finish before the
/// connection is cut without a close frame.
const FRAME_WAIT: Duration = Duration::from_secs(1);

/// A Pingora app that wraps every connection of `inner` in a `Watched` stream, with the
/// limits in force when it was accepted (a reload changes them for new connections).
pub struct Watch<A> {
    pub inner: Arc<A>,
    pub limits: Arc<ArcSwap<Limits>>,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Watch<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let limits = **self.limits.load();
        let stream: Stream = Box::new(Watched::new(stream, limits));
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// The phase of a downstream connection accepted through `Watch`.
pub fn phase(session: &pingora::proxy::Session) -> Option<&Phase> {
    watched(session).map(|w| &w.phase)
}

/// The live-session state of a downstream connection accepted through `Watch`.
pub fn ending(session: &pingora::proxy::Session) -> Option<&Arc<Ending>> {
    watched(session).map(|w| &w.ending)
}

fn watched(session: &pingora::proxy::Session) -> Option<&Watched> {
    session
        .as_downstream()
        .stream()?
        .as_any()
        .downcast_ref::<Watched>()
}

pub struct Watched {
    inner: Stream,
    phase: Phase,
    deadline: Timer,
    ending: Arc<Ending>,
    outgoing: Outgoing,
    /// Set at the login's expiry once the socket is upgraded.
    login_expiry: Option<Timer>,
    /// Set once a WebSocket request is admitted.
    idle: Option<Idle>,
    /// The waker `ending` and the timers were last given.
    registration: Registration,
    /// Closing, waiting for the upstream's frame in progress: until when.
    frame_wait: Option<Timer>,
    /// The close frame, and how much of it is written.
    close: Option<(Vec<u8>, usize)>,
    /// The close frame is out: nothing more is read or written.
    closed: bool,
}

/// A sleep that can be moved to another deadline.
struct Timer {
    sleep: Pin<Box<Sleep>>,
    at: Instant,
    polled: bool,
}

impl Timer {
    fn at(at: Instant) -> Self {
        Timer {
            sleep: Box::pin(tokio::time::sleep_until(at)),
            at,
            polled: false,
        }
    }

    fn poll_at(&mut self, at: Instant, cx: &mut Context<'_>) -> Poll<()> {
        if at != self.at {
            self.sleep.as_mut().reset(at);
            self.at = at;
        }
        self.polled = true;
        self.sleep.as_mut().poll(cx)
    }

    /// A sleep keeps the waker it was last polled with, so it needs polling again only when
    /// it never was, when the task's waker changed since (`same_waker` false), or once it fired.
    fn wants_poll(&self, same_waker: bool) -> bool {
        !self.polled || !same_waker || self.sleep.is_elapsed()
    }
}

/// How long a WebSocket connection has been quiet each way: client to upstream (reads) and
/// upstream to client (writes).
struct Idle {
    limit: Duration,
    read_at: Instant,
    written_at: Instant,
    /// Armed at the earliest moment the connection could have been quiet for `limit`.
    timer: Timer,
}

impl Idle {
    fn new(limit: Duration) -> Self {
        let now = Instant::now();
        Idle {
            limit,
            read_at: now,
            written_at: now,
            timer: Timer::at(now + limit),
        }
    }

    /// Ready once one way has been quiet for `limit`; otherwise the timer is moved to when
    /// that could next be true.
    fn poll_quiet(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let due = self.read_at.min(self.written_at) + self.limit;
        if due <= Instant::now() {
            return Poll::Ready(());
        }
        self.timer.poll_at(due, cx)
    }
}

fn closed_by_us() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "WebSocket closed by ticketgate",
    )
}

impl Watched {
    /// An h2 connection multiplexes requests the proxy cannot mark phases for, so its
    /// phase stays open; Pingora's `h2_idle_timeout` (set to `keepalive_timeout`) ends an
    /// idle one instead.
    fn new(inner: Stream, limits: Limits) -> Self {
        let phase = Phase::new(limits);
        if matches!(inner.selected_alpn_proto(), Some(ALPN::H2)) {
            phase.open();
        }
        Watched {
            inner,
            phase,
            deadline: Timer::at(Instant::now()),
            ending: Arc::default(),
            outgoing: Outgoing::default(),
            login_expiry: None,
            idle: None,
            registration: Registration::default(),
            frame_wait: None,
            close: None,
            closed: false,
        }
    }

    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some(deadline) = self.phase.deadline() else {
            return Poll::Pending;
        };
        self.deadline
            .poll_at(deadline, cx)
            .map(|()| io::Error::new(io::ErrorKind::TimedOut, "client too slow"))
    }

    /// A WebSocket request was admitted on this connection (its idle timeout applies) or
    /// the socket is upgraded.
    fn watching(&self) -> bool {
        self.ending.is_upgrading() || self.ending.idle_timeout().is_some()
    }

    /// Ready with the error that ends the connection once the session must end and its
    /// close frame is out (or could not be placed in time).
    fn poll_live(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if self.ending.closing().is_none() {
            self.watch_ending(cx);
        }
        match self.ending.closing() {
            Some(reason) => self.poll_close(cx, reason),
            None => Poll::Pending,
        }
    }

    /// Leaves the task's waker with whatever may end the session: `Ending` (a revocation, a
    /// shutdown), the login-expiry timer and the idle timer. They keep the waker they were last
    /// given, and Pingora polls the read with the same task's waker message after message, so
    /// they are given it again only when it changes; a timer that fired is seen as elapsed.
    fn watch_ending(&mut self, cx: &mut Context<'_>) {
        let same_waker = self.ending.register(cx.waker(), &mut self.registration);
        if let Some(at_ms) = self.ending.login_expires_at_ms() {
            // The instant is worked out once: the wall clock read again would move it.
            let timer = self
                .login_expiry
                .get_or_insert_with(|| Timer::at(instant_of_unix_ms(at_ms)));
            if timer.wants_poll(same_waker) && timer.poll_at(timer.at, cx).is_ready() {
                self.ending.close(CloseReason::LoginExpired);
            }
        }
        if let Some(limit) = self.ending.idle_timeout() {
            let idle = self.idle.get_or_insert_with(|| Idle::new(limit));
            if idle.timer.wants_poll(same_waker) && idle.poll_quiet(cx).is_ready() {
                self.ending.close(CloseReason::Idle);
            }
        }
    }

    /// Writes the close frame at a frame boundary, then fails the connection.
    fn poll_close(&mut self, cx: &mut Context<'_>, reason: CloseReason) -> Poll<io::Error> {
        if self.closed {
            return Poll::Ready(closed_by_us());
        }
        if !self.ending.is_upgrading() {
            // Still waiting for the upstream's answer: no WebSocket to send a close frame on.
            self.closed = true;
            return Poll::Ready(closed_by_us());
        }
        if self.close.is_none() {
            if !self.outgoing.at_boundary() {
                let until = Instant::now() + FRAME_WAIT;
                let wait = self.frame_wait.get_or_insert_with(|| Timer::at(until));
                ready!(wait.sleep.as_mut().poll(cx));
                self.closed = true;
                return Poll::Ready(closed_by_us());
            }
            self.close = Some((live::close_frame(reason), 0));
        }
        if let Some((frame, written)) = &mut self.close {
            while *written < frame.len() {
                match ready!(Pin::new(&mut self.inner).poll_write(cx, &frame[*written..])) {
                    Ok(n) => *written += n,
                    Err(e) => return Poll::Ready(e),
                }
            }
        }
        if let Err(e) = ready!(Pin::new(&mut self.inner).poll_flush(cx)) {
            return Poll::Ready(e);
        }
        self.closed = true;
        Poll::Ready(closed_by_us())
    }
}

/// The tokio instant of a Unix time in milliseconds (now, if it has passed).
fn instant_of_unix_ms(at_ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(at_ms.saturating_sub(clock::unix_now_ms()))
}

impl fmt::Debug for Watched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watched")
            .field("inner", &self.inner)
            .finish()
    }
}

impl AsyncRead for Watched {
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
        if this.watching()
            && let Poll::Ready(error) = this.poll_live(cx)
        {
            return Poll::Ready(Err(error));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if read.is_ready() && buf.filled().len() > before {
            this.phase.bytes_arrived();
            if let Some(idle) = &mut this.idle {
                idle.read_at = Instant::now();
            }
        }
        read
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.ending.is_upgrading() {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        let mut allowed = buf;
        if let Some(reason) = this.ending.closing() {
            if this.closed || this.close.is_some() || this.outgoing.at_boundary() {
                return this.poll_close(cx, reason).map(Err);
            }
            // Only up to the end of the frame in progress; the close frame follows it.
            if let Some(end) = this.outgoing.boundary_within(buf) {
                allowed = &buf[..end];
            }
        }
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, allowed))?;
        this.outgoing.advance(&allowed[..written]);
        if let Some(idle) = &mut this.idle
            && written > 0
        {
            idle.written_at = Instant::now();
        }
        if this.ending.closing().is_some() && this.outgoing.at_boundary() {
            // The pending read places the close frame.
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(written))
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
        if self.ending.is_upgrading() {
            // Upgraded bytes are followed one buffer at a time.
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
            return self.poll_write(cx, first);
        }
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Watched {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for Watched {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Watched {
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

impl GetTimingDigest for Watched {
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

impl GetProxyDigest for Watched {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for Watched {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for Watched {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
