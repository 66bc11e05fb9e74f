//! Verification keys: read and parsed once, when the config loads (or a JWK Set is fetched),
//! so a malformed key is a config error instead of a 500 on the first request.
//!
//! Errors here never carry key material: they say what kind of thing was wrong and where.

use std::path::Path;
use std::str::FromStr;

use aws_lc_rs::hmac;
use aws_lc_rs::signature::{self as sig, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};

/// One key a token may be verified with.
#[derive(Clone)]
pub struct VerifyKey {
    /// `kid` from a JWK Set; static keys have none and are tried for any `kid`.
    pub kid: Option<String>,
    /// The JWK's own `alg`, when it pins one; otherwise any allowed algorithm of the family.
    pub alg: Option<Algorithm>,
    family: AlgorithmFamily,
    /// The key made ready once for each algorithm of its family it can check (an EC key only
    /// for its own curve). Parsing an RSA key costs more than decoding the rest of a token, so
    /// it is not done per token.
    checks: Vec<(Algorithm, Check)>,
    /// An HMAC secret's length in bytes, which decides the algorithms it is strong enough for.
    pub secret_len: Option<usize>,
}

#[derive(Clone)]
enum Check {
    Hmac(Box<hmac::Key>),
    Public(ParsedPublicKey),
}

impl VerifyKey {
    /// `None` when the key can check no algorithm of its family (a malformed key, an EC key
    /// on another curve).
    fn new(
        kid: Option<String>,
        alg: Option<Algorithm>,
        key: &DecodingKey,
        secret_len: Option<usize>,
    ) -> Option<Self> {
        let family = key.family();
        let checks: Vec<(Algorithm, Check)> = family_algorithms(family)
            .iter()
            .filter_map(|alg| Some((*alg, check(*alg, key.kind())?)))
            .collect();
        (!checks.is_empty()).then_some(VerifyKey {
            kid,
            alg,
            family,
            checks,
            secret_len,
        })
    }

    /// Whether this key may verify a token signed with `alg`: same family, the JWK's own
    /// `alg` (when it has one) agrees, and an HMAC secret is at least as long as the hash.
    /// The family check is what stops an HS256 token being checked against an RSA public key
    /// used as an HMAC secret.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        self.family == alg.family()
            && self.alg.is_none_or(|pinned| pinned == alg)
            && hmac_min_bytes(alg).is_none_or(|min| self.secret_len.unwrap_or(0) >= min)
    }

    /// Whether `signature` is this key's `alg` signature of `message` (the JWS signing input).
    /// HMAC tags are compared in constant time.
    pub fn verifies(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        self.checks
            .iter()
            .find(|(checked, _)| *checked == alg)
            .is_some_and(|(_, check)| match check {
                Check::Hmac(key) => hmac::verify(key, message, signature).is_ok(),
                Check::Public(key) => key.verify_sig(message, signature).is_ok(),
            })
    }
}

fn family_algorithms(family: AlgorithmFamily) -> &'static [Algorithm] {
    use Algorithm::*;
    match family {
        AlgorithmFamily::Hmac => &[HS256, HS384, HS512],
        AlgorithmFamily::Rsa => &[RS256, RS384, RS512, PS256, PS384, PS512],
        AlgorithmFamily::Ec => &[ES256, ES384],
        AlgorithmFamily::Ed => &[EdDSA],
    }
}

/// The same aws-lc-rs algorithms jsonwebtoken's aws-lc backend verifies with (RSA keys of
/// 2048 to 8192 bits, fixed-length ECDSA signatures), with the key parsed here once.
fn check(alg: Algorithm, key: &DecodingKeyKind) -> Option<Check> {
    if let Some(hash) = hmac_hash(alg) {
        return match key {
            DecodingKeyKind::SecretOrDer(secret) => Some(hmac_check(hash, secret)),
            DecodingKeyKind::RsaModulusExponent { .. } => None,
        };
    }
    let public: &'static dyn sig::VerificationAlgorithm = match alg {
        Algorithm::RS256 => return rsa_check(&sig::RSA_PKCS1_2048_8192_SHA256, key),
        Algorithm::RS384 => return rsa_check(&sig::RSA_PKCS1_2048_8192_SHA384, key),
        Algorithm::RS512 => return rsa_check(&sig::RSA_PKCS1_2048_8192_SHA512, key),
        Algorithm::PS256 => return rsa_check(&sig::RSA_PSS_2048_8192_SHA256, key),
        Algorithm::PS384 => return rsa_check(&sig::RSA_PSS_2048_8192_SHA384, key),
        Algorithm::PS512 => return rsa_check(&sig::RSA_PSS_2048_8192_SHA512, key),
        Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
        Algorithm::EdDSA => &sig::ED25519,
        _ => return None,
    };
    match key {
        DecodingKeyKind::SecretOrDer(bytes) => {
            ParsedPublicKey::new(public, bytes).ok().map(Check::Public)
        }
        DecodingKeyKind::RsaModulusExponent { .. } => None,
    }
}

fn hmac_hash(alg: Algorithm) -> Option<hmac::Algorithm> {
    match alg {
        Algorithm::HS256 => Some(hmac::HMAC_SHA256),
        Algorithm::HS384 => Some(hmac::HMAC_SHA384),
        Algorithm::HS512 => Some(hmac::HMAC_SHA512),
        _ => None,
    }
}

fn hmac_check(hash: hmac::Algorithm, secret: &[u8]) -> Check {
    Check::Hmac(Box::new(hmac::Key::new(hash, secret)))
}

fn rsa_check(alg: &'static sig::RsaParameters, key: &DecodingKeyKind) -> Option<Check> {
    let parsed = match key {
        DecodingKeyKind::SecretOrDer(der) => ParsedPublicKey::new(alg, der),
        DecodingKeyKind::RsaModulusExponent { n, e } => {
            RsaPublicKeyComponents { n, e }.to_parsed_public_key(alg)
        }
    };
    parsed.ok().map(Check::Public)
}

/// RFC 7518 §3.2: an HMAC key shorter than the hash output weakens it; such keys are
/// refused, not merely warned about.
pub fn hmac_min_bytes(alg: Algorithm) -> Option<usize> {
    match alg {
        Algorithm::HS256 => Some(32),
        Algorithm::HS384 => Some(48),
        Algorithm::HS512 => Some(64),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {reason}")]
    Read {
        path: String,
        reason: std::io::ErrorKind,
    },
    #[error("{path} is empty")]
    Empty { path: String },
    #[error("{path} is not a PEM RSA, EC (P-256/P-384) or Ed25519 public key")]
    Pem { path: String },
    #[error("not a JWK Set (JSON error at line {line}, column {column})")]
    JwksJson { line: usize, column: usize },
    #[error(
        "JWK Set has no key ticketgate can use (supported: RSA, EC P-256/P-384, OKP Ed25519, oct)"
    )]
    JwksEmpty,
}

/// Reads a key or secret file as raw bytes, ignoring one trailing `\n` or `\r\n` (editors
/// add one; a secret that really ends in a newline is vanishingly rare).
pub fn read_key_file(path: &Path) -> Result<Vec<u8>, KeyError> {
    let shown = path.display().to_string();
    let mut bytes = std::fs::read(path).map_err(|e| KeyError::Read {
        path: shown.clone(),
        reason: e.kind(),
    })?;
    if bytes.ends_with(b"\r\n") {
        bytes.truncate(bytes.len() - 2);
    } else if bytes.ends_with(b"\n") {
        bytes.truncate(bytes.len() - 1);
    }
    if bytes.is_empty() {
        return Err(KeyError::Empty { path: shown });
    }
    Ok(bytes)
}

pub fn from_secret(secret: &[u8]) -> VerifyKey {
    VerifyKey {
        kid: None,
        alg: None,
        family: AlgorithmFamily::Hmac,
        checks: family_algorithms(AlgorithmFamily::Hmac)
            .iter()
            .filter_map(|alg| Some((*alg, hmac_check(hmac_hash(*alg)?, secret))))
            .collect(),
        secret_len: Some(secret.len()),
    }
}

/// Parses a PEM public key of any supported kind; the PEM's own OID decides the family.
pub fn from_pem(pem: &[u8], path: &Path) -> Result<VerifyKey, KeyError> {
    let key = DecodingKey::from_rsa_pem(pem)
        .or_else(|_| DecodingKey::from_ec_pem(pem))
        .or_else(|_| DecodingKey::from_ed_pem(pem))
        .ok()
        .and_then(|key| VerifyKey::new(None, None, &key, None));
    key.ok_or_else(|| KeyError::Pem {
        path: path.display().to_string(),
    })
}

/// Parses a JWK Set, keeping every key ticketgate can use and skipping the others (an
/// identity provider may publish encryption keys or key types we do not verify with).
pub fn from_jwk_set(json: &[u8]) -> Result<Vec<VerifyKey>, KeyError> {
    #[derive(serde::Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let set: RawSet = serde_json::from_slice(json).map_err(|e| KeyError::JwksJson {
        line: e.line(),
        column: e.column(),
    })?;
    let keys: Vec<VerifyKey> = set.keys.into_iter().filter_map(usable_jwk).collect();
    if keys.is_empty() {
        return Err(KeyError::JwksEmpty);
    }
    Ok(keys)
}

fn usable_jwk(raw: serde_json::Value) -> Option<VerifyKey> {
    let jwk: Jwk = serde_json::from_value(raw).ok()?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let alg = match jwk.common.key_algorithm {
        Some(declared) => Some(Algorithm::from_str(&declared.to_string()).ok()?),
        None => None,
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    let secret_len = match &jwk.algorithm {
        AlgorithmParameters::OctetKey(oct) => Some(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(oct.value.trim_end_matches('='))
                .ok()?
                .len(),
        ),
        _ => None,
    };
    VerifyKey::new(jwk.common.key_id, alg, &key, secret_len)
}
