//! Who is calling: bearer JWTs (`jwt`), their keys (`keys`, `jwks`) and the reasons a
//! credential is refused (`error`). Authentication verifies and says who; what the upstream
//! is told about the caller is `identity`'s.

pub mod claims;
pub mod compact;
pub mod error;
pub mod jwks;
pub mod jwt;
pub mod keys;

use std::collections::BTreeMap;

use http::header::AUTHORIZATION;
use pingora::http::RequestHeader;

pub use error::{AuthError, TokenProblem};

/// A caller whose credential verified. Holds only the claims the forward headers need,
/// because a ticket carries it too and must stay short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Which issuer vouched for it (`iss`), as a short digest: a session refresh must come
    /// from the same issuer, and a ticket carries these 8 bytes, not the issuer's URL.
    pub issuer: IssuerTag,
    pub subject: String,
    /// Configured claim name -> its value as a header-ready string.
    pub claims: BTreeMap<String, String>,
    /// Claims STOMP destination patterns name -> their strings (a ticket carries them too, so
    /// they must stay few and short).
    pub lists: BTreeMap<String, Vec<String>>,
}

impl Identity {
    /// Who this is, as a digest: the issuer and the subject. A session refresh must come from
    /// the same caller.
    pub fn who(&self) -> [u8; 32] {
        let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        context.update(&self.issuer.0);
        context.update(self.subject.as_bytes());
        digest_bytes(context)
    }

    /// What the upstream was told besides the subject, as a digest: every kept claim, name
    /// and value, each preceded by its length (so no two maps share an encoding), in the
    /// map's sorted order. A refresh whose claims differ cannot be accepted: the upstream
    /// learnt them once, at the upgrade.
    pub fn told(&self) -> [u8; 32] {
        let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for (name, value) in &self.claims {
            for part in [name, value] {
                context.update(&(part.len() as u64).to_be_bytes());
                context.update(part.as_bytes());
            }
        }
        digest_bytes(context)
    }
}

fn digest_bytes(context: aws_lc_rs::digest::Context) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(context.finish().as_ref());
    bytes
}

/// The first 8 bytes of the SHA-256 of an issuer's `iss`: enough to tell apart the handful of
/// issuers one config accepts, small enough for a ticket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct IssuerTag(pub [u8; 8]);

impl IssuerTag {
    pub fn of(issuer: &str) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, issuer.as_bytes());
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&digest.as_ref()[..8]);
        IssuerTag(tag)
    }
}

/// The login a credential stands for: until when it is valid (`exp`, Unix seconds) and when
/// it was issued (`iat`, when the token has one). A WebSocket lives no longer than its login,
/// and a revocation refuses logins issued before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Login {
    pub expires_at: u64,
    pub issued_at: Option<u64>,
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

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use pingora::http::RequestHeader;

    use super::*;

    fn with_authorization(values: &[&[u8]]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        for value in values {
            let value = HeaderValue::from_bytes(value).expect("a header value");
            req.append_header(AUTHORIZATION, value).expect("header");
        }
        req
    }

    fn read(values: &[&[u8]]) -> Result<Option<String>, AuthError> {
        bearer_token(&with_authorization(values)).map(|t| t.map(str::to_string))
    }

    #[test]
    fn the_bearer_token_is_read_and_anything_else_is_told_apart() {
        assert_eq!(read(&[b"Bearer a.b.c"]).ok(), Some(Some("a.b.c".into())));
        assert_eq!(
            read(&[b"bearer \ta.b.c\t"]).ok(),
            Some(Some("a.b.c".into()))
        );
        assert_eq!(read(&[b"Basic dXNlcjpwdw=="]).ok(), Some(None));
        assert_eq!(read(&[]).ok(), Some(None));
        for malformed in [
            &[&b"Bearer "[..]][..],
            &[b"Bearer a.b.c", b"Bearer d.e.f"],
            // obs-text: a byte a header value may hold, never a token's.
            &[b"Bearer a.b\xe9.c"],
        ] {
            assert!(
                matches!(
                    read(malformed),
                    Err(AuthError::Token(TokenProblem::Malformed))
                ),
                "{malformed:?}"
            );
        }
    }

    fn identity(issuer: &str, subject: &str, claims: &[(String, String)]) -> Identity {
        Identity {
            issuer: IssuerTag::of(issuer),
            subject: subject.to_string(),
            claims: claims.iter().cloned().collect(),
            lists: Default::default(),
        }
    }

    proptest::proptest! {
        /// The refresh rule's digests: `told` is equal exactly when the forwarded claims are
        /// (names and values, in any order, with no two maps sharing an encoding), and `who`
        /// exactly when issuer and subject are; neither depends on the other.
        #[test]
        fn the_digests_are_equal_exactly_when_the_identities_are(
            a in proptest::collection::btree_map("[a-c,:\"]{0,3}", "[a-c,:\"]{0,3}", 0..4),
            b in proptest::collection::btree_map("[a-c,:\"]{0,3}", "[a-c,:\"]{0,3}", 0..4),
            subjects in ("[ab]{1,2}", "[ab]{1,2}"),
            issuers in ("[xy]", "[xy]"),
        ) {
            let (a, b): (Vec<_>, Vec<_>) = (a.into_iter().collect(), b.into_iter().collect());
            let (first, second) = (identity(&issuers.0, &subjects.0, &a), identity(&issuers.1, &subjects.1, &b));
            proptest::prop_assert_eq!(first.told() == second.told(), first.claims == second.claims);
            proptest::prop_assert_eq!(
                first.who() == second.who(),
                issuers.0 == issuers.1 && subjects.0 == subjects.1
            );
            let mut reversed = a.clone();
            reversed.reverse();
            proptest::prop_assert_eq!(identity("x", "a", &reversed).told(), identity("x", "a", &a).told());
        }
    }
}
