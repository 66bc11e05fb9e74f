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
        let name = self.raw_name();
        if !name.contains(['%', '+']) {
            return Cow::Borrowed(name);
        }
        let spaced = name.replace('+', " ");
        Cow::Owned(percent_decode_str(&spaced).decode_utf8_lossy().into_owned())
    }

    /// The value as the upstream would read it.
    pub fn value(&self) -> Option<Cow<'a, str>> {
        let value = self.raw_value()?;
        if !value.contains(['%', '+']) {
            return Some(Cow::Borrowed(value));
        }
        let spaced = value.replace('+', " ");
        Some(Cow::Owned(
            percent_decode_str(&spaced).decode_utf8_lossy().into_owned(),
        ))
    }
}

pub fn pairs(query: &str) -> impl Iterator<Item = Pair<'_>> {
    query
        .split('&')
        .filter(|raw| !raw.is_empty())
        .map(|raw| Pair { raw })
}
