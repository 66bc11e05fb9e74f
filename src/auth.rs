//! Who is calling: bearer JWTs (`jwt`), their keys (`keys`, `jwks`) and the reasons a
//! credential is refused (`error`). `authenticate` is the one entry point the proxy calls.

pub mod cache;
pub mod error;
pub mod jwks;
pub mod jwt;
pub mod keys;

use std::collections::BTreeMap;

use bytes::Bytes;
use http::HeaderValue;
use http::header::AUTHORIZATION;
use pingora::http::RequestHeader;

pub use error::{AuthError, TokenProblem};

use crate::identity::ForwardConfig;

/// A caller whose credential verified. Holds only what the forward headers need, because a
/// ticket carries it too and must stay short.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    #[serde(rename = "s")]
    pub subject: String,
    /// Configured claim name -> its value as a header-ready string.
    #[serde(rename = "c", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, String>,
}

/// A verified caller, with the identity headers the upstream gets already built. Built once
/// per verified token (and kept in the token cache with it), so forwarding a request only
/// copies reference-counted header values.
#[derive(Debug)]
pub struct Caller {
    pub identity: Identity,
    /// Header spelling as configured, and value.
    pub headers: Vec<(Bytes, HeaderValue)>,
}

impl Caller {
    /// Refused when the subject is empty, or it or a forwarded claim cannot travel as a
    /// header value unchanged (control characters, or white space at either end, which
    /// HTTP parsers trim: `" admin"` would reach the upstream as `admin`). A request is never
    /// forwarded as authenticated without its identity, nor with a mangled one.
    pub fn new(identity: Identity, forward: &ForwardConfig) -> Result<Self, TokenProblem> {
        if identity.subject.is_empty() {
            return Err(TokenProblem::UnusableIdentity);
        }
        let subject = std::iter::once((&forward.subject_header, Some(&identity.subject)));
        let claims = forward
            .claim_headers
            .iter()
            .map(|(claim, header)| (header, identity.claims.get(claim)));
        let headers = subject
            .chain(claims)
            .filter_map(|(header, value)| Some((header, value?)))
            .map(|(header, value)| Ok((header.spelling.clone(), header_value(value)?)))
            .collect::<Result<_, TokenProblem>>()?;
        Ok(Caller { identity, headers })
    }
}

fn header_value(value: &str) -> Result<HeaderValue, TokenProblem> {
    let clean = !value.starts_with([' ', '\t'])
        && !value.ends_with([' ', '\t'])
        && !value.chars().any(|c| c.is_control() && c != '\t');
    clean
        .then(|| HeaderValue::from_bytes(value.as_bytes()).ok())
        .flatten()
        .ok_or(TokenProblem::UnusableIdentity)
}

/// A token longer than this is refused before any parsing: no real login JWT comes close,
/// and parsing attacker-sized input is how denial-of-service starts.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The bearer token of a request, if it sent one.
///
/// `Ok(None)` means no credentials at all (no `Authorization` header, or another scheme);
/// a header that claims to be Bearer but is unusable is an error.
pub fn bearer_token(req: &RequestHeader) -> Result<Option<&str>, AuthError> {
    let mut values = req.headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::Token(TokenProblem::Malformed));
    }
    if value.len() > MAX_TOKEN_BYTES + "Bearer ".len() {
        return Err(AuthError::Token(TokenProblem::TooLarge));
    }
    let value = value
        .to_str()
        .map_err(|_| AuthError::Token(TokenProblem::Malformed))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Token(TokenProblem::Malformed));
    }
    Ok(Some(token))
}
