//! Applies a route's `auth` rule to a request. Runs for every request the route matches,
//! upgrade or not: a WebSocket upgrade never skips authentication.

use std::borrow::Cow;
use std::sync::Arc;

use pingora::http::RequestHeader;

use super::respond::Rejection;
use super::route::AuthMode;
use super::upgrade;
use crate::auth::error::TicketProblem;
use crate::auth::{self, AuthError, TokenProblem, jwt::JwtVerifier};
use crate::clock::{unix_now, unix_now_ms};
use crate::identity::cache::TokenCache;
use crate::identity::{Caller, ForwardConfig};
use crate::query;
use crate::revocations::Revocations;
use crate::subprotocol::{Carried, Offered};
use crate::tickets::{RedeemError, Tickets};

/// What authentication needs besides the request.
pub struct Authenticators<'a> {
    pub verifier: &'a JwtVerifier,
    /// Callers of tokens verified before, with their headers built.
    pub callers: &'a TokenCache,
    pub tickets: Option<&'a Tickets>,
    pub ticket_param: &'a str,
    pub forward: &'a ForwardConfig,
    pub revocations: &'a Revocations,
}

/// What authentication reads of a request besides its headers.
pub struct Request<'a> {
    pub header: &'a RequestHeader,
    /// The query as sent (`boundary::Target::query`).
    pub query: Option<&'a str>,
    /// What an upgrade offers in `Sec-WebSocket-Protocol` (empty on other requests).
    pub offered: &'a Offered<'a>,
}

/// Which credential a caller proved itself with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Bearer,
    Ticket,
}

/// A caller whose credential verified, and when the login behind it expires (Unix seconds;
/// a WebSocket it opens lives no longer).
pub struct Authenticated {
    pub caller: Arc<Caller>,
    pub credential: Credential,
    pub login_expires_at: u64,
    /// When the login began, for revocations (Unix milliseconds): the ticket's minting,
    /// or the JWT's `iat` (`None`: it has none, and any revocation voids it).
    pub issued_at_ms: Option<u64>,
    /// A ticket's session handle (the one its answer named); `None` for a bearer JWT.
    pub session: Option<String>,
    /// A ticket's first resume token (the one its answer named); `None` for a bearer JWT.
    pub resume: Option<String>,
}

/// The one credential a request presents.
enum Presented<'a> {
    Bearer(&'a str),
    Ticket(Cow<'a, str>),
    Nothing,
}

/// `Ok(None)` for `auth: none`; otherwise the verified caller or why they were refused.
///
/// On `auth: ticket` a bearer JWT in `Authorization` wins over a query ticket (native clients
/// can set headers); a ticket is only looked at on a WebSocket upgrade.
pub async fn authenticate(
    mode: AuthMode,
    req: &Request<'_>,
    with: &Authenticators<'_>,
) -> Result<Option<Authenticated>, Rejection> {
    if mode == AuthMode::None {
        return Ok(None);
    }
    let authenticated = match presented(mode, req, with)? {
        Presented::Bearer(token) => verify_bearer(token, with).await?,
        Presented::Ticket(ticket) if mode == AuthMode::Ticket => {
            redeem(&ticket, req.header, with).await?
        }
        Presented::Ticket(_) | Presented::Nothing => {
            return Err(Rejection::Auth(AuthError::Missing));
        }
    };
    Ok(Some(authenticated))
}

/// The credential of the request. A `Sec-WebSocket-Protocol` entry beside any other
/// credential, or a line of that header that is not text, is refused before anything is
/// verified or consumed.
fn presented<'a>(
    mode: AuthMode,
    req: &'a Request<'a>,
    with: &Authenticators<'_>,
) -> Result<Presented<'a>, Rejection> {
    if req.offered.unreadable {
        return Err(Rejection::Auth(AuthError::UnreadableProtocols));
    }
    let header = auth::bearer_token(req.header).map_err(Rejection::Auth)?;
    let entries = &req.offered.credentials;
    let query_ticket = || -> Result<Option<Cow<'a, str>>, Rejection> {
        if mode != AuthMode::Ticket {
            return Ok(None);
        }
        query::single_value(req.query, with.ticket_param)
            .map_err(|_| Rejection::Auth(AuthError::Ticket(TicketProblem::Invalid)))
    };
    match entries.as_slice() {
        [] => Ok(match (header, query_ticket()?) {
            (Some(token), _) => Presented::Bearer(token),
            (None, Some(ticket)) => Presented::Ticket(ticket),
            (None, None) => Presented::Nothing,
        }),
        [entry] if header.is_none() && query_ticket()?.is_none() => Ok(match entry {
            Carried::Bearer(token) => Presented::Bearer(token),
            Carried::Ticket(ticket) => Presented::Ticket(Cow::Borrowed(ticket)),
        }),
        _ => Err(Rejection::Auth(AuthError::TwoCredentials)),
    }
}

/// The caller of a request that must carry a bearer JWT in `Authorization`.
pub async fn require_bearer(
    req: &RequestHeader,
    with: &Authenticators<'_>,
) -> Result<Authenticated, Rejection> {
    match auth::bearer_token(req).map_err(Rejection::Auth)? {
        Some(token) => verify_bearer(token, with).await,
        None => Err(Rejection::Auth(AuthError::Missing)),
    }
}

/// The bearer JWT's caller; a login issued before its subject was revoked is refused, also
/// when its verification was cached.
async fn verify_bearer(token: &str, with: &Authenticators<'_>) -> Result<Authenticated, Rejection> {
    let refused = |problem| Rejection::Auth(AuthError::Token(problem));
    if token.len() > auth::MAX_TOKEN_BYTES {
        return Err(refused(TokenProblem::TooLarge));
    }
    let now = unix_now();
    let (caller, login) = with
        .callers
        .caller(token, with.verifier, with.forward, now)
        .await
        .map_err(refused)?;
    // `iat` has one-second resolution: a login from the second of a revocation is taken to
    // be from its start, so one issued just before the revocation cannot slip through.
    let issued_at_ms = login.issued_at.map(|iat| iat * 1000);
    if with
        .revocations
        .refuses(&caller.identity.subject, issued_at_ms, now * 1000)
    {
        return Err(refused(TokenProblem::Revoked));
    }
    Ok(Authenticated {
        caller,
        credential: Credential::Bearer,
        login_expires_at: login.expires_at,
        issued_at_ms,
        session: None,
        resume: None,
    })
}

async fn redeem(
    ticket: &str,
    req: &RequestHeader,
    with: &Authenticators<'_>,
) -> Result<Authenticated, Rejection> {
    let refused = |problem| Rejection::Auth(AuthError::Ticket(problem));
    let tickets = with.tickets.ok_or(refused(TicketProblem::Invalid))?;
    let now_ms = unix_now_ms();
    let revoked = |subject: &str, minted_at_ms| {
        with.revocations
            .refuses(subject, Some(minted_at_ms), now_ms)
    };
    let redeemed = match tickets
        .redeem(ticket, upgrade::is_opening_handshake(req), &revoked)
        .await
    {
        Ok(redeemed) => redeemed,
        Err(RedeemError::Ticket(problem)) => return Err(refused(problem)),
        Err(RedeemError::Store(_)) => return Err(Rejection::StoreUnavailable),
    };
    // The identity was checked when the ticket was issued, under the same forward rules.
    let caller = Caller::new(redeemed.identity, with.forward)
        .map(Arc::new)
        .map_err(|_| refused(TicketProblem::Invalid))?;
    Ok(Authenticated {
        caller,
        credential: Credential::Ticket,
        login_expires_at: redeemed.login_expires_at,
        issued_at_ms: Some(redeemed.minted_at_ms),
        session: Some(redeemed.session),
        resume: Some(redeemed.resume),
    })
}
