//! Everything a request is decided by, in one snapshot. Each request takes the current one
//! when it starts (`new_ctx`) and keeps it to its end, so a WebSocket admitted under one
//! policy keeps it until it closes, and nothing a request holds — a route index, say — can
//! dangle when the policy is replaced.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use super::authenticate::Authenticators;
use super::route::{self, AuthMode, Destination, OwnPaths, Route};
use super::upgrade::{Liveness, WebsocketConfig};
use crate::admission::AdmissionConfig;
use crate::auth::jwt::{JwtConfig, JwtVerifier};
use crate::identity::ForwardConfig;
use crate::identity::cache::TokenCache;
use crate::live::Sessions;
use crate::metrics::Metrics;
use crate::redact::Shapes;
use crate::refreshes::SharedSessions;
use crate::resume::ResumeConfig;
use crate::revocations::{AdminToken, Revocations, RevocationsConfig};
use crate::tickets::store::StoreError;
use crate::tickets::{Tickets, TicketsConfig, codec};

/// The query parameter tickets travel in when no `tickets:` section names one.
const DEFAULT_TICKET_PARAM: &str = "ticket";

/// The settings a policy is built from, as the config file translates them; a reload
/// builds a new policy from new ones.
pub struct PolicySettings {
    /// `host:port`, resolved when the policy is built (so `check` needs no DNS).
    pub upstream: String,
    pub routes: Vec<Route>,
    pub jwt: JwtConfig,
    pub tickets: Option<TicketsConfig>,
    pub forward: ForwardConfig,
    pub cors_allowed_origins: Vec<String>,
    pub websocket: WebsocketConfig,
    /// Enables `POST /revoke` on the admin listener.
    pub admin_token: Option<AdminToken>,
    pub revocations: RevocationsConfig,
    /// `admission:`; `None`: no limits.
    pub admission: Option<AdmissionConfig>,
}

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
    /// How long a revocation made under this policy lasts (`revocations.ttl_seconds`).
    pub revocation_ttl: Duration,
    /// The admission limits; `None`: no limits.
    pub admission: Option<AdmissionConfig>,
    /// This process's record of revoked logins: one for the whole run, not per policy.
    pub revocations: Arc<Revocations>,
}

/// The ticket service and where it is reached.
pub struct TicketEndpoint {
    pub tickets: Arc<Tickets>,
    pub issue_path: String,
    pub query_param: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("upstream: cannot resolve {0:?}")]
    Upstream(String),
    #[error("tickets.store: {0}")]
    Store(#[from] StoreError),
}

impl Policy {
    /// The one way a policy is made, at start (`running: None`) and on reload. What must
    /// outlive a reload is carried over from `running`: the ticket service keeps its store,
    /// its run id and, after a secret change, the previous secret for the tickets already out
    /// (`Tickets::reloaded`); the revocation record is the process's own.
    pub fn build(
        settings: &PolicySettings,
        running: Option<&Policy>,
        revocations: Arc<Revocations>,
        metrics: &Arc<Metrics>,
    ) -> Result<Policy, BuildError> {
        let upstream = resolve_upstream(&settings.upstream)
            .ok_or_else(|| BuildError::Upstream(settings.upstream.clone()))?;
        let verifier = Arc::new(JwtVerifier::new(
            &settings.jwt,
            settings.forward.claim_names(),
            route::listed_claims(&settings.routes),
            metrics,
        ));
        let carried = running.and_then(|policy| policy.tickets.as_ref());
        let tickets = match (&settings.tickets, carried) {
            (Some(config), Some(running)) => Some((config, running.tickets.reloaded(config)?)),
            (Some(config), None) => Some((config, Tickets::new(config, metrics.clone())?)),
            (None, _) => None,
        };
        Ok(Policy {
            upstream,
            routes: settings.routes.clone(),
            verifier,
            callers: TokenCache::new(settings.jwt.cache_size),
            tickets: tickets.map(|(config, tickets)| TicketEndpoint {
                tickets: Arc::new(tickets),
                issue_path: config.issue_path.clone(),
                query_param: config.query_param.clone(),
            }),
            forward: settings.forward.clone(),
            cors_allowed_origins: settings.cors_allowed_origins.clone(),
            websocket: settings.websocket.clone(),
            leeway_seconds: settings.jwt.leeway_seconds,
            admin_token: settings.admin_token.clone(),
            revocation_ttl: settings.revocations.ttl,
            admission: settings.admission,
            revocations,
        })
    }

    /// Where a request for the route path `path` goes.
    pub fn destination(&self, path: &str) -> Destination {
        route::decide(&self.routes, self.own_paths(), path)
    }

    /// The `route` label of metrics and the access log for `destination`.
    pub fn route_label(&self, destination: Destination) -> &str {
        route::label(&self.routes, self.own_paths(), destination)
    }

    fn own_paths(&self) -> OwnPaths<'_> {
        OwnPaths {
            issue: self.tickets.as_ref().map(|t| t.issue_path.as_str()),
            refresh: self.websocket.refresh_path.as_deref(),
        }
    }

    /// What a socket opening under this policy is held to.
    pub fn liveness<'a>(
        &'a self,
        sessions: &'a Sessions,
        shared: Option<&'a Arc<SharedSessions>>,
    ) -> Liveness<'a> {
        Liveness {
            close_at_login_expiry: self.websocket.close_at_login_expiry,
            leeway_seconds: self.leeway_seconds,
            revocations: &self.revocations,
            sessions,
            shared,
        }
    }

    /// The route a request was routed to, if any.
    pub fn route(&self, destination: Destination) -> Option<&Route> {
        match destination {
            Destination::Route(i) => self.routes.get(i),
            _ => None,
        }
    }

    /// The resume settings on `route`: resume holds on ticket routes only, when it is on.
    pub fn resume_on(&self, route: &Route) -> Option<ResumeConfig> {
        self.websocket
            .resume
            .filter(|_| route.auth == AuthMode::Ticket)
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
}

/// `host:port` resolved, when a policy is made (at start and on reload): a sidecar's upstream
/// is a fixed local address, not looked up per request.
fn resolve_upstream(upstream: &str) -> Option<SocketAddr> {
    upstream.to_socket_addrs().ok()?.next()
}
