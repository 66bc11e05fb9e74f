//! Live sessions: a WebSocket lives only as long as the login behind it. When that login
//! expires, or its subject is revoked, ticketgate sends the client a close frame (4401
//! `login expired`, 4403 `revoked`) and ends the connection, which ends the upstream's too.
//!
//! Pingora relays an upgraded connection as raw bytes and calls no hook while a socket is
//! silent, so the closing happens in the connection's own stream (`connection::Watched`):
//! its pending read is what Pingora always waits on, so a timer or a wake-up registered there
//! reaches even a silent socket. This module holds what that stream needs: `Ending`, shared
//! between the stream and whoever may end the session, and `Outgoing`, which follows the
//! server-to-client bytes frame by frame (RFC 6455 §5.2 headers only, never payloads) so the
//! close frame is never spliced into the middle of the upstream's frame.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Waker;
use std::time::Duration;

use futures_util::task::AtomicWaker;

/// Why ticketgate closed a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    LoginExpired,
    Revoked,
    /// The process is shutting down and the grace period is about to end.
    Shutdown,
    /// No bytes went one way for `websocket.idle_timeout_seconds`.
    Idle,
    /// A resumable socket's client broke away and did not resume in time (the upstream is
    /// told 1001).
    ClientGone,
    /// On a `stomp:` route: a SUBSCRIBE or SEND to a destination the caller may not use.
    ForbiddenDestination,
    /// On a `stomp:` route: a frame that cannot be read.
    MalformedFrame,
}

impl CloseReason {
    pub const ALL: [CloseReason; 7] = [
        CloseReason::LoginExpired,
        CloseReason::Revoked,
        CloseReason::Shutdown,
        CloseReason::Idle,
        CloseReason::ClientGone,
        CloseReason::ForbiddenDestination,
        CloseReason::MalformedFrame,
    ];

    /// The close code (RFC 6455 §7.4.2: 4000-4999 are for applications) and reason text.
    pub fn code_and_text(self) -> (u16, &'static str) {
        match self {
            CloseReason::LoginExpired => (4401, "login expired"),
            CloseReason::Revoked => (4403, "revoked"),
            // RFC 6455 §7.4.1: "going away", as a server going down says; clients reconnect.
            CloseReason::Shutdown | CloseReason::ClientGone => (1001, "going away"),
            CloseReason::Idle => (1000, "idle timeout"),
            // RFC 6455 §7.4.1: "policy violation".
            CloseReason::ForbiddenDestination => (1008, "forbidden destination"),
            CloseReason::MalformedFrame => (1008, "malformed frame"),
        }
    }

    /// The `reason` of the access log and of `ticketgate_websocket_closed_total`.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::LoginExpired => "login_expired",
            CloseReason::Revoked => "revoked",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Idle => "idle",
            CloseReason::ClientGone => "client_gone",
            CloseReason::ForbiddenDestination => "forbidden_destination",
            CloseReason::MalformedFrame => "malformed_frame",
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            CloseReason::LoginExpired => 1,
            CloseReason::Revoked => 2,
            CloseReason::Shutdown => 3,
            CloseReason::Idle => 4,
            CloseReason::ClientGone => 5,
            CloseReason::ForbiddenDestination => 6,
            CloseReason::MalformedFrame => 7,
        }
    }

    fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(CloseReason::LoginExpired),
            2 => Some(CloseReason::Revoked),
            3 => Some(CloseReason::Shutdown),
            4 => Some(CloseReason::Idle),
            5 => Some(CloseReason::ClientGone),
            6 => Some(CloseReason::ForbiddenDestination),
            7 => Some(CloseReason::MalformedFrame),
            _ => None,
        }
    }
}

/// How a WebSocket ended: the `reason` of `ticketgate_websocket_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketEnd {
    /// Either side closed it.
    Normal,
    /// It broke.
    Error,
    ClosedBy(CloseReason),
}

impl SocketEnd {
    /// Every value, for the metric's series.
    pub const ALL: [SocketEnd; 9] = [
        SocketEnd::Normal,
        SocketEnd::ClosedBy(CloseReason::LoginExpired),
        SocketEnd::ClosedBy(CloseReason::Revoked),
        SocketEnd::ClosedBy(CloseReason::Idle),
        SocketEnd::ClosedBy(CloseReason::Shutdown),
        SocketEnd::ClosedBy(CloseReason::ClientGone),
        SocketEnd::ClosedBy(CloseReason::ForbiddenDestination),
        SocketEnd::ClosedBy(CloseReason::MalformedFrame),
        SocketEnd::Error,
    ];

    /// Why ticketgate closed it, if it did.
    pub fn closed_by(self) -> Option<CloseReason> {
        match self {
            SocketEnd::ClosedBy(reason) => Some(reason),
            SocketEnd::Normal | SocketEnd::Error => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            SocketEnd::Normal => "normal",
            SocketEnd::Error => "error",
            SocketEnd::ClosedBy(reason) => reason.label(),
        }
    }
}

/// A connection's live-session state, shared by its stream (which does the closing) and the
/// proxy hooks and revocations (which say when).
#[derive(Default)]
pub struct Ending {
    /// The 101 is on its way: bytes written from now on are a response header, then frames.
    upgrading: AtomicBool,
    /// When the login expires, Unix milliseconds; 0 for never.
    login_expires_at_ms: AtomicU64,
    /// The WebSocket idle timeout in milliseconds; 0 until a WebSocket request is admitted.
    idle_timeout_ms: AtomicU64,
    /// 0 while open, else the `CloseReason` ticketgate closes it for.
    closing: AtomicU8,
    /// The stream's pending read, woken when `close` is called.
    waker: AtomicWaker,
    /// How many times `waker` was woken (which takes it).
    wakes: AtomicU32,
}

/// The waker a stream last left with its `Ending`, and how many wakes had happened then.
#[derive(Default)]
pub struct Registration {
    waker: Option<Waker>,
    wakes: u32,
}

impl Ending {
    /// A WebSocket request was admitted: from now on the connection ends once no bytes have
    /// gone one way (client to upstream, or back) for `timeout`, also while the upgrade is
    /// waiting for the upstream's answer.
    pub fn idle_after(&self, timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.idle_timeout_ms.store(ms.max(1), Ordering::Release);
        self.wake();
    }

    pub fn idle_timeout(&self) -> Option<Duration> {
        Some(self.idle_timeout_ms.load(Ordering::Acquire))
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
    }

    /// The upstream answered 101: follow the frames from here, and close at
    /// `login_expires_at_ms` (Unix milliseconds) when that is set.
    pub fn upgrading(&self, login_expires_at_ms: Option<u64>) {
        if let Some(at) = login_expires_at_ms {
            self.login_expires_at_ms.store(at.max(1), Ordering::Release);
        }
        self.upgrading.store(true, Ordering::Release);
        self.wake();
    }

    /// A refresh moved the login's expiry to `at_ms` (Unix milliseconds): the socket now
    /// closes then, never earlier than it would have, and never at all when it was not to
    /// close at login expiry. Returns when it closes now, if it does.
    pub fn extend_login(&self, at_ms: u64) -> Option<u64> {
        let moved =
            self.login_expires_at_ms
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                    (current > 0).then_some(current.max(at_ms))
                });
        moved.ok().map(|before| before.max(at_ms))
    }

    /// Close the session for `reason` as soon as a frame boundary allows.
    pub fn close(&self, reason: CloseReason) {
        let _ =
            self.closing
                .compare_exchange(0, reason.to_u8(), Ordering::AcqRel, Ordering::Acquire);
        self.wake();
    }

    pub fn closing(&self) -> Option<CloseReason> {
        CloseReason::from_u8(self.closing.load(Ordering::Acquire))
    }

    pub fn is_upgrading(&self) -> bool {
        self.upgrading.load(Ordering::Acquire)
    }

    pub fn login_expires_at_ms(&self) -> Option<u64> {
        Some(self.login_expires_at_ms.load(Ordering::Acquire)).filter(|at| *at > 0)
    }

    /// Leaves `waker` to be woken when the session must end. A stream polled again and again
    /// with the same task's waker registers it once, and again only after a wake took it;
    /// true when `waker` is the one of the previous call.
    pub fn register(&self, waker: &Waker, registration: &mut Registration) -> bool {
        let same = registration
            .waker
            .as_ref()
            .is_some_and(|last| last.will_wake(waker));
        let wakes = self.wakes.load(Ordering::Acquire);
        if !same || registration.wakes != wakes {
            self.waker.register(waker);
            if !same {
                registration.waker = Some(waker.clone());
            }
            registration.wakes = wakes;
        }
        same
    }

    /// Counted before the waker is taken: a stream that saw the old count still had its
    /// waker registered, and this wake reaches it.
    fn wake(&self) {
        self.wakes.fetch_add(1, Ordering::AcqRel);
        self.waker.wake();
    }
}

/// Every WebSocket open in this process, so a shutdown can close them properly before its
/// grace period ends, and those a refresh may extend, by session handle.
#[derive(Default)]
pub struct Sessions {
    open: Mutex<Vec<Weak<Ending>>>,
    held: Mutex<HashMap<String, Held>>,
}

/// A socket that can be refreshed: who opened it, what the upstream was told about them, and
/// its recent refreshes. `who` and `told` are digests the caller makes (`Identity`'s); this
/// module only compares them.
pub struct Held {
    pub ending: Weak<Ending>,
    pub who: [u8; 32],
    pub told: [u8; 32],
    /// When the last refreshes of this session came (Unix milliseconds), oldest first.
    refreshes: VecDeque<u64>,
}

impl Held {
    pub fn new(ending: &Arc<Ending>, who: [u8; 32], told: [u8; 32]) -> Self {
        Held {
            ending: Arc::downgrade(ending),
            who,
            told,
            refreshes: VecDeque::new(),
        }
    }
}

/// A refresh may come this often per session, per `REFRESH_WINDOW_MS`.
pub const REFRESHES_PER_WINDOW: usize = 6;
pub const REFRESH_WINDOW_MS: u64 = 60_000;

/// What a refresh of a held socket came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refreshed {
    /// The socket now closes at this Unix millisecond (`None`: not at login expiry at all).
    Extended(Option<u64>),
    /// No open socket has this handle.
    Unknown,
    /// Another issuer or subject than the socket's.
    Mismatch,
    /// A forwarded claim differs: the upstream cannot learn a new identity without a new
    /// upgrade, so the socket keeps its old expiry.
    IdentityChanged,
    /// Past `REFRESHES_PER_WINDOW` in a window; retry after this many seconds.
    TooMany(u64),
}

impl Sessions {
    pub fn add(&self, ending: &Arc<Ending>) {
        if let Ok(mut open) = self.open.lock() {
            // Dropping the closed ones whenever the list has doubled keeps it near the count
            // of open sockets at a constant cost per socket.
            if open.len() >= 64 && open.len().is_power_of_two() {
                open.retain(|s| s.strong_count() > 0);
            }
            open.push(Arc::downgrade(ending));
        }
    }

    /// Makes a socket refreshable under `handle`.
    pub fn hold(&self, handle: String, held: Held) {
        if let Ok(mut all) = self.held.lock() {
            if all.len() >= 64 && all.len().is_power_of_two() {
                all.retain(|_, h| h.ending.strong_count() > 0);
            }
            all.insert(handle, held);
        }
    }

    /// Extends the socket held under `handle` to `at_ms` (Unix milliseconds) for a caller
    /// who is `who` and would be told `told`, at `now_ms`.
    pub fn refresh(
        &self,
        handle: &str,
        who: &[u8; 32],
        told: &[u8; 32],
        at_ms: u64,
        now_ms: u64,
    ) -> Refreshed {
        let Ok(mut all) = self.held.lock() else {
            return Refreshed::Unknown;
        };
        let Some(held) = all.get_mut(handle) else {
            return Refreshed::Unknown;
        };
        let Some(ending) = held.ending.upgrade().filter(|e| e.closing().is_none()) else {
            all.remove(handle);
            return Refreshed::Unknown;
        };
        while held
            .refreshes
            .front()
            .is_some_and(|at| *at + REFRESH_WINDOW_MS <= now_ms)
        {
            held.refreshes.pop_front();
        }
        if let Some(oldest) = held.refreshes.front()
            && held.refreshes.len() >= REFRESHES_PER_WINDOW
        {
            return Refreshed::TooMany((oldest + REFRESH_WINDOW_MS - now_ms).div_ceil(1000));
        }
        held.refreshes.push_back(now_ms);
        if held.who != *who {
            Refreshed::Mismatch
        } else if held.told != *told {
            Refreshed::IdentityChanged
        } else {
            Refreshed::Extended(ending.extend_login(at_ms))
        }
    }

    /// Extends the socket held here under `handle` to `at_ms`, as a refresh at another
    /// replica decided (it checked the caller against the shared record); true when one is.
    pub fn extend_held(&self, handle: &str, at_ms: u64) -> bool {
        let ending = self
            .held
            .lock()
            .ok()
            .and_then(|all| all.get(handle).and_then(|held| held.ending.upgrade()));
        ending.is_some_and(|ending| {
            ending.extend_login(at_ms);
            true
        })
    }

    /// The sockets open now, for a shutdown that closes them one by one.
    pub fn open_now(&self) -> Vec<Arc<Ending>> {
        self.open
            .lock()
            .map(|open| open.iter().filter_map(Weak::upgrade).collect())
            .unwrap_or_default()
    }

    /// Closes every open session for `reason`; returns how many were open.
    pub fn close_all(&self, reason: CloseReason) -> usize {
        let open: Vec<Arc<Ending>> = self
            .open
            .lock()
            .map(|mut open| open.drain(..).filter_map(|s| s.upgrade()).collect())
            .unwrap_or_default();
        for ending in &open {
            ending.close(reason);
        }
        open.len()
    }
}

/// A fresh handle a client holds for its socket (a session handle, a resume token): 128 random
/// bits, base64url; `None` when the system's generator fails (the socket opens without what
/// the handle was for).
pub fn new_handle() -> Option<String> {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    use base64::Engine;
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// A server-to-client close frame: FIN + opcode 8, unmasked, the code and the reason.
pub fn close_frame(reason: CloseReason) -> Vec<u8> {
    let (code, text) = reason.code_and_text();
    let mut frame = Vec::with_capacity(4 + text.len());
    frame.push(0x88);
    // Control frame payloads are at most 125 bytes; ours are a dozen.
    frame.push((2 + text.len()) as u8);
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(text.as_bytes());
    frame
}

/// A client-to-server close frame (RFC 6455 §5.3: masked with `mask`), for an upstream whose
/// client is gone.
pub fn masked_close_frame(reason: CloseReason, mask: [u8; 4]) -> Vec<u8> {
    let mut frame = close_frame(reason);
    frame[1] |= 0x80;
    let payload: Vec<u8> = frame.split_off(2);
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    frame
}

/// Where the server-to-client byte stream is: in the 101's header, in a frame's header, or
/// in a payload with some bytes left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    state: State,
    /// A close frame has begun (for a client's frames: it said goodbye).
    close_seen: bool,
    /// The last data frame begun had no FIN: a message is in progress, and common clients
    /// lose a close frame sent between its fragments (control frames may still interleave).
    in_message: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// How many bytes of the `\r\n\r\n` that ends the 101's header have been seen.
    ResponseHeader(u8),
    /// The bytes of a frame header seen so far (at most 14).
    FrameHeader {
        seen: [u8; 14],
        len: u8,
    },
    Payload {
        left: u64,
    },
}

impl Default for Outgoing {
    fn default() -> Self {
        Outgoing {
            state: State::ResponseHeader(0),
            close_seen: false,
            in_message: false,
        }
    }
}

impl Outgoing {
    /// Following frames from their first, with no response header before them: a client's
    /// frames, for the relay of a resumable socket.
    pub fn frames() -> Self {
        Outgoing {
            state: State::FrameHeader {
                seen: [0; 14],
                len: 0,
            },
            close_seen: false,
            in_message: false,
        }
    }

    /// A close frame has begun.
    pub fn close_seen(&self) -> bool {
        self.close_seen
    }

    /// Still in the 101's header.
    pub fn in_response_header(&self) -> bool {
        matches!(self.state, State::ResponseHeader(_))
    }

    /// Between two frames (after the 101's header): a close frame may go out now.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::FrameHeader { len: 0, .. })
    }

    /// Between two messages: the close frame goes out here, never between the fragments of
    /// a message.
    pub fn at_message_boundary(&self) -> bool {
        self.at_boundary() && !self.in_message
    }

    /// How many of `bytes` can be written before the stream reaches its next frame boundary,
    /// when that boundary lies within them.
    pub fn boundary_within(&self, bytes: &[u8]) -> Option<usize> {
        let mut ahead = self.clone();
        let mut at = 0;
        while at < bytes.len() {
            let step = match ahead.state {
                State::Payload { left } => (left.min((bytes.len() - at) as u64) as usize).max(1),
                _ => 1,
            };
            ahead.advance(&bytes[at..at + step]);
            at += step;
            if ahead.at_boundary() {
                return Some(at);
            }
        }
        None
    }

    /// Follows `bytes`, written to the client in this order.
    pub fn advance(&mut self, mut bytes: &[u8]) {
        while let Some((&byte, rest)) = bytes.split_first() {
            match &mut self.state {
                State::ResponseHeader(matched) => {
                    let expected = b"\r\n\r\n"[usize::from(*matched)];
                    *matched = match (byte == expected, byte == b'\r') {
                        (true, _) => *matched + 1,
                        (false, true) => 1,
                        (false, false) => 0,
                    };
                    if *matched == 4 {
                        self.state = State::FrameHeader {
                            seen: [0; 14],
                            len: 0,
                        };
                    }
                    bytes = rest;
                }
                State::FrameHeader { seen, len } => {
                    seen[usize::from(*len)] = byte;
                    *len += 1;
                    if let Some((payload, _)) = frame_header(&seen[..usize::from(*len)]) {
                        let (fin, opcode) = (seen[0] & 0x80 != 0, seen[0] & 0x0f);
                        if opcode < 0x8 {
                            self.in_message = !fin;
                        }
                        self.close_seen |= opcode == 0x8;
                        self.state = State::Payload { left: payload };
                        self.finish_empty_payload();
                    }
                    bytes = rest;
                }
                State::Payload { left } => {
                    let take = (*left).min(bytes.len() as u64);
                    *left -= take;
                    bytes = &bytes[take as usize..];
                    self.finish_empty_payload();
                }
            }
        }
    }

    fn finish_empty_payload(&mut self) {
        if self.state == (State::Payload { left: 0 }) {
            self.state = State::FrameHeader {
                seen: [0; 14],
                len: 0,
            };
        }
    }
}

/// The payload length and masking key (zeros when unmasked) once `header` holds a whole
/// frame header (§5.2: 2 bytes, then 2 or 8 of extended length, then 4 of masking key when
/// the mask bit is set), else `None`. Every follower of frames reads headers with this.
pub fn frame_header(header: &[u8]) -> Option<(u64, [u8; 4])> {
    let [_, second, rest @ ..] = header else {
        return None;
    };
    let (short, extended) = match second & 0x7f {
        126 => (None, 2),
        127 => (None, 8),
        n => (Some(u64::from(n)), 0),
    };
    let masked = second & 0x80 != 0;
    let need = extended + if masked { 4 } else { 0 };
    if rest.len() < need {
        return None;
    }
    let length = short.unwrap_or_else(|| {
        rest[..extended]
            .iter()
            .fold(0u64, |n, b| (n << 8) | u64::from(*b))
    });
    let mut mask = [0u8; 4];
    if masked {
        mask.copy_from_slice(&rest[extended..extended + 4]);
    }
    Some((length, mask))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const HEADER: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";

    /// An unmasked frame with `payload` bytes of payload.
    fn frame(payload: usize) -> Vec<u8> {
        let mut frame = vec![0x82];
        match payload {
            0..=125 => frame.push(payload as u8),
            126..=65535 => {
                frame.push(126);
                frame.extend_from_slice(&(payload as u16).to_be_bytes());
            }
            _ => {
                frame.push(127);
                frame.extend_from_slice(&(payload as u64).to_be_bytes());
            }
        }
        frame.extend(std::iter::repeat_n(b'\r', payload));
        frame
    }

    #[test]
    fn the_close_frames_say_why() {
        assert_eq!(
            close_frame(CloseReason::LoginExpired),
            b"\x88\x0f\x11\x31login expired".to_vec()
        );
        assert_eq!(
            close_frame(CloseReason::Revoked),
            b"\x88\x09\x11\x33revoked".to_vec()
        );
    }

    /// Wakes `Woken` counts.
    struct Woken(std::sync::atomic::AtomicUsize);

    impl futures_util::task::ArcWake for Woken {
        fn wake_by_ref(woken: &Arc<Self>) {
            woken.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_waker_registered_once_is_still_reached_after_an_earlier_wake_took_it() {
        let woken = Arc::new(Woken(Default::default()));
        let waker = futures_util::task::waker(woken.clone());
        let ending = Ending::default();
        let mut registration = Registration::default();
        assert!(!ending.register(&waker, &mut registration));
        ending.upgrading(None);
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert!(ending.register(&waker, &mut registration), "the same waker");
        ending.close(CloseReason::Revoked);
        assert_eq!(
            woken.0.load(Ordering::SeqCst),
            2,
            "the close reached the stream"
        );
    }

    #[test]
    fn a_refresh_extends_a_held_socket_of_the_same_caller_only() {
        let sessions = Sessions::default();
        let ending = Arc::new(Ending::default());
        ending.upgrading(Some(10_000));
        let (who, told) = ([1; 32], [2; 32]);
        sessions.hold("h".into(), Held::new(&ending, who, told));
        let refresh = |who, told, at| sessions.refresh("h", who, told, at, 1_000);
        assert_eq!(refresh(&[9; 32], &told, 20_000), Refreshed::Mismatch);
        assert_eq!(refresh(&who, &[9; 32], 20_000), Refreshed::IdentityChanged);
        assert_eq!(
            ending.login_expires_at_ms(),
            Some(10_000),
            "refusals change nothing"
        );
        assert_eq!(
            refresh(&who, &told, 20_000),
            Refreshed::Extended(Some(20_000))
        );
        assert_eq!(
            refresh(&who, &told, 15_000),
            Refreshed::Extended(Some(20_000)),
            "never shortened"
        );
        assert_eq!(
            sessions.refresh("another handle", &who, &told, 1, 1_000),
            Refreshed::Unknown
        );
        drop(ending);
        assert_eq!(
            refresh(&who, &told, 30_000),
            Refreshed::Unknown,
            "its socket is gone"
        );
    }

    #[test]
    fn six_refreshes_a_minute_then_429_until_the_oldest_leaves_the_window() {
        let sessions = Sessions::default();
        let ending = Arc::new(Ending::default());
        ending.upgrading(None);
        sessions.hold("h".into(), Held::new(&ending, [1; 32], [2; 32]));
        for i in 0..6 {
            assert_eq!(
                sessions.refresh("h", &[1; 32], &[2; 32], 5, 1_000 + i),
                Refreshed::Extended(None),
                "not closing at login expiry: nothing to extend"
            );
        }
        assert_eq!(
            sessions.refresh("h", &[1; 32], &[2; 32], 5, 31_000),
            Refreshed::TooMany(30)
        );
        assert_eq!(
            sessions.refresh("h", &[1; 32], &[2; 32], 5, 61_000),
            Refreshed::Extended(None)
        );
    }

    #[test]
    fn closing_all_sessions_reaches_the_open_ones() {
        let sessions = Sessions::default();
        let open = Arc::new(Ending::default());
        sessions.add(&open);
        sessions.add(&Arc::new(Ending::default()));
        assert_eq!(sessions.close_all(CloseReason::Shutdown), 1);
        assert_eq!(open.closing(), Some(CloseReason::Shutdown));
    }

    #[test]
    fn no_boundary_inside_the_response_header() {
        let mut outgoing = Outgoing::default();
        outgoing.advance(&HEADER[..HEADER.len() - 1]);
        assert!(!outgoing.at_boundary());
        outgoing.advance(&HEADER[HEADER.len() - 1..]);
        assert!(outgoing.at_boundary());
    }

    #[test]
    fn a_masked_frame_header_counts_its_key() {
        let mut outgoing = Outgoing::default();
        outgoing.advance(HEADER);
        outgoing.advance(&[0x81, 0x83, 1, 2, 3]);
        assert!(!outgoing.at_boundary(), "masking key incomplete");
        outgoing.advance(&[4]);
        assert_eq!(outgoing.boundary_within(b"abcdef"), Some(3));
        outgoing.advance(b"abc");
        assert!(outgoing.at_boundary());
    }

    #[test]
    fn a_message_boundary_is_after_the_fin_fragment_and_not_between_fragments() {
        let mut outgoing = Outgoing::default();
        outgoing.advance(HEADER);
        assert!(outgoing.at_message_boundary());
        outgoing.advance(&[0x02, 0x01, b'a']); // binary, no FIN
        assert!(outgoing.at_boundary() && !outgoing.at_message_boundary());
        outgoing.advance(&[0x89, 0x00]); // a ping between the fragments
        assert!(
            !outgoing.at_message_boundary(),
            "a control frame ends no message"
        );
        outgoing.advance(&[0x80, 0x01, b'b']); // continuation with FIN
        assert!(outgoing.at_message_boundary());
    }

    proptest! {
        /// However the frames are cut into writes, a boundary is reported exactly where a
        /// frame ends, and nowhere else; `boundary_within` finds the next one.
        #[test]
        fn boundaries_are_exactly_where_frames_end(
            payloads in prop::collection::vec(
                prop_oneof![0usize..130, 126usize..70_000, Just(65_536usize)], 1..6),
            cuts in prop::collection::vec(1usize..5_000, 1..40),
        ) {
            let mut wire = HEADER.to_vec();
            let mut ends = vec![HEADER.len()];
            for payload in &payloads {
                wire.extend(frame(*payload));
                ends.push(wire.len());
            }
            let mut outgoing = Outgoing::default();
            let mut at = 0;
            let mut cut = cuts.iter().cycle();
            while at < wire.len() {
                let step = (*cut.next().unwrap_or(&1)).min(wire.len() - at);
                let next_end = ends.iter().copied().find(|end| *end > at);
                let found = outgoing.boundary_within(&wire[at..at + step]).map(|n| at + n);
                prop_assert_eq!(found, next_end.filter(|end| *end <= at + step));
                outgoing.advance(&wire[at..at + step]);
                at += step;
                prop_assert_eq!(outgoing.at_boundary(), ends.contains(&at), "at byte {}", at);
            }
        }
    }
}
