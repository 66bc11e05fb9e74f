//! Every refusal ticketgate answers itself, on the data plane and the admin listener alike:
//! the one place that maps each to its status, JSON `error` code, description, headers and
//! access-log `reason`. No text here is ever built from the request's credentials.

use http::HeaderName;
use http::header::{ALLOW, RETRY_AFTER, WWW_AUTHENTICATE};

use crate::admission;
use crate::auth::AuthError;
use crate::boundary::Refused;
use crate::resume::NotResumable;

/// Why ticketgate answered instead of the upstream (or refused an admin request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Auth(AuthError),
    OriginNotAllowed,
    NoRoute,
    /// A request target without one canonical reading (`boundary`).
    BadTarget(Refused),
    /// The path takes only the methods in `Allow`.
    MethodNotAllowed(Allowed),
    StoreUnavailable,
    TicketUnavailable,
    UpstreamUnreachable,
    /// The upstream answered a ticket-authenticated upgrade with something else than 101:
    /// a ticket never buys a plain HTTP response.
    UpgradeRefused,
    /// `POST /revoke` without the admin token.
    AdminTokenRequired,
    /// `POST /revoke` with a body that is not `{"subject": "..."}`.
    BadRevocation,
    /// The revocation holds on this replica, but the store that carries it to the others
    /// could not be reached.
    RevokedHereOnly,
    /// A refresh whose body names no session.
    NoSession,
    /// A refresh of a session no open socket has.
    UnknownSession,
    /// A refresh by another issuer or subject than the socket's.
    SessionMismatch,
    /// A refresh whose forwarded claims differ from what the upstream was told.
    IdentityChanged,
    /// Past 6 refreshes a minute of one session; retry after this many seconds.
    TooManyRefreshes(u64),
    /// Admission: no ticket now (`admission::Refusal` says why); retry after this many
    /// seconds.
    NotNow(admission::Refusal, u64),
    /// A resume that cannot be joined (`resume::NotResumable` says why).
    NotResumable(NotResumable),
}

/// How a refresh ended: the `result` of `ticketgate_session_refreshes_total`, and the JSON
/// `error` of the refusals among them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshResult {
    Extended,
    InvalidToken,
    SessionMismatch,
    IdentityChanged,
    UnknownSession,
    TooManyRefreshes,
}

impl RefreshResult {
    pub const ALL: [RefreshResult; 6] = [
        RefreshResult::Extended,
        RefreshResult::InvalidToken,
        RefreshResult::SessionMismatch,
        RefreshResult::IdentityChanged,
        RefreshResult::UnknownSession,
        RefreshResult::TooManyRefreshes,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RefreshResult::Extended => "extended",
            RefreshResult::InvalidToken => "invalid_token",
            RefreshResult::SessionMismatch => "session_mismatch",
            RefreshResult::IdentityChanged => "identity_changed",
            RefreshResult::UnknownSession => "unknown_session",
            RefreshResult::TooManyRefreshes => "too_many_refreshes",
        }
    }

    /// The result of a refresh answered with `refused` (`None`: a malformed request, which
    /// the metric does not count).
    pub fn of(refused: Rejection) -> Option<RefreshResult> {
        Some(match refused {
            Rejection::Auth(_) => RefreshResult::InvalidToken,
            Rejection::SessionMismatch => RefreshResult::SessionMismatch,
            Rejection::IdentityChanged => RefreshResult::IdentityChanged,
            Rejection::UnknownSession => RefreshResult::UnknownSession,
            Rejection::TooManyRefreshes(_) => RefreshResult::TooManyRefreshes,
            _ => return None,
        })
    }
}

/// What a path with a fixed set of methods takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// The ticket endpoint (CORS preflights included).
    PostAndOptions,
    /// `POST /revoke`.
    Post,
}

impl Rejection {
    /// Every refusal, each auth problem and target refusal among them.
    pub fn all() -> impl Iterator<Item = Rejection> {
        [
            Rejection::OriginNotAllowed,
            Rejection::NoRoute,
            Rejection::MethodNotAllowed(Allowed::PostAndOptions),
            Rejection::MethodNotAllowed(Allowed::Post),
            Rejection::StoreUnavailable,
            Rejection::TicketUnavailable,
            Rejection::UpstreamUnreachable,
            Rejection::UpgradeRefused,
            Rejection::AdminTokenRequired,
            Rejection::BadRevocation,
            Rejection::RevokedHereOnly,
            Rejection::NoSession,
            Rejection::UnknownSession,
            Rejection::SessionMismatch,
            Rejection::IdentityChanged,
            Rejection::TooManyRefreshes(1),
            Rejection::NotNow(admission::Refusal::TicketsRate, 5),
            Rejection::NotNow(admission::Refusal::UpgradesRate, 5),
            Rejection::NotNow(admission::Refusal::Subject, 5),
            Rejection::NotNow(admission::Refusal::Websockets, 5),
            Rejection::NotNow(admission::Refusal::UpstreamUnavailable, 5),
            Rejection::NotResumable(NotResumable::UnknownToken),
            Rejection::NotResumable(NotResumable::OtherRoute),
            Rejection::NotResumable(NotResumable::NotKept),
            Rejection::NotResumable(NotResumable::Unreadable),
        ]
        .into_iter()
        .chain(AuthError::all().map(Rejection::Auth))
        .chain(Refused::ALL.map(Rejection::BadTarget))
    }

    pub fn status(self) -> u16 {
        match self {
            Rejection::Auth(_) | Rejection::AdminTokenRequired | Rejection::NotResumable(_) => 401,
            Rejection::OriginNotAllowed | Rejection::SessionMismatch => 403,
            Rejection::NoRoute | Rejection::UnknownSession => 404,
            Rejection::BadTarget(_) | Rejection::BadRevocation | Rejection::NoSession => 400,
            Rejection::IdentityChanged => 409,
            Rejection::TooManyRefreshes(_) => 429,
            Rejection::NotNow(
                admission::Refusal::UpstreamUnavailable | admission::Refusal::UpgradesRate,
                _,
            ) => 503,
            Rejection::NotNow(_, _) => 429,
            Rejection::MethodNotAllowed(_) => 405,
            Rejection::StoreUnavailable | Rejection::RevokedHereOnly => 503,
            Rejection::TicketUnavailable => 500,
            Rejection::UpstreamUnreachable | Rejection::UpgradeRefused => 502,
        }
    }

    /// The `reason` field of the access log.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Auth(e) => e.reason(),
            Rejection::OriginNotAllowed => "origin_not_allowed",
            Rejection::NoRoute => "no_route",
            Rejection::BadTarget(why) => why.reason(),
            Rejection::MethodNotAllowed(_) => "method_not_allowed",
            Rejection::StoreUnavailable | Rejection::RevokedHereOnly => "store_unavailable",
            Rejection::TicketUnavailable => "ticket_unavailable",
            Rejection::UpstreamUnreachable => "upstream_unreachable",
            Rejection::UpgradeRefused => "upgrade_refused",
            Rejection::AdminTokenRequired => "admin_token_required",
            Rejection::BadRevocation => "bad_revocation",
            Rejection::NoSession => "no_session",
            Rejection::SessionMismatch => RefreshResult::SessionMismatch.label(),
            Rejection::IdentityChanged => RefreshResult::IdentityChanged.label(),
            Rejection::UnknownSession => RefreshResult::UnknownSession.label(),
            Rejection::TooManyRefreshes(_) => RefreshResult::TooManyRefreshes.label(),
            Rejection::NotNow(refusal, _) => refusal.label(),
            Rejection::NotResumable(_) => "resume_refused",
        }
    }

    /// The JSON body's `error`.
    pub fn error_code(self) -> &'static str {
        match self {
            Rejection::Auth(AuthError::Missing) => "missing_token",
            Rejection::Auth(AuthError::Token(_)) | Rejection::AdminTokenRequired => "invalid_token",
            Rejection::Auth(AuthError::Ticket(_)) | Rejection::NotResumable(_) => "invalid_ticket",
            Rejection::Auth(AuthError::TwoCredentials | AuthError::UnreadableProtocols)
            | Rejection::BadTarget(_)
            | Rejection::BadRevocation
            | Rejection::NoSession => "invalid_request",
            Rejection::SessionMismatch
            | Rejection::IdentityChanged
            | Rejection::UnknownSession
            | Rejection::TooManyRefreshes(_) => self.reason(),
            Rejection::NotNow(admission::Refusal::UpstreamUnavailable, _) => self.reason(),
            Rejection::NotNow(admission::Refusal::Subject, _) => "too_many_sockets",
            Rejection::NotNow(_, _) => "busy",
            Rejection::OriginNotAllowed => "origin_not_allowed",
            Rejection::NoRoute => "not_found",
            Rejection::MethodNotAllowed(_) => "method_not_allowed",
            Rejection::StoreUnavailable | Rejection::RevokedHereOnly => "ticket_store_unavailable",
            Rejection::TicketUnavailable => "ticket_unavailable",
            Rejection::UpstreamUnreachable | Rejection::UpgradeRefused => "bad_gateway",
        }
    }

    pub fn description(self) -> String {
        match self {
            Rejection::Auth(e) => e.to_string(),
            Rejection::OriginNotAllowed => "origin not allowed".into(),
            Rejection::NoRoute => "no route for this path".into(),
            Rejection::BadTarget(why) => why.to_string(),
            Rejection::MethodNotAllowed(_) => "use POST".into(),
            Rejection::StoreUnavailable => "ticket store unavailable, retry shortly".into(),
            Rejection::TicketUnavailable => "cannot issue a ticket for this caller".into(),
            Rejection::UpstreamUnreachable => "upstream unreachable".into(),
            Rejection::UpgradeRefused => "upstream did not accept the WebSocket upgrade".into(),
            Rejection::AdminTokenRequired => "admin token required".into(),
            Rejection::BadRevocation => "body must be {\"subject\": \"...\"}".into(),
            Rejection::RevokedHereOnly => {
                "revoked on this replica only: the ticket store is unreachable".into()
            }
            Rejection::NoSession => "body must be {\"session\": \"...\"}".into(),
            Rejection::UnknownSession => "no open socket has this session".into(),
            Rejection::SessionMismatch => "the socket belongs to another caller".into(),
            Rejection::IdentityChanged => {
                "a forwarded claim changed: reconnect to tell the upstream".into()
            }
            Rejection::TooManyRefreshes(_) => "too many refreshes of this session".into(),
            Rejection::NotNow(admission::Refusal::UpstreamUnavailable, _) => {
                "the upstream is unavailable, retry later".into()
            }
            Rejection::NotNow(admission::Refusal::Subject, _) => {
                "this caller has as many sockets open as it may".into()
            }
            Rejection::NotNow(_, _) => "busy, retry later".into(),
            Rejection::NotResumable(why) => format!("{why}: open a new socket"),
        }
    }

    /// `{"error": ..., "error_description": ...}`, and `retry_after` (seconds) when the
    /// client is told when to come back.
    pub fn body(self) -> serde_json::Value {
        let mut body = serde_json::json!({
            "error": self.error_code(),
            "error_description": self.description(),
        });
        if let Some(seconds) = self.retry_after() {
            body["retry_after"] = seconds.into();
        }
        body
    }

    /// When the client may try again, in seconds, for the refusals that say so.
    pub fn retry_after(self) -> Option<u64> {
        match self {
            Rejection::TooManyRefreshes(seconds) | Rejection::NotNow(_, seconds) => Some(seconds),
            _ => None,
        }
    }

    /// RFC 6750 §3: a bare challenge when no credentials came, an `error` when bad ones did.
    pub fn headers(self) -> Vec<(HeaderName, String)> {
        match self {
            Rejection::Auth(AuthError::Missing) => {
                vec![(WWW_AUTHENTICATE, r#"Bearer realm="ticketgate""#.into())]
            }
            Rejection::Auth(problem) => {
                // RFC 6750 §3.1 has two codes for this: the request's shape, or the token.
                let error = match problem {
                    AuthError::TwoCredentials | AuthError::UnreadableProtocols => "invalid_request",
                    _ => "invalid_token",
                };
                vec![(
                    WWW_AUTHENTICATE,
                    format!(
                        r#"Bearer realm="ticketgate", error="{error}", error_description="{problem}""#
                    ),
                )]
            }
            Rejection::MethodNotAllowed(Allowed::PostAndOptions) => {
                vec![(ALLOW, "POST, OPTIONS".into())]
            }
            Rejection::MethodNotAllowed(Allowed::Post) => vec![(ALLOW, "POST".into())],
            other => other
                .retry_after()
                .map(|seconds| vec![(RETRY_AFTER, seconds.to_string())])
                .unwrap_or_default(),
        }
    }
}
