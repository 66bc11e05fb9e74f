//! What the two endpoints browsers call (the ticket endpoint, the refresh endpoint) share:
//! `POST` only, a CORS preflight for allowed origins, and `Access-Control-Allow-Origin` on
//! every answer to an allowed origin, refusals included, or the page could not read the 401
//! that tells it to refresh its login.

use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_MAX_AGE, ORIGIN, VARY,
};
use http::{HeaderName, Method};
use pingora::http::RequestHeader;

use super::respond::{Rejection, Reply};
use crate::refusal::Allowed;

/// The answer to anything but a `POST` (a preflight, or 405); `None` for a `POST`.
pub fn not_a_post(req: &RequestHeader, allowed_origins: &[String]) -> Option<Reply> {
    match req.method {
        Method::POST => None,
        Method::OPTIONS => Some(preflight(allowed_origin(req, allowed_origins).is_some())),
        _ => Some(Rejection::MethodNotAllowed(Allowed::PostAndOptions).into()),
    }
}

/// `reply` with the CORS headers the request's origin gets.
pub fn with_cors(mut reply: Reply, req: &RequestHeader, allowed_origins: &[String]) -> Reply {
    reply.headers.push((VARY, "Origin".into()));
    if let Some(origin) = allowed_origin(req, allowed_origins) {
        reply
            .headers
            .push((ACCESS_CONTROL_ALLOW_ORIGIN, origin.to_string()));
    }
    reply
}

fn allowed_origin<'a>(req: &'a RequestHeader, allowed_origins: &[String]) -> Option<&'a str> {
    req.headers
        .get(ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|origin| allowed_origins.iter().any(|allowed| allowed == origin))
}

/// The answer to a CORS preflight: what the browser may send, for an allowed origin only.
fn preflight(origin_allowed: bool) -> Reply {
    let mut headers: Vec<(HeaderName, String)> = Vec::new();
    if origin_allowed {
        headers.push((ACCESS_CONTROL_ALLOW_METHODS, "POST".into()));
        headers.push((
            ACCESS_CONTROL_ALLOW_HEADERS,
            "Authorization, Content-Type".into(),
        ));
        headers.push((ACCESS_CONTROL_MAX_AGE, "600".into()));
    }
    Reply::new(204, None, headers)
}
