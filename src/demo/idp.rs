//! A development identity provider — FOR THE DEMO ONLY. It logs anyone in without a
//! password and hands out short-lived HS256 login JWTs plus refresh tokens, so the demo can
//! show the whole flow, including a login that expires and is refreshed.

use std::collections::HashMap;
use std::sync::Mutex;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

pub const ISSUER: &str = "ticketgate-demo-idp";
pub const AUDIENCE: &str = "ticketgate-demo";
/// Login tokens live a minute, so a visitor sees one expire and get refreshed.
pub const TOKEN_TTL_SECONDS: i64 = 60;

pub struct DevIdp {
    key: EncodingKey,
    random: SystemRandom,
    /// Refresh token -> user.
    /// Refresh token -> the user and the lifetime of the access tokens it buys.
    refresh_tokens: Mutex<HashMap<String, (String, i64)>>,
}

#[derive(Debug, thiserror::Error)]
pub enum IdpError {
    #[error("cannot sign a token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    #[error("the system random generator failed")]
    Random,
}

impl DevIdp {
    pub fn new(secret: &[u8]) -> Self {
        DevIdp {
            key: EncodingKey::from_secret(secret),
            random: SystemRandom::new(),
            refresh_tokens: Mutex::new(HashMap::new()),
        }
    }

    /// A login: an access token for `user` valid `ttl` seconds (within 5 s and an hour; the
    /// page's short login shows ticketgate closing a socket when it ends), and a refresh token
    /// whose access tokens live as long.
    pub fn login(&self, user: &str, ttl: Option<i64>) -> Result<Value, IdpError> {
        let ttl = ttl.unwrap_or(TOKEN_TTL_SECONDS).clamp(5, 3600);
        let refresh_token = self.random_token()?;
        if let Ok(mut tokens) = self.refresh_tokens.lock() {
            tokens.insert(refresh_token.clone(), (user.to_string(), ttl));
        }
        Ok(json!({
            "access_token": self.token(user, ttl)?,
            "refresh_token": refresh_token,
            "expires_in": ttl,
        }))
    }

    /// A new access token for the holder of `refresh_token`, or `None` if it is unknown.
    pub fn refresh(&self, refresh_token: &str) -> Result<Option<Value>, IdpError> {
        let user = self
            .refresh_tokens
            .lock()
            .ok()
            .and_then(|tokens| tokens.get(refresh_token).cloned());
        let Some((user, ttl)) = user else {
            return Ok(None);
        };
        Ok(Some(json!({
            "access_token": self.token(&user, ttl)?,
            "expires_in": ttl,
        })))
    }

    /// An access token that expired a minute ago: the demo's "expire my login" button, so
    /// nobody has to wait to see the refresh.
    pub fn expired(&self, user: &str) -> Result<Value, IdpError> {
        Ok(json!({ "access_token": self.token(user, -TOKEN_TTL_SECONDS)? }))
    }

    fn token(&self, user: &str, ttl: i64) -> Result<String, IdpError> {
        let now = jsonwebtoken::get_current_timestamp() as i64;
        let claims = json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": user,
            "email": format!("{user}@demo.test"),
            "iat": now.min(now + ttl),
            "exp": now + ttl,
        });
        Ok(jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &self.key,
        )?)
    }

    fn random_token(&self) -> Result<String, IdpError> {
        let mut bytes = [0u8; 24];
        self.random.fill(&mut bytes).map_err(|_| IdpError::Random)?;
        Ok(URL_SAFE_NO_PAD.encode(bytes))
    }
}
