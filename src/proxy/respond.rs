//! Answers ticketgate writes itself, and the one place that maps a refusal to its status,
//! JSON body and headers. No body or header here is ever built from the request's
//! credentials.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use crate::auth::AuthError;

/// Why ticketgate answered instead of the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Auth(AuthError),
    NoRoute,
    DotSegments,
    UpstreamUnreachable,
}

impl Rejection {
    pub fn status(self) -> u16 {
        match self {
            Rejection::Auth(_) => 401,
            Rejection::NoRoute => 404,
            Rejection::DotSegments => 400,
            Rejection::UpstreamUnreachable => 502,
        }
    }

    /// The `reason` field of the access log.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Auth(e) => e.reason(),
            Rejection::NoRoute => "no_route",
            Rejection::DotSegments => "dot_segments",
            Rejection::UpstreamUnreachable => "upstream_unreachable",
        }
    }

    fn error_code(self) -> &'static str {
        match self {
            Rejection::Auth(AuthError::Missing) => "missing_token",
            Rejection::Auth(AuthError::Token(_)) => "invalid_token",
            Rejection::NoRoute => "not_found",
            Rejection::DotSegments => "invalid_request",
            Rejection::UpstreamUnreachable => "bad_gateway",
        }
    }

    fn description(self) -> String {
        match self {
            Rejection::Auth(e) => e.to_string(),
            Rejection::NoRoute => "no route for this path".to_string(),
            Rejection::DotSegments => "path has dot segments".to_string(),
            Rejection::UpstreamUnreachable => "upstream unreachable".to_string(),
        }
    }

    /// RFC 6750 §3: a bare challenge when no credentials came, an `error` when bad ones did.
    fn challenge(self) -> Option<String> {
        match self {
            Rejection::Auth(AuthError::Missing) => Some(r#"Bearer realm="ticketgate""#.into()),
            Rejection::Auth(AuthError::Token(problem)) => Some(format!(
                r#"Bearer realm="ticketgate", error="invalid_token", error_description="{problem}""#
            )),
            _ => None,
        }
    }
}

/// Writes the refusal and closes the connection afterwards: the request body, if any, was
/// never read, so the connection cannot safely carry another request.
pub async fn reject(session: &mut Session, rejection: Rejection) -> pingora::Result<()> {
    let body = serde_json::json!({
        "error": rejection.error_code(),
        "error_description": rejection.description(),
    });
    let mut extra = Vec::new();
    if let Some(challenge) = rejection.challenge() {
        extra.push((WWW_AUTHENTICATE, challenge));
    }
    session.set_keepalive(None);
    send_json(session, rejection.status(), &body, extra).await
}

/// Writes a complete JSON response that no cache may keep.
pub async fn send_json(
    session: &mut Session,
    status: u16,
    body: &serde_json::Value,
    headers: Vec<(http::HeaderName, String)>,
) -> pingora::Result<()> {
    let body = Bytes::from(body.to_string());
    let mut header = ResponseHeader::build(status, Some(4 + headers.len()))?;
    header.insert_header(CONTENT_TYPE, "application/json")?;
    header.insert_header(CONTENT_LENGTH, body.len().to_string())?;
    header.insert_header(CACHE_CONTROL, "no-store")?;
    for (name, value) in headers {
        header.insert_header(name, value)?;
    }
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await
}
