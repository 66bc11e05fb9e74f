//! The JWS compact form (`header.payload.signature`, RFC 7515 §7.1), read once per token:
//! split at its two dots, the header decoded into the three fields ticketgate acts on, the
//! signature and payload decoded only when they are needed.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::error::TokenProblem;

pub struct Compact<'a> {
    /// `header.payload`, what the signature covers.
    pub signing_input: &'a str,
    payload: &'a str,
    signature: &'a str,
    pub header: Header,
}

/// The protected header's fields that matter here; any others are ignored, as RFC 7515
/// lets a verifier do unless `crit` names them.
#[derive(Deserialize)]
pub struct Header {
    pub alg: Algorithm,
    pub kid: Option<String>,
    /// Present at all means "understand these extensions or refuse the token".
    crit: Option<IgnoredAny>,
}

impl Header {
    pub fn has_crit(&self) -> bool {
        self.crit.is_some()
    }
}

impl<'a> Compact<'a> {
    /// Exactly three base64url parts; a header that is not a JSON object with a known `alg`
    /// (`none` is not one) is malformed.
    pub fn parse(token: &'a str) -> Result<Self, TokenProblem> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenProblem::Malformed);
        };
        let header: Header =
            serde_json::from_slice(&decode(header)?).map_err(|_| TokenProblem::Malformed)?;
        Ok(Compact {
            signing_input: &token[..token.len() - signature.len() - 1],
            payload,
            signature,
            header,
        })
    }

    pub fn signature(&self) -> Result<Vec<u8>, TokenProblem> {
        decode(self.signature)
    }

    /// The payload's JSON bytes (not yet trusted unless the signature verified).
    pub fn payload(&self) -> Result<Vec<u8>, TokenProblem> {
        decode(self.payload)
    }
}

fn decode(part: &str) -> Result<Vec<u8>, TokenProblem> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenProblem::Malformed)
}
