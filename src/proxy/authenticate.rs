//! Applies a route's `auth` rule to a request. Runs for every request the route matches,
//! upgrade or not: a WebSocket upgrade never skips authentication.

use http::Method;
use http::header::UPGRADE;
use pingora::http::RequestHeader;

use super::respond::Rejection;
use crate::auth::error::TicketProblem;
use crate::auth::{self, AuthError, Identity, jwt::JwtVerifier};
use crate::config::AuthMode;
use crate::query;
use crate::tickets::{RedeemError, Tickets};

/// What authentication needs besides the request.
pub struct Authenticators<'a> {
    pub verifier: &'a JwtVerifier,
    pub tickets: Option<&'a Tickets>,
    pub ticket_param: &'a str,
}

/// `Ok(None)` for `auth: none`; otherwise the verified caller or why they were refused.
///
/// On `auth: ticket` a bearer JWT wins when both are present (native clients can set
/// headers); a ticket is only looked at on a WebSocket upgrade.
pub async fn authenticate(
    mode: AuthMode,
    req: &RequestHeader,
    with: &Authenticators<'_>,
) -> Result<Option<Identity>, Rejection> {
    match mode {
        AuthMode::None => Ok(None),
        AuthMode::Jwt => require_bearer(req, with.verifier).await.map(Some),
        AuthMode::Ticket => match bearer(req, with.verifier).await? {
            Some(identity) => Ok(Some(identity)),
            None => ticket(req, with).await.map(Some),
        },
    }
}

/// The caller of a request that must carry a bearer JWT.
pub async fn require_bearer(
    req: &RequestHeader,
    verifier: &JwtVerifier,
) -> Result<Identity, Rejection> {
    bearer(req, verifier)
        .await?
        .ok_or(Rejection::Auth(AuthError::Missing))
}

async fn bearer(
    req: &RequestHeader,
    verifier: &JwtVerifier,
) -> Result<Option<Identity>, Rejection> {
    let Some(token) = auth::bearer_token(req).map_err(Rejection::Auth)? else {
        return Ok(None);
    };
    verifier
        .verify(token)
        .await
        .map(Some)
        .map_err(|problem| Rejection::Auth(AuthError::Token(problem)))
}

async fn ticket(req: &RequestHeader, with: &Authenticators<'_>) -> Result<Identity, Rejection> {
    let refused = |problem| Rejection::Auth(AuthError::Ticket(problem));
    let target = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let value = query::single_value(target, with.ticket_param)
        .map_err(|_| refused(TicketProblem::Invalid))?
        .ok_or(Rejection::Auth(AuthError::Missing))?;
    let tickets = with.tickets.ok_or(refused(TicketProblem::Invalid))?;
    if !is_websocket_upgrade(req) {
        tickets.rejected(TicketProblem::NotUpgrade);
        return Err(refused(TicketProblem::NotUpgrade));
    }
    tickets.redeem(&value).await.map_err(|e| match e {
        RedeemError::Ticket(problem) => refused(problem),
        RedeemError::Store(_) => Rejection::StoreUnavailable,
    })
}

/// A WebSocket opening handshake (RFC 6455 §4.1): `GET` with `Upgrade: websocket`.
pub fn is_websocket_upgrade(req: &RequestHeader) -> bool {
    req.method == Method::GET
        && req
            .headers
            .get(UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}
