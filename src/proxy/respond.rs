//! Answers ticketgate writes itself, and the one place that maps a refusal to its status,
//! JSON body and headers. No body or header here is ever built from the request's
//! credentials.

use bytes::Bytes;
use http::HeaderName;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use crate::auth::AuthError;
use crate::boundary::Refused;

/// Why ticketgate answered instead of the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Auth(AuthError),
    OriginNotAllowed,
    NoRoute,
    /// A request target without one canonical reading (`boundary`).
    BadTarget(Refused),
    MethodNotAllowed,
    StoreUnavailable,
    TicketUnavailable,
    UpstreamUnreachable,
    /// The upstream answered a ticket-authenticated upgrade with something else than 101:
    /// a ticket never buys a plain HTTP response.
    UpgradeRefused,
}

impl Rejection {
    pub fn status(self) -> u16 {
        match self {
            Rejection::Auth(_) => 401,
            Rejection::OriginNotAllowed => 403,
            Rejection::NoRoute => 404,
            Rejection::BadTarget(_) => 400,
            Rejection::MethodNotAllowed => 405,
            Rejection::StoreUnavailable => 503,
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
            Rejection::MethodNotAllowed => "method_not_allowed",
            Rejection::StoreUnavailable => "store_unavailable",
            Rejection::TicketUnavailable => "ticket_unavailable",
            Rejection::UpstreamUnreachable => "upstream_unreachable",
            Rejection::UpgradeRefused => "upgrade_refused",
        }
    }

    fn error_code(self) -> &'static str {
        match self {
            Rejection::Auth(AuthError::Missing) => "missing_token",
            Rejection::Auth(AuthError::Token(_)) => "invalid_token",
            Rejection::Auth(AuthError::Ticket(_)) => "invalid_ticket",
            Rejection::Auth(AuthError::TwoCredentials | AuthError::UnreadableProtocols) => {
                "invalid_request"
            }
            Rejection::OriginNotAllowed => "origin_not_allowed",
            Rejection::NoRoute => "not_found",
            Rejection::BadTarget(_) => "invalid_request",
            Rejection::MethodNotAllowed => "method_not_allowed",
            Rejection::StoreUnavailable => "ticket_store_unavailable",
            Rejection::TicketUnavailable => "ticket_unavailable",
            Rejection::UpstreamUnreachable | Rejection::UpgradeRefused => "bad_gateway",
        }
    }

    fn description(self) -> String {
        match self {
            Rejection::Auth(e) => e.to_string(),
            Rejection::OriginNotAllowed => "origin not allowed".into(),
            Rejection::NoRoute => "no route for this path".into(),
            Rejection::BadTarget(why) => why.to_string(),
            Rejection::MethodNotAllowed => "use POST".into(),
            Rejection::StoreUnavailable => "ticket store unavailable, retry shortly".into(),
            Rejection::TicketUnavailable => "cannot issue a ticket for this caller".into(),
            Rejection::UpstreamUnreachable => "upstream unreachable".into(),
            Rejection::UpgradeRefused => "upstream did not accept the WebSocket upgrade".into(),
        }
    }

    /// RFC 6750 §3: a bare challenge when no credentials came, an `error` when bad ones did.
    fn headers(self) -> Vec<(HeaderName, String)> {
        match self {
            Rejection::Auth(AuthError::Missing) => {
                vec![(WWW_AUTHENTICATE, r#"Bearer realm="ticketgate""#.into())]
            }
            Rejection::Auth(problem) => {
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
            Rejection::MethodNotAllowed => vec![(ALLOW, "POST, OPTIONS".into())],
            _ => Vec::new(),
        }
    }
}

/// A complete response ticketgate writes.
pub struct Reply {
    pub status: u16,
    pub body: Option<serde_json::Value>,
    pub headers: Vec<(HeaderName, String)>,
    /// Set when the reply is a refusal, for the access log and metrics.
    pub rejection: Option<Rejection>,
}

impl Reply {
    pub fn new(
        status: u16,
        body: Option<serde_json::Value>,
        headers: Vec<(HeaderName, String)>,
    ) -> Self {
        Reply {
            status,
            body,
            headers,
            rejection: None,
        }
    }
}

impl From<Rejection> for Reply {
    fn from(rejection: Rejection) -> Self {
        Reply {
            status: rejection.status(),
            body: Some(serde_json::json!({
                "error": rejection.error_code(),
                "error_description": rejection.description(),
            })),
            headers: rejection.headers(),
            rejection: Some(rejection),
        }
    }
}

/// Writes the reply; JSON bodies are never cached. After a refusal the connection is
/// closed: the request body, if any, was never read, so it cannot carry another request.
pub async fn send(session: &mut Session, reply: Reply) -> pingora::Result<()> {
    if reply.status >= 400 {
        session.set_keepalive(None);
    }
    let body = reply.body.map(|json| Bytes::from(json.to_string()));
    let mut header = ResponseHeader::build(reply.status, Some(4 + reply.headers.len()))?;
    header.insert_header(
        CONTENT_LENGTH,
        body.as_ref().map_or(0, Bytes::len).to_string(),
    )?;
    if body.is_some() {
        header.insert_header(CONTENT_TYPE, "application/json")?;
        header.insert_header(CACHE_CONTROL, "no-store")?;
    }
    for (name, value) in reply.headers {
        header.append_header(name, value)?;
    }
    session
        .write_response_header(Box::new(header), body.is_none())
        .await?;
    if body.is_some() {
        session.write_response_body(body, true).await?;
    }
    Ok(())
}
