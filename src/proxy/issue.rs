//! The ticket endpoint: `POST tickets.issue_path` with a bearer JWT returns a ticket (and,
//! with refresh on, the handle of the session its socket will be); CORS as `cors` says.

use std::sync::Arc;

use pingora::http::RequestHeader;

use super::authenticate::{Authenticators, require_bearer};
use super::cors;
use super::respond::{Rejection, Reply};
use crate::identity::Caller;
use crate::tickets::{IssueError, Tickets};

/// The reply, and the caller when the bearer JWT verified. With `with_session` (refresh is
/// on) the ticket's answer names the session its socket will be.
pub async fn answer(
    req: &RequestHeader,
    tickets: &Tickets,
    with: &Authenticators<'_>,
    allowed_origins: &[String],
    with_session: bool,
) -> (Reply, Option<Arc<Caller>>) {
    let (reply, caller) = match cors::not_a_post(req, allowed_origins) {
        Some(reply) => (reply, None),
        None => issue(req, tickets, with, with_session).await,
    };
    (cors::with_cors(reply, req, allowed_origins), caller)
}

async fn issue(
    req: &RequestHeader,
    tickets: &Tickets,
    with: &Authenticators<'_>,
    with_session: bool,
) -> (Reply, Option<Arc<Caller>>) {
    let (caller, login_expires_at) = match require_bearer(req, with).await {
        Ok(authenticated) => (authenticated.caller, authenticated.login_expires_at),
        Err(rejection) => return (rejection.into(), None),
    };
    let reply = match tickets.issue(&caller.identity, login_expires_at) {
        Ok(issued) => {
            let mut body = serde_json::json!({
                "ticket": issued.ticket,
                "expires_in": issued.expires_in,
            });
            if with_session {
                body["session"] = issued.session.into();
            }
            Reply::new(200, Some(body), Vec::new())
        }
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
