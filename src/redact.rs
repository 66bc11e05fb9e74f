//! The one function every logged request target goes through. A ticket sits in a URL, and
//! careless clients put tickets and JWTs anywhere in one: in a path segment, as a bare
//! query key, after a second `?`, percent-encoded inside another parameter's value. So
//! besides the ticket parameter and the RFC 6750 token parameters, every component of the
//! target (path segment, `;`-parameter, query name or value) that holds something shaped
//! like a ticket or a JWT, as sent or once decoded, is replaced with `REDACTED` before any
//! log line — ours or Pingora's — can see it.

use std::borrow::Cow;

use crate::query;

pub const REDACTED: &str = "REDACTED";

/// Query parameters whose value is always a credential.
const CREDENTIAL_PARAMS: [&str; 2] = ["access_token", "id_token"];

/// What marks a credential in a target: the ticket parameter's name, and how a ticket starts
/// (`tickets::codec::PREFIX`), passed in so that logging needs no knowledge of the ticket
/// format beyond it.
pub struct Shapes<'a> {
    pub ticket_param: &'a str,
    pub ticket_prefix: &'a str,
}

/// `target` (path and query, as sent) with every credential replaced by `REDACTED`.
pub fn target<'a>(target: &'a str, shapes: &Shapes) -> Cow<'a, str> {
    let (path, query) = query::split(target);
    let redacted_path = path_components(path, shapes);
    let redacted_query = query.map(|q| query_pairs(q, shapes));
    let unchanged = matches!(redacted_path, Cow::Borrowed(_))
        && redacted_query
            .as_ref()
            .is_none_or(|q| matches!(q, Cow::Borrowed(_)));
    if unchanged {
        return Cow::Borrowed(target);
    }
    match redacted_query {
        Some(q) => Cow::Owned(format!("{redacted_path}?{q}")),
        None => Cow::Owned(redacted_path.into_owned()),
    }
}

/// Path segments and their `;parameters`, each replaced when it holds a credential.
fn path_components<'a>(path: &'a str, shapes: &Shapes) -> Cow<'a, str> {
    rewrite(path, &['/', ';'], |piece| {
        holds_credential(piece, shapes).then_some(Cow::Borrowed(REDACTED))
    })
}

/// Query pairs (split on `&` and `;`, as some servers split them). A credential parameter's
/// value always goes; a pair whose name holds a credential goes whole; otherwise a value
/// holding one goes and the name stays, so the log still shows what was sent.
fn query_pairs<'a>(query: &'a str, shapes: &Shapes) -> Cow<'a, str> {
    rewrite(query, &['&', ';'], |raw| {
        let pair = query::Pair { raw };
        let raw_name = pair.raw_name();
        if holds_credential(raw_name, shapes) {
            return Some(Cow::Borrowed(REDACTED));
        }
        let name = pair.name();
        let secret_value = name == shapes.ticket_param
            || CREDENTIAL_PARAMS.contains(&name.as_ref())
            || pair
                .raw_value()
                .is_some_and(|v| holds_credential(v, shapes));
        secret_value.then(|| Cow::Owned(format!("{raw_name}={REDACTED}")))
    })
}

/// `text` with each piece between `separators` replaced where `replace` says so; borrowed
/// when nothing was.
fn rewrite<'a>(
    text: &'a str,
    separators: &[char],
    replace: impl Fn(&str) -> Option<Cow<'static, str>>,
) -> Cow<'a, str> {
    let mut out: Option<String> = None;
    let mut done = 0;
    let mut start = 0;
    for end in text
        .match_indices(separators)
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()))
    {
        let piece = &text[start..end];
        if !piece.is_empty()
            && let Some(replacement) = replace(piece)
        {
            let buffer = out.get_or_insert_with(|| String::with_capacity(text.len()));
            buffer.push_str(&text[done..start]);
            buffer.push_str(&replacement);
            done = end;
        }
        start = end + 1;
    }
    match out {
        Some(mut buffer) => {
            buffer.push_str(&text[done..]);
            Cow::Owned(buffer)
        }
        None => Cow::Borrowed(text),
    }
}

/// Whether `piece`, as sent or once percent-decoded, holds a ticket or a JWT.
fn holds_credential(piece: &str, shapes: &Shapes) -> bool {
    credential_runs(piece, shapes.ticket_prefix)
        || matches!(query::decode(piece), Cow::Owned(decoded) if credential_runs(&decoded, shapes.ticket_prefix))
}

/// Scans the runs of base64url characters and dots (a `%XX` escape ends a run) for a ticket
/// (`ticket_prefix` followed by more) or a compact JWS/JWE (`eyJ`, at least two dots).
fn credential_runs(text: &str, prefix: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !is_run_byte(bytes[i]) {
            i += if bytes[i] == b'%' { 3 } else { 1 };
            continue;
        }
        let start = i;
        while i < bytes.len() && is_run_byte(bytes[i]) {
            i += 1;
        }
        let run = &text[start..i];
        let ticket = run.len() > prefix.len() && run.starts_with(prefix);
        let jwt = run.starts_with("eyJ") && run.matches('.').count() >= 2;
        if ticket || jwt {
            return true;
        }
    }
    false
}

fn is_run_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

#[cfg(test)]
mod tests {
    use super::{Shapes, target};

    const SHAPES: Shapes = Shapes {
        ticket_param: "ticket",
        ticket_prefix: "tg2.",
    };
    const T: &str = "tg2.QUJDREVGR0hJSktMTU5PUA";
    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl";

    fn redact(raw: &str) -> String {
        target(raw, &SHAPES).into_owned()
    }

    #[test]
    fn replaces_the_ticket_value_and_keeps_the_rest_in_order() {
        assert_eq!(
            redact("/ws?room=1&ticket=abc&x=2"),
            "/ws?room=1&ticket=REDACTED&x=2"
        );
        assert_eq!(redact("/ws?tick%65t=abc"), "/ws?tick%65t=REDACTED");
    }

    #[test]
    fn redacts_tokens_under_any_name() {
        assert_eq!(
            redact(&format!("/a?access_token=x&q={JWT}&ok=1")),
            "/a?access_token=REDACTED&q=REDACTED&ok=1"
        );
        assert_eq!(redact(&format!("/a?t={T}")), "/a?t=REDACTED");
    }

    #[test]
    fn redacts_credentials_wherever_they_sit() {
        let cases = [
            (format!("/ws/{T}/room"), "/ws/REDACTED/room".to_string()),
            (format!("/api/{JWT}"), "/api/REDACTED".to_string()),
            (format!("/ws?{T}"), "/ws?REDACTED".to_string()),
            (format!("/ws?a=1?ticket={T}"), "/ws?a=REDACTED".to_string()),
            (
                format!("/ws?a=1;ticket={T}"),
                "/ws?a=1;ticket=REDACTED".to_string(),
            ),
            (format!("/ws;t={T}/x"), "/ws;REDACTED/x".to_string()),
            (
                format!("/login?next=%2Fws%3Fticket%3D{T}"),
                "/login?next=REDACTED".to_string(),
            ),
            (
                format!("/x?auth=Bearer%20{JWT}"),
                "/x?auth=REDACTED".to_string(),
            ),
            (
                format!("/x?n=%74g2.{}", &T[4..]),
                "/x?n=REDACTED".to_string(),
            ),
            (format!("/x?{JWT}=1"), "/x?REDACTED".to_string()),
        ];
        for (raw, want) in cases {
            assert_eq!(redact(&raw), want, "{raw}");
        }
    }

    #[test]
    fn leaves_harmless_targets_untouched() {
        for raw in ["/a/b?x=1&y", "/a/b", "/files/stg2.txt", "/eyJ.x", "/?"] {
            assert_eq!(redact(raw), raw);
        }
    }
}
