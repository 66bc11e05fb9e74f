//! How a verified caller's identity reaches the upstream: which headers carry the subject
//! and which claims. A leaf that authentication, forwarding and the config all read.

use bytes::Bytes;
use http::HeaderName;

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
}
