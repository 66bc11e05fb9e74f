//! Applies a route's `auth` rule to a request. Runs for every request the route matches,
//! upgrade or not: a WebSocket upgrade never skips authentication.

use std::sync::Arc;

use http::Method;
use http::header::UPGRADE;
use pingora::http::RequestHeader;

use super::respond::Rejection;
use crate::auth::error::TicketProblem;
use crate::auth::{self, AuthError, Caller, jwt::JwtVerifier};
use crate::config::{AuthMode, ForwardConfig};
use crate::query;
use crate::tickets::{RedeemError, Tickets};

/// What authentication needs besides the request.
pub struct Authenticators<'a> {
    pub verifier: &'a JwtVerifier,
    pub tickets: Option<&'a Tickets>,
    pub ticket_param: &'a str,
    pub forward: &'a ForwardConfig,
}

/// `Ok(None)` for `auth: none`; otherwise the verified caller or why they were refused.
///
/// On `auth: ticket` a bearer JWT wins when both are present (native clients can set
/// headers); a ticket is only looked at on a WebSocket upgrade.
pub async fn authenticate(
    mode: AuthMode,
    req: &RequestHeader,
    with: &Authenticators<'_>,
) -> Result<Option<Arc<Caller>>, Rejection> {
    match mode {
        AuthMode::None => Ok(None),
        AuthMode::Jwt => require_bearer(req, with.verifier).await.map(Some),
        AuthMode::Ticket => match bearer(req, with.verifier).await? {
            Some(caller) => Ok(Some(caller)),
            None => ticket(req, with).await.map(Some),
        },
    }
}

/// The caller of a request that must carry a bearer JWT.
pub async fn require_bearer(
    req: &RequestHeader,
    verifier: &JwtVerifier,
) -> Result<Arc<Caller>, Rejection> {
    bearer(req, verifier)
        .await?
        .ok_or(Rejection::Auth(AuthError::Missing))
}

async fn bearer(
    req: &RequestHeader,
    verifier: &JwtVerifier,
) -> Result<Option<Arc<Caller>>, Rejection> {
    let Some(token) = auth::bearer_token(req).map_err(Rejection::Auth)? else {
        return Ok(None);
    };
    verifier
        .verify(token)
        .await
        .map(Some)
        .map_err(|problem| Rejection::Auth(AuthError::Token(problem)))
}

async fn ticket(req: &RequestHeader, with: &Authenticators<'_>) -> Result<Arc<Caller>, Rejection> {
    let refused = |problem| Rejection::Auth(AuthError::Ticket(problem));
    let target = query::target(&req.uri);
    let value = query::single_value(target, with.ticket_param)
        .map_err(|_| refused(TicketProblem::Invalid))?
        .ok_or(Rejection::Auth(AuthError::Missing))?;
    let tickets = with.tickets.ok_or(refused(TicketProblem::Invalid))?;
    match tickets.redeem(&value, is_websocket_upgrade(req)).await {
        Ok(identity) => Ok(Arc::new(Caller::new(identity, with.forward))),
        Err(RedeemError::Ticket(problem)) => Err(refused(problem)),
        Err(RedeemError::Store(_)) => Err(Rejection::StoreUnavailable),
    }
}

/// A WebSocket opening handshake (RFC 6455 §4.1): `GET` with `Upgrade: websocket`.
pub fn is_websocket_upgrade(req: &RequestHeader) -> bool {
    req.method == Method::GET
        && req
            .headers
            .get(UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}
