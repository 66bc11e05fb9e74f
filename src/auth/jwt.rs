//! Bearer JWT verification. The issuer entry picked by the token's `iss` decides which
//! algorithms and keys apply; the token's header only chooses among what that entry allows,
//! so `alg: none` and HS256-signed-with-the-RSA-public-key never verify.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use super::error::TokenProblem;
use super::jwks::IssuerKeys;
use super::keys::VerifyKey;
use super::{Identity, Login, MAX_TOKEN_BYTES};
use crate::metrics::Metrics;

/// The `jwt:` settings.
pub struct JwtConfig {
    pub leeway_seconds: u64,
    /// Verified tokens remembered until their `exp`; 0 turns the cache off.
    pub cache_size: usize,
    pub issuers: Vec<IssuerConfig>,
}

pub struct IssuerConfig {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    /// Keys from `secret_file`, `public_key_files` and `jwks_file`.
    pub static_keys: Vec<VerifyKey>,
    pub jwks_url: Option<String>,
    pub jwks_refresh: Duration,
}

pub struct JwtVerifier {
    issuers: Vec<Issuer>,
    leeway_seconds: u64,
    /// The claims an `Identity` keeps (those the forward headers carry); the rest are dropped.
    kept_claims: Vec<String>,
}

/// A token that passed every check: who it names, and the login it stands for.
pub struct Verified {
    pub identity: Identity,
    pub login: Login,
}

struct Issuer {
    keys: Arc<IssuerKeys>,
    /// One validation per allowed algorithm: jsonwebtoken refuses a validation whose
    /// algorithms span families, and pinning the exact algorithm is what we want anyway.
    validations: Vec<(Algorithm, Validation)>,
}

impl Issuer {
    fn validation(&self, alg: Algorithm) -> Option<&Validation> {
        self.validations
            .iter()
            .find_map(|(allowed, validation)| (*allowed == alg).then_some(validation))
    }
}

/// The claims ticketgate reads itself; the rest are kept for the claim headers.
#[derive(Deserialize)]
struct Claims {
    /// Optional here so that a token without `sub` is reported as a missing claim by the
    /// validation rather than as malformed JSON.
    sub: Option<String>,
    exp: Option<serde_json::Value>,
    iat: Option<serde_json::Value>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct UnverifiedIssuer {
    iss: Option<String>,
}

impl JwtVerifier {
    pub fn new(config: &JwtConfig, kept_claims: Vec<String>, metrics: &Arc<Metrics>) -> Self {
        let issuers = config
            .issuers
            .iter()
            .map(|issuer| Issuer {
                keys: Arc::new(IssuerKeys::new(
                    &issuer.issuer,
                    issuer.static_keys.clone(),
                    issuer.jwks_url.clone(),
                    issuer.jwks_refresh,
                    metrics.clone(),
                )),
                validations: issuer
                    .algorithms
                    .iter()
                    .map(|alg| (*alg, validation(issuer, *alg, config.leeway_seconds)))
                    .collect(),
            })
            .collect();
        JwtVerifier {
            issuers,
            leeway_seconds: config.leeway_seconds,
            kept_claims,
        }
    }

    /// The key sets of every issuer, for the background refresh and for readiness.
    pub fn issuer_keys(&self) -> impl Iterator<Item = &Arc<IssuerKeys>> {
        self.issuers.iter().map(|i| &i.keys)
    }

    /// The full check of `token` at `now` (Unix seconds).
    pub async fn verify(&self, token: &str, now: u64) -> Result<Verified, TokenProblem> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenProblem::TooLarge);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenProblem::Malformed)?;
        if header.crit.is_some() {
            return Err(TokenProblem::CriticalHeader);
        }
        let issuer = self.issuer_for(token)?;
        let validation = issuer
            .validation(header.alg)
            .ok_or(TokenProblem::AlgorithmNotAllowed)?;
        let keys = issuer
            .keys
            .candidates(header.kid.as_deref(), header.alg)
            .await;
        if keys.is_empty() {
            return Err(TokenProblem::UnknownKey);
        }
        for key in keys {
            match jsonwebtoken::decode::<Claims>(token, &key.key, validation) {
                Ok(data) => return self.identity(data.claims, now),
                Err(e) if is_wrong_key(e.kind()) => continue,
                Err(e) => return Err(problem(e.kind())),
            }
        }
        Err(TokenProblem::BadSignature)
    }

    /// With one issuer configured, that one (its validation then checks `iss`); with
    /// several, the one the token's unverified `iss` names. Nothing is trusted before the
    /// signature verifies against that issuer's keys.
    fn issuer_for(&self, token: &str) -> Result<&Issuer, TokenProblem> {
        if let [only] = self.issuers.as_slice() {
            return Ok(only);
        }
        let claimed: UnverifiedIssuer = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| TokenProblem::Malformed)?;
        let claimed = claimed.iss.ok_or(TokenProblem::MissingClaim)?;
        self.issuers
            .iter()
            .find(|i| i.keys.issuer() == claimed)
            .ok_or(TokenProblem::WrongIssuer)
    }

    fn identity(&self, claims: Claims, now: u64) -> Result<Verified, TokenProblem> {
        let iat = claims
            .iat
            .as_ref()
            .map(|v| v.as_f64().ok_or(TokenProblem::Malformed));
        let issued_at = iat.transpose()?;
        if issued_at.is_some_and(|iat| iat > (now + self.leeway_seconds) as f64) {
            return Err(TokenProblem::IssuedInFuture);
        }
        // The validation already required a numeric `exp`, but accepts a token during the
        // second `exp` names; RFC 7519 §4.1.4 refuses it "on or after" that time, and so does
        // a WebSocket's close at `exp` + leeway: a login is over at the same moment for both.
        let expires_at = claims
            .exp
            .as_ref()
            .and_then(serde_json::Value::as_f64)
            .ok_or(TokenProblem::MissingClaim)? as u64;
        if now >= expires_at + self.leeway_seconds {
            return Err(TokenProblem::Expired);
        }
        let claims_for_headers = self
            .kept_claims
            .iter()
            .filter_map(|name| Some((name.clone(), header_text(claims.other.get(name)?))))
            .collect();
        let identity = Identity {
            subject: claims.sub.ok_or(TokenProblem::MissingClaim)?,
            claims: claims_for_headers,
        };
        Ok(Verified {
            identity,
            login: Login {
                expires_at,
                issued_at: issued_at.map(|iat| iat.max(0.0) as u64),
            },
        })
    }
}

/// Strings travel as they are; other JSON values in their compact JSON form.
fn header_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn validation(issuer: &IssuerConfig, alg: Algorithm, leeway_seconds: u64) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = leeway_seconds;
    validation.validate_nbf = true;
    validation.set_issuer(&[&issuer.issuer]);
    validation.set_audience(&issuer.audiences);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation
}

/// Errors that mean "not this key" (a signature that does not verify, or a key of the right
/// family but another size or curve): the next candidate key may still verify the token.
fn is_wrong_key(kind: &ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::InvalidSignature
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat
    )
}

fn problem(kind: &ErrorKind) -> TokenProblem {
    match kind {
        ErrorKind::ExpiredSignature => TokenProblem::Expired,
        ErrorKind::ImmatureSignature => TokenProblem::NotYetValid,
        ErrorKind::InvalidIssuer => TokenProblem::WrongIssuer,
        ErrorKind::InvalidAudience => TokenProblem::WrongAudience,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            TokenProblem::AlgorithmNotAllowed
        }
        ErrorKind::InvalidSignature => TokenProblem::BadSignature,
        ErrorKind::MissingRequiredClaim(_) => TokenProblem::MissingClaim,
        _ => TokenProblem::Malformed,
    }
}
