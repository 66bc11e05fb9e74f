//! The request's life, one Pingora hook per step, in the order Pingora calls them; each
//! hook asks one decision of the module below it:
//!
//! 1. `request_filter`: `admit` decides — read the target (`crate::boundary`: refused unless
//!    it has one canonical reading), route its canonical path (`route`), then either answer
//!    here, the ticket endpoint (`issue`) or a refusal (`respond`), or authenticate
//!    (`authenticate`) and pass on, a WebSocket handshake with its terms (`upgrade`).
//! 2. `upstream_peer`: the one legacy upstream, over HTTP/1.1; a handshake's connection is
//!    made by the handover connector, so the relay can take it after the 101 (`relayed`).
//! 3. `upstream_request_filter`: the canonical target without the ticket, identity headers
//!    in, credentials out (`forward`).
//! 4. `response_filter`: a handshake's answer (`upgrade`): a 101 opens the socket's live
//!    session and asks for the client's connection once the 101 is written (`relayed`);
//!    anything else in answer to a ticket-authenticated upgrade becomes a 502.
//! 5. `fail_to_proxy`: a JSON 502 when the upstream cannot be reached.
//! 6. `logging`: access log line and metrics (`log`) at the end of the request; a WebSocket
//!    goes on in the relay (`relayed`), which writes its line when it closes.
//!
//! `request_summary` is what Pingora's own error log prints: the redacted target.
//!
//! Every hook decides by `ctx.policy` (`policy`), the snapshot the request took when it
//! started, never by a policy that may have been replaced since.

mod admit;
mod authenticate;
mod cors;
mod forward;
mod issue;
mod log;
pub mod policy;
pub(crate) mod refresh;
mod relayed;
mod respond;
mod resumed;
pub mod route;
pub mod upgrade;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};

use crate::access_log::AccessLog;
use crate::admission::Admission;
use crate::clock;
use crate::connection;
use crate::lifecycle::{InFlight, InFlightGuard};
use crate::limits::Limits;
use crate::live::{CloseReason, Sessions, SocketEnd};
use crate::metrics::Metrics;
use crate::refreshes::SharedSessions;
use crate::resume::Resumes;
use crate::subjects::Counted;
use admit::{Decision, Passage, Seen};
pub use policy::Policy;
use respond::Rejection;

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
    /// With a Redis store: session refreshes across replicas.
    pub shared_sessions: Option<Arc<SharedSessions>>,
    /// This replica's admission state (the limits are the policy's).
    pub admission: Arc<Admission>,
    /// This replica's resumable sockets.
    pub resumes: Arc<Resumes>,
}

/// Per-request state: the policy snapshot, then what `request_filter` decided.
pub struct RequestCtx {
    /// The policy this request was admitted under, kept to its end.
    policy: Arc<Policy>,
    started: Instant,
    /// Route, auth and caller, as far as the decision got: what the log reports.
    seen: Seen,
    /// How the request goes upstream, once admitted.
    passage: Option<Passage>,
    /// The upstream answered a WebSocket handshake with 101.
    upgraded: bool,
    /// The open socket, counted for its subject (`admission.max_websockets_per_subject`).
    counted: Option<Counted>,
    /// Only set when the connection's stream cannot keep a WebSocket's idle timeout.
    upstream_read_timeout: Option<Duration>,
    /// A write to the upstream that makes no progress this long fails (`limits`).
    upstream_write_timeout: Duration,
    rejection: Option<Rejection>,
    /// A handshake's two connections, for the relay once the upstream answers 101.
    slots: Option<relayed::Slots>,
    /// Counts the request as in flight until the context is dropped at its end, or until a
    /// relayed socket ends.
    in_flight: Option<InFlightGuard>,
    /// A resume answered with 101, for its socket once Pingora let go of the connection.
    rejoin: Option<resumed::Rejoin>,
}

#[async_trait]
impl ProxyHttp for TicketGate {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            policy: self.policy.load_full(),
            started: clock::now(),
            seen: Seen::default(),
            passage: None,
            upgraded: false,
            counted: None,
            upstream_read_timeout: None,
            upstream_write_timeout: self.limits.load().write_timeout,
            rejection: None,
            slots: None,
            in_flight: Some(self.in_flight.enter()),
            rejoin: None,
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

    /// Reads the target, routes it and checks its credentials (`admit`); answers the request
    /// here when it may not pass or is addressed to ticketgate itself.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let policy = ctx.policy.clone();
        let (seen, decision) = admit::decide(
            &policy,
            &self.admission,
            &self.resumes,
            session.req_header(),
        )
        .await;
        ctx.seen = seen;
        match decision {
            Decision::Answer(reply) => {
                ctx.rejection = reply.rejection;
                respond::send(session, reply).await?;
                Ok(true)
            }
            Decision::Refresh => {
                let holders = refresh::Holders {
                    sessions: &self.sessions,
                    shared: self.shared_sessions.as_deref(),
                    resumes: &self.resumes,
                };
                let answer = refresh::answer(session, &policy, holders).await;
                if let Some(result) = answer.result {
                    self.metrics.session_refreshed(result.label());
                }
                ctx.seen.caller = answer.caller;
                ctx.rejection = answer.reply.rejection;
                respond::send(session, answer.reply).await?;
                Ok(true)
            }
            Decision::Resume(resuming) => {
                ctx.rejoin = Some(resumed::answer(session, resuming).await?);
                Ok(true)
            }
            Decision::Forward(passage) => {
                if passage.handshake.is_some() {
                    ctx.upstream_read_timeout = upgrade::watch_idle(session, &policy.websocket);
                    ctx.slots = Some(relayed::Slots::default());
                }
                ctx.passage = Some(passage);
                Ok(false)
            }
        }
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
        if let Some(slots) = &ctx.slots {
            relayed::connect_through(&mut peer, slots);
        }
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(passage) = &ctx.passage else {
            return Ok(());
        };
        if let Some(target) = &passage.upstream_target {
            forward::set_target(upstream_request, target)?;
        }
        if passage.frames_read {
            forward::no_extensions(upstream_request);
        }
        forward::identity_headers(
            upstream_request,
            &ctx.policy.forward,
            ctx.seen.auth,
            ctx.seen.caller.as_deref(),
        );
        if let Some(protocols) = passage
            .handshake
            .as_ref()
            .and_then(|h| h.protocols.as_ref())
        {
            forward::protocols_upstream(upstream_request, protocols)?;
        }
        Ok(())
    }

    /// A WebSocket handshake's answer: checked, and a 101 opens the socket's live session.
    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(handshake) = ctx.passage.as_ref().and_then(|p| p.handshake.as_ref()) else {
            return Ok(());
        };
        if ctx.upgraded {
            return Ok(());
        }
        match upgrade::answered(upstream_response, handshake) {
            Ok(true) => {
                ctx.upgraded = true;
                self.metrics.websocket_opened();
                self.admission.websocket_opened();
                let capped = ctx
                    .policy
                    .admission
                    .is_some_and(|a| a.max_websockets_per_subject.is_some());
                // Counted only under a cap: an uncapped socket keeps no per-subject state.
                if let Some(caller) = ctx.seen.caller.as_ref().filter(|_| capped) {
                    // Awaited, not spawned: the close's removal must come after it.
                    let counted = self.admission.subjects.opened(&caller.identity.subject);
                    self.admission.subjects.record(&counted).await;
                    ctx.counted = Some(counted);
                }
                let caller = ctx.seen.caller.as_ref();
                let held_to = ctx
                    .policy
                    .liveness(&self.sessions, self.shared_sessions.as_ref());
                upgrade::opened(session, handshake, caller, &held_to);
                let judged = ctx
                    .policy
                    .route(ctx.seen.destination)
                    .is_some_and(|r| r.stomp.is_some());
                let asked = relayed::ask_for_client(session, ctx.slots.as_mut(), judged);
                if asked.is_err() {
                    ctx.rejection = Some(Rejection::UpgradeRefused);
                }
                asked
            }
            Ok(false) => Ok(()),
            Err(refused) => {
                ctx.rejection = Some(Rejection::UpgradeRefused);
                Err(refused)
            }
        }
    }

    /// A failed connect marks the upstream down for admission, until one succeeds.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        _ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        self.admission.upstream_failed();
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        _fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.admission.upstream_reached();
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

    /// An upgraded socket whose connections were handed over goes on in the relay, which
    /// writes its line when it ends; every other request is logged here.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(phase) = connection::phase(session) {
            phase.idle();
        }
        if let Some(rejoin) = ctx.rejoin.take() {
            resumed::join(rejoin);
        }
        let handed = ctx.slots.as_ref().filter(|_| ctx.upgraded);
        if let Some(handed) = handed.and_then(relayed::Slots::take_both) {
            let leftovers = relayed::Leftovers {
                line: log::Relayed::of(session, &outcome(ctx, None)),
                counted: ctx.counted.take(),
                handshake: ctx.passage.as_mut().and_then(|p| p.handshake.take()),
                in_flight: ctx.in_flight.take(),
                upstream_write_timeout: ctx.upstream_write_timeout,
                resume: ctx
                    .policy
                    .route(ctx.seen.destination)
                    .and_then(|route| ctx.policy.resume_on(route))
                    .map(|config| {
                        let route = ctx.policy.route_label(ctx.seen.destination);
                        (config, route.to_owned())
                    }),
                judging: relayed::judging(&ctx.policy, &ctx.seen),
            };
            relayed::start(handed, self.books(), leftovers);
            return;
        }
        let by_us = upgrade::closed_by_us(session);
        let end = ctx.upgraded.then(|| upgrade::socket_end(by_us, e));
        if let Some(end) = end {
            let handshake = ctx.passage.as_ref().and_then(|p| p.handshake.as_ref());
            self.books()
                .socket_closed(end, ctx.counted.take(), handshake)
                .await;
        }
        match ctx.rejection {
            Some(Rejection::Auth(refusal)) => self.metrics.auth_failure(refusal.reason()),
            Some(Rejection::NotNow(refusal, _)) => self.metrics.admission_refused(refusal.label()),
            _ => {}
        }
        let reason = ctx.rejection.map(Rejection::reason).or(end
            .and_then(SocketEnd::closed_by)
            .or(by_us)
            .map(CloseReason::label));
        log::record(
            session,
            outcome(ctx, reason),
            &self.access_log,
            &self.metrics,
        );
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

impl TicketGate {
    /// What a socket's end updates, for this hook or a relay task.
    fn books(&self) -> relayed::Books {
        relayed::Books {
            metrics: self.metrics.clone(),
            admission: self.admission.clone(),
            shared_sessions: self.shared_sessions.clone(),
            access_log: self.access_log.clone(),
            resumes: self.resumes.clone(),
        }
    }
}

/// What the earlier steps learnt about the request, for its log line.
fn outcome<'a>(ctx: &'a RequestCtx, reason: Option<&'a str>) -> log::Outcome<'a> {
    log::Outcome {
        started: ctx.started,
        route: ctx.policy.route_label(ctx.seen.destination),
        auth: ctx.seen.auth,
        subject: ctx
            .seen
            .caller
            .as_ref()
            .map(|c| c.identity.subject.as_str()),
        reason,
        shapes: ctx.policy.shapes(),
    }
}
