//! The one function every logged request target goes through. A ticket sits in a URL and a
//! careless client may put a JWT there too (`?access_token=`, RFC 6750 §2.3), so both are
//! replaced with `REDACTED` before any log line — ours or Pingora's — can see them.

use std::borrow::Cow;

use crate::query;
use crate::tickets::codec;

pub const REDACTED: &str = "REDACTED";

/// Query parameters whose value is always a credential.
const CREDENTIAL_PARAMS: [&str; 2] = ["access_token", "id_token"];

/// `target` (path and query) with every credential value replaced by `REDACTED`: the ticket
/// parameter, the RFC 6750 token parameters, and any value shaped like a JWT or a ticket.
pub fn target<'a>(target: &'a str, ticket_param: &str) -> Cow<'a, str> {
    let (path, Some(query)) = query::split(target) else {
        return Cow::Borrowed(target);
    };
    let needs_redaction = |pair: &query::Pair| {
        let name = pair.name();
        name == ticket_param
            || CREDENTIAL_PARAMS.contains(&name.as_ref())
            || pair
                .value()
                .is_some_and(|v| looks_like_jwt(&v) || v.starts_with(codec::PREFIX))
    };
    if !query::pairs(query).any(|p| needs_redaction(&p)) {
        return Cow::Borrowed(target);
    }
    let redacted: Vec<Cow<str>> = query::pairs(query)
        .map(|pair| {
            if needs_redaction(&pair) {
                Cow::Owned(format!("{}={REDACTED}", pair.raw_name()))
            } else {
                Cow::Borrowed(pair.raw)
            }
        })
        .collect();
    Cow::Owned(format!("{path}?{}", redacted.join("&")))
}

/// A compact JWS: three base64url parts, the header starting with `{"` (`eyJ`).
fn looks_like_jwt(value: &str) -> bool {
    value.starts_with("eyJ") && value.matches('.').count() == 2
}

#[cfg(test)]
mod tests {
    use super::target;

    #[test]
    fn replaces_the_ticket_value_and_keeps_the_rest_in_order() {
        assert_eq!(
            target("/ws?room=1&ticket=abc&x=2", "ticket"),
            "/ws?room=1&ticket=REDACTED&x=2"
        );
    }

    #[test]
    fn recognises_an_encoded_parameter_name() {
        assert_eq!(
            target("/ws?tick%65t=abc", "ticket"),
            "/ws?tick%65t=REDACTED"
        );
    }

    #[test]
    fn redacts_tokens_under_any_name() {
        assert_eq!(
            target("/a?access_token=x&q=eyJh.eyJi.c2ln&ok=1", "ticket"),
            "/a?access_token=REDACTED&q=REDACTED&ok=1"
        );
        assert_eq!(target("/a?t=tg1.abc.def", "ticket"), "/a?t=REDACTED");
    }

    #[test]
    fn leaves_harmless_targets_untouched() {
        assert_eq!(target("/a/b?x=1&y", "ticket"), "/a/b?x=1&y");
        assert_eq!(target("/a/b", "ticket"), "/a/b");
    }
}
