//! Resume: when a client's connection breaks without a close frame, its upstream connection
//! is held for `websocket.resume_window_seconds`, and a resume upgrade carrying the socket's
//! token and how many upstream messages the client received is joined onto it: the relay
//! replays what the client missed from the socket's `Ring` and goes on, and the upstream
//! sees one unbroken connection.
//!
//! This replica's resumable sockets are found through `Resumes`, by token (single use: the
//! next one comes with a refresh, by session handle). A token is kept only as its SHA-256
//! digest, so what this process holds cannot be replayed from a memory dump. Each socket's
//! `Door` is where a resume knocks: the relay task polls it.

pub mod ring;

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use aws_lc_rs::digest;
use futures_util::task::AtomicWaker;

use crate::connection::Watched;
use crate::live::new_handle;

/// `websocket.resume_window_seconds` and `websocket.resume_buffer_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeConfig {
    /// How long an upstream connection is held after its client's connection broke.
    pub window: Duration,
    /// The latest upstream bytes kept per socket, for a resume.
    pub buffer_bytes: usize,
}

/// A resume as the upgrade asks for it: `ticketgate.resume.<token>.<received>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asked<'a> {
    pub token: &'a str,
    /// How many upstream messages the client received on the socket.
    pub received: u64,
}

/// The longest token read: ticketgate's are 22 characters.
const MAX_TOKEN: usize = 64;

impl<'a> Asked<'a> {
    /// Reads `<token>.<received>` (what follows the entry's prefix); `None` unless the token
    /// is base64url and the count a decimal number.
    pub fn read(rest: &'a str) -> Option<Self> {
        let (token, received) = rest.rsplit_once('.')?;
        let token_ok = !token.is_empty()
            && token.len() <= MAX_TOKEN
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let digits_ok = !received.is_empty()
            && received.len() <= 20
            && received.bytes().all(|b| b.is_ascii_digit());
        if !(token_ok && digits_ok) {
            return None;
        }
        Some(Asked {
            token,
            received: received.parse().ok()?,
        })
    }
}

/// A masking key for a frame ticketgate sends the upstream as its client (RFC 6455 §5.3: from
/// a strong source; all zeros only if the system's generator fails).
pub fn new_mask() -> [u8; 4] {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let mut mask = [0u8; 4];
    let _ = SystemRandom::new().fill(&mut mask);
    mask
}

type Digest = [u8; 32];

fn digest_of(token: &str) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
    out
}

/// Why a resume is refused (401 `invalid_ticket` for each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotResumable {
    /// Used, expired, of a socket that ended, or never issued here.
    #[error("unknown resume token")]
    UnknownToken,
    #[error("resume token of another route")]
    OtherRoute,
    /// The messages after those the client received are no longer all kept, or it claims
    /// more than were sent.
    #[error("messages asked for are not kept")]
    NotKept,
    /// Not `ticketgate.resume.<token>.<count>`, more than one, with a credential beside it,
    /// or on less than a complete opening handshake.
    #[error("unreadable resume")]
    Unreadable,
}

/// This replica's resumable sockets.
#[derive(Default)]
pub struct Resumes {
    inner: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    by_token: HashMap<Digest, Weak<Door>>,
    by_session: HashMap<String, Weak<Door>>,
}

impl Resumes {
    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A socket opened on `route` with session handle `session` and first token `token`.
    pub fn open(&self, route: &str, session: &str, token: &str) -> Arc<Door> {
        let digest = digest_of(token);
        let door = Arc::new(Door {
            route: route.to_owned(),
            session: session.to_owned(),
            token: Mutex::new(digest),
            joining: Mutex::new(None),
            waker: AtomicWaker::new(),
            lowest: AtomicU64::new(0),
            highest: AtomicU64::new(0),
        });
        let mut registry = self.registry();
        registry.by_token.insert(digest, Arc::downgrade(&door));
        registry
            .by_session
            .insert(session.to_owned(), Arc::downgrade(&door));
        door
    }

    /// Takes `asked.token` (single use, whatever comes of it) and finds its socket. A resume
    /// that asks for messages no longer kept also ends the socket's hold.
    pub fn claim(&self, route: &str, asked: Asked) -> Result<Arc<Door>, NotResumable> {
        let door = self
            .registry()
            .by_token
            .remove(&digest_of(asked.token))
            .and_then(|weak| weak.upgrade())
            .ok_or(NotResumable::UnknownToken)?;
        if door.route != route {
            return Err(NotResumable::OtherRoute);
        }
        let highest = door.highest.load(Ordering::Acquire);
        if asked.received > highest {
            return Err(NotResumable::NotKept);
        }
        if asked.received < door.lowest.load(Ordering::Acquire) {
            door.knock(Knock::GiveUp);
            return Err(NotResumable::NotKept);
        }
        Ok(door)
    }

    /// The next token of the socket with handle `session`, replacing its current one; `None`
    /// when no resumable socket here has that handle.
    pub fn renew(&self, session: &str) -> Option<String> {
        let mut registry = self.registry();
        let door = registry.by_session.get(session)?.upgrade()?;
        let token = new_handle()?;
        let digest = digest_of(&token);
        let old = std::mem::replace(&mut *door.token_digest(), digest);
        registry.by_token.remove(&old);
        registry.by_token.insert(digest, Arc::downgrade(&door));
        Some(token)
    }

    /// The socket ended: its token and handle are forgotten.
    pub fn closed(&self, door: &Door) {
        let mut registry = self.registry();
        registry.by_token.remove(&*door.token_digest());
        registry.by_session.remove(&door.session);
    }
}

/// Where a resume reaches its socket's relay.
pub struct Door {
    route: String,
    session: String,
    token: Mutex<Digest>,
    joining: Mutex<Option<Knock>>,
    waker: AtomicWaker,
    /// The messages a client may have received for a resume to succeed (`Ring::resumable`),
    /// as the relay last noted them.
    lowest: AtomicU64,
    highest: AtomicU64,
}

/// What comes through a socket's door.
pub enum Knock {
    /// A resumed client, its 101 written.
    Join(Joining),
    /// A resume asked for messages no longer kept: the socket cannot resume.
    GiveUp,
}

/// A client connection resuming a socket: its 101 is written, the replay not yet.
pub struct Joining {
    /// Boxed: a knock is small until it carries a connection.
    pub client: Box<Watched>,
    /// How many upstream messages it received before its connection broke.
    pub received: u64,
}

impl Door {
    fn token_digest(&self) -> std::sync::MutexGuard<'_, Digest> {
        self.token.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Knock>> {
        self.joining.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The socket's session handle.
    pub fn session(&self) -> &str {
        &self.session
    }

    pub fn knock(&self, knock: Knock) {
        *self.slot() = Some(knock);
        self.waker.wake();
    }

    /// Ready when a resume came (for the relay task).
    pub fn poll_knock(&self, cx: &mut Context<'_>) -> Poll<Knock> {
        self.waker.register(cx.waker());
        match self.slot().take() {
            Some(knock) => Poll::Ready(knock),
            None => Poll::Pending,
        }
    }

    /// The relay's ring now resumes a client that received any count in `range`.
    pub fn note(&self, range: RangeInclusive<u64>) {
        self.lowest.store(*range.start(), Ordering::Release);
        self.highest.store(*range.end(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_names_a_token_and_a_count_or_nothing() {
        assert_eq!(
            Asked::read("abc-_9.17"),
            Some(Asked {
                token: "abc-_9",
                received: 17
            })
        );
        for refused in [
            "",
            ".",
            "abc",
            "abc.",
            ".5",
            "a b.5",
            "abc.-1",
            "abc.1e3",
            "abc.+1",
            "abc.99999999999999999999",
            "a/c.1",
        ] {
            assert_eq!(Asked::read(refused), None, "{refused}");
        }
        assert_eq!(Asked::read(&format!("{}.1", "a".repeat(65))), None);
    }

    #[test]
    fn a_token_is_single_use_route_bound_and_replaced_by_a_renewal() {
        let resumes = Resumes::default();
        let door = resumes.open("/ws", "session-1", "first");
        door.note(0..=3);
        let asked = |token| Asked { token, received: 2 };
        assert_eq!(
            resumes.claim("/other", asked("first")).err(),
            Some(NotResumable::OtherRoute)
        );
        assert_eq!(
            resumes.claim("/ws", asked("first")).err(),
            Some(NotResumable::UnknownToken),
            "the refused claim used the token up"
        );
        let next = resumes.renew("session-1").expect("renewed");
        assert!(resumes.claim("/ws", asked(&next)).is_ok());
        assert!(resumes.claim("/ws", asked(&next)).is_err(), "used");
        let again = resumes.renew("session-1").expect("renewed");
        let newer = resumes.renew("session-1").expect("renewed");
        assert!(resumes.claim("/ws", asked(&again)).is_err(), "replaced");
        let too_many = Asked {
            token: &newer,
            received: 4,
        };
        assert_eq!(
            resumes.claim("/ws", too_many).err(),
            Some(NotResumable::NotKept)
        );
        resumes.closed(&door);
        assert!(resumes.renew("session-1").is_none());
    }

    #[test]
    fn a_resume_asking_for_messages_no_longer_kept_ends_the_hold() {
        let resumes = Resumes::default();
        let door = resumes.open("/ws", "s", "t");
        door.note(5..=9);
        let asked = Asked {
            token: "t",
            received: 4,
        };
        assert_eq!(
            resumes.claim("/ws", asked).err(),
            Some(NotResumable::NotKept)
        );
        let waker = futures_util::task::noop_waker();
        let knocked = door.poll_knock(&mut Context::from_waker(&waker));
        assert!(matches!(knocked, Poll::Ready(Knock::GiveUp)));
    }

    #[test]
    fn tokens_are_128_bits_of_base64url() {
        let (a, b) = (new_handle().expect("token"), new_handle().expect("token"));
        assert_eq!(a.len(), 22);
        assert_ne!(a, b);
        assert!(Asked::read(&format!("{a}.0")).is_some());
    }
}
