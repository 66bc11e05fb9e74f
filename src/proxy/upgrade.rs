//! The WebSocket handshake: what makes a request one (`wants_websocket`, and the complete
//! RFC 6455 opening handshake a ticket is redeemed on), what it is admitted with
//! (`Handshake`: the login behind it, how it authenticated, its protocol list), and what
//! happens at the upstream's answer (the 101 is checked and the socket's live session
//! begins) and at its end (the close's label).

use std::sync::Arc;
use std::time::Duration;

use http::header::{
    CONNECTION, ORIGIN, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{Method, Version};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::{Error, ErrorType};

use super::route::{AuthMode, Route};
use crate::clock;
use crate::connection;
use crate::identity::Caller;
use crate::live::{CloseReason, Held, Sessions, SocketEnd};
use crate::refreshes::SharedSessions;
use crate::resume::ResumeConfig;
use crate::revocations::Revocations;
use crate::subprotocol::{self, Offered};

/// The `websocket:` settings.
#[derive(Clone)]
pub struct WebsocketConfig {
    pub allowed_origins: Vec<String>,
    pub idle_timeout: Duration,
    /// Close a WebSocket when the login that opened it expires (`websocket.close_at_login_expiry`).
    pub close_at_login_expiry: bool,
    /// `POST` here extends an open socket's login (`websocket.refresh_path`); `None`: off.
    pub refresh_path: Option<String>,
    /// Resume on ticket routes (`websocket.resume_window_seconds` above 0); `None`: off.
    pub resume: Option<ResumeConfig>,
}

/// What a WebSocket request was admitted with, kept until its socket closes.
#[derive(Default)]
pub struct Handshake {
    /// The socket's session handle, with `websocket.refresh_path` on.
    pub session: Option<String>,
    /// The socket's first resume token, on a route with resume.
    pub resume: Option<String>,
    /// It came with a ticket: the upstream must answer 101.
    pub by_ticket: bool,
    /// The login behind it, when it authenticated: the socket lives no longer.
    pub login: Option<LoginTerms>,
    /// `Sec-WebSocket-Protocol` without ticketgate's entries, when it had any.
    pub protocols: Option<Protocols>,
}

/// When a login expires (Unix seconds) and when it began (Unix milliseconds: the ticket's
/// minting or the JWT's `iat`; `None` without one, and any revocation voids it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginTerms {
    pub expires_at: u64,
    pub issued_at_ms: Option<u64>,
}

/// `Sec-WebSocket-Protocol` once ticketgate's entries (a credential, the `ticketgate` marker)
/// are out of it.
pub struct Protocols {
    /// What the upstream is offered: the application's protocols, or no header at all.
    pub upstream: Option<String>,
    /// The client offered the marker and nothing else of its own: the 101 names it.
    pub answer_marker: bool,
}

/// The answer header that gives a bearer upgrade's client its session handle.
pub const SESSION_HEADER: &str = "Ticketgate-Session";
/// The answer header that gives a bearer upgrade's client its first resume token.
pub const RESUME_HEADER: &str = "Ticketgate-Resume";

/// Whether the request asks for a WebSocket at all (`Upgrade: websocket`): such a request
/// is held to the Origin allowlist and the WebSocket idle timeout, complete or not.
pub fn wants_websocket(req: &RequestHeader) -> bool {
    req.headers
        .get(UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// A complete RFC 6455 §4.1 opening handshake, the only request a ticket is redeemed on:
/// anything less (HTTP/1.0, whose `Upgrade` Pingora drops, a missing key or version) would
/// reach the upstream as a plain request and buy a plain response with a ticket.
pub fn is_opening_handshake(req: &RequestHeader) -> bool {
    let header = |name| req.headers.get(name).map(http::HeaderValue::as_bytes);
    req.method == Method::GET
        && req.version == Version::HTTP_11
        && wants_websocket(req)
        && header(CONNECTION).is_some_and(|v| {
            v.split(|b| *b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
        })
        && header(SEC_WEBSOCKET_KEY).is_some_and(|key| key.len() == 24)
        && header(SEC_WEBSOCKET_VERSION) == Some(b"13")
}

/// Cross-site WebSocket hijacking guard: a browser's upgrade from an origin not on
/// `websocket.allowed_origins` is refused. Non-browser clients send no `Origin`.
pub fn origin_allowed(config: &WebsocketConfig, req: &RequestHeader) -> bool {
    let allowed = &config.allowed_origins;
    match req.headers.get(ORIGIN) {
        None => true,
        Some(_) if allowed.is_empty() => true,
        Some(origin) => allowed.iter().any(|a| a.as_bytes() == origin.as_bytes()),
    }
}

/// What the upgrade offers in `Sec-WebSocket-Protocol`, read where authentication applies
/// (`auth: none` passes the header as sent).
pub fn offered<'a>(req: &'a RequestHeader, route: &Route) -> Offered<'a> {
    if route.auth == AuthMode::None {
        return Offered::default();
    }
    Offered::read(
        req.headers
            .get_all(SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .map(|v| v.as_bytes()),
    )
}

/// A WebSocket request was admitted: its idle timeout starts now, kept by the connection's
/// stream (`connection::Watched`), which only notes the time of each read and write. Returns
/// the read timeout the upstream needs instead when the stream is not watched: Pingora's
/// read timeouts, the fallback, arm and drop a timer on every read, both sides.
pub fn watch_idle(session: &mut Session, config: &WebsocketConfig) -> Option<Duration> {
    let idle = config.idle_timeout;
    let watched = connection::ending(session).map(|ending| ending.idle_after(idle));
    let pingora_timeout = watched.is_none().then_some(idle);
    session
        .as_downstream_mut()
        .set_read_timeout(pingora_timeout);
    pingora_timeout
}

/// The upstream answered: anything but a 101 to a ticket-authenticated upgrade becomes a 502
/// (a ticket never buys a plain HTTP response); a 101 names `ticketgate` when the client
/// offered it and no protocol of its own. True when the socket opens.
pub fn answered(response: &mut ResponseHeader, handshake: &Handshake) -> pingora::Result<bool> {
    if handshake.by_ticket && response.status != 101 {
        return Err(Error::explain(
            ErrorType::HTTPStatus(502),
            "the upstream answered a ticket-authenticated upgrade without 101",
        ));
    }
    if response.status != 101 {
        return Ok(false);
    }
    if handshake
        .protocols
        .as_ref()
        .is_some_and(|p| p.answer_marker)
    {
        response.insert_header(SEC_WEBSOCKET_PROTOCOL, subprotocol::MARKER)?;
    }
    if let Some(session) = handshake.session.as_ref().filter(|_| !handshake.by_ticket) {
        response.insert_header(SESSION_HEADER, session.as_str())?;
    }
    if let Some(resume) = handshake.resume.as_ref().filter(|_| !handshake.by_ticket) {
        response.insert_header(RESUME_HEADER, resume.as_str())?;
    }
    Ok(true)
}

/// What an opening socket is held to, from the request's policy (`Policy::liveness`).
pub struct Liveness<'a> {
    /// `websocket.close_at_login_expiry`.
    pub close_at_login_expiry: bool,
    /// `jwt.leeway_seconds`, added to a login's `exp` as for the token itself.
    pub leeway_seconds: u64,
    pub revocations: &'a Revocations,
    /// Every open socket of the process, for the shutdown to close and refreshes to find.
    pub sessions: &'a Sessions,
    /// With a Redis store: where refreshes at other replicas find this one's sockets.
    pub shared: Option<&'a Arc<SharedSessions>>,
}

/// With a shared store a refresh acknowledged at another replica reaches the holder through
/// Redis, within moments: its socket closes this much after its login's end (well within
/// the contract's 2 s), so a refresh made just before is never beaten by the close.
const PROPAGATION_MS: u64 = 500;

/// The socket is open: a shutdown closes it properly, and an authenticated one also closes
/// when its login expires (`exp` plus leeway, when `websocket.close_at_login_expiry` is on)
/// or its subject is revoked. A revocation that came while the upgrade waited for the
/// upstream's 101 found no socket to close, so it is looked for again once this one is
/// followed (after, so that none can fall between the look and the following).
pub fn opened(
    session: &Session,
    handshake: &Handshake,
    caller: Option<&Arc<Caller>>,
    held_to: &Liveness,
) {
    let Some(ending) = connection::ending(session) else {
        return;
    };
    let slack = if held_to.shared.is_some() && handshake.session.is_some() {
        PROPAGATION_MS
    } else {
        0
    };
    let close_at_ms = handshake
        .login
        .filter(|_| held_to.close_at_login_expiry)
        .map(|login| (login.expires_at + held_to.leeway_seconds) * 1000 + slack);
    ending.upgrading(close_at_ms);
    held_to.sessions.add(ending);
    if let Some(caller) = caller {
        if let Some(session) = &handshake.session {
            let identity = &caller.identity;
            let (who, told) = (identity.who(), identity.told());
            held_to
                .sessions
                .hold(session.clone(), Held::new(ending, who, told));
            if let (Some(shared), Some(login)) = (held_to.shared, handshake.login) {
                let (shared, session) = (shared.clone(), session.clone());
                let until_ms = (login.expires_at + held_to.leeway_seconds) * 1000;
                tokio::spawn(async move {
                    let now_ms = clock::unix_now_ms();
                    if let Err(e) = shared.opened(&session, &who, &told, until_ms, now_ms).await {
                        log::warn!("a socket's session record was not written: {e}");
                    }
                });
            }
        }
        let subject = &caller.identity.subject;
        held_to.revocations.watch(subject, ending);
        let issued_at_ms = handshake.login.and_then(|login| login.issued_at_ms);
        if held_to
            .revocations
            .refuses(subject, issued_at_ms, clock::unix_now_ms())
        {
            ending.close(CloseReason::Revoked);
        }
    }
}

/// A socket with a session handle closed: its record at the shared store goes.
pub fn closed(handshake: &Handshake, shared: Option<&Arc<SharedSessions>>) {
    if let (Some(session), Some(shared)) = (&handshake.session, shared) {
        let (session, shared) = (session.clone(), shared.clone());
        tokio::spawn(async move {
            if let Err(e) = shared.closed(&session).await {
                log::debug!("a closed socket's session record stays until it expires: {e}");
            }
        });
    }
}

/// Why ticketgate closed this connection's socket, if it did (also before the 101: an
/// upgrade that waited past its idle timeout).
pub fn closed_by_us(session: &Session) -> Option<CloseReason> {
    connection::ending(session).and_then(|ending| ending.closing())
}

/// How an open socket ended, for `ticketgate_websocket_closed_total`. A Pingora timeout is
/// the fallback idle timeout of a connection the stream does not watch.
pub fn socket_end(closed_by_us: Option<CloseReason>, error: Option<&Error>) -> SocketEnd {
    match (closed_by_us, error.map(|e| e.etype())) {
        (Some(reason), _) => SocketEnd::ClosedBy(reason),
        (None, None) => SocketEnd::Normal,
        (None, Some(ErrorType::ReadTimedout | ErrorType::WriteTimedout)) => {
            SocketEnd::ClosedBy(CloseReason::Idle)
        }
        (None, Some(_)) => SocketEnd::Error,
    }
}
