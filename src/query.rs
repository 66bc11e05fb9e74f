//! Query-string handling shared by redaction (what is logged) and forwarding (what the
//! upstream sees). Pairs are kept byte for byte: only the names are decoded, to compare them,
//! so `tick%65t=...` is recognised as `ticket` just as the upstream would decode it.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// A request's target as sent: path and query (`/` when the URI has neither).
pub fn target(uri: &http::Uri) -> &str {
    uri.path_and_query().map_or("/", |pq| pq.as_str())
}

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

/// `target` without any `param` pair, other pairs kept in order; `None` when there was none.
pub fn without(target: &str, param: &str) -> Option<String> {
    let (path, Some(query)) = split(target) else {
        return None;
    };
    if !pairs(query).any(|p| p.name() == param) {
        return None;
    }
    let kept: Vec<&str> = pairs(query)
        .filter(|p| p.name() != param)
        .map(|p| p.raw)
        .collect();
    Some(if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    })
}

/// A parameter given more than once: which copy would the upstream read?
#[derive(Debug)]
pub struct Ambiguous;

/// The decoded value of `param` when it occurs at most once.
pub fn single_value<'a>(target: &'a str, param: &str) -> Result<Option<Cow<'a, str>>, Ambiguous> {
    let (_, Some(query)) = split(target) else {
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
    use super::{single_value, without};

    #[test]
    fn without_removes_every_occurrence_and_keeps_the_order() {
        assert_eq!(
            without("/ws?a=1&ticket=x&b=2", "ticket").as_deref(),
            Some("/ws?a=1&b=2")
        );
        assert_eq!(without("/ws?ticket=x", "ticket").as_deref(), Some("/ws"));
        assert_eq!(
            without("/ws?tick%65t=x&c", "ticket").as_deref(),
            Some("/ws?c")
        );
        assert_eq!(without("/ws?a=1", "ticket"), None);
        assert_eq!(without("/ws", "ticket"), None);
    }

    #[test]
    fn single_value_refuses_ambiguity() {
        assert_eq!(
            single_value("/ws?ticket=a%2Db", "ticket")
                .expect("one")
                .as_deref(),
            Some("a-b")
        );
        assert_eq!(single_value("/ws?x=1", "ticket").expect("none"), None);
        assert!(single_value("/ws?ticket=a&ticket=b", "ticket").is_err());
    }
}
