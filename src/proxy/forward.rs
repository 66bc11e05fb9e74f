//! What the upstream receives: the canonical target the route was chosen for, the caller's
//! identity in headers the client cannot forge, and no credentials it has no use for.

use std::borrow::Cow;

use http::HeaderName;
use http::header::{AUTHORIZATION, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_PROTOCOL};
use pingora::http::RequestHeader;

use super::upgrade::Protocols;
use crate::boundary::Target;
use crate::identity::Caller;
use crate::identity::ForwardConfig;
use crate::proxy::route::AuthMode;
use crate::query;

/// The target the upstream is sent, when it differs from what the client sent: the
/// canonical path (in origin-form) and the query without the ticket parameter. The ticket is
/// removed on every route but `auth: none`, which passes requests as they are.
pub fn upstream_target(target: &Target, auth: AuthMode, ticket_param: &str) -> Option<String> {
    let query = match (auth, target.query) {
        (AuthMode::None, query) | (_, query @ None) => query.map(Cow::Borrowed),
        (_, Some(query)) => query::without(query, ticket_param),
    };
    let query_changed = matches!(
        (&query, target.query),
        (Some(Cow::Owned(_)), _) | (None, Some(_))
    );
    if !target.rewritten && !query_changed {
        return None;
    }
    Some(match query {
        Some(query) => format!("{}?{query}", target.path),
        None => target.path.to_string(),
    })
}

/// Replaces the upstream request's target with `target` (`upstream_target`).
pub fn set_target(upstream: &mut RequestHeader, target: &str) -> pingora::Result<()> {
    let uri = http::Uri::try_from(target).map_err(|e| {
        pingora::Error::because(pingora::ErrorType::InternalError, "rebuilding the URI", e)
    })?;
    upstream.set_uri(uri);
    Ok(())
}

/// Rewrites the upstream request's headers. Client-sent copies of identity headers are
/// removed on every route, `auth: none` included, so the upstream can trust them.
pub fn identity_headers(
    upstream: &mut RequestHeader,
    forward: &ForwardConfig,
    auth: AuthMode,
    caller: Option<&Caller>,
) {
    for name in spoofed_identity_headers(upstream, forward) {
        upstream.remove_header(&name);
    }
    if auth != AuthMode::None && !forward.forward_authorization {
        upstream.remove_header(&AUTHORIZATION);
    }
    for (name, value) in caller.map_or(&[][..], |c| c.headers.as_slice()) {
        // Inserting a valid name and value into a request header cannot fail.
        let _ = upstream.insert_header(name.clone(), value.clone());
    }
}

/// Offers the upstream the application's protocols only.
pub fn protocols_upstream(
    upstream: &mut RequestHeader,
    protocols: &Protocols,
) -> pingora::Result<()> {
    upstream.remove_header(&SEC_WEBSOCKET_PROTOCOL);
    if let Some(offered) = &protocols.upstream {
        upstream.insert_header(SEC_WEBSOCKET_PROTOCOL, offered.as_str())?;
    }
    Ok(())
}

/// Offers the upstream no WebSocket extension: a compressed frame could not be read, nor a
/// frame of a context-takeover stream replayed on a new connection.
pub fn no_extensions(upstream: &mut RequestHeader) {
    upstream.remove_header(&SEC_WEBSOCKET_EXTENSIONS);
}

/// Client headers that name an identity header. CGI, WSGI, Rack and PHP upstreams read
/// `X_Auth_Subject` as `X-Auth-Subject`, so `_` counts as `-` (names are already lower case).
fn spoofed_identity_headers(upstream: &RequestHeader, forward: &ForwardConfig) -> Vec<HeaderName> {
    upstream
        .headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            forward.identity_headers().any(|identity| {
                let identity = identity.as_str().as_bytes();
                identity.len() == name.len()
                    && identity.iter().zip(name.as_bytes()).all(|(a, b)| {
                        a == b || (matches!(a, b'-' | b'_') && matches!(b, b'-' | b'_'))
                    })
            })
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::upstream_target;
    use crate::boundary;
    use crate::proxy::route::AuthMode;

    fn forwarded(raw: &str, auth: AuthMode) -> Option<String> {
        let target = boundary::read(raw.as_bytes(), false).expect("a valid target");
        upstream_target(&target, auth, "ticket")
    }

    #[test]
    fn the_upstream_gets_the_canonical_path_without_the_ticket() {
        assert_eq!(forwarded("/ws?a=1", AuthMode::Ticket), None);
        assert_eq!(
            forwarded("/ws?a=1&ticket=t&b", AuthMode::Ticket).as_deref(),
            Some("/ws?a=1&b")
        );
        assert_eq!(
            forwarded("/api?ticket=t", AuthMode::Jwt).as_deref(),
            Some("/api")
        );
        assert_eq!(
            forwarded("//%61pi?ticket=t", AuthMode::None).as_deref(),
            Some("/api?ticket=t")
        );
        assert_eq!(forwarded("/public?ticket=t", AuthMode::None), None);
        assert_eq!(
            forwarded("http://h.test/x?y", AuthMode::None).as_deref(),
            Some("/x?y")
        );
    }

    /// Pingora only hands on targets the `http` crate parses; whatever such a target is
    /// rewritten to must parse too, or forwarding would fail.
    #[test]
    fn every_rewritten_target_is_a_valid_uri() {
        for byte in 0x21u8..0x7f {
            let raw = format!("//%61/{}?q={}&ticket=t", char::from(byte), char::from(byte));
            if http::Uri::try_from(raw.as_str()).is_err() {
                continue;
            }
            let Ok(target) = boundary::read(raw.as_bytes(), false) else {
                continue;
            };
            let sent = upstream_target(&target, AuthMode::Jwt, "ticket").expect("rewritten");
            assert!(
                http::Uri::try_from(sent.as_str()).is_ok(),
                "{raw} -> {sent}"
            );
        }
    }
}
