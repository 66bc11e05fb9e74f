//! Verification keys: read and parsed once, when the config loads (or a JWK Set is fetched),
//! so a malformed key is a config error instead of a 500 on the first request.
//!
//! Errors here never carry key material: they say what kind of thing was wrong and where.

use std::path::Path;
use std::str::FromStr;

use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// One key a token may be verified with.
#[derive(Clone)]
pub struct VerifyKey {
    /// `kid` from a JWK Set; static keys have none and are tried for any `kid`.
    pub kid: Option<String>,
    /// The JWK's own `alg`, when it pins one; otherwise any allowed algorithm of the family.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
    /// An HMAC secret's length in bytes, which decides the algorithms it is strong enough for.
    pub secret_len: Option<usize>,
}

impl VerifyKey {
    /// Whether this key may verify a token signed with `alg`: same family, the JWK's own
    /// `alg` (when it has one) agrees, and an HMAC secret is at least as long as the hash.
    /// The family check is what stops an HS256 token being checked against an RSA public key
    /// used as an HMAC secret.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        self.key.family() == alg.family()
            && self.alg.is_none_or(|pinned| pinned == alg)
            && hmac_min_bytes(alg).is_none_or(|min| self.secret_len.unwrap_or(0) >= min)
    }
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
        key: DecodingKey::from_secret(secret),
        secret_len: Some(secret.len()),
    }
}

/// Parses a PEM public key of any supported kind; the PEM's own OID decides the family.
pub fn from_pem(pem: &[u8], path: &Path) -> Result<VerifyKey, KeyError> {
    let key = DecodingKey::from_rsa_pem(pem)
        .or_else(|_| DecodingKey::from_ec_pem(pem))
        .or_else(|_| DecodingKey::from_ed_pem(pem))
        .map_err(|_| KeyError::Pem {
            path: path.display().to_string(),
        })?;
    Ok(VerifyKey {
        kid: None,
        alg: None,
        key,
        secret_len: None,
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
    Some(VerifyKey {
        kid: jwk.common.key_id,
        alg,
        key,
        secret_len,
    })
}
