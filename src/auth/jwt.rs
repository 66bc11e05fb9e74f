//! Bearer JWT verification. The issuer entry picked by the token's `iss` decides which
//! algorithms and keys apply; the token's header only chooses among what that entry allows,
//! so `alg: none` and HS256-signed-with-the-RSA-public-key never verify.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;

use super::claims::{ClaimRules, Claims};
use super::compact::Compact;
use super::error::TokenProblem;
use super::jwks::IssuerKeys;
use super::keys::VerifyKey;
use super::{Identity, IssuerTag, Login, MAX_TOKEN_BYTES};
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
    /// The claims an `Identity` keeps (those the forward headers carry); the rest are dropped.
    kept_claims: Vec<String>,
    /// The claims an `Identity` keeps as lists of strings (those STOMP patterns name).
    listed_claims: Vec<String>,
}

/// A token that passed every check: who it names, the login it stands for, and the key set
/// that vouched for it.
pub struct Verified {
    pub identity: Identity,
    pub login: Login,
    pub keys: KeySetVersion,
}

/// Which issuer's key set verified a token, and which version of it (`IssuerKeys::generation`):
/// a cached verification holds only while that set is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySetVersion {
    issuer: usize,
    generation: u64,
}

impl KeySetVersion {
    /// The `generation` of the key set of the verifier's `issuer`-th issuer.
    pub const fn new(issuer: usize, generation: u64) -> Self {
        KeySetVersion { issuer, generation }
    }
}

struct Issuer {
    keys: Arc<IssuerKeys>,
    tag: IssuerTag,
    algorithms: Vec<Algorithm>,
    rules: ClaimRules,
}

impl JwtVerifier {
    pub fn new(
        config: &JwtConfig,
        kept_claims: Vec<String>,
        listed_claims: Vec<String>,
        metrics: &Arc<Metrics>,
    ) -> Self {
        let issuers = config
            .issuers
            .iter()
            .map(|issuer| Issuer {
                tag: IssuerTag::of(&issuer.issuer),
                keys: Arc::new(IssuerKeys::new(
                    &issuer.issuer,
                    issuer.static_keys.clone(),
                    issuer.jwks_url.clone(),
                    issuer.jwks_refresh,
                    metrics.clone(),
                )),
                algorithms: issuer.algorithms.clone(),
                rules: ClaimRules {
                    issuer: issuer.issuer.clone(),
                    audiences: issuer.audiences.clone(),
                    leeway_seconds: config.leeway_seconds,
                },
            })
            .collect();
        JwtVerifier {
            issuers,
            kept_claims,
            listed_claims,
        }
    }

    /// Whether the key set that verified a token is still the one in force.
    pub fn is_current(&self, keys: KeySetVersion) -> bool {
        self.issuers
            .get(keys.issuer)
            .is_some_and(|issuer| issuer.keys.generation() == keys.generation)
    }

    /// The key sets of every issuer, for the background refresh and for readiness.
    pub fn issuer_keys(&self) -> impl Iterator<Item = &Arc<IssuerKeys>> {
        self.issuers.iter().map(|i| &i.keys)
    }

    /// The full check of `token` at `now` (Unix seconds): the signature first, so nothing in
    /// the payload is believed (beyond the `iss` that picks among several issuers) before it
    /// verifies. With several issuers the claims are read once, before the signature (the
    /// `iss` among them picks the issuer); with one, after it.
    pub async fn verify(&self, token: &str, now: u64) -> Result<Verified, TokenProblem> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenProblem::TooLarge);
        }
        let compact = Compact::parse(token)?;
        if compact.header.has_crit() {
            return Err(TokenProblem::CriticalHeader);
        }
        let alg = compact.header.alg;
        let early_payload = match self.issuers.len() {
            1 => None,
            _ => Some(compact.payload()?),
        };
        let early_claims = early_payload
            .as_deref()
            .map(|payload| Claims::read_listing(payload, &self.kept_claims, &self.listed_claims))
            .transpose()?;
        let index = self.issuer_for(early_claims.as_ref())?;
        let issuer = &self.issuers[index];
        let keys_version = KeySetVersion {
            issuer: index,
            generation: issuer.keys.generation(),
        };
        if !issuer.algorithms.contains(&alg) {
            return Err(TokenProblem::AlgorithmNotAllowed);
        }
        let keys = issuer
            .keys
            .candidates(compact.header.kid.as_deref(), alg)
            .await;
        if keys.is_empty() {
            return Err(TokenProblem::UnknownKey);
        }
        let signature = compact.signature()?;
        let message = compact.signing_input.as_bytes();
        if !keys
            .iter()
            .any(|key| key.verifies(alg, message, &signature))
        {
            return Err(TokenProblem::BadSignature);
        }
        let late_payload;
        let claims = match early_claims {
            Some(claims) => claims,
            None => {
                late_payload = compact.payload()?;
                Claims::read_listing(&late_payload, &self.kept_claims, &self.listed_claims)?
            }
        };
        issuer.rules.check(&claims, now)?;
        Ok(verified(claims, issuer.tag, keys_version))
    }

    /// With one issuer configured, that one (its rules then check `iss`); with several, the
    /// one the token's unverified `iss` (in `claims`, read for this) names. Nothing is trusted
    /// before the signature verifies against that issuer's keys.
    /// Returns the issuer's index.
    fn issuer_for(&self, claims: Option<&Claims>) -> Result<usize, TokenProblem> {
        let claimed = match (self.issuers.as_slice(), claims) {
            ([_], _) => return Ok(0),
            (_, Some(claims)) => claims.issuer().ok_or(TokenProblem::MissingClaim)?,
            (_, None) => return Err(TokenProblem::WrongIssuer),
        };
        self.issuers
            .iter()
            .position(|i| i.keys.issuer() == claimed)
            .ok_or(TokenProblem::WrongIssuer)
    }
}

fn verified(claims: Claims, issuer: IssuerTag, keys: KeySetVersion) -> Verified {
    let login = Login {
        expires_at: claims.expires_at(),
        issued_at: claims.issued_at(),
    };
    Verified {
        identity: Identity {
            issuer,
            subject: claims.sub.unwrap_or_default().into_owned(),
            claims: claims.kept.into_iter().collect(),
            lists: claims.lists.into_iter().collect(),
        },
        login,
        keys,
    }
}
