//! Applies a route's `auth` rule to a request. Runs for every request the route matches,
//! upgrade or not: a WebSocket upgrade never skips authentication.

use pingora::http::RequestHeader;

use crate::auth::{self, AuthError, Identity, jwt::JwtVerifier};
use crate::config::AuthMode;

/// `Ok(None)` for `auth: none`; otherwise the verified caller or why they were refused.
pub async fn authenticate(
    mode: AuthMode,
    req: &RequestHeader,
    verifier: &JwtVerifier,
) -> Result<Option<Identity>, AuthError> {
    match mode {
        AuthMode::None => Ok(None),
        AuthMode::Jwt | AuthMode::Ticket => bearer(req, verifier).await.map(Some),
    }
}

async fn bearer(req: &RequestHeader, verifier: &JwtVerifier) -> Result<Identity, AuthError> {
    let token = auth::bearer_token(req)?.ok_or(AuthError::Missing)?;
    verifier.verify(token).await.map_err(AuthError::Token)
}
