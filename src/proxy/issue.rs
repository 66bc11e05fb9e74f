//! The ticket endpoint: `POST tickets.issue_path` with a bearer JWT returns a ticket (and,
//! with refresh on, the handle of the session its socket will be); CORS as `cors` says.

use std::sync::Arc;
use std::time::Duration;

use pingora::http::RequestHeader;

use super::authenticate::require_bearer;
use super::cors;
use super::policy::Policy;
use super::respond::{self, Rejection, Reply, not_now};
use crate::admission::Admission;
use crate::clock;
use crate::identity::Caller;
use crate::tickets::{IssueError, Tickets};

/// The reply, and the caller when the bearer JWT verified. With refresh on the ticket's answer
/// names the session its socket will be; with `admission:` the replica's budget decides first.
pub async fn answer(
    req: &RequestHeader,
    tickets: &Tickets,
    policy: &Policy,
    admission: &Admission,
) -> (Reply, Option<Arc<Caller>>) {
    let origins = &policy.cors_allowed_origins;
    let (reply, caller) = match cors::not_a_post(req, origins) {
        Some(reply) => (reply, None),
        None => issue(req, tickets, policy, admission).await,
    };
    (cors::with_cors(reply, req, origins), caller)
}

async fn issue(
    req: &RequestHeader,
    tickets: &Tickets,
    policy: &Policy,
    admission: &Admission,
) -> (Reply, Option<Arc<Caller>>) {
    let budget = policy.admission.as_ref();
    if let Some(config) = budget
        && let Err(refusal) = admission.before_verification(config, clock::now())
    {
        return (not_now(refusal, config), None);
    }
    let (caller, login_expires_at) = match require_bearer(req, &policy.authenticators()).await {
        Ok(authenticated) => (authenticated.caller, authenticated.login_expires_at),
        Err(rejection) => return (rejection.into(), None),
    };
    if let Some(config) = budget {
        if let Err(reply) = respond::room_for(admission, config, &caller.identity.subject).await {
            return (reply, Some(caller));
        }
        if let Err(refusal) = admission.take_ticket(config, clock::now()) {
            return (not_now(refusal, config), Some(caller));
        }
    }
    let with_session = policy.websocket.refresh_path.is_some();
    let paced = budget.filter(|config| config.upgrades_per_second.is_some());
    let connect_after = paced.map_or(Duration::ZERO, |config| {
        admission.schedule_upgrade(config, clock::now())
    });
    let reply = match tickets.issue(&caller.identity, login_expires_at, connect_after) {
        Ok(issued) => {
            let mut body = serde_json::json!({
                "ticket": issued.ticket,
                "expires_in": issued.expires_in,
            });
            if with_session {
                body["session"] = issued.session.into();
                if policy.websocket.resume.is_some() {
                    body["resume"] = issued.resume.into();
                }
            }
            if paced.is_some() {
                body["connect_after_ms"] = (connect_after.as_millis() as u64).into();
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
