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

use crate::connection::{Watched, WriteStall};
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
        upstream: Timed {
            stream,
            stall: WriteStall::new(write_timeout, "the upstream stopped reading"),
        },
        // The 101 may still sit in the client's write buffer; the upstream's first frames may
        // have come with it.
        to_client: Way::holding(early),
        to_upstream: Way::default(),
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
    upstream: Timed,
    to_client: Way,
    to_upstream: Way,
}

/// The upstream's stream, its writes held to the write timeout as the client's are (by
/// `Watched`).
struct Timed {
    stream: TcpStream,
    stall: WriteStall,
}

impl AsyncRead for Timed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Timed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.stall.timed(cx, written)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.stream).poll_flush(cx);
        this.stall.timed(cx, flushed)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let shut = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.stall.timed(cx, shut)
    }
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
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
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
        } = relay;
        if to_client.poll_move(cx, upstream, client)?.is_ready() {
            return Pin::new(client).poll_shutdown(cx);
        }
        if to_upstream.poll_move(cx, client, upstream)?.is_ready() {
            return Pin::new(upstream).poll_shutdown(cx);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Two ends of a loopback TCP connection.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let near = TcpStream::connect(listener.local_addr().expect("addr"));
        let (near, far) = tokio::join!(near, listener.accept());
        (near.expect("connect"), far.expect("accept").0)
    }

    /// Writes `bytes` cut at `cuts`, each piece on its own.
    async fn write_in_pieces(stream: &mut TcpStream, bytes: &[u8], cuts: &[usize]) {
        let mut from = 0;
        for cut in cuts
            .iter()
            .map(|c| c % (bytes.len() + 1))
            .chain([bytes.len()])
        {
            if cut > from {
                stream.write_all(&bytes[from..cut]).await.expect("write");
                stream.flush().await.expect("flush");
                tokio::task::yield_now().await;
                from = cut;
            }
        }
    }

    /// Server frames (unmasked), some of them fragments of one message.
    fn frames(payloads: &[(Vec<u8>, bool)]) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut continuing = false;
        for (payload, fin) in payloads {
            let opcode = if continuing { 0x0 } else { 0x2 };
            bytes.push(if *fin { 0x80 | opcode } else { opcode });
            match payload.len() {
                n if n < 126 => bytes.push(n as u8),
                n => {
                    bytes.push(126);
                    bytes.extend_from_slice(&(n as u16).to_be_bytes());
                }
            }
            bytes.extend_from_slice(payload);
            continuing = !fin;
        }
        bytes
    }

    /// Relays a 101 and `to_client` from the upstream cut at `up_cuts`, and `to_upstream`
    /// from the client cut at `client_cuts`; returns what each side received.
    async fn relay_through(
        to_client: Vec<u8>,
        up_cuts: Vec<usize>,
        to_upstream: Vec<u8>,
        client_cuts: Vec<usize>,
    ) -> (Vec<u8>, Vec<u8>) {
        let (mut client, client_end) = pair().await;
        let (upstream_end, mut upstream) = pair().await;
        let watched = Watched::upgraded_for_tests(Box::new(
            pingora::protocols::l4::stream::Stream::from(client_end),
        ));
        let head = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
        let relayed = tokio::spawn(run(
            watched,
            Upstream {
                stream: upstream_end,
                early: head,
            },
            Duration::from_secs(5),
        ));
        let upstream_side = async {
            write_in_pieces(&mut upstream, &to_client, &up_cuts).await;
            let mut got = vec![0; to_upstream.len()];
            upstream.read_exact(&mut got).await.expect("upstream reads");
            upstream.shutdown().await.expect("upstream ends");
            got
        };
        let client_side = async {
            write_in_pieces(&mut client, &to_upstream, &client_cuts).await;
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.expect("client reads");
            got
        };
        let (at_upstream, at_client) = tokio::join!(upstream_side, client_side);
        let ended = relayed.await.expect("relay task");
        assert!(ended.error.is_none() && ended.closed_by_us.is_none());
        (at_client, at_upstream)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn any_frames_cut_anywhere_arrive_byte_for_byte_both_ways(
            payloads in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..300), any::<bool>()), 0..8),
            up_cuts in proptest::collection::vec(any::<usize>(), 0..12),
            from_client in proptest::collection::vec(any::<u8>(), 0..20_000),
            client_cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let to_client = frames(&payloads);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let (at_client, at_upstream) = runtime.block_on(relay_through(
                to_client.clone(), up_cuts, from_client.clone(), client_cuts));
            let mut expected = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
            expected.extend_from_slice(&to_client);
            prop_assert_eq!(at_client, expected);
            prop_assert_eq!(at_upstream, from_client);
        }
    }
}
