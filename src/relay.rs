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

use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::clock;
use crate::connection::{Watched, WriteStall};
use crate::handover::{self, Upstream};
use crate::live::{self, CloseReason, Outgoing};
use crate::resume::ring::Ring;
use crate::resume::{Door, Joining, Knock};
use crate::stomp::StompRules;
use crate::stomp::guard::{Guard, Refused, Why};
use crate::stomp::pattern::ClaimLists;

/// The buffer a read fills while bytes move; allocated per burst, not per socket.
const BURST: usize = 8 * 1024;

/// How a relayed socket ended.
pub struct Ended {
    /// Why ticketgate closed it, if it did (login expiry, revocation, idle, shutdown, a
    /// resumable client that did not come back).
    pub closed_by_us: Option<CloseReason>,
    /// The failure that ended it, if one did (a reset, a write that timed out).
    pub error: Option<io::Error>,
    /// On a `stomp:` route: the frame whose refusal closed it.
    pub stomp_refused: Option<Refused>,
}

/// What a relay is held to besides its streams.
pub struct Terms {
    /// A write to the upstream that makes no progress this long fails.
    pub write_timeout: Duration,
    pub resumable: Option<Resumable>,
    pub judging: Option<Judging>,
}

/// A `stomp:` route's rules and the caller's claims: the client's frames are judged by them.
pub struct Judging {
    pub rules: Arc<StompRules>,
    pub claims: ClaimLists,
}

/// What a resumable socket's relay holds besides its streams: its door (where a resume
/// knocks), its ring of upstream messages, how long a broken-away client is waited for.
pub struct Resumable {
    pub door: Arc<Door>,
    pub ring: Ring,
    pub window: Duration,
}

/// The resume state, with where the client's frames are: a client that broke away inside a
/// message cannot resume (the upstream has half of it).
struct Resume {
    door: Arc<Door>,
    ring: Ring,
    window: Duration,
    from_client: Outgoing,
}

/// Relays `client` and `upstream` until either ends; a write to the upstream that makes no
/// progress for `write_timeout` fails (the client's writes are timed by `Watched`). A
/// resumable socket whose client breaks away is held for its window and goes on with the
/// client that resumes it.
pub async fn run(mut client: Watched, upstream: Upstream, terms: Terms) -> Ended {
    let Terms {
        write_timeout,
        resumable,
        judging,
    } = terms;
    let Upstream { stream, early } = upstream;
    if judging.is_some() {
        client.speaks_stomp();
    }
    let mut resume = resumable.map(|r| {
        Box::new(Resume {
            door: r.door,
            ring: r.ring,
            window: r.window,
            from_client: Outgoing::frames(),
        })
    });
    if let Some(resume) = &mut resume {
        let head = handover::head_end(&early).unwrap_or_default();
        resume.record(&early[head..]);
    }
    let mut relay = Relay {
        client,
        upstream: Timed {
            stream,
            stall: WriteStall::new(write_timeout, "the upstream stopped reading"),
        },
        // The 101 may still sit in the client's write buffer; the upstream's first frames may
        // have come with it.
        to_client: Way::holding(early),
        to_upstream: Way {
            judged: judging.map(|judging| {
                Box::new(Judged {
                    judging,
                    guard: Guard::default(),
                    refused: None,
                })
            }),
            ..Way::default()
        },
        resume,
    };
    let error = loop {
        let knock = match (&mut relay).await {
            Turn::Ended(result) => break result.err(),
            Turn::Knocked(knock) => knock,
            Turn::Lost => match Box::pin(relay.hold()).await {
                Held::Knocked(knock) => knock,
                Held::Ended(error) => break error,
                Held::Gone => return relay.client_gone().await,
            },
        };
        if !relay.join(knock) {
            return relay.client_gone().await;
        }
    };
    let closed_by_us = relay.client.ending().closing();
    Ended {
        closed_by_us,
        error: error.filter(|_| closed_by_us.is_none()),
        stomp_refused: relay.to_upstream.judged.and_then(|j| j.refused),
    }
}

struct Relay {
    client: Watched,
    upstream: Timed,
    to_client: Way,
    to_upstream: Way,
    resume: Option<Box<Resume>>,
}

/// On a `stomp:` route, the client-to-upstream way's judge: what is read goes through the
/// guard, and only what it releases goes on.
struct Judged {
    judging: Judging,
    guard: Guard,
    /// Set once a frame was refused: nothing more is read from the client.
    refused: Option<Refused>,
}

impl Judged {
    /// Reads `bytes` through the guard; a refused frame stops the way.
    fn judge(&mut self, bytes: &[u8]) -> Result<(), Refused> {
        let Judging { rules, claims } = &self.judging;
        let mut judge =
            |command: &'static str, destination: &str| rules.allows(command, destination, claims);
        self.guard.push(bytes, &mut judge).inspect_err(|refused| {
            self.refused = Some(refused.clone());
        })
    }
}

/// How a turn of the relay ended.
enum Turn {
    /// The socket ended.
    Ended(io::Result<()>),
    /// A resumable socket's client broke away, between messages, without a close frame.
    Lost,
    /// A resume came for this socket (its client may not have noticed it broke yet).
    Knocked(Knock),
}

/// How a hold ended.
enum Held {
    Knocked(Knock),
    /// The upstream ended, or ticketgate closed the socket (revoked, login expired, shutdown).
    Ended(Option<io::Error>),
    /// The window passed.
    Gone,
}

impl Resume {
    fn record(&mut self, bytes: &[u8]) {
        self.ring.record(bytes);
        self.door.note(self.ring.resumable());
    }
}

impl Relay {
    /// A STOMP frame was refused: the client is told why (an `ERROR` frame, with its receipt)
    /// and the socket closes with 1008, the upstream connection with it.
    fn refuse(&mut self, refused: &Refused) {
        let reason = match refused.why {
            Why::Forbidden => CloseReason::ForbiddenDestination,
            Why::Malformed => CloseReason::MalformedFrame,
        };
        self.client.stomp_receipt(refused.receipt.clone());
        self.client.ending().close(reason);
    }

    /// The client's connection broke: a resumable socket is held if it can be resumed.
    fn lost(&self, error: io::Error) -> Turn {
        let holdable =
            self.resume.as_ref().is_some_and(|r| {
                r.from_client.at_message_boundary() && !r.from_client.close_seen()
            }) && self.client.ending().closing().is_none();
        if holdable {
            Turn::Lost
        } else {
            Turn::Ended(Err(error))
        }
    }

    /// Waits for the client to resume, reading the upstream into the ring while it has room
    /// (then the upstream waits: what the client is to get is never pushed out while it is
    /// away), until the window passes, the upstream ends, or ticketgate closes the socket.
    async fn hold(&mut self) -> Held {
        let Relay {
            client,
            upstream,
            resume,
            ..
        } = self;
        let Some(resume) = resume.as_mut() else {
            return Held::Gone;
        };
        client.let_go();
        let mut window = pin!(tokio::time::sleep_until(clock::now() + resume.window));
        let mut buf: Option<Box<[u8]>> = None;
        poll_fn(|cx| {
            if let Poll::Ready(knock) = resume.door.poll_knock(cx) {
                return Poll::Ready(Held::Knocked(knock));
            }
            if let Poll::Ready(e) = client.poll_live_close(cx) {
                return Poll::Ready(Held::Ended(Some(e)));
            }
            if window.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Held::Gone);
            }
            while !resume.ring.full() {
                let buf = buf.get_or_insert_with(|| vec![0; BURST].into_boxed_slice());
                let mut read = ReadBuf::new(buf);
                match ready!(Pin::new(&mut *upstream).poll_read(cx, &mut read)) {
                    Ok(()) if read.filled().is_empty() => return Poll::Ready(Held::Ended(None)),
                    Ok(()) => resume.record(read.filled()),
                    Err(e) => return Poll::Ready(Held::Ended(Some(e))),
                }
            }
            Poll::Pending
        })
        .await
    }

    /// A resumed client takes the broken one's place and is sent what it missed. False when
    /// it cannot be: a message it needs was pushed out, or the old client was inside a
    /// message to the upstream when the resume came.
    fn join(&mut self, knock: Knock) -> bool {
        let Knock::Join(Joining { client, received }) = knock else {
            return false;
        };
        let Some(resume) = self.resume.as_mut() else {
            return false;
        };
        let judged_between = self
            .to_upstream
            .judged
            .as_ref()
            .is_none_or(|j| j.guard.between_frames());
        if !resume.from_client.at_message_boundary()
            || !judged_between
            || self.client.ending().closing().is_some()
        {
            return false;
        }
        let Some(replay) = resume.ring.replay_after(received) else {
            return false;
        };
        self.client.rejoin(*client);
        resume.from_client = Outgoing::frames();
        self.to_client = Way::holding(replay);
        self.to_upstream.ended = false;
        true
    }

    /// The client did not come back: the upstream is told the client went away (1001).
    async fn client_gone(&mut self) -> Ended {
        let mask = crate::resume::new_mask();
        let goodbye = live::masked_close_frame(CloseReason::ClientGone, mask);
        let sent = async {
            self.upstream.write_all(&goodbye).await?;
            self.upstream.shutdown().await
        };
        Ended {
            closed_by_us: Some(CloseReason::ClientGone),
            error: sent.await.err(),
            stomp_refused: None,
        }
    }
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
    /// On a `stomp:` route's client-to-upstream way: the bytes read wait in the guard, not in
    /// `buf`, until it releases them.
    judged: Option<Box<Judged>>,
}

/// Writes some of `bytes` to `to`: how many; a write of none is a failure, the writing side's.
fn poll_write_some<W: AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    to: &mut W,
    bytes: &[u8],
) -> Poll<Result<usize, Broke>> {
    match ready!(Pin::new(to).poll_write(cx, bytes)) {
        Ok(0) => Poll::Ready(Err(Broke::Writing(io::ErrorKind::WriteZero.into()))),
        Ok(n) => Poll::Ready(Ok(n)),
        Err(e) => Poll::Ready(Err(Broke::Writing(e))),
    }
}

/// Which side of a direction failed.
enum Broke {
    Reading(io::Error),
    Writing(io::Error),
    /// The guard refused one of the client's STOMP frames.
    Refused(Refused),
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
            judged: None,
        }
    }

    /// Moves bytes from `from` to `to` until a side waits, showing `read` every byte read;
    /// ready once `from` ended and everything read reached `to`, flushed. A judged way moves
    /// only what its guard releases; a refused frame is `Broke::Refused`.
    fn poll_move<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        mut read: impl FnMut(&[u8]),
    ) -> Poll<Result<(), Broke>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            let waiting = match &self.judged {
                Some(judged) => judged.guard.ready(),
                // No buffer (an idle way gave it back): nothing waits.
                None => self
                    .buf
                    .as_deref()
                    .map_or(&[][..], |buf| &buf[self.start..self.end]),
            };
            if !waiting.is_empty() {
                let n = ready!(poll_write_some(cx, to, waiting))?;
                match &mut self.judged {
                    Some(judged) => judged.guard.sent(n),
                    None => self.start += n,
                }
                self.unflushed = true;
                continue;
            }
            if self.unflushed {
                ready!(Pin::new(&mut *to).poll_flush(cx)).map_err(Broke::Writing)?;
                self.unflushed = false;
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            if self.judged.as_ref().is_some_and(|j| j.refused.is_some()) {
                // The close is under way (`Watched`); nothing more goes to the upstream.
                return Poll::Pending;
            }
            let buf = self
                .buf
                .get_or_insert_with(|| vec![0; BURST].into_boxed_slice());
            let mut filled = ReadBuf::new(buf);
            match Pin::new(&mut *from).poll_read(cx, &mut filled) {
                Poll::Ready(Ok(())) => {
                    let bytes = filled.filled();
                    read(bytes);
                    self.ended = bytes.is_empty();
                    match &mut self.judged {
                        Some(judged) => judged.judge(bytes).map_err(Broke::Refused)?,
                        None => (self.start, self.end) = (0, bytes.len()),
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Broke::Reading(e))),
                Poll::Pending => {
                    // Idle: no buffer is kept while nothing moves.
                    self.buf = None;
                    if let Some(judged) = &mut self.judged {
                        judged.guard.rest();
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl Future for &mut Relay {
    type Output = Turn;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Turn> {
        let relay = &mut **self.get_mut();
        if let Some(resume) = &relay.resume
            && let Poll::Ready(knock) = resume.door.poll_knock(cx)
        {
            return Poll::Ready(Turn::Knocked(knock));
        }
        // A close decided while no way reads the client (the upstream not taking bytes)
        // still goes out.
        if let Poll::Ready(e) = relay.client.poll_live_close(cx) {
            return Poll::Ready(Turn::Ended(Err(e)));
        }
        let moved = {
            let Relay {
                client,
                upstream,
                to_client,
                resume,
                ..
            } = &mut *relay;
            to_client.poll_move(cx, upstream, client, |bytes| {
                if let Some(resume) = resume {
                    resume.record(bytes);
                }
            })
        };
        match moved {
            Poll::Ready(Err(Broke::Reading(e))) => return Poll::Ready(Turn::Ended(Err(e))),
            Poll::Ready(Err(Broke::Writing(e))) => return Poll::Ready(relay.lost(e)),
            // Only the client's frames are judged; a refusal from this way would close alike.
            Poll::Ready(Err(Broke::Refused(refused))) => {
                relay.refuse(&refused);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(Ok(())) => {
                return Pin::new(&mut relay.client)
                    .poll_shutdown(cx)
                    .map(Turn::Ended);
            }
            Poll::Pending => {}
        }
        let moved = {
            let Relay {
                client,
                upstream,
                to_upstream,
                resume,
                ..
            } = &mut *relay;
            to_upstream.poll_move(cx, client, upstream, |bytes| {
                if let Some(resume) = resume {
                    resume.from_client.advance(bytes);
                }
            })
        };
        match moved {
            Poll::Ready(Err(Broke::Reading(e))) => Poll::Ready(relay.lost(e)),
            Poll::Ready(Err(Broke::Writing(e))) => Poll::Ready(Turn::Ended(Err(e))),
            Poll::Ready(Err(Broke::Refused(refused))) => {
                relay.refuse(&refused);
                // The close frame goes out from the next turn's `poll_live_close`.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(Ok(())) => match relay.lost(io::ErrorKind::UnexpectedEof.into()) {
                Turn::Lost => Poll::Ready(Turn::Lost),
                _ => Pin::new(&mut relay.upstream)
                    .poll_shutdown(cx)
                    .map(Turn::Ended),
            },
            Poll::Pending => Poll::Pending,
        }
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
            Terms {
                write_timeout: Duration::from_secs(5),
                resumable: None,
                judging: None,
            },
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
