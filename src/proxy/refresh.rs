//! The refresh endpoint: `POST websocket.refresh_path` with a bearer JWT and
//! `{"session": "<handle>"}` extends the open socket with that handle to the new login's
//! expiry, without reconnecting. The upstream learnt the caller's identity once, at the
//! upgrade, and cannot be told again: so the new login must pass every rule a bearer JWT
//! passes (revocation included), come from the socket's issuer and subject, and carry every
//! forwarded claim unchanged; every fact is read from the new token, none from the old.
//! CORS as `cors` says.

use std::sync::Arc;

use pingora::http::RequestHeader;
use pingora::proxy::Session;

use super::authenticate::{Authenticated, require_bearer};
use super::cors;
use super::policy::Policy;
use super::respond::{Rejection, Reply};
use crate::clock;
use crate::identity::Caller;
use crate::live::{Refreshed, Sessions};
use crate::refreshes::SharedSessions;
use crate::refusal::RefreshResult;
use crate::resume::Resumes;

/// The most a refresh's body may hold: `{"session": "<22 characters>"}` and some room.
const MAX_BODY: usize = 1024;
/// A handle longer than this is no handle ticketgate made.
const MAX_HANDLE: usize = 64;

#[derive(serde::Deserialize)]
struct RefreshRequest {
    session: String,
}

/// What a refresh came to: the reply, the caller when the JWT verified, and the result the
/// metric counts (`None` for a preflight, a wrong method or a malformed body).
pub struct Answer {
    pub reply: Reply,
    pub caller: Option<Arc<Caller>>,
    pub result: Option<RefreshResult>,
}

/// Where a refresh finds its socket: this replica's sockets, the shared store's record of the
/// others', and this replica's resumable sockets (a refresh here hands out the next token).
pub struct Holders<'a> {
    pub sessions: &'a Sessions,
    pub shared: Option<&'a SharedSessions>,
    pub resumes: &'a Resumes,
}

/// Reads the body and answers the refresh.
pub async fn answer(session: &mut Session, policy: &Policy, holders: Holders<'_>) -> Answer {
    let origins = &policy.cors_allowed_origins;
    if let Some(reply) = cors::not_a_post(session.req_header(), origins) {
        return Answer {
            reply: cors::with_cors(reply, session.req_header(), origins),
            caller: None,
            result: None,
        };
    }
    let body = read_body(session).await;
    let req = session.req_header();
    let (outcome, caller) = refresh(req, body.as_deref(), policy, &holders).await;
    let (reply, result) = match outcome {
        Ok(reply) => (reply, Some(RefreshResult::Extended)),
        Err(rejection) => (rejection.into(), RefreshResult::of(rejection)),
    };
    Answer {
        reply: cors::with_cors(reply, req, origins),
        caller,
        result,
    }
}

async fn refresh(
    req: &RequestHeader,
    body: Option<&[u8]>,
    policy: &Policy,
    holders: &Holders<'_>,
) -> (Result<Reply, Rejection>, Option<Arc<Caller>>) {
    let Some(handle) = body.and_then(handle_of) else {
        return (Err(Rejection::NoSession), None);
    };
    let authenticated = match require_bearer(req, &policy.authenticators()).await {
        Ok(authenticated) => authenticated,
        Err(rejection) => return (Err(rejection), None),
    };
    let caller = authenticated.caller.clone();
    let extended = extend(&handle, &authenticated, policy, holders).await;
    (extended, Some(caller))
}

/// The session handle of a refresh's body, if it names one.
pub fn handle_of(body: &[u8]) -> Option<String> {
    let request: RefreshRequest = serde_json::from_slice(body).ok()?;
    let valid = !request.session.is_empty()
        && request.session.len() <= MAX_HANDLE
        && request
            .session
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid.then_some(request.session)
}

/// Extends the socket: here when this replica holds it, else through the shared store. A
/// socket held here that resumes gets its next resume token (one held at another replica
/// cannot: a resume must reach the replica that holds it).
async fn extend(
    handle: &str,
    authenticated: &Authenticated,
    policy: &Policy,
    holders: &Holders<'_>,
) -> Result<Reply, Rejection> {
    let Holders {
        sessions,
        shared,
        resumes,
    } = *holders;
    let identity = &authenticated.caller.identity;
    let (who, told) = (identity.who(), identity.told());
    let login_ends = authenticated.login_expires_at + policy.leeway_seconds;
    let now_ms = clock::unix_now_ms();
    let at_ms = login_ends * 1000;
    let mut refreshed = sessions.refresh(handle, &who, &told, at_ms, now_ms);
    match (refreshed, shared) {
        (Refreshed::Unknown, Some(shared)) => {
            refreshed = shared
                .refresh(handle, &who, &told, at_ms, now_ms)
                .await
                .map_err(|_| Rejection::StoreUnavailable)?;
        }
        (Refreshed::Extended(_), Some(shared)) => {
            if let Err(e) = shared.extended_here(handle, at_ms, now_ms).await {
                log::warn!("a refreshed session's record keeps its old expiry: {e}");
            }
        }
        _ => {}
    }
    let closes_at = match refreshed {
        Refreshed::Extended(at_ms) => at_ms.map_or(login_ends, |ms| ms / 1000),
        Refreshed::Unknown => return Err(Rejection::UnknownSession),
        Refreshed::Mismatch => return Err(Rejection::SessionMismatch),
        Refreshed::IdentityChanged => return Err(Rejection::IdentityChanged),
        Refreshed::TooMany(seconds) => return Err(Rejection::TooManyRefreshes(seconds)),
    };
    let mut body = serde_json::json!({
        "session": handle,
        "expires_at": closes_at,
        "expires_in": closes_at.saturating_sub(now_ms / 1000),
    });
    if let Some(token) = resumes.renew(handle) {
        body["resume"] = token.into();
    }
    Ok(Reply::new(200, Some(body), Vec::new()))
}

/// The request body, when it fits `MAX_BODY`.
async fn read_body(session: &mut Session) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = session.read_request_body().await.ok()? {
        if body.len() + chunk.len() > MAX_BODY {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    Some(body)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::handle_of;

    #[test]
    fn a_body_names_a_session_or_nothing() {
        assert_eq!(
            handle_of(br#"{"session":"abc-_9"}"#).as_deref(),
            Some("abc-_9")
        );
        assert_eq!(
            handle_of(br#"{"session":"abc","extra":1}"#).as_deref(),
            Some("abc")
        );
        for refused in [
            &br#"{}"#[..],
            br#"{"session":""}"#,
            br#"{"session":7}"#,
            br#"{"session":"a b"}"#,
            br#"{"session":"a/../b"}"#,
            b"not json",
        ] {
            assert_eq!(
                handle_of(refused),
                None,
                "{}",
                String::from_utf8_lossy(refused)
            );
        }
        let long = format!(r#"{{"session":"{}"}}"#, "a".repeat(65));
        assert_eq!(handle_of(long.as_bytes()), None);
    }

    proptest! {
        /// Whatever the body, a handle read from it is URL-safe and bounded.
        #[test]
        fn any_handle_read_is_url_safe_and_bounded(body in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Some(handle) = handle_of(&body) {
                prop_assert!(!handle.is_empty() && handle.len() <= 64);
                prop_assert!(handle.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            }
        }
    }
}
