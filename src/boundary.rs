//! The request boundary: the one reading of a request target that routing, forwarding and
//! logging all use.
//!
//! An authentication proxy that matches routes on one reading of a path while the upstream
//! serves another is an auth bypass (`/%61pi` routed as itself, served as `/api`). So the
//! target is read the way upstreams read it — unreserved escapes decoded, repeated slashes
//! merged, a segment's `;parameters` ignored as servlet containers ignore them — and the
//! upstream is sent exactly that canonical path. What servers read in different ways has no
//! single canonical reading and is refused: dot segments in any spelling (`..;x`, `%2e%2e`),
//! encoded separators (`%2F`, `%5C`, `%3B`), backslashes, control characters and malformed
//! escapes.

use std::borrow::Cow;

use crate::query;

/// Why a request target was refused (always a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("request target must be origin-form")]
    TargetForm,
    #[error("path has dot segments")]
    DotSegment,
    #[error("path has an encoded separator")]
    EncodedSeparator,
    #[error("path has a backslash")]
    Backslash,
    #[error("target has a character that cannot appear in a request target")]
    BadCharacter,
    #[error("target has a malformed percent-escape")]
    BadEscape,
}

impl Refused {
    pub const ALL: [Refused; 6] = [
        Refused::TargetForm,
        Refused::DotSegment,
        Refused::EncodedSeparator,
        Refused::Backslash,
        Refused::BadCharacter,
        Refused::BadEscape,
    ];

    /// The `reason` of the access log and of `ticketgate_auth_failures_total`'s neighbours.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::TargetForm => "target_form",
            Refused::DotSegment => "dot_segments",
            Refused::EncodedSeparator => "encoded_separator",
            Refused::Backslash => "backslash",
            Refused::BadCharacter => "bad_character",
            Refused::BadEscape => "bad_escape",
        }
    }
}

/// A request target as ticketgate and the upstream both read it.
#[derive(Debug, PartialEq, Eq)]
pub struct Target<'a> {
    /// The path the upstream receives: unreserved escapes decoded, empty segments merged,
    /// `;parameters` kept.
    pub path: Cow<'a, str>,
    /// What routes match: `path` with each segment's `;parameters` removed.
    pub route_path: Cow<'a, str>,
    /// The query as sent, without `?`.
    pub query: Option<&'a str>,
    /// The upstream needs a rewritten target: the path changed, or it came in absolute-form.
    pub rewritten: bool,
}

/// Reads a raw request target (`RequestHeader::raw_path`). `*` is accepted on `OPTIONS`
/// only, and then routes as `/`.
pub fn read(raw: &[u8], is_options: bool) -> Result<Target<'_>, Refused> {
    if !raw.iter().all(|b| (0x21..0x7f).contains(b) && *b != b'#') {
        return Err(Refused::BadCharacter);
    }
    // Checked just above: visible ASCII only.
    let raw = std::str::from_utf8(raw).map_err(|_| Refused::BadCharacter)?;
    if raw == "*" {
        return if is_options {
            Ok(Target {
                path: Cow::Borrowed("*"),
                route_path: Cow::Borrowed("/"),
                query: None,
                rewritten: false,
            })
        } else {
            Err(Refused::TargetForm)
        };
    }
    let (origin, absolute) = match raw.strip_prefix('/') {
        Some(_) => (raw, false),
        None => (absolute_form_rest(raw)?, true),
    };
    let (path, query) = query::split(origin);
    let (path, route_path) = canonical(if path.is_empty() { "/" } else { path })?;
    let rewritten = absolute || matches!(path, Cow::Owned(_));
    Ok(Target {
        path,
        route_path,
        query,
        rewritten,
    })
}

/// The path and query of an absolute-form target (`http://host/p?q`), which RFC 9112 lets
/// proxies receive; an empty path is `/`. Other forms and schemes are refused.
fn absolute_form_rest(raw: &str) -> Result<&str, Refused> {
    let (scheme, rest) = raw.split_once("://").ok_or(Refused::TargetForm)?;
    if !["http", "https", "ws", "wss"]
        .iter()
        .any(|s| s.eq_ignore_ascii_case(scheme))
    {
        return Err(Refused::TargetForm);
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    if end == 0 {
        return Err(Refused::TargetForm);
    }
    Ok(&rest[end..])
}

/// Nearly every path has none of these bytes and is canonical as it is.
fn needs_work(path: &str) -> bool {
    path.bytes()
        .any(|b| matches!(b, b'%' | b';' | b'.' | b'\\'))
        || path.contains("//")
}

/// The canonical path and the route path of an origin-form path (starting with `/`).
fn canonical(path: &str) -> Result<(Cow<'_, str>, Cow<'_, str>), Refused> {
    if !needs_work(path) {
        return Ok((Cow::Borrowed(path), Cow::Borrowed(path)));
    }
    let mut canonical = String::with_capacity(path.len());
    let mut route = String::with_capacity(path.len());
    for raw_segment in path.split('/').filter(|s| !s.is_empty()) {
        let segment = decode_segment(raw_segment)?;
        let name = segment.split(';').next().unwrap_or_default();
        if name == "." || name == ".." {
            return Err(Refused::DotSegment);
        }
        canonical.push('/');
        canonical.push_str(&segment);
        if !name.is_empty() {
            route.push('/');
            route.push_str(name);
        }
    }
    if path.ends_with('/') {
        canonical.push('/');
        route.push('/');
    }
    Ok((
        borrowed_if_same(path, canonical),
        borrowed_if_same(path, route),
    ))
}

/// `built`, or `path` itself when they are equal; an empty path is `/`.
fn borrowed_if_same(path: &str, built: String) -> Cow<'_, str> {
    match built.as_str() {
        "" => Cow::Owned("/".to_string()),
        same if same == path => Cow::Borrowed(path),
        _ => Cow::Owned(built),
    }
}

/// One segment with unreserved escapes decoded and other escapes in upper case.
fn decode_segment(segment: &str) -> Result<Cow<'_, str>, Refused> {
    if segment.contains('\\') {
        return Err(Refused::Backslash);
    }
    if !segment.contains('%') {
        return Ok(Cow::Borrowed(segment));
    }
    let bytes = segment.as_bytes();
    let mut out = String::with_capacity(segment.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(char::from(bytes[i]));
            i += 1;
            continue;
        }
        let hex = bytes.get(i + 1..i + 3).ok_or(Refused::BadEscape)?;
        let value = std::str::from_utf8(hex)
            .ok()
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or(Refused::BadEscape)?;
        match value {
            b'/' | b'\\' | b';' => return Err(Refused::EncodedSeparator),
            0..0x20 | 0x7f => return Err(Refused::BadCharacter),
            v if is_unreserved(v) => out.push(char::from(v)),
            v => out.push_str(&format!("%{v:02X}")),
        }
        i += 3;
    }
    Ok(Cow::Owned(out))
}

/// RFC 3986 §2.3: escaping these changes nothing, so every server decodes them.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::{Refused, read};

    /// (raw target, upstream path, route path, query)
    const ACCEPTED: &[(&str, &str, &str, Option<&str>)] = &[
        ("/", "/", "/", None),
        ("/api/x?a=1", "/api/x", "/api/x", Some("a=1")),
        ("/%61pi/x", "/api/x", "/api/x", None),
        ("/%7Euser/%41%2d", "/~user/A-", "/~user/A-", None),
        ("//api//x/", "/api/x/", "/api/x/", None),
        ("/api;v=1/x", "/api;v=1/x", "/api/x", None),
        ("/;x/api", "/;x/api", "/api", None),
        (
            "/files/a..b/.hidden",
            "/files/a..b/.hidden",
            "/files/a..b/.hidden",
            None,
        ),
        ("/a%20b%3f", "/a%20b%3F", "/a%20b%3F", None),
        ("/ws?ticket=a?b", "/ws", "/ws", Some("ticket=a?b")),
        ("http://h.test/api?x", "/api", "/api", Some("x")),
        ("WSS://h.test", "/", "/", None),
        ("https://h.test?q=1", "/", "/", Some("q=1")),
    ];

    const REFUSED: &[(&str, Refused)] = &[
        ("api/x", Refused::TargetForm),
        ("x:/api/x", Refused::TargetForm),
        ("*/api/x", Refused::TargetForm),
        ("ftp://h.test/api", Refused::TargetForm),
        ("http:///api", Refused::TargetForm),
        ("/public/../api", Refused::DotSegment),
        ("/public/..;/api/x", Refused::DotSegment),
        ("/public/..;x/api", Refused::DotSegment),
        ("/public/%2e%2E/api", Refused::DotSegment),
        ("/public/.%2e;v=1/api", Refused::DotSegment),
        ("/./api", Refused::DotSegment),
        ("/public/..", Refused::DotSegment),
        ("/api%2Fx", Refused::EncodedSeparator),
        ("/api%5cx", Refused::EncodedSeparator),
        ("/..%3B/api", Refused::EncodedSeparator),
        ("/public\\..\\api", Refused::Backslash),
        ("/a%00b", Refused::BadCharacter),
        ("/a%7f", Refused::BadCharacter),
        ("/a b", Refused::BadCharacter),
        ("/a\tb", Refused::BadCharacter),
        ("/a#frag", Refused::BadCharacter),
        ("/caf\u{e9}", Refused::BadCharacter),
        ("/a%4", Refused::BadEscape),
        ("/a%zz", Refused::BadEscape),
    ];

    #[test]
    fn accepted_targets_read_as_upstreams_read_them() {
        for (raw, path, route, query) in ACCEPTED {
            let target = read(raw.as_bytes(), false).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(target.path, *path, "{raw}");
            assert_eq!(target.route_path, *route, "{raw}");
            assert_eq!(target.query, *query, "{raw}");
        }
    }

    #[test]
    fn targets_without_one_reading_are_refused() {
        for (raw, why) in REFUSED {
            assert_eq!(read(raw.as_bytes(), false), Err(*why), "{raw}");
        }
    }

    #[test]
    fn asterisk_is_for_options_only() {
        assert_eq!(read(b"*", false), Err(Refused::TargetForm));
        let target = read(b"*", true).expect("OPTIONS *");
        assert_eq!((&*target.path, &*target.route_path), ("*", "/"));
    }

    #[test]
    fn only_changed_targets_are_rewritten() {
        assert!(!read(b"/api/x?a=1", false).expect("plain").rewritten);
        assert!(read(b"/%61pi", false).expect("escaped").rewritten);
        assert!(read(b"http://h/api", false).expect("absolute").rewritten);
    }
}
