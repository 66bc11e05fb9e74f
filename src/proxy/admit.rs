//! The one decision `request_filter` asks for: read the target (`boundary`), route it
//! (`route`), then either answer here — the ticket endpoint (`issue`) or a refusal — or check
//! the credentials (`authenticate`) and say how the request goes upstream. The decision is
//! one value; the hooks after it only carry it out.

use std::sync::Arc;

use http::Method;
use pingora::http::RequestHeader;

use super::authenticate::{self, Authenticated, Credential};
use super::forward;
use super::issue;
use super::policy::Policy;
use super::respond::{self, Rejection, Reply, not_now};
use super::route::{AuthMode, Destination};
use super::upgrade::{self, Handshake, LoginTerms, Protocols};
use crate::admission::Admission;
use crate::boundary::{self, Target};
use crate::clock;
use crate::identity::Caller;
use crate::live;
use crate::resume::{Asked, Door, NotResumable, Resumes};
use crate::subprotocol::Offered;

/// What was learnt of a request on the way to the decision: what the log reports.
pub struct Seen {
    pub destination: Destination,
    pub auth: AuthMode,
    pub caller: Option<Arc<Caller>>,
}

impl Default for Seen {
    fn default() -> Self {
        Seen {
            destination: Destination::NotFound,
            auth: AuthMode::None,
            caller: None,
        }
    }
}

/// How an admitted request goes upstream.
pub struct Passage {
    /// What the upstream is sent instead of the client's target (`forward::upstream_target`).
    pub upstream_target: Option<String>,
    /// A WebSocket request: the terms it was admitted with.
    pub handshake: Option<Handshake>,
    /// The relay reads this socket's frames (resume, STOMP): no extension may change them, so
    /// the upstream is offered none.
    pub frames_read: bool,
}

pub enum Decision {
    /// ticketgate answers: the ticket endpoint, or a refusal.
    Answer(Reply),
    /// ticketgate answers the refresh endpoint, which reads the request's body (`refresh`).
    Refresh,
    Forward(Passage),
    /// A resume: ticketgate answers 101 and joins the connection to its held socket.
    Resume(Resuming),
}

/// A resume that may be joined to its socket.
pub struct Resuming {
    pub door: Arc<Door>,
    /// How many upstream messages the client received.
    pub received: u64,
    /// The client offered `ticketgate`: the 101 names it.
    pub answer_marker: bool,
    /// The socket's next resume token, for the 101's `Ticketgate-Resume` (a client that
    /// cannot read it, a browser, gets it from a refresh).
    pub next_token: Option<String>,
}

/// The decision on `req` under `policy` (and this replica's `admission` state), with what was
/// seen on the way.
pub async fn decide(
    policy: &Policy,
    admission: &Admission,
    resumes: &Resumes,
    req: &RequestHeader,
) -> (Seen, Decision) {
    let mut seen = Seen::default();
    let target = match boundary::read(req.raw_path(), req.method == Method::OPTIONS) {
        Ok(target) => target,
        Err(refused) => return (seen, answer(Rejection::BadTarget(refused))),
    };
    seen.destination = policy.destination(&target.route_path);
    let route = match seen.destination {
        Destination::Route(i) => &policy.routes[i],
        Destination::IssueTicket => {
            let (reply, caller) = issue_ticket(policy, req, admission).await;
            seen.auth = AuthMode::Jwt;
            seen.caller = caller;
            return (seen, Decision::Answer(reply));
        }
        Destination::RefreshSession => {
            seen.auth = AuthMode::Jwt;
            return (seen, Decision::Refresh);
        }
        Destination::NotFound => return (seen, answer(Rejection::NoRoute)),
    };
    seen.auth = route.auth;
    let websocket = upgrade::wants_websocket(req);
    if websocket && !upgrade::origin_allowed(&policy.websocket, req) {
        return (seen, answer(Rejection::OriginNotAllowed));
    }
    let offered = if websocket {
        upgrade::offered(req, route)
    } else {
        Offered::default()
    };
    let resume_route = websocket && policy.resume_on(route).is_some();
    if resume_route && !offered.resumes.is_empty() {
        let label = policy.route_label(seen.destination);
        return (seen, resuming(req, &offered, resumes, label));
    }
    let upgrade_budget = policy
        .admission
        .as_ref()
        .filter(|config| websocket && config.upgrades_per_second.is_some());
    if let Some(config) = upgrade_budget
        && let Err(refusal) = admission.before_upgrade(config, clock::now())
    {
        // Before the credentials are read: a refused upgrade consumes no ticket.
        return (seen, Decision::Answer(not_now(refusal, config)));
    }
    let authenticated = match authenticated(policy, req, &target, &offered, route.auth).await {
        Ok(authenticated) => authenticated,
        Err(rejection) => return (seen, answer(rejection)),
    };
    seen.caller = authenticated.as_ref().map(|a| a.caller.clone());
    let bearer_upgrade = authenticated
        .as_ref()
        .filter(|a| websocket && a.credential == Credential::Bearer);
    if let (Some(config), Some(bearer)) = (policy.admission.as_ref(), bearer_upgrade) {
        let subject = &bearer.caller.identity.subject;
        if let Err(reply) = respond::room_for(admission, config, subject).await {
            return (seen, Decision::Answer(reply));
        }
    }
    if let Some(config) = upgrade_budget
        && let Err(refusal) = admission.take_upgrade(config, clock::now())
    {
        return (seen, Decision::Answer(not_now(refusal, config)));
    }
    let passage = Passage {
        upstream_target: forward::upstream_target(&target, route.auth, policy.ticket_param()),
        handshake: websocket.then(|| {
            let refreshable = policy.websocket.refresh_path.is_some();
            handshake(&offered, authenticated.as_ref(), refreshable, resume_route)
        }),
        frames_read: resume_route || (websocket && route.stomp.is_some()),
    };
    (seen, Decision::Forward(passage))
}

/// A WebSocket request's terms once authentication is done (`None`: `auth: none`). With
/// refresh on, an authenticated socket gets its session handle: the ticket's, or a fresh
/// one for a bearer upgrade (its 101 tells the client); on a route with resume, its first
/// resume token likewise.
fn handshake(
    offered: &Offered,
    authenticated: Option<&Authenticated>,
    refreshable: bool,
    resumable: bool,
) -> Handshake {
    let session = authenticated
        .filter(|_| refreshable)
        .and_then(|a| match &a.session {
            Some(ticket_session) => Some(ticket_session.clone()),
            None => live::new_handle(),
        });
    let resume = authenticated
        .filter(|_| resumable && session.is_some())
        .and_then(|a| match &a.resume {
            Some(ticket_resume) => Some(ticket_resume.clone()),
            None => live::new_handle(),
        });
    Handshake {
        session,
        resume,
        by_ticket: authenticated.is_some_and(|a| a.credential == Credential::Ticket),
        login: authenticated.map(|a| LoginTerms {
            expires_at: a.login_expires_at,
            issued_at_ms: a.issued_at_ms,
        }),
        protocols: offered.concerns_us().then(|| Protocols {
            upstream: offered.forwarded(),
            answer_marker: offered.marker && offered.others.is_empty(),
        }),
    }
}

/// A resume upgrade: one readable `ticketgate.resume.` entry and no credential, on a complete
/// opening handshake, whose token a socket of this route on this replica holds.
fn resuming(req: &RequestHeader, offered: &Offered, resumes: &Resumes, route: &str) -> Decision {
    let refused = |why| answer(Rejection::NotResumable(why));
    let readable = upgrade::is_opening_handshake(req)
        && !offered.unreadable
        && offered.credentials.is_empty()
        && offered.resumes.len() == 1;
    let Some(asked) = offered
        .resumes
        .first()
        .filter(|_| readable)
        .and_then(|entry| Asked::read(entry))
    else {
        return refused(NotResumable::Unreadable);
    };
    match resumes.claim(route, asked) {
        Ok(door) => Decision::Resume(Resuming {
            next_token: resumes.renew(door.session()),
            door,
            received: asked.received,
            answer_marker: offered.marker,
        }),
        Err(why) => refused(why),
    }
}

fn answer(rejection: Rejection) -> Decision {
    Decision::Answer(rejection.into())
}

/// `route::decide` only sends here when tickets are configured; without, never forward.
async fn issue_ticket(
    policy: &Policy,
    req: &RequestHeader,
    admission: &Admission,
) -> (Reply, Option<Arc<Caller>>) {
    match &policy.tickets {
        Some(endpoint) => issue::answer(req, &endpoint.tickets, policy, admission).await,
        None => (Rejection::NoRoute.into(), None),
    }
}

async fn authenticated(
    policy: &Policy,
    req: &RequestHeader,
    target: &Target<'_>,
    offered: &Offered<'_>,
    auth: AuthMode,
) -> Result<Option<Authenticated>, Rejection> {
    let request = authenticate::Request {
        header: req,
        query: target.query,
        offered,
    };
    authenticate::authenticate(auth, &request, &policy.authenticators()).await
}
