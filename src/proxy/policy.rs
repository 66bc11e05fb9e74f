//! Everything a request is decided by, in one snapshot. Each request takes the current one
//! when it starts (`new_ctx`) and keeps it to its end, so a WebSocket admitted under one
//! policy keeps it until it closes, and nothing a request holds — a route index, say — can
//! dangle when the policy is replaced.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use http::header::ORIGIN;
use pingora::http::RequestHeader;

use super::authenticate::Authenticators;
use crate::auth::jwt::JwtVerifier;
use crate::config::{Config, Route, WebsocketConfig};
use crate::identity::ForwardConfig;
use crate::identity::cache::TokenCache;
use crate::metrics::Metrics;
use crate::redact::Shapes;
use crate::revocations::{AdminToken, Revocations};
use crate::tickets::{Tickets, codec};

/// The query parameter tickets travel in when no `tickets:` section names one.
const DEFAULT_TICKET_PARAM: &str = "ticket";

pub struct Policy {
    /// `upstream`, resolved when the policy was made.
    pub upstream: SocketAddr,
    pub routes: Vec<Route>,
    pub verifier: Arc<JwtVerifier>,
    /// Callers of verified tokens with their headers built, under this policy's `forward`
    /// rules: a reload starts with an empty one, so no header of the old rules survives it.
    pub callers: TokenCache,
    pub tickets: Option<TicketEndpoint>,
    pub forward: ForwardConfig,
    pub cors_allowed_origins: Vec<String>,
    pub websocket: WebsocketConfig,
    /// Added to a login's `exp` before its WebSocket is closed, as for the token itself.
    pub leeway_seconds: u64,
    /// What `POST /revoke` must present; `None` turns revocation off.
    pub admin_token: Option<AdminToken>,
    /// This process's record of revoked logins: one for the whole run, not per policy.
    pub revocations: Arc<Revocations>,
}

/// `host:port` resolved, when a policy is made (at start and on reload): a sidecar's upstream
/// is a fixed local address, not looked up per request.
pub fn resolve_upstream(upstream: &str) -> Option<SocketAddr> {
    upstream.to_socket_addrs().ok()?.next()
}

/// The ticket service and where it is reached.
pub struct TicketEndpoint {
    pub tickets: Arc<Tickets>,
    pub issue_path: String,
    pub query_param: String,
}

/// The verifier `config` describes. Its identities keep exactly the claims a `forward`
/// header carries.
pub fn verifier(config: &Config, metrics: &Arc<Metrics>) -> Arc<JwtVerifier> {
    Arc::new(JwtVerifier::new(
        &config.jwt,
        config.forward.claim_names(),
        metrics,
    ))
}

impl Policy {
    /// The policy `config` describes, with the verifier and ticket service built for it.
    pub fn new(
        config: &Config,
        upstream: SocketAddr,
        verifier: Arc<JwtVerifier>,
        tickets: Option<Arc<Tickets>>,
        revocations: Arc<Revocations>,
    ) -> Self {
        let tickets = config
            .tickets
            .as_ref()
            .zip(tickets)
            .map(|(settings, tickets)| TicketEndpoint {
                tickets,
                issue_path: settings.issue_path.clone(),
                query_param: settings.query_param.clone(),
            });
        Policy {
            upstream,
            routes: config.routes.clone(),
            verifier,
            callers: TokenCache::new(config.jwt.cache_size),
            tickets,
            forward: config.forward.clone(),
            cors_allowed_origins: config.cors_allowed_origins.clone(),
            websocket: config.websocket.clone(),
            leeway_seconds: config.jwt.leeway_seconds,
            admin_token: config.admin_token.clone(),
            revocations,
        }
    }

    pub fn ticket_param(&self) -> &str {
        self.tickets
            .as_ref()
            .map_or(DEFAULT_TICKET_PARAM, |t| &t.query_param)
    }

    /// What the redaction of logged targets looks for.
    pub fn shapes(&self) -> Shapes<'_> {
        Shapes {
            ticket_param: self.ticket_param(),
            ticket_prefix: codec::PREFIX,
        }
    }

    pub fn authenticators(&self) -> Authenticators<'_> {
        Authenticators {
            verifier: &self.verifier,
            callers: &self.callers,
            tickets: self.tickets.as_ref().map(|t| t.tickets.as_ref()),
            ticket_param: self.ticket_param(),
            forward: &self.forward,
            revocations: &self.revocations,
        }
    }

    /// Cross-site WebSocket hijacking guard: a browser's upgrade from an origin not on
    /// `websocket.allowed_origins` is refused. Non-browser clients send no `Origin`.
    pub fn origin_allowed(&self, req: &RequestHeader) -> bool {
        let allowed = &self.websocket.allowed_origins;
        match req.headers.get(ORIGIN) {
            None => true,
            Some(_) if allowed.is_empty() => true,
            Some(origin) => allowed.iter().any(|a| a.as_bytes() == origin.as_bytes()),
        }
    }
}
