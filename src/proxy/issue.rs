//! The ticket endpoint: `POST tickets.issue_path` with a bearer JWT returns a ticket; CORS
//! for the browsers that call it. Every answer to an allowed origin carries
//! `Access-Control-Allow-Origin`, refusals included, or the page could not read the 401
//! that tells it to refresh its login.

use std::sync::Arc;

use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_MAX_AGE, ORIGIN, VARY,
};
use http::{HeaderName, Method};
use pingora::http::RequestHeader;

use super::authenticate::{Authenticators, require_bearer};
use super::respond::{Rejection, Reply};
use crate::identity::Caller;
use crate::refusal::Allowed;
use crate::tickets::{IssueError, Tickets};

/// The reply, and the caller when the bearer JWT verified.
pub async fn answer(
    req: &RequestHeader,
    tickets: &Tickets,
    with: &Authenticators<'_>,
    allowed_origins: &[String],
) -> (Reply, Option<Arc<Caller>>) {
    let allowed_origin = req
        .headers
        .get(ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|origin| allowed_origins.iter().any(|allowed| allowed == origin));
    let (mut reply, identity) = match req.method {
        Method::POST => issue(req, tickets, with).await,
        Method::OPTIONS => (preflight(allowed_origin.is_some()), None),
        _ => (
            Rejection::MethodNotAllowed(Allowed::PostAndOptions).into(),
            None,
        ),
    };
    reply.headers.push((VARY, "Origin".into()));
    if let Some(origin) = allowed_origin {
        reply
            .headers
            .push((ACCESS_CONTROL_ALLOW_ORIGIN, origin.to_string()));
    }
    (reply, identity)
}

async fn issue(
    req: &RequestHeader,
    tickets: &Tickets,
    with: &Authenticators<'_>,
) -> (Reply, Option<Arc<Caller>>) {
    let (caller, login_expires_at) = match require_bearer(req, with).await {
        Ok(authenticated) => (authenticated.caller, authenticated.login_expires_at),
        Err(rejection) => return (rejection.into(), None),
    };
    let reply = match tickets.issue(&caller.identity, login_expires_at) {
        Ok(issued) => Reply::new(
            200,
            Some(serde_json::json!({
                "ticket": issued.ticket,
                "expires_in": issued.expires_in,
            })),
            Vec::new(),
        ),
        Err(IssueError::StoreUnavailable) => Rejection::StoreUnavailable.into(),
        Err(IssueError::Seal(e)) => {
            log::warn!(
                "cannot issue a ticket for subject {:?}: {e}",
                caller.identity.subject
            );
            Rejection::TicketUnavailable.into()
        }
    };
    (reply, Some(caller))
}

/// The answer to a CORS preflight: what the browser may send, for an allowed origin only.
fn preflight(origin_allowed: bool) -> Reply {
    let mut headers: Vec<(HeaderName, String)> = Vec::new();
    if origin_allowed {
        headers.push((ACCESS_CONTROL_ALLOW_METHODS, "POST".into()));
        headers.push((
            ACCESS_CONTROL_ALLOW_HEADERS,
            "Authorization, Content-Type".into(),
        ));
        headers.push((ACCESS_CONTROL_MAX_AGE, "600".into()));
    }
    Reply::new(204, None, headers)
}
