//! The request's life, one Pingora hook per step, in the order Pingora calls them:
//!
//! 1. `request_filter`: route (`route`), then authenticate (`authenticate`) or answer
//!    ourselves (`respond`).
//! 2. `upstream_peer`: the one legacy upstream, over HTTP/1.1.
//! 3. `upstream_request_filter`: identity headers in, credentials out (`forward`).
//! 4. `fail_to_proxy`: a JSON 502 when the upstream cannot be reached.
//! 5. `logging`: access log line and metrics (`log`).
//!
//! `request_summary` is what Pingora's own error log prints: the redacted target.

mod authenticate;
mod forward;
mod log;
mod respond;
mod route;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};

use crate::access_log::AccessLog;
use crate::auth::Identity;
use crate::auth::jwt::JwtVerifier;
use crate::config::{AuthMode, Config};
use crate::metrics::Metrics;
use crate::redact;
use respond::Rejection;
use route::Destination;

const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const UNMATCHED_ROUTE: &str = "unmatched";
const DEFAULT_TICKET_PARAM: &str = "ticket";

/// The Pingora proxy application.
pub struct TicketGate {
    pub config: Arc<Config>,
    pub verifier: Arc<JwtVerifier>,
    pub metrics: Arc<Metrics>,
    pub access_log: Arc<AccessLog>,
}

/// Per-request state, filled in as the request moves through the hooks.
pub struct RequestCtx {
    started: Instant,
    destination: Destination,
    auth: AuthMode,
    identity: Option<Identity>,
    rejection: Option<Rejection>,
}

impl TicketGate {
    fn route_label(&self, destination: Destination) -> &str {
        match destination {
            Destination::Route(i) => &self.config.routes[i].prefix,
            Destination::IssueTicket => self
                .config
                .tickets
                .as_ref()
                .map_or(UNMATCHED_ROUTE, |t| &t.issue_path),
            Destination::NotFound | Destination::DotSegments => UNMATCHED_ROUTE,
        }
    }

    fn ticket_param(&self) -> &str {
        self.config
            .tickets
            .as_ref()
            .map_or(DEFAULT_TICKET_PARAM, |t| &t.query_param)
    }

    /// Route and authenticate; `Err` is the answer the client gets instead of the upstream.
    async fn admit(&self, session: &Session, ctx: &mut RequestCtx) -> Result<(), Rejection> {
        let route = match ctx.destination {
            Destination::Route(i) => &self.config.routes[i],
            Destination::IssueTicket | Destination::NotFound => return Err(Rejection::NoRoute),
            Destination::DotSegments => return Err(Rejection::DotSegments),
        };
        ctx.auth = route.auth;
        ctx.identity = authenticate::authenticate(route.auth, session.req_header(), &self.verifier)
            .await
            .map_err(|e| {
                self.metrics.auth_failure(e.reason());
                Rejection::Auth(e)
            })?;
        Ok(())
    }
}

#[async_trait]
impl ProxyHttp for TicketGate {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            destination: Destination::NotFound,
            auth: AuthMode::None,
            identity: None,
            rejection: None,
        }
    }

    /// Routes the request and checks its credentials; answers it here when it may not pass.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.destination = route::decide(&self.config, session.req_header().uri.path());
        match self.admit(session, ctx).await {
            Ok(()) => Ok(false),
            Err(rejection) => {
                ctx.rejection = Some(rejection);
                respond::reject(session, rejection).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.config.upstream, false, String::new());
        peer.options.connection_timeout = Some(UPSTREAM_CONNECT_TIMEOUT);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        forward::identity_headers(
            upstream_request,
            &self.config.forward,
            ctx.auth,
            ctx.identity.as_ref(),
        );
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
        if code == 502 {
            self.metrics.upstream_error();
            ctx.rejection = Some(Rejection::UpstreamUnreachable);
            if let Err(write_error) = respond::reject(session, Rejection::UpstreamUnreachable).await
            {
                ::log::debug!("cannot send the 502 downstream: {write_error}");
            }
        } else if code > 0
            && let Err(write_error) = session.respond_error(code).await
        {
            ::log::debug!("cannot send the {code} downstream: {write_error}");
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let outcome = log::Outcome {
            started: ctx.started,
            route: self.route_label(ctx.destination),
            auth: ctx.auth,
            subject: ctx.identity.as_ref().map(|i| i.subject.as_str()),
            reason: ctx.rejection.map(Rejection::reason),
            ticket_param: self.ticket_param(),
        };
        log::record(session, outcome, &self.access_log, &self.metrics);
    }

    /// Pingora's error log prints this; the default would print the raw query string.
    fn request_summary(&self, session: &Session, _ctx: &RequestCtx) -> String {
        let req = session.req_header();
        let target = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
        format!(
            "{} {}",
            req.method,
            redact::target(target, self.ticket_param())
        )
    }
}
