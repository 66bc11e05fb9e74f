//! The stream every accepted connection is wrapped in (`Watched`, put there by the `Watch`
//! app), because ticketgate's deadlines live below what Pingora's hooks see:
//! - `limits`: a pending read fails once the connection's `Phase` deadline has passed (a
//!   header too slow, a keep-alive connection idle too long; on h2 the preface and every
//!   header block, followed by `limits::h2`), and a write that makes no progress for
//!   `write_timeout` fails (a client that stops reading);
//! - `live`: once the 101 is out, the server-to-client frames are followed, and when the
//!   session must end (login expired, subject revoked, idle, shutdown) the close frame is
//!   written at the next message boundary and the connection is failed, which makes Pingora
//!   drop the upstream too;
//! - the WebSocket idle timeout, from the admitted upgrade request on: each read and write
//!   notes the time, and one timer, moved only when it fires early, ends a quiet connection.
//!
//! Pingora waits on either the client's read or a write to the client, never neither (while
//! a write to a client that reads nothing is pending, it does not poll the read), so both
//! paths arm the timers and both place the close. Every wait here has a bound: the close
//! waits at most `CLOSE_WAIT` for the upstream's message in progress and for the close
//! frame itself, then the connection is cut without one.
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
use crate::limits::{H2Headers, Limits, Phase};
use crate::live::{self, CloseReason, Ending, Outgoing, Registration};

/// How long a close may take once decided: for the upstream's message in progress to end,
/// then for the close frame to be taken by the client. Past it the connection is cut
/// without a close frame, so a decided close lands within the contract's 2 s.
pub const CLOSE_WAIT: Duration = Duration::from_secs(1);

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
    /// On an h2 connection: where the client's frames are, to time each header block.
    h2: Option<H2Headers>,
    /// Writes to the client that make no progress for `limits.write_timeout` fail.
    write_stall: WriteStall,
    ending: Arc<Ending>,
    outgoing: Outgoing,
    /// Set at the login's expiry once the socket is upgraded: the expiry (Unix
    /// milliseconds) it was set for, and the timer.
    login_expiry: Option<(u64, Timer)>,
    /// Set once a WebSocket request is admitted.
    idle: Option<Idle>,
    /// The waker `ending` and the timers were last given.
    registration: Registration,
    /// Armed when the close is decided: its bound (`CLOSE_WAIT`).
    close_wait: Option<Timer>,
    /// The close frame, and how much of it is written.
    close: Option<(Vec<u8>, usize)>,
    /// The close frame is out, or could not be placed in time: nothing more is read or
    /// written.
    closed: bool,
    /// Where this connection goes once its 101 is written, when the relay is to carry it.
    handover: std::sync::OnceLock<Arc<Handover>>,
    /// On a `stomp:` route: ticketgate's close frame follows a STOMP `ERROR` frame naming the
    /// reason (with the refused frame's receipt, when it asked for one).
    stomp: Option<Farewell>,
}

/// What the STOMP `ERROR` frame before a close says besides the reason.
#[derive(Debug, Default)]
struct Farewell {
    receipt: Option<String>,
}

/// A client connection on its way from Pingora to the relay (`crate::relay`): asked for by
/// the proxy once the upstream answered 101, filled by the stream itself the moment the 101's
/// head is written (so no byte of the WebSocket ever passes through Pingora), taken by the
/// relay once Pingora let go of the request.
#[derive(Default)]
pub struct Handover(std::sync::Mutex<Option<Watched>>);

impl Handover {
    pub fn take(&self) -> Option<Watched> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn put(&self, watched: Watched) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(watched);
    }
}

/// Asks for this connection to be handed over once its 101 is written; the relay takes it
/// from the returned slot. `None` when the connection was not accepted through `Watch`.
pub fn hand_over(session: &pingora::proxy::Session) -> Option<Arc<Handover>> {
    watched(session).map(|w| w.handover.get_or_init(Arc::default).clone())
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

    /// Moves the sleep to `at`; it is then polled again (`wants_poll`) to fire there.
    fn move_to(&mut self, at: Instant) {
        if at != self.at {
            self.sleep.as_mut().reset(at);
            self.at = at;
            self.polled = false;
        }
    }

    fn poll_at(&mut self, at: Instant, cx: &mut Context<'_>) -> Poll<()> {
        self.move_to(at);
        self.poll(cx)
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
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
        let now = clock::now();
        Idle {
            limit,
            read_at: now,
            written_at: now,
            timer: Timer::at(now + limit),
        }
    }

    /// When one way will have been quiet for `limit`, unless bytes move before.
    fn due(&self) -> Instant {
        self.read_at.min(self.written_at) + self.limit
    }

    /// Ready once one way has been quiet for `limit`; otherwise the timer is moved to when
    /// that could next be true.
    fn poll_quiet(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let due = self.due();
        if due <= clock::now() {
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

/// The bound on a peer that stops reading: a write that stays pending `limit` after the
/// last progress fails. The client's stream and the relay's upstream side keep one each.
pub struct WriteStall {
    limit: Duration,
    /// Armed while a write waits for the peer to take bytes; disarmed by progress.
    timer: Option<Timer>,
    /// What the failure says (which peer stopped reading).
    what: &'static str,
}

impl WriteStall {
    pub fn new(limit: Duration, what: &'static str) -> Self {
        WriteStall {
            limit,
            timer: None,
            what,
        }
    }

    /// A write's outcome, timed: progress disarms the bound, a wait arms it, and a wait past
    /// it fails.
    pub fn timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if written.is_ready() {
            self.timer = None;
            return written;
        }
        let limit = self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Timer::at(clock::now() + limit));
        match timer.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, self.what))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Watched {
    /// An h2 connection multiplexes requests the proxy cannot mark phases for: its header
    /// blocks are timed from its frames instead (`H2Headers`), and Pingora's
    /// `h2_idle_timeout` (set to `keepalive_timeout`) ends an idle one.
    fn new(inner: Stream, limits: Limits) -> Self {
        let h2 = matches!(inner.selected_alpn_proto(), Some(ALPN::H2)).then(H2Headers::default);
        Watched {
            inner,
            phase: Phase::new(limits),
            deadline: Timer::at(clock::now()),
            h2,
            write_stall: WriteStall::new(limits.write_timeout, "client stopped reading"),
            ending: Arc::default(),
            outgoing: Outgoing::default(),
            login_expiry: None,
            idle: None,
            registration: Registration::default(),
            close_wait: None,
            close: None,
            closed: false,
            handover: std::sync::OnceLock::new(),
            stomp: None,
        }
    }

    /// Ready with the error that ends the connection once its live session must end and the
    /// close frame is out: for the relay to poll when no read of the client is pending.
    pub fn poll_live_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if self.watching() {
            return self.poll_live(cx);
        }
        Poll::Pending
    }

    /// A connection as the relay gets it, for the relay's tests: accepted, its request read,
    /// its 101 about to be written.
    #[cfg(test)]
    pub(crate) fn upgraded_for_tests(inner: Stream) -> Self {
        let long = Duration::from_secs(60);
        let watched = Watched::new(
            inner,
            Limits {
                header_timeout: long,
                keepalive_timeout: long,
                write_timeout: long,
            },
        );
        watched.phase.open();
        watched.ending.upgrading(None);
        watched
    }

    /// The live session of this connection (the relay reads why it ended).
    pub fn ending(&self) -> &Arc<Ending> {
        &self.ending
    }

    /// The socket speaks STOMP (a `stomp:` route): ticketgate's closes say why in an `ERROR`
    /// frame first.
    pub fn speaks_stomp(&mut self) {
        self.stomp.get_or_insert_with(Farewell::default);
    }

    /// A refused STOMP frame asked for a receipt: the `ERROR` frame names it.
    pub fn stomp_receipt(&mut self, receipt: Option<String>) {
        if let Some(farewell) = &mut self.stomp {
            farewell.receipt = receipt;
        }
    }

    /// The client's connection broke and the socket is held for a resume: its descriptor and
    /// buffers are given back now (a held socket keeps only its upstream connection); a close
    /// decided meanwhile finds nothing to write to and ends the socket at once.
    pub fn let_go(&mut self) {
        self.inner = crate::handover::gone();
    }

    /// A resumed client's connection (`other`, its 101 written) takes the place of the one
    /// that broke: the socket's live session (its login expiry, revocation, idle timeout) goes
    /// on, on the new connection, from a frame boundary.
    pub fn rejoin(&mut self, other: Watched) {
        self.inner = other.inner;
        self.outgoing = other.outgoing;
        self.write_stall = other.write_stall;
        if let Some(idle) = &mut self.idle {
            let now = clock::now();
            (idle.read_at, idle.written_at) = (now, now);
        }
    }

    /// Once the 101's head is written, a connection asked for moves to its `Handover`,
    /// leaving Pingora a stream whose reads end.
    fn hand_over_after_the_101(&mut self) {
        if self.handover.get().is_none() || !self.outgoing.at_boundary() {
            return;
        }
        let shell = Watched::new(crate::handover::gone(), self.phase.limits());
        let mut watched = std::mem::replace(self, shell);
        if let Some(handover) = watched.handover.take() {
            handover.put(watched);
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
        match self.decided_close(cx) {
            Some(reason) => self.poll_close(cx, reason),
            None => Poll::Pending,
        }
    }

    /// Why the session ends, once it must; until then the task's waker is left with whatever
    /// may end it. A close decided elsewhere is still checked against the timers once, in
    /// case one of them fell earlier and so bounds the close sooner.
    fn decided_close(&mut self, cx: &mut Context<'_>) -> Option<CloseReason> {
        if self.close_wait.is_none() {
            self.watch_ending(cx);
        }
        self.ending.closing()
    }

    /// Leaves the task's waker with whatever may end the session: `Ending` (a revocation, a
    /// shutdown), the login-expiry timer and the idle timer. They keep the waker they were last
    /// given, and Pingora polls the read with the same task's waker message after message, so
    /// they are given it again only when it changes; a timer that fired is seen as elapsed.
    fn watch_ending(&mut self, cx: &mut Context<'_>) {
        let same_waker = self.ending.register(cx.waker(), &mut self.registration);
        if let Some(at_ms) = self.ending.login_expires_at_ms() {
            // The instant is worked out once per expiry: the wall clock read again would move
            // it. A refresh moves the expiry (`Ending::extend_login`); the timer follows when
            // it next fires, or now.
            let (basis, timer) = self
                .login_expiry
                .get_or_insert_with(|| (at_ms, Timer::at(instant_of_unix_ms(at_ms))));
            if *basis != at_ms {
                *basis = at_ms;
                timer.move_to(instant_of_unix_ms(at_ms));
            }
            if timer.wants_poll(same_waker) && timer.poll_at(timer.at, cx).is_ready() {
                let due = timer.at;
                self.decide(CloseReason::LoginExpired, due);
            }
        }
        if let Some(limit) = self.ending.idle_timeout() {
            let idle = self.idle.get_or_insert_with(|| Idle::new(limit));
            if idle.timer.wants_poll(same_waker) && idle.poll_quiet(cx).is_ready() {
                let due = idle.due();
                self.decide(CloseReason::Idle, due);
            }
        }
    }

    /// A deadline that fell `due` ends the session: the close's bound runs from `due`, not
    /// from whenever the stream is next polled.
    fn decide(&mut self, reason: CloseReason, due: Instant) {
        self.ending.close(reason);
        self.close_wait
            .get_or_insert_with(|| Timer::at(due + CLOSE_WAIT));
    }

    /// Ready once the close has had its `CLOSE_WAIT`, from the deadline that decided it or,
    /// for a close decided elsewhere (a revocation, a shutdown: they wake the stream at
    /// once), from the first call.
    fn poll_close_wait(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.close_wait
            .get_or_insert_with(|| Timer::at(clock::now() + CLOSE_WAIT))
            .poll(cx)
    }

    /// Writes the close frame at a message boundary, then fails the connection; cuts it
    /// without one once `CLOSE_WAIT` has passed.
    fn poll_close(&mut self, cx: &mut Context<'_>, reason: CloseReason) -> Poll<io::Error> {
        if self.closed || !self.ending.is_upgrading() {
            // Before the 101 there is no WebSocket to send a close frame on.
            self.closed = true;
            return Poll::Ready(closed_by_us());
        }
        if self.poll_close_wait(cx).is_ready() {
            self.closed = true;
            return Poll::Ready(closed_by_us());
        }
        if self.close.is_none() {
            if !self.outgoing.at_message_boundary() {
                // The write path finishes the message; the close wait bounds it.
                return Poll::Pending;
            }
            let mut frames = Vec::new();
            if let Some(farewell) = &self.stomp {
                let (_, text) = reason.code_and_text();
                frames = crate::stomp::error_frame(text, farewell.receipt.as_deref());
            }
            frames.extend(live::close_frame(reason));
            self.close = Some((frames, 0));
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

    fn timed_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        self.write_stall.timed(cx, written)
    }

    /// A write of upgraded bytes: followed frame by frame, and once the session must end,
    /// only up to the end of the upstream's frame in progress (the close frame follows it).
    fn poll_write_frames(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut allowed = buf;
        if let Some(reason) = self.decided_close(cx) {
            if self.closed || self.close.is_some() || self.outgoing.at_message_boundary() {
                return self.poll_close(cx, reason).map(Err);
            }
            if self.poll_close_wait(cx).is_ready() {
                self.closed = true;
                return Poll::Ready(Err(closed_by_us()));
            }
            if let Some(end) = self.outgoing.boundary_within(buf) {
                allowed = &buf[..end];
            }
        }
        let written = Pin::new(&mut self.inner).poll_write(cx, allowed);
        let written = ready!(self.timed_write(cx, written))?;
        let in_head = self.outgoing.in_response_header();
        self.outgoing.advance(&allowed[..written]);
        if in_head {
            // From here on `self` may be the shell Pingora keeps; the rest does nothing to it.
            self.hand_over_after_the_101();
        }
        if let Some(idle) = &mut self.idle
            && written > 0
        {
            idle.written_at = clock::now();
        }
        if self.ending.closing().is_some() && self.outgoing.at_message_boundary() {
            // The pending read places the close frame, if no write comes first.
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(written))
    }
}

/// The tokio instant of a Unix time in milliseconds (now, if it has passed).
fn instant_of_unix_ms(at_ms: u64) -> Instant {
    clock::now() + Duration::from_millis(at_ms.saturating_sub(clock::unix_now_ms()))
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
            let arrived = &buf.filled()[before..];
            this.phase.bytes_arrived();
            if let Some(h2) = &mut this.h2 {
                h2.advance(arrived, &this.phase);
            }
            if let Some(idle) = &mut this.idle {
                idle.read_at = clock::now();
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
        if this.ending.is_upgrading() {
            return this.poll_write_frames(cx, buf);
        }
        if this.watching()
            && let Poll::Ready(error) = this.poll_live(cx)
        {
            return Poll::Ready(Err(error));
        }
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.timed_write(cx, written)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.inner).poll_flush(cx);
        this.timed_write(cx, flushed)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let shut = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.timed_write(cx, shut)
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
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.timed_write(cx, written)
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::time::{timeout, timeout_at};

    use super::*;

    const HEADER: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
    const LIMIT: Duration = Duration::from_secs(60);

    fn limits(write_timeout: Duration) -> Limits {
        Limits {
            header_timeout: LIMIT,
            keepalive_timeout: LIMIT,
            write_timeout,
        }
    }

    /// A watched stream whose client end holds `buffer` bytes unread before writes wait.
    fn connection(buffer: usize, write_timeout: Duration) -> (Watched, DuplexStream) {
        let (ours, client) = tokio::io::duplex(buffer);
        (Watched::new(Box::new(ours), limits(write_timeout)), client)
    }

    /// An unmasked binary frame (continuation when `first` is false) of `payload` bytes.
    fn frame(payload: usize, first: bool, fin: bool) -> Vec<u8> {
        let opcode = if first { 0x2 } else { 0x0 };
        let mut frame = vec![opcode | if fin { 0x80 } else { 0 }];
        if payload < 126 {
            frame.push(payload as u8);
        } else {
            frame.push(126);
            frame.extend((payload as u16).to_be_bytes());
        }
        frame.extend(std::iter::repeat_n(b'x', payload));
        frame
    }

    /// Upgraded, closing at the login's expiry `expires_in` from now.
    async fn upgraded(watched: &mut Watched, expires_in: Option<Duration>) {
        let at = expires_in.map(|d| clock::unix_now_ms() + d.as_millis() as u64);
        watched.ending.upgrading(at);
        watched.write_all(HEADER).await.expect("the 101 fits");
    }

    /// Writes frames until one waits for the client (which reads nothing), then keeps
    /// writing: what the stream answers, and when.
    async fn write_until_failed(watched: &mut Watched) -> (io::Error, Instant) {
        let big = frame(1000, true, true);
        loop {
            if let Err(e) = watched.write_all(&big).await {
                return (e, clock::now());
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_closed_at_its_login_expiry() {
        let (mut watched, _client) = connection(4096, LIMIT);
        let start = clock::now();
        upgraded(&mut watched, Some(Duration::from_secs(5))).await;
        let (error, at) = write_until_failed(&mut watched).await;
        assert_eq!(error.kind(), io::ErrorKind::ConnectionAborted);
        let took = at - start;
        assert!(
            // Less a few real milliseconds: the expiry is wall-clock time converted once.
            took >= Duration::from_millis(4_900) && took <= Duration::from_secs(5) + CLOSE_WAIT,
            "{took:?}"
        );
        assert_eq!(watched.ending.closing(), Some(CloseReason::LoginExpired));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refreshed_login_moves_the_close_and_the_last_expiry_closes_it() {
        let (mut watched, mut client) = connection(1 << 16, LIMIT);
        let start = clock::now();
        upgraded(&mut watched, Some(Duration::from_secs(2))).await;
        let ending = watched.ending.clone();
        let extended_to = clock::unix_now_ms() + 5_000;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            ending.extend_login(extended_to);
        });
        let mut byte = [0u8; 1];
        let read = watched.read(&mut byte).await;
        assert_eq!(
            read.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionAborted)
        );
        // Under paused time only real milliseconds pass on the wall clock, so the new expiry,
        // 5 s ahead of it, is converted when the timer moves: at the old expiry, 2 s in (less
        // the few real milliseconds the test took).
        let took = clock::now() - start;
        assert!(
            took > Duration::from_secs(6) && took <= Duration::from_secs(7),
            "closed at the new expiry: {took:?}"
        );
        drop(watched);
        let mut wire = Vec::new();
        client.read_to_end(&mut wire).await.expect("reads");
        assert!(wire.ends_with(&live::close_frame(CloseReason::LoginExpired)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_closed_on_revocation() {
        let (mut watched, _client) = connection(4096, LIMIT);
        upgraded(&mut watched, None).await;
        let ending = watched.ending.clone();
        let revoked_at = clock::now() + Duration::from_secs(3);
        tokio::spawn(async move {
            tokio::time::sleep_until(revoked_at).await;
            ending.close(CloseReason::Revoked);
        });
        let (error, at) = write_until_failed(&mut watched).await;
        assert_eq!(error.kind(), io::ErrorKind::ConnectionAborted);
        assert!(at >= revoked_at && at <= revoked_at + CLOSE_WAIT, "{at:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_closed_when_idle() {
        let (mut watched, _client) = connection(4096, LIMIT);
        let start = clock::now();
        watched.ending.idle_after(Duration::from_secs(10));
        upgraded(&mut watched, None).await;
        let (_, at) = write_until_failed(&mut watched).await;
        assert_eq!(watched.ending.closing(), Some(CloseReason::Idle));
        let took = at - start;
        assert!(
            took >= Duration::from_secs(10) && took <= Duration::from_secs(10) + CLOSE_WAIT,
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_client_does_not_take_fails_at_the_write_timeout() {
        let (mut watched, _client) = connection(64, Duration::from_secs(7));
        let start = clock::now();
        let error = watched
            .write_all(&[b'x'; 1000])
            .await
            .expect_err("the client reads nothing");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(clock::now() - start, Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn progress_moves_the_write_timeout() {
        let (mut watched, mut client) = connection(64, Duration::from_secs(7));
        let reader = tokio::spawn(async move {
            let mut taken = 0;
            let mut chunk = [0u8; 16];
            while taken < 1000 {
                tokio::time::sleep(Duration::from_secs(5)).await;
                taken += client.read(&mut chunk).await.expect("reads");
            }
        });
        timeout(Duration::from_secs(600), watched.write_all(&[b'x'; 1000]))
            .await
            .expect("finished")
            .expect("a slow reader that keeps reading is not cut");
        reader.await.expect("reader");
    }

    #[tokio::test(start_paused = true)]
    async fn the_close_waits_for_the_end_of_a_fragmented_message() {
        let (mut watched, mut client) = connection(1 << 16, LIMIT);
        upgraded(&mut watched, None).await;
        let first = frame(10, true, false);
        watched.write_all(&first).await.expect("first fragment");
        watched.ending.close(CloseReason::Revoked);
        let last = frame(5, false, true);
        watched
            .write_all(&last)
            .await
            .expect("the message's last fragment still goes out");
        let error = watched.write_all(&frame(3, true, true)).await;
        assert_eq!(
            error.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionAborted)
        );
        drop(watched);
        let mut wire = Vec::new();
        client.read_to_end(&mut wire).await.expect("reads");
        let expected = [
            HEADER,
            &first,
            &last,
            &live::close_frame(CloseReason::Revoked),
        ]
        .concat();
        assert_eq!(wire, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_that_never_ends_is_cut_after_the_close_wait() {
        let (mut watched, mut client) = connection(1 << 16, LIMIT);
        upgraded(&mut watched, None).await;
        watched
            .write_all(&frame(10, true, false))
            .await
            .expect("first fragment");
        let closed = clock::now();
        watched.ending.close(CloseReason::Revoked);
        let mut byte = [0u8; 1];
        let read = watched.read(&mut byte).await;
        assert_eq!(
            read.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionAborted)
        );
        assert_eq!(clock::now() - closed, CLOSE_WAIT);
        drop(watched);
        let mut wire = Vec::new();
        client.read_to_end(&mut wire).await.expect("reads");
        assert!(!wire.ends_with(&live::close_frame(CloseReason::Revoked)));
    }

    #[tokio::test(start_paused = true)]
    async fn traffic_both_ways_keeps_a_socket_past_its_idle_timeout() {
        let (mut watched, mut client) = connection(1 << 16, LIMIT);
        watched.ending.idle_after(Duration::from_secs(2));
        upgraded(&mut watched, None).await;
        let mut byte = [0u8; 1];
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            client.write_all(b"x").await.expect("the client sends");
            watched.read_exact(&mut byte).await.expect("read on");
            watched
                .write_all(&frame(1, true, true))
                .await
                .expect("written on");
        }
        assert_eq!(watched.ending.closing(), None, "3.2 s of traffic, no close");
        // Then quiet: closed one idle timeout after the last byte, not counted from the start.
        let quiet_since = clock::now();
        let read = watched.read(&mut byte).await;
        assert_eq!(
            read.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionAborted)
        );
        assert_eq!(clock::now() - quiet_since, Duration::from_secs(2));
        assert_eq!(watched.ending.closing(), Some(CloseReason::Idle));
    }

    #[tokio::test(start_paused = true)]
    async fn a_socket_quiet_one_way_is_closed_however_busy_the_other_way() {
        let (mut watched, mut client) = connection(1 << 16, LIMIT);
        watched.ending.idle_after(Duration::from_secs(2));
        upgraded(&mut watched, None).await;
        let opened = clock::now();
        // The client keeps talking; the upstream never answers.
        let talking = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if client.write_all(b"hello").await.is_err() {
                    break;
                }
            }
        });
        let mut chunk = [0u8; 64];
        let error = loop {
            match watched.read(&mut chunk).await {
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::ConnectionAborted);
        assert_eq!(clock::now() - opened, Duration::from_secs(2));
        assert_eq!(watched.ending.closing(), Some(CloseReason::Idle));
        drop(watched);
        talking
            .await
            .expect("the client's writes end with the connection");
    }

    /// One step of a connection's life, in the proptest below.
    #[derive(Debug, Clone)]
    enum Step {
        /// The upstream sends a frame: payload, FIN.
        Send(usize, bool),
        /// The client reads up to this many bytes, if any are there.
        Read(usize),
        /// Time passes with nothing polled.
        Wait(u64),
        Revoke,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0usize..3000, any::<bool>()).prop_map(|(n, fin)| Step::Send(n, fin)),
            (1usize..5000).prop_map(Step::Read),
            (1u64..2000).prop_map(Step::Wait),
            Just(Step::Revoke),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever the client reads, however the upstream's frames and the stalls interleave:
        /// once the session must end (login expiry, or a revocation the stream has seen), no
        /// write succeeds later than `CLOSE_WAIT` after that moment, no write stays pending
        /// past it, and the client sees a close frame, if at all, only between two messages,
        /// after which it sees nothing.
        #[test]
        fn every_deadline_fires_whatever_the_interleaving(
            steps in prop::collection::vec(step(), 1..40),
            expires_in_ms in 500u64..20_000,
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()?;
            runtime.block_on(async {
                let (mut watched, mut client) = connection(8192, LIMIT);
                let start = clock::now();
                upgraded(&mut watched, Some(Duration::from_millis(expires_in_ms))).await;
                let expiry = start + Duration::from_millis(expires_in_ms);
                // A revocation wakes the stream at once in Pingora; here, the next write sees it.
                let mut revoked = false;
                let mut revocation_seen: Option<Instant> = None;
                let mut received = Vec::new();
                let mut sent = HEADER.to_vec();
                // Where messages end in `sent`: a close frame may only follow one of them.
                let mut message_ends = vec![HEADER.len()];
                let mut first = true;
                let (mut pending, mut pending_fin) = (Vec::new(), false);
                let mut failed = false;
                for step in steps {
                    match step {
                        Step::Send(payload, fin) => {
                            // A write is never abandoned half-way (Pingora does not):
                            // a frame still pending is continued before a new one begins.
                            if pending.is_empty() {
                                pending = frame(payload, first, fin);
                                pending_fin = fin;
                            }
                            let began = clock::now();
                            if revoked {
                                revocation_seen.get_or_insert(began);
                            }
                            let must_end = revocation_seen.map_or(expiry, |r| r.min(expiry));
                            let give_up = began + Duration::from_secs(5);
                            while !pending.is_empty() {
                                match timeout_at(give_up, watched.write(&pending)).await {
                                    Ok(Ok(n)) => {
                                        prop_assert!(n > 0);
                                        prop_assert!(
                                            clock::now() <= must_end + CLOSE_WAIT,
                                            "a write succeeded after the session ended"
                                        );
                                        sent.extend(pending.drain(..n));
                                    }
                                    Ok(Err(_)) => {
                                        failed = true;
                                        break;
                                    }
                                    Err(_) => {
                                        prop_assert!(
                                            began.max(must_end) + CLOSE_WAIT > clock::now(),
                                            "a write still pending past the close's bound"
                                        );
                                        break;
                                    }
                                }
                            }
                            if failed {
                                break;
                            }
                            if pending.is_empty() {
                                first = pending_fin;
                                if pending_fin {
                                    message_ends.push(sent.len());
                                }
                            }
                        }
                        Step::Read(n) => {
                            let mut chunk = vec![0u8; n];
                            if let Ok(Ok(got)) =
                                timeout(Duration::from_millis(1), client.read(&mut chunk)).await
                            {
                                received.extend(&chunk[..got]);
                            }
                        }
                        Step::Wait(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                        Step::Revoke => {
                            watched.ending.close(CloseReason::Revoked);
                            revoked = true;
                        }
                    }
                }
                if !failed {
                    // Pingora always waits on the read: past every bound it must fail.
                    let mut byte = [0u8; 1];
                    let read = timeout(
                        Duration::from_millis(expires_in_ms) + 2 * CLOSE_WAIT,
                        watched.read(&mut byte),
                    ).await;
                    prop_assert!(matches!(read, Ok(Err(_))), "the read did not fail: {:?}", read);
                }
                drop(watched);
                client.read_to_end(&mut received).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
                let closing = watched_close_frames();
                let (body, close) = match closing.iter().find(|c| received.ends_with(c)) {
                    Some(c) => (&received[..received.len() - c.len()], true),
                    None => (&received[..], false),
                };
                prop_assert!(sent.starts_with(body), "the client got bytes never sent");
                if close {
                    prop_assert!(
                        message_ends.contains(&body.len()),
                        "a close frame inside a message, at byte {}", body.len()
                    );
                }
                Ok(())
            })?;
        }
    }

    fn watched_close_frames() -> [Vec<u8>; 2] {
        [
            live::close_frame(CloseReason::LoginExpired),
            live::close_frame(CloseReason::Revoked),
        ]
    }
}
