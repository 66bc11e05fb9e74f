//! Query-string handling shared by redaction (what is logged) and forwarding (what the
//! upstream sees). Pairs are kept byte for byte: only the names are decoded, to compare them,
//! so `tick%65t=...` is recognised as `ticket` just as the upstream would decode it.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// Splits `path?query` into the path and the query (without `?`).
pub fn split(target: &str) -> (&str, Option<&str>) {
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

/// `text` as an upstream reads a query component: `+` is a space, escapes decoded (invalid
/// UTF-8 replaced); borrowed when there is nothing to decode.
pub fn decode(text: &str) -> Cow<'_, str> {
    if !text.contains(['%', '+']) {
        return Cow::Borrowed(text);
    }
    let spaced = text.replace('+', " ");
    Cow::Owned(percent_decode_str(&spaced).decode_utf8_lossy().into_owned())
}

/// One `name=value` pair of a query, as raw text.
pub struct Pair<'a> {
    pub raw: &'a str,
}

impl<'a> Pair<'a> {
    pub fn raw_name(&self) -> &'a str {
        self.raw.split_once('=').map_or(self.raw, |(name, _)| name)
    }

    pub fn raw_value(&self) -> Option<&'a str> {
        self.raw.split_once('=').map(|(_, value)| value)
    }

    /// The name as the upstream would read it (percent- and `+`-decoded).
    pub fn name(&self) -> Cow<'a, str> {
        decode(self.raw_name())
    }

    /// The value as the upstream would read it.
    pub fn value(&self) -> Option<Cow<'a, str>> {
        self.raw_value().map(decode)
    }
}

pub fn pairs(query: &str) -> impl Iterator<Item = Pair<'_>> {
    query
        .split('&')
        .filter(|raw| !raw.is_empty())
        .map(|raw| Pair { raw })
}

/// `query` without any `param` pair, other pairs kept in order (`None` when none are left);
/// borrowed when there was no such pair.
pub fn without<'a>(query: &'a str, param: &str) -> Option<Cow<'a, str>> {
    if !pairs(query).any(|p| p.name() == param) {
        return Some(Cow::Borrowed(query));
    }
    let kept: Vec<&str> = pairs(query)
        .filter(|p| p.name() != param)
        .map(|p| p.raw)
        .collect();
    (!kept.is_empty()).then(|| Cow::Owned(kept.join("&")))
}

/// A parameter given more than once: which copy would the upstream read?
#[derive(Debug)]
pub struct Ambiguous;

/// The decoded value of `param` in `query` when it occurs at most once.
pub fn single_value<'a>(
    query: Option<&'a str>,
    param: &str,
) -> Result<Option<Cow<'a, str>>, Ambiguous> {
    let Some(query) = query else {
        return Ok(None);
    };
    let mut found = pairs(query).filter(|p| p.name() == param);
    let first = found.next();
    if found.next().is_some() {
        return Err(Ambiguous);
    }
    Ok(first.map(|p| p.value().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::{single_value, without};

    #[test]
    fn without_removes_every_occurrence_and_keeps_the_order() {
        assert_eq!(
            without("a=1&ticket=x&b=2", "ticket").as_deref(),
            Some("a=1&b=2")
        );
        assert_eq!(without("ticket=x", "ticket"), None);
        assert_eq!(without("tick%65t=x&c", "ticket").as_deref(), Some("c"));
        assert!(matches!(
            without("a=1", "ticket"),
            Some(Cow::Borrowed("a=1"))
        ));
    }

    #[test]
    fn single_value_refuses_ambiguity() {
        assert_eq!(
            single_value(Some("ticket=a%2Db"), "ticket")
                .expect("one")
                .as_deref(),
            Some("a-b")
        );
        assert_eq!(single_value(Some("x=1"), "ticket").expect("none"), None);
        assert!(single_value(Some("ticket=a&ticket=b"), "ticket").is_err());
    }
}
