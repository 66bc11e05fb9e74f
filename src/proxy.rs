//! The request's life, one Pingora hook per step, in the order Pingora calls them:
//!
//! 1. `request_filter`: read the target (`crate::boundary`: refused unless it has one
//!    canonical reading), route its canonical path (`route`), then either answer here — the
//!    ticket endpoint (`issue`) or a refusal (`respond`) — or authenticate (`authenticate`)
//!    and pass on.
//! 2. `upstream_peer`: the one legacy upstream, over HTTP/1.1.
//! 3. `upstream_request_filter`: the canonical target without the ticket, identity headers
//!    in, credentials out (`forward`).
//! 4. `response_filter`: a 101 counts an open WebSocket; anything else in answer to a
//!    ticket-authenticated upgrade becomes a 502.
//! 5. `fail_to_proxy`: a JSON 502 when the upstream cannot be reached.
//! 6. `logging`: access log line and metrics (`log`), at the end of the request or, for a
//!    WebSocket, when it closes.
//!
//! `request_summary` is what Pingora's own error log prints: the redacted target.
//!
//! Every hook decides by `ctx.policy` (`policy`), the snapshot the request took when it
//! started, never by a policy that may have been replaced since.

mod authenticate;
mod forward;
mod issue;
mod log;
pub mod policy;
mod respond;
mod route;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::Method;
use http::header::SEC_WEBSOCKET_PROTOCOL;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};

use arc_swap::ArcSwap;

use crate::access_log::AccessLog;
use crate::boundary::{self, Target};
use crate::clock;
use crate::config::AuthMode;
use crate::connection;
use crate::identity::Caller;
use crate::lifecycle::{InFlight, InFlightGuard};
use crate::limits::Limits;
use crate::live::{CloseReason, Sessions};
use crate::metrics::Metrics;
use crate::subprotocol::Offered;
use authenticate::Credential;
pub use policy::Policy;
use respond::{Rejection, Reply};
use route::Destination;

const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The Pingora proxy application.
pub struct TicketGate {
    /// The current policy; each request takes a snapshot of it when it starts.
    pub policy: Arc<ArcSwap<Policy>>,
    pub metrics: Arc<Metrics>,
    pub access_log: Arc<AccessLog>,
    pub in_flight: InFlight,
    /// Every open WebSocket, for the shutdown to close.
    pub sessions: Arc<Sessions>,
    /// The connection limits; the upstream's writes are held to `write_timeout` too.
    pub limits: Arc<ArcSwap<Limits>>,
}

/// Per-request state, filled in as the request moves through the hooks.
pub struct RequestCtx {
    /// The policy this request was admitted under, kept to its end.
    policy: Arc<Policy>,
    started: Instant,
    destination: Destination,
    auth: AuthMode,
    websocket: bool,
    upgraded: bool,
    caller: Option<Arc<Caller>>,
    /// When the caller's login expires (Unix seconds); a WebSocket closes then.
    login_expires_at: Option<u64>,
    /// When that login began (Unix milliseconds; `None` without `iat`), for revocations.
    login_issued_at_ms: Option<u64>,
    /// The caller came with a ticket: the upstream must answer 101.
    by_ticket: bool,
    /// What the upstream is sent instead of the client's target (`forward::upstream_target`).
    upstream_target: Option<String>,
    /// `Sec-WebSocket-Protocol` without ticketgate's entries, when it had any.
    protocols: Option<forward::Protocols>,
    /// Only set when the connection's stream cannot keep a WebSocket's idle timeout.
    upstream_read_timeout: Option<Duration>,
    /// A write to the upstream that makes no progress this long fails (`limits`).
    upstream_write_timeout: Duration,
    rejection: Option<Rejection>,
    /// Counts the request as in flight until the context is dropped at its end.
    _in_flight: InFlightGuard,
}

impl TicketGate {
    /// The boundary, then the route and its rule: `None` when the request may go upstream,
    /// with the target it is to be sent in `ctx.upstream_target`.
    async fn admit(
        &self,
        policy: &Policy,
        req: &RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Option<Reply> {
        let target = match boundary::read(req.raw_path(), req.method == Method::OPTIONS) {
            Ok(target) => target,
            Err(refused) => return Some(Rejection::BadTarget(refused).into()),
        };
        ctx.destination = route::decide(policy, &target.route_path);
        ctx.websocket = authenticate::wants_websocket(req);
        let reply = self.answer(policy, req, &target, ctx).await;
        if reply.is_none() {
            ctx.upstream_target =
                forward::upstream_target(&target, ctx.auth, policy.ticket_param());
        }
        reply
    }

    /// The answer ticketgate gives itself, or `None` when the request may go upstream.
    async fn answer(
        &self,
        policy: &Policy,
        req: &RequestHeader,
        target: &Target<'_>,
        ctx: &mut RequestCtx,
    ) -> Option<Reply> {
        let route = match ctx.destination {
            Destination::Route(i) => &policy.routes[i],
            Destination::IssueTicket => {
                // `route::decide` only sends here when tickets are configured; never forward.
                let Some(endpoint) = &policy.tickets else {
                    return Some(Rejection::NoRoute.into());
                };
                ctx.auth = AuthMode::Jwt;
                let (reply, caller) = issue::answer(
                    req,
                    &endpoint.tickets,
                    &policy.authenticators(),
                    &policy.cors_allowed_origins,
                )
                .await;
                ctx.caller = caller;
                return Some(reply);
            }
            Destination::NotFound => return Some(Rejection::NoRoute.into()),
        };
        ctx.auth = route.auth;
        if ctx.websocket && !policy.origin_allowed(req) {
            return Some(Rejection::OriginNotAllowed.into());
        }
        // `auth: none` passes the header as sent, so it is only read where auth applies.
        let offered = if ctx.websocket && route.auth != AuthMode::None {
            Offered::read(
                req.headers
                    .get_all(SEC_WEBSOCKET_PROTOCOL)
                    .iter()
                    .map(|v| v.as_bytes()),
            )
        } else {
            Offered::default()
        };
        if offered.concerns_us() {
            ctx.protocols = Some(forward::Protocols {
                upstream: offered.forwarded(),
                answer_marker: offered.marker && offered.others.is_empty(),
            });
        }
        let request = authenticate::Request {
            header: req,
            query: target.query,
            offered: &offered,
        };
        match authenticate::authenticate(route.auth, &request, &policy.authenticators()).await {
            Ok(Some(authenticated)) => {
                ctx.by_ticket = authenticated.credential == Credential::Ticket;
                ctx.login_expires_at = Some(authenticated.login_expires_at);
                ctx.login_issued_at_ms = authenticated.issued_at_ms;
                ctx.caller = Some(authenticated.caller);
                None
            }
            Ok(None) => None,
            Err(rejection) => Some(rejection.into()),
        }
    }
}

#[async_trait]
impl ProxyHttp for TicketGate {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            policy: self.policy.load_full(),
            started: Instant::now(),
            destination: Destination::NotFound,
            auth: AuthMode::None,
            websocket: false,
            upgraded: false,
            caller: None,
            login_expires_at: None,
            login_issued_at_ms: None,
            by_ticket: false,
            upstream_target: None,
            protocols: None,
            upstream_read_timeout: None,
            upstream_write_timeout: self.limits.load().write_timeout,
            rejection: None,
            _in_flight: self.in_flight.enter(),
        }
    }

    /// The header is complete: the connection's header deadline no longer applies.
    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(phase) = connection::phase(session) {
            phase.open();
        }
        Ok(())
    }

    /// Reads the target, routes it and checks its credentials; answers the request here when
    /// it may not pass or is addressed to ticketgate itself.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let policy = ctx.policy.clone();
        let Some(reply) = self.admit(&policy, session.req_header(), ctx).await else {
            if ctx.websocket {
                watch_idle(session, ctx);
            }
            return Ok(false);
        };
        ctx.rejection = reply.rejection;
        respond::send(session, reply).await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(ctx.policy.upstream, false, String::new());
        peer.options.connection_timeout = Some(UPSTREAM_CONNECT_TIMEOUT);
        peer.options.read_timeout = ctx.upstream_read_timeout;
        peer.options.write_timeout = Some(ctx.upstream_write_timeout);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(target) = &ctx.upstream_target {
            forward::set_target(upstream_request, target)?;
        }
        forward::identity_headers(
            upstream_request,
            &ctx.policy.forward,
            ctx.auth,
            ctx.caller.as_deref(),
        );
        if let Some(protocols) = &ctx.protocols {
            forward::protocols_upstream(upstream_request, protocols)?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if ctx.by_ticket && upstream_response.status != 101 {
            ctx.rejection = Some(Rejection::UpgradeRefused);
            return Err(Error::explain(
                ErrorType::HTTPStatus(502),
                "the upstream answered a ticket-authenticated upgrade without 101",
            ));
        }
        if upstream_response.status == 101 && !ctx.upgraded {
            if let Some(protocols) = &ctx.protocols {
                forward::protocols_downstream(upstream_response, protocols)?;
            }
            ctx.upgraded = true;
            self.metrics.websocket_opened();
            live_session(session, ctx, &self.sessions);
        }
        Ok(())
    }

    /// Upstream failures get the same JSON shape as every other refusal.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = match (e.etype(), e.esource()) {
            (ErrorType::HTTPStatus(code), _) => *code,
            (_, ErrorSource::Upstream) => 502,
            (
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
                ErrorSource::Downstream,
            ) => 0,
            (_, ErrorSource::Downstream) => 400,
            _ => 500,
        };
        let written = if code == 502 && session.response_written().is_none() {
            self.metrics.upstream_error();
            let rejection = *ctx.rejection.get_or_insert(Rejection::UpstreamUnreachable);
            respond::send(session, rejection.into()).await
        } else if code > 0 && session.response_written().is_none() {
            session.respond_error(code).await
        } else {
            Ok(())
        };
        if let Err(write_error) = written {
            ::log::debug!("cannot send the {code} downstream: {write_error}");
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(phase) = connection::phase(session) {
            phase.idle();
        }
        let by_us = connection::ending(session).and_then(|ending| ending.closing());
        let closed = ctx.upgraded.then(|| close_label(by_us, e));
        if let Some(reason) = closed {
            self.metrics.websocket_closed(reason);
        }
        if let Some(Rejection::Auth(refusal)) = ctx.rejection {
            self.metrics.auth_failure(refusal.reason());
        }
        let outcome = log::Outcome {
            started: ctx.started,
            route: route::label(&ctx.policy, ctx.destination),
            auth: ctx.auth,
            subject: ctx.caller.as_ref().map(|c| c.identity.subject.as_str()),
            reason: ctx
                .rejection
                .map(Rejection::reason)
                .or(closed.filter(|reason| !matches!(*reason, "normal" | "error")))
                .or(by_us.map(CloseReason::label)),
            shapes: ctx.policy.shapes(),
        };
        log::record(session, outcome, &self.access_log, &self.metrics);
    }

    /// Pingora's error log prints this; the default would print the raw query string.
    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        format!(
            "{} {}",
            session.req_header().method,
            log::logged_target(session, &ctx.policy.shapes())
        )
    }
}

/// A WebSocket's idle timeout is kept by its connection's stream (`connection::Watched`),
/// which only notes the time of each read and write; Pingora's read timeouts, the fallback
/// for a stream that is not watched, arm and drop a timer on every read, both sides.
fn watch_idle(session: &mut Session, ctx: &mut RequestCtx) {
    let idle = ctx.policy.websocket.idle_timeout;
    let watched = connection::ending(session).map(|ending| ending.idle_after(idle));
    let pingora_timeout = watched.is_none().then_some(idle);
    session
        .as_downstream_mut()
        .set_read_timeout(pingora_timeout);
    ctx.upstream_read_timeout = pingora_timeout;
}

/// A WebSocket is about to open: a shutdown closes it properly, and an authenticated one also
/// closes when its login expires (`exp` plus leeway, when `websocket.close_at_login_expiry`
/// is on) or its subject is revoked. A revocation that came while the upgrade waited for the
/// upstream's 101 found no socket to close, so it is looked for again once this one is
/// followed (after, so that none can fall between the look and the following).
fn live_session(session: &Session, ctx: &RequestCtx, sessions: &Sessions) {
    let Some(ending) = connection::ending(session) else {
        return;
    };
    let policy = &ctx.policy;
    let close_at_ms = ctx
        .login_expires_at
        .filter(|_| policy.websocket.close_at_login_expiry)
        .map(|exp| (exp + policy.leeway_seconds) * 1000);
    ending.upgrading(close_at_ms);
    sessions.add(ending);
    if let Some(caller) = &ctx.caller {
        let subject = &caller.identity.subject;
        policy.revocations.watch(subject, ending);
        if policy
            .revocations
            .refuses(subject, ctx.login_issued_at_ms, clock::unix_now_ms())
        {
            ending.close(CloseReason::Revoked);
        }
    }
}

/// The `reason` of `ticketgate_websocket_closed_total`, and of the access log when ticketgate
/// closed the socket (`login_expired`, `revoked`, `idle`).
fn close_label(closed_by_us: Option<CloseReason>, error: Option<&Error>) -> &'static str {
    match (closed_by_us, error.map(|e| e.etype())) {
        (Some(reason), _) => reason.label(),
        (None, None) => "normal",
        (None, Some(ErrorType::ReadTimedout | ErrorType::WriteTimedout)) => "idle",
        (None, Some(_)) => "error",
    }
}
