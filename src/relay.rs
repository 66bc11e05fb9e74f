//! After the 101: ticketgate, not Pingora, carries an upgraded connection.
//!
//! Pingora does the HTTP, the routing and the handshake; the moment the 101's head is
//! written, the client's connection (`connection::Watched`, with its live session: login
//! expiry, revocation, idle timeout, shutdown) and the upstream's (`handover::Upstream`)
//! move here, and Pingora's request ends, freeing its sessions, their buffers and the proxy
//! future. What a relayed socket keeps is its two streams, its live state and this small
//! struct; a buffer exists only while bytes move (allocated by a read that finds data,
//! released when a read finds none), so an idle socket holds no buffer at all.
//!
//! Either side's end ends both, as Pingora's upgraded proxying did: the other side is shut
//! down after the bytes already read reach it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::clock;
use crate::connection::Watched;
use crate::handover::Upstream;
use crate::live::CloseReason;

/// The buffer a read fills while bytes move; allocated per burst, not per socket.
const BURST: usize = 8 * 1024;

/// How a relayed socket ended.
pub struct Ended {
    /// Why ticketgate closed it, if it did (login expiry, revocation, idle, shutdown).
    pub closed_by_us: Option<CloseReason>,
    /// The failure that ended it, if one did (a reset, a write that timed out).
    pub error: Option<io::Error>,
}

/// Relays `client` and `upstream` until either ends; a write to the upstream that makes no
/// progress for `write_timeout` fails (the client's writes are timed by `Watched`).
pub async fn run(client: Watched, upstream: Upstream, write_timeout: Duration) -> Ended {
    let Upstream { stream, early } = upstream;
    let mut relay = Relay {
        client,
        upstream: stream,
        // The 101 may still sit in the client's write buffer; the upstream's first frames may
        // have come with it.
        to_client: Way::holding(early),
        to_upstream: Way::default(),
        write_timeout,
        upstream_stall: None,
    };
    let error = (&mut relay).await.err();
    let closed_by_us = relay.client.ending().closing();
    Ended {
        closed_by_us,
        error: error.filter(|_| closed_by_us.is_none()),
    }
}

struct Relay {
    client: Watched,
    upstream: TcpStream,
    to_client: Way,
    to_upstream: Way,
    write_timeout: Duration,
    /// Armed while a write to the upstream waits; disarmed by progress.
    upstream_stall: Option<Pin<Box<Sleep>>>,
}

/// One direction: bytes read and not yet written, whether they still need a flush, and
/// whether the reading side ended.
#[derive(Default)]
struct Way {
    buf: Option<Box<[u8]>>,
    start: usize,
    end: usize,
    unflushed: bool,
    ended: bool,
}

impl Way {
    fn holding(bytes: Vec<u8>) -> Self {
        let end = bytes.len();
        Way {
            buf: (end > 0).then(|| bytes.into_boxed_slice()),
            start: 0,
            end,
            unflushed: true,
            ended: false,
        }
    }

    /// Moves bytes from `from` to `to` until a side waits; ready once `from` ended and
    /// everything read reached `to`, flushed.
    fn poll_move<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        stall: &mut dyn FnMut(&mut Context<'_>, bool) -> Poll<io::Error>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            if self.start < self.end {
                let buf = self.buf.as_deref().unwrap_or_default();
                match Pin::new(&mut *to).poll_write(cx, &buf[self.start..self.end]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        self.start += n;
                        self.unflushed = true;
                        let _ = stall(cx, true);
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return stall(cx, false).map(Err),
                }
                continue;
            }
            if self.unflushed {
                ready!(Pin::new(&mut *to).poll_flush(cx))?;
                self.unflushed = false;
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            let buf = self
                .buf
                .get_or_insert_with(|| vec![0; BURST].into_boxed_slice());
            let mut read = ReadBuf::new(buf);
            match Pin::new(&mut *from).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let n = read.filled().len();
                    (self.start, self.end) = (0, n);
                    self.ended = n == 0;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // Idle: no buffer is kept while nothing moves.
                    self.buf = None;
                    return Poll::Pending;
                }
            }
        }
    }
}

/// Ready with an error once a write to the upstream has waited `limit` since its last
/// progress; `progress` disarms it.
fn upstream_stall(
    stall: &mut Option<Pin<Box<Sleep>>>,
    limit: Duration,
    cx: &mut Context<'_>,
    progress: bool,
) -> Poll<io::Error> {
    if progress {
        *stall = None;
        return Poll::Pending;
    }
    let sleep =
        stall.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(clock::now() + limit)));
    sleep
        .as_mut()
        .poll(cx)
        .map(|()| io::Error::new(io::ErrorKind::TimedOut, "the upstream stopped reading"))
}

impl Future for &mut Relay {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let relay = &mut **self.get_mut();
        // A close decided while no way reads the client (the upstream not taking bytes)
        // still goes out.
        if let Poll::Ready(e) = relay.client.poll_live_close(cx) {
            return Poll::Ready(Err(e));
        }
        let Relay {
            client,
            upstream,
            to_client,
            to_upstream,
            write_timeout,
            upstream_stall: stall,
        } = relay;
        if to_client
            .poll_move(cx, upstream, client, &mut |_, _| Poll::Pending)?
            .is_ready()
        {
            return Pin::new(client).poll_shutdown(cx);
        }
        let limit = *write_timeout;
        let mut timed = |cx: &mut Context<'_>, progress| upstream_stall(stall, limit, cx, progress);
        if to_upstream
            .poll_move(cx, client, upstream, &mut timed)?
            .is_ready()
        {
            return Pin::new(upstream).poll_shutdown(cx);
        }
        Poll::Pending
    }
}
