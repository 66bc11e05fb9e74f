//! How a verified caller's identity reaches the upstream: which headers carry the subject
//! and which claims (`ForwardConfig`), the headers built once per verified token (`Caller`),
//! and the cache that keeps them until the token expires (`cache`).

pub mod cache;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::auth::{Identity, TokenProblem};

/// The `forward:` settings.
#[derive(Clone)]
pub struct ForwardConfig {
    pub subject_header: IdentityHeader,
    /// Claim name -> header.
    pub claim_headers: Vec<(String, IdentityHeader)>,
    pub forward_authorization: bool,
}

/// A header ticketgate sets from a verified identity: its name, for lookups and removal, and
/// its spelling as configured, which is how it goes on the wire (some legacy services match
/// header names case-sensitively).
#[derive(Clone)]
pub struct IdentityHeader {
    pub name: HeaderName,
    pub spelling: Bytes,
}

impl ForwardConfig {
    /// Every header name ticketgate sets from a verified identity; client copies are removed.
    pub fn identity_headers(&self) -> impl Iterator<Item = &HeaderName> {
        std::iter::once(&self.subject_header.name)
            .chain(self.claim_headers.iter().map(|(_, h)| &h.name))
    }

    /// The claims a verified identity must keep: those a header carries.
    pub fn claim_names(&self) -> Vec<String> {
        self.claim_headers
            .iter()
            .map(|(claim, _)| claim.clone())
            .collect()
    }
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
