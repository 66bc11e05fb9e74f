//! What the upstream receives: the caller's identity in headers the client cannot forge,
//! and no credentials it has no use for.

use http::header::AUTHORIZATION;
use pingora::http::RequestHeader;

use crate::auth::Caller;
use crate::config::{AuthMode, ForwardConfig};
use crate::query;

/// Rewrites the upstream request's headers. Client-sent copies of identity headers are
/// removed on every route, `auth: none` included, so the upstream can trust them.
pub fn identity_headers(
    upstream: &mut RequestHeader,
    forward: &ForwardConfig,
    auth: AuthMode,
    caller: Option<&Caller>,
) {
    // Looking up is cheaper than removing, and clients rarely send these headers.
    for name in forward.identity_headers() {
        if upstream.headers.contains_key(name) {
            upstream.remove_header(name);
        }
    }
    if auth != AuthMode::None && !forward.forward_authorization {
        upstream.remove_header(&AUTHORIZATION);
    }
    for (name, value) in caller.map_or(&[][..], |c| c.headers.as_slice()) {
        // Inserting a valid name and value into a request header cannot fail.
        let _ = upstream.insert_header(name.clone(), value.clone());
    }
}

/// Removes the ticket from the URI the upstream sees; other parameters stay, in order.
pub fn strip_ticket(upstream: &mut RequestHeader, param: &str) -> pingora::Result<()> {
    let target = query::target(&upstream.uri);
    let Some(stripped) = query::without(target, param) else {
        return Ok(());
    };
    let uri = http::Uri::try_from(stripped).map_err(|e| {
        pingora::Error::because(pingora::ErrorType::InternalError, "rebuilding the URI", e)
    })?;
    upstream.set_uri(uri);
    Ok(())
}
