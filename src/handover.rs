//! Taking an upgraded connection away from Pingora: the upstream's end.
//!
//! Pingora does the handshake; after the 101, ticketgate's relay (`crate::relay`) carries
//! the bytes, and Pingora's per-request state (its HTTP sessions, their buffers, the proxy
//! future) is let go. Pingora 0.9.1 lets a peer bring its own connector
//! (`PeerOptions::custom_l4`) whose stream may be any `VirtualSocket`: a handshake's upstream
//! connection is made here, as an `UpstreamEnd` that shows Pingora the bytes of the
//! response head and, when that head is a 101, nothing more — the TCP stream and whatever
//! the upstream sent after the head move into the request's `UpstreamSlot`, and Pingora
//! reads the end of the stream. Any other answer passes through untouched.

use std::fmt;
use std::io;
use std::net::SocketAddr as InetAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_trait::async_trait;
use pingora::connectors::L4Connect;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::l4::virt::{VirtualSockOpt, VirtualSocket, VirtualSocketStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The longest response head looked through for its end; a longer one is passed through
/// as it is, and a 101 that long never reaches the relay: its socket closes after the 101.
const MAX_HEAD: usize = 16 * 1024;

/// Where a handshake's upstream connection goes once the upstream answered 101: the stream
/// and the bytes it sent after the head (the first frames, when they came with the 101).
#[derive(Default)]
pub struct UpstreamSlot(Mutex<Option<Upstream>>);

/// An upgraded upstream connection, taken from Pingora.
pub struct Upstream {
    pub stream: TcpStream,
    /// Bytes the upstream sent after its 101's head, not yet relayed.
    pub early: Vec<u8>,
}

impl UpstreamSlot {
    pub fn take(&self) -> Option<Upstream> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn put(&self, upstream: Upstream) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(upstream);
    }
}

/// Pingora's connector for a handshake's upstream: one TCP connection per handshake,
/// wrapped in an `UpstreamEnd` that hands a 101's connection over to `slot`.
pub struct Connector {
    pub slot: Arc<UpstreamSlot>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("handover::Connector")
    }
}

#[async_trait]
impl L4Connect for Connector {
    async fn connect(&self, addr: &SocketAddr) -> pingora::Result<L4Stream> {
        use pingora::{ErrorType, OrErr};
        let inet: InetAddr = match addr {
            SocketAddr::Inet(inet) => *inet,
            #[cfg(unix)]
            SocketAddr::Unix(_) => {
                return pingora::Error::e_explain(
                    ErrorType::ConnectError,
                    "WebSocket upstreams are TCP",
                );
            }
        };
        let stream = TcpStream::connect(inet)
            .await
            .or_err(ErrorType::ConnectRefused, "connecting to the upstream")?;
        let end = UpstreamEnd {
            stream: Some(stream),
            head: Head::default(),
            slot: self.slot.clone(),
        };
        Ok(VirtualSocketStream::new(Box::new(end)).into())
    }
}

/// A handshake's upstream connection as Pingora sees it.
pub struct UpstreamEnd {
    /// `None` once handed over: Pingora then reads the end of the stream.
    stream: Option<TcpStream>,
    head: Head,
    slot: Arc<UpstreamSlot>,
}

/// How far the response head has been seen.
#[derive(Default)]
pub struct Head {
    /// The head's bytes so far (only its first line and its end are looked at).
    seen: Vec<u8>,
    /// The head ended: every later byte passes (an answer other than 101).
    passed: bool,
}

/// Where the response head ends in `seen` (after its blank line), if it does.
pub fn head_end(seen: &[u8]) -> Option<usize> {
    seen.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// Whether a response head is a 101: its status line reads `HTTP/1.1 101 ...`.
fn is_switching(head: &[u8]) -> bool {
    let status_line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    status_line.split(|b| *b == b' ').nth(1) == Some(b"101")
}

impl fmt::Debug for UpstreamEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamEnd")
            .field("handed_over", &self.stream.is_none())
            .finish()
    }
}

impl Head {
    /// Bytes just read, `arrived`: while a 101's head ends among them, how many of them
    /// belong to the head (Pingora's; the rest are the relay's); `None` while every byte
    /// passes (the head goes on, or the answer is not a 101).
    pub fn read(&mut self, arrived: &[u8]) -> Option<usize> {
        if self.passed {
            return None;
        }
        let looked_from = self.seen.len().saturating_sub(3);
        let before = self.seen.len();
        self.seen.extend_from_slice(arrived);
        let Some(end) = head_end(&self.seen[looked_from..]).map(|e| e + looked_from) else {
            if self.seen.len() > MAX_HEAD {
                self.passed = true;
                self.seen = Vec::new();
            }
            return None;
        };
        let switching = is_switching(&self.seen[..end]);
        self.passed = true;
        self.seen = Vec::new();
        switching.then_some(end - before)
    }
}

impl UpstreamEnd {
    /// Bytes just read into `buf` from `before` on: after a 101's head only the head stays in
    /// `buf`, and the stream and the rest go to the slot.
    fn after_read(&mut self, buf: &mut ReadBuf<'_>, before: usize) {
        let Some(kept) = self.head.read(&buf.filled()[before..]) else {
            return;
        };
        let early = buf.filled()[before + kept..].to_vec();
        buf.set_filled(before + kept);
        if let Some(stream) = self.stream.take() {
            self.slot.put(Upstream { stream, early });
        }
    }
}

impl AsyncRead for UpstreamEnd {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(stream) = this.stream.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let before = buf.filled().len();
        let read = Pin::new(stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            this.after_read(buf, before);
        }
        read
    }
}

fn handed_over() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "handed over to the relay")
}

impl AsyncWrite for UpstreamEnd {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().stream.as_mut() {
            Some(stream) => Pin::new(stream).poll_write(cx, buf),
            None => Poll::Ready(Err(handed_over())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream.as_mut() {
            Some(stream) => Pin::new(stream).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    /// After the handover Pingora's end of the request is a no-op: the relay owns the stream.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream.as_mut() {
            Some(stream) => Pin::new(stream).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl VirtualSocket for UpstreamEnd {
    fn set_socket_option(&self, opt: VirtualSockOpt) -> io::Result<()> {
        match (&self.stream, opt) {
            (Some(stream), VirtualSockOpt::NoDelay) => stream.set_nodelay(true),
            _ => Ok(()),
        }
    }
}

/// What is left of a client's connection in Pingora's hands once the relay took it: its
/// reads end, writes fail, and closing it does nothing.
#[derive(Debug)]
pub struct Gone;

impl AsyncRead for Gone {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Gone {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        Poll::Ready(Err(handed_over()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl VirtualSocket for Gone {
    fn set_socket_option(&self, _opt: VirtualSockOpt) -> io::Result<()> {
        Ok(())
    }
}

/// A Pingora stream standing for a connection the relay took.
pub fn gone() -> pingora::protocols::Stream {
    let stream: L4Stream = VirtualSocketStream::new(Box::new(Gone)).into();
    Box::new(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switching_head_is_told_from_others() {
        assert!(is_switching(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"));
        assert!(!is_switching(b"HTTP/1.1 200 OK\r\n\r\n"));
        assert!(!is_switching(b"HTTP/1.1 1010 X\r\n\r\n"));
        assert!(
            !is_switching(b"HTTP/1.1\r\nX: 101 y\r\n\r\n"),
            "found by fuzzing"
        );
        assert_eq!(
            head_end(b"HTTP/1.1 101 X\r\nA: b\r\n\r\n\x81\x01a"),
            Some(24)
        );
        assert_eq!(head_end(b"HTTP/1.1 101 X\r\nA: b\r\n"), None);
    }
}
