//! Minting test JWTs with the fixture keys, and JWK Sets of their public halves.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::fixtures;

pub const ISSUER: &str = "https://auth.test/";
pub const AUDIENCE: &str = "chat-api";

pub fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// Claims that pass every check; tests change one thing at a time.
pub fn valid_claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "email": "alice@example.com",
        "iat": now(),
        "exp": now() + 300,
    })
}

fn read(name: &str) -> Vec<u8> {
    let bytes = std::fs::read(fixtures().join(name)).expect("fixture");
    let trimmed = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    trimmed.to_vec()
}

/// The fixture private key for an algorithm; `rsa2` selects the second RSA key.
pub fn encoding_key(alg: Algorithm, file: &str) -> EncodingKey {
    let pem = read(file);
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => EncodingKey::from_secret(&pem),
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem).expect("ec key"),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem).expect("ed key"),
        _ => EncodingKey::from_rsa_pem(&pem).expect("rsa key"),
    }
}

/// The default fixture key file of an algorithm's family.
pub fn key_file(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => "hs.secret",
        Algorithm::ES256 => "ec256.key.pem",
        Algorithm::ES384 => "ec384.key.pem",
        Algorithm::EdDSA => "ed25519.key.pem",
        _ => "rsa.key.pem",
    }
}

pub fn mint(alg: Algorithm, claims: &Value) -> String {
    mint_with(alg, key_file(alg), None, claims)
}

pub fn mint_with(alg: Algorithm, key_file: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    let token = jsonwebtoken::encode(&header, claims, &encoding_key(alg, key_file)).expect("sign");
    super::secrets::remember(&token);
    token
}

/// A JWK Set with the public half of each (algorithm, key file, kid).
pub fn jwks(keys: &[(Algorithm, &str, &str)]) -> String {
    let keys = keys
        .iter()
        .map(|(alg, file, kid)| {
            let mut jwk = Jwk::from_encoding_key(&encoding_key(*alg, file), *alg).expect("jwk");
            jwk.common.key_id = Some(kid.to_string());
            jwk
        })
        .collect();
    serde_json::to_string(&JwkSet { keys }).expect("jwks json")
}

/// A token with the given header and payload JSON and a junk signature (for `alg: none`
/// and malformed-token tests).
pub fn unsigned(header: &Value, payload: &Value) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        b64.encode(header.to_string()),
        b64.encode(payload.to_string())
    )
}
