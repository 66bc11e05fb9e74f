//! A verified token's claims, read in one pass over the payload: the registered claims
//! ticketgate checks, and the claims the forward headers carry (any others are skipped
//! unread). Then the issuer's rules, in the order RFC 7519 suggests reporting them: what is
//! missing, then time, then who the token is from and for.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use super::error::TokenProblem;

#[derive(Default)]
pub struct Claims<'a> {
    pub sub: Option<Cow<'a, str>>,
    iss: Option<Cow<'a, str>>,
    aud: Option<Audience<'a>>,
    exp: Option<f64>,
    nbf: Option<f64>,
    iat: Option<f64>,
    /// `(claim, header text)` for each forwarded claim the token has.
    pub kept: Vec<(String, String)>,
    /// `(claim, its strings)` for each listed claim the token has (STOMP destination
    /// patterns name them): a string is a list of one, an array gives its strings.
    pub lists: Vec<(String, Vec<String>)>,
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience<'a> {
    One(#[serde(borrow)] Cow<'a, str>),
    Many(#[serde(borrow)] Vec<Cow<'a, str>>),
}

impl Audience<'_> {
    fn names(&self, wanted: &str) -> bool {
        match self {
            Audience::One(one) => one == wanted,
            Audience::Many(many) => many.iter().any(|a| a == wanted),
        }
    }
}

impl<'a> Claims<'a> {
    /// The `iss` claim, as the token states it.
    pub fn issuer(&self) -> Option<&str> {
        self.iss.as_deref()
    }

    /// Reads `payload` (a JSON object), keeping the claims named in `kept`. A registered
    /// claim of the wrong type, or any claim this reads given twice, is malformed: two
    /// readings of one token must not exist.
    pub fn read(payload: &'a [u8], kept: &[String]) -> Result<Self, TokenProblem> {
        Claims::read_listing(payload, kept, &[])
    }

    /// As `read`, also keeping the claims named in `listed` as lists of strings.
    pub fn read_listing(
        payload: &'a [u8],
        kept: &[String],
        listed: &[String],
    ) -> Result<Self, TokenProblem> {
        let mut reader = serde_json::Deserializer::from_slice(payload);
        let claims = Reader { kept, listed }
            .deserialize(&mut reader)
            .map_err(|_| TokenProblem::Malformed)?;
        reader.end().map_err(|_| TokenProblem::Malformed)?;
        Ok(claims)
    }

    /// `exp` as whole Unix seconds (required, so present once `check` passed).
    pub fn expires_at(&self) -> u64 {
        self.exp.unwrap_or(0.0) as u64
    }

    /// `iat` as whole Unix seconds, when the token has one.
    pub fn issued_at(&self) -> Option<u64> {
        self.iat.map(|iat| iat.max(0.0) as u64)
    }
}

/// What an issuer requires of a token's claims.
pub struct ClaimRules {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub leeway_seconds: u64,
}

impl ClaimRules {
    /// `exp`, `iss`, `aud` and `sub` are required. A token is refused on or after `exp`
    /// (RFC 7519 §4.1.4) plus the leeway, which is also when a WebSocket opened with it is
    /// closed: a login is over at the same moment for both.
    pub fn check(&self, claims: &Claims, now: u64) -> Result<(), TokenProblem> {
        let (Some(_), Some(_), Some(iss), Some(aud)) =
            (claims.exp, &claims.sub, &claims.iss, &claims.aud)
        else {
            return Err(TokenProblem::MissingClaim);
        };
        let latest = (now + self.leeway_seconds) as f64;
        if now >= claims.expires_at().saturating_add(self.leeway_seconds) {
            return Err(TokenProblem::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > latest) {
            return Err(TokenProblem::NotYetValid);
        }
        if *iss != *self.issuer {
            return Err(TokenProblem::WrongIssuer);
        }
        if !self.audiences.iter().any(|wanted| aud.names(wanted)) {
            return Err(TokenProblem::WrongAudience);
        }
        if claims.iat.is_some_and(|iat| iat > latest) {
            return Err(TokenProblem::IssuedInFuture);
        }
        Ok(())
    }
}

/// A claim's text in a header: strings as they are, other JSON values in compact JSON.
fn header_text(value: Value) -> String {
    match value {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// A claim's strings: itself when it is one, the strings among it when it is an array.
fn strings_of(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|item| item.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

struct Reader<'k> {
    kept: &'k [String],
    listed: &'k [String],
}

impl<'de> DeserializeSeed<'de> for Reader<'_> {
    type Value = Claims<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Claims<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Reader<'_> {
    type Value = Claims<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JWT claims object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Claims<'de>, A::Error> {
        let mut claims = Claims::default();
        while let Some(name) = map.next_key::<Cow<'de, str>>()? {
            let kept = self.kept.iter().any(|k| *k == *name);
            let listed = self.listed.iter().any(|k| *k == *name);
            if kept || listed {
                let seen_kept = claims.kept.iter().any(|(k, _)| *k == *name);
                if seen_kept || claims.lists.iter().any(|(k, _)| *k == *name) {
                    return Err(de::Error::custom("claim given twice"));
                }
                let value: Value = map.next_value()?;
                claims.registered(&name, Some(&value), &mut map)?;
                if listed {
                    claims.lists.push((name.to_string(), strings_of(&value)));
                }
                if kept {
                    claims.kept.push((name.into_owned(), header_text(value)));
                }
            } else {
                claims.registered(&name, None, &mut map)?;
            }
        }
        Ok(claims)
    }
}

impl<'de> Claims<'de> {
    /// Stores `name` when it is a registered claim, read from `value` when the caller has
    /// already taken it (a forwarded claim), from the map otherwise; skips any other claim.
    fn registered<A: MapAccess<'de>>(
        &mut self,
        name: &str,
        value: Option<&Value>,
        map: &mut A,
    ) -> Result<(), A::Error> {
        match name {
            "sub" => once(&mut self.sub, value, map),
            "iss" => once(&mut self.iss, value, map),
            "aud" => once(&mut self.aud, value, map),
            "exp" => once(&mut self.exp, value, map),
            "nbf" => once(&mut self.nbf, value, map),
            "iat" => once(&mut self.iat, value, map),
            _ if value.is_some() => Ok(()),
            _ => map.next_value::<IgnoredAny>().map(drop),
        }
    }
}

fn once<'de, T: Deserialize<'de>, A: MapAccess<'de>>(
    slot: &mut Option<T>,
    value: Option<&Value>,
    map: &mut A,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::custom("claim given twice"));
    }
    *slot = Some(match value {
        Some(value) => T::deserialize(value.clone()).map_err(de::Error::custom)?,
        None => map.next_value()?,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::errors::ErrorKind;
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::{ClaimRules, Claims, TokenProblem};

    #[test]
    fn listed_claims_are_kept_as_their_strings() {
        let payload = br#"{"sub":"a","rooms":["r1",7,"r2"],"tenant":"t","email":"e@x","n":5}"#;
        let kept = ["email".to_string(), "tenant".to_string()];
        let listed = ["rooms".to_string(), "tenant".to_string(), "n".to_string()];
        let claims = Claims::read_listing(payload, &kept, &listed).expect("read");
        assert_eq!(
            claims.lists,
            [
                (
                    "rooms".to_string(),
                    vec!["r1".to_string(), "r2".to_string()]
                ),
                ("tenant".to_string(), vec!["t".to_string()]),
                ("n".to_string(), vec![]),
            ]
        );
        assert_eq!(claims.kept.len(), 2);
        let twice = br#"{"rooms":["r1"],"rooms":["r2"]}"#;
        assert!(Claims::read_listing(twice, &[], &listed).is_err());
    }

    const LEEWAY: u64 = 60;
    const SECRET: &[u8] = b"a secret of thirty-two bytes ...";

    fn rules() -> ClaimRules {
        ClaimRules {
            issuer: "https://idp.test/".into(),
            audiences: vec!["chat-api".into(), "admin-api".into()],
            leeway_seconds: LEEWAY,
        }
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn read_and_check(payload: &Value, kept: &[String]) -> Result<Claims<'static>, TokenProblem> {
        let bytes: &'static [u8] = Box::leak(payload.to_string().into_bytes().into_boxed_slice());
        let claims = Claims::read(bytes, kept)?;
        rules().check(&claims, now())?;
        Ok(claims)
    }

    /// What jsonwebtoken's own validation says of the same claims, with ticketgate's two
    /// additions (refused on or after `exp` + leeway, `iat` in the future): the oracle the
    /// hand-written rules must agree with.
    fn oracle(payload: &Value) -> Result<(), TokenProblem> {
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            payload,
            &EncodingKey::from_secret(SECRET),
        )
        .expect("sign");
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY;
        validation.validate_nbf = true;
        validation.set_issuer(&["https://idp.test/"]);
        validation.set_audience(&["chat-api", "admin-api"]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let decoded =
            jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_secret(SECRET), &validation);
        match decoded {
            Err(e) => Err(match e.kind() {
                ErrorKind::ExpiredSignature => TokenProblem::Expired,
                ErrorKind::ImmatureSignature => TokenProblem::NotYetValid,
                ErrorKind::InvalidIssuer => TokenProblem::WrongIssuer,
                ErrorKind::InvalidAudience => TokenProblem::WrongAudience,
                ErrorKind::MissingRequiredClaim(_) => TokenProblem::MissingClaim,
                other => panic!("unexpected {other:?}"),
            }),
            Ok(data) => {
                let number = |name: &str| data.claims[name].as_f64();
                let latest = (now() + LEEWAY) as f64;
                if number("exp").is_some_and(|exp| now() >= exp as u64 + LEEWAY) {
                    Err(TokenProblem::Expired)
                } else if number("iat").is_some_and(|iat| iat > latest) {
                    Err(TokenProblem::IssuedInFuture)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Seconds from now, clear of the leeway's edges so that the two clocks read a second
    /// apart cannot disagree.
    fn offset() -> impl Strategy<Value = i64> {
        prop::sample::select(vec![-100_000, -1_000, -61, -30, 0, 30, 61, 1_000])
    }

    fn text(choices: &'static [&'static str]) -> impl Strategy<Value = Value> {
        prop::sample::select(choices).prop_map(|s| json!(s))
    }

    fn audience() -> impl Strategy<Value = Value> {
        let names = prop::sample::subsequence(vec!["chat-api", "admin-api", "other", "x"], 0..=3);
        prop_oneof![
            text(&["chat-api", "admin-api", "other", ""]),
            names.prop_map(|n| json!(n)),
        ]
    }

    fn claims() -> impl Strategy<Value = Value> {
        let time = |offset: i64| json!(now() as i64 + offset);
        (
            prop::option::of(offset().prop_map(time)),
            prop::option::of(offset().prop_map(time)),
            prop::option::of(offset().prop_map(time)),
            prop::option::of(text(&["https://idp.test/", "https://evil.test/", ""])),
            prop::option::of(audience()),
            prop::option::of(text(&["alice", ""])),
        )
            .prop_map(|(exp, nbf, iat, iss, aud, sub)| {
                let mut claims = serde_json::Map::new();
                for (name, value) in [
                    ("exp", exp),
                    ("nbf", nbf),
                    ("iat", iat),
                    ("iss", iss),
                    ("aud", aud),
                    ("sub", sub),
                ] {
                    if let Some(value) = value {
                        claims.insert(name.into(), value);
                    }
                }
                claims.insert("email".into(), json!("a@b.test"));
                Value::Object(claims)
            })
    }

    proptest! {
        #[test]
        fn the_rules_agree_with_jsonwebtoken(payload in claims()) {
            let ours = read_and_check(&payload, &[]).map(drop);
            prop_assert_eq!(ours, oracle(&payload), "{}", payload);
        }

        #[test]
        fn reading_never_panics_and_a_reading_is_stable(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let kept = ["email".to_string(), "aud".to_string()];
            let first = Claims::read(&bytes, &kept).map(|c| c.kept);
            prop_assert_eq!(first, Claims::read(&bytes, &kept).map(|c| c.kept));
        }
    }

    #[test]
    fn forwarded_claims_keep_their_text_and_registered_ones_can_be_forwarded() {
        let payload = json!({
            "exp": now() + 600, "iss": "https://idp.test/", "aud": ["chat-api", "x"],
            "sub": "alice", "email": "alice@example.test", "groups": ["a", "b"], "other": 1,
        });
        let kept: Vec<String> = ["email", "groups", "aud", "absent"]
            .map(String::from)
            .into();
        let claims = read_and_check(&payload, &kept).expect("valid");
        assert_eq!(
            claims.kept,
            vec![
                ("aud".to_string(), r#"["chat-api","x"]"#.to_string()),
                ("email".to_string(), "alice@example.test".to_string()),
                ("groups".to_string(), r#"["a","b"]"#.to_string()),
            ]
        );
        assert_eq!(claims.sub.as_deref(), Some("alice"));
    }

    #[test]
    fn a_claim_given_twice_or_of_the_wrong_type_is_malformed() {
        let exp = now() + 600;
        let base = format!(r#""iss":"https://idp.test/","aud":"chat-api","exp":{exp}"#);
        let kept = ["email".to_string()];
        for payload in [
            format!(r#"{{{base},"sub":"alice","sub":"mallory"}}"#),
            format!(r#"{{{base},"sub":"alice","aud":"admin-api"}}"#),
            format!(r#"{{{base},"sub":"alice","email":"a","email":"b"}}"#),
            format!(r#"{{{base},"sub":7}}"#),
            format!(r#"{{{base},"sub":"alice","nbf":"soon"}}"#),
            format!(r#"{{{base},"sub":"alice","aud":["chat-api",3]}}"#),
            format!(r#"{{{base},"sub":"alice"}} trailing"#),
            "[1,2]".to_string(),
            String::new(),
        ] {
            assert_eq!(
                Claims::read(payload.as_bytes(), &kept).map(drop),
                Err(TokenProblem::Malformed),
                "{payload}"
            );
        }
        let unknown_twice = format!(r#"{{{base},"sub":"alice","x":1,"x":2}}"#);
        assert!(Claims::read(unknown_twice.as_bytes(), &kept).is_ok());
    }
}
