//! Destination patterns: which STOMP destinations a caller may subscribe or send to, by its
//! claims (`stomp.subscribe`, `stomp.send`).
//!
//! A pattern is literal text with `*` (one or more characters other than `/` and `.`), `**`
//! (one or more characters; last only) and `{claim}` (the caller's claim, a string or any string
//! of an array, matched exactly). Brokers read `*`, `#` and `+` as their own wildcards
//! (RabbitMQ, MQTT), so no wildcard here ever matches them, nor a control character: a
//! destination holding one matches only a pattern that spells it out. A claim value holding a
//! separator, a wildcard, a brace or a control character never matches, so a caller whose claim
//! reads `a/b` or `#` cannot reach beyond its own name.
//!
//! Matching is a table over (pattern element, destination position), linear in the
//! destination per element, so no pattern and destination can make it backtrack.

use std::collections::BTreeMap;

/// One element of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Element {
    Literal(String),
    /// `*`: one or more characters of one segment.
    Star,
    /// `**`: one or more characters, anything but broker wildcards and control characters.
    Rest,
    /// `{name}`: one of the caller's values of the claim `name`.
    Claim(String),
}

/// A parsed pattern, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    elements: Vec<Element>,
}

/// Why a pattern cannot be used (`check` names the pattern and says this).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("is empty")]
    Empty,
    #[error("`**` must be the pattern's last element")]
    RestNotLast,
    #[error("`***` is not a wildcard: use `*` or `**`")]
    ThreeStars,
    #[error("a `{{` without its `}}`, or a `}}` without its `{{`")]
    Brace,
    #[error("`{{}}` names no claim")]
    NoClaimName,
    #[error("holds a control character")]
    Control,
}

/// The caller's claims a pattern may name: each a list of strings (a string claim is a list
/// of one).
pub type ClaimLists = BTreeMap<String, Vec<String>>;

/// Characters no wildcard matches: the brokers' own wildcards and separators' kin.
fn wild_forbidden(c: char) -> bool {
    matches!(c, '*' | '#' | '+') || c.is_control()
}

/// A claim value that may stand in a destination.
fn usable_claim_value(value: &str) -> bool {
    !value.is_empty()
        && !value
            .chars()
            .any(|c| matches!(c, '/' | '.' | '*' | '#' | '+' | '{' | '}') || c.is_control())
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text.chars().any(char::is_control) {
            return Err(PatternError::Control);
        }
        let mut elements = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            match c {
                '*' => {
                    let stars = rest.len() - rest.trim_start_matches('*').len();
                    push_literal(&mut elements, &mut literal);
                    elements.push(match stars {
                        1 => Element::Star,
                        2 => Element::Rest,
                        _ => return Err(PatternError::ThreeStars),
                    });
                    rest = &rest[stars..];
                }
                '{' => {
                    let end = rest.find('}').ok_or(PatternError::Brace)?;
                    let name = &rest[1..end];
                    if name.is_empty() {
                        return Err(PatternError::NoClaimName);
                    }
                    if name.contains('{') {
                        return Err(PatternError::Brace);
                    }
                    push_literal(&mut elements, &mut literal);
                    elements.push(Element::Claim(name.to_owned()));
                    rest = &rest[end + 1..];
                }
                '}' => return Err(PatternError::Brace),
                _ => {
                    literal.push(c);
                    rest = &rest[c.len_utf8()..];
                }
            }
        }
        push_literal(&mut elements, &mut literal);
        let last = elements.len() - 1;
        if elements[..last].contains(&Element::Rest) {
            return Err(PatternError::RestNotLast);
        }
        Ok(Pattern {
            text: text.to_owned(),
            elements,
        })
    }

    /// The pattern as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The claims the pattern names.
    pub fn claims(&self) -> impl Iterator<Item = &str> {
        self.elements.iter().filter_map(|e| match e {
            Element::Claim(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// Whether `destination` matches, for a caller with `claims`.
    pub fn matches(&self, destination: &str, claims: &ClaimLists) -> bool {
        if let Some(matched) = self.matches_plainly(destination) {
            return matched;
        }
        let dest = destination.as_bytes();
        // reachable[i]: the elements so far can end exactly at byte `i` of the destination.
        let mut reachable = vec![false; dest.len() + 1];
        reachable[0] = true;
        for element in &self.elements {
            let mut next = vec![false; dest.len() + 1];
            for start in (0..=dest.len()).filter(|i| reachable[*i]) {
                advance(element, destination, start, claims, &mut next);
            }
            reachable = next;
        }
        reachable[dest.len()]
    }
}

impl Pattern {
    /// A pattern of literal text, perhaps ending in `**` (the common shape: `/app/**`,
    /// `/topic/public`), matched without the table; `None` for any other shape.
    fn matches_plainly(&self, destination: &str) -> Option<bool> {
        let mut rest = destination;
        for (i, element) in self.elements.iter().enumerate() {
            match element {
                Element::Literal(text) => match rest.strip_prefix(text.as_str()) {
                    Some(after) => rest = after,
                    None => return Some(false),
                },
                Element::Rest if i + 1 == self.elements.len() => {
                    return Some(!rest.is_empty() && !rest.chars().any(wild_forbidden));
                }
                _ => return None,
            }
        }
        Some(rest.is_empty())
    }
}

fn push_literal(elements: &mut Vec<Element>, literal: &mut String) {
    if !literal.is_empty() {
        elements.push(Element::Literal(std::mem::take(literal)));
    }
}

/// Marks in `next` every end of `element` when it starts at byte `start` of `destination`.
fn advance(
    element: &Element,
    destination: &str,
    start: usize,
    claims: &ClaimLists,
    next: &mut [bool],
) {
    let rest = &destination[start..];
    match element {
        Element::Literal(text) => {
            if rest.starts_with(text.as_str()) {
                next[start + text.len()] = true;
            }
        }
        Element::Claim(name) => {
            let values = claims.get(name).map(Vec::as_slice).unwrap_or_default();
            for value in values.iter().filter(|v| usable_claim_value(v)) {
                if rest.starts_with(value.as_str()) {
                    next[start + value.len()] = true;
                }
            }
        }
        Element::Star => {
            for (at, c) in rest.char_indices() {
                if matches!(c, '/' | '.') || wild_forbidden(c) {
                    break;
                }
                next[start + at + c.len_utf8()] = true;
            }
        }
        Element::Rest => {
            if !rest.is_empty() && !rest.chars().any(wild_forbidden) {
                next[destination.len()] = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn claims(pairs: &[(&str, &[&str])]) -> ClaimLists {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    fn matches(pattern: &str, destination: &str, claims: &ClaimLists) -> bool {
        Pattern::parse(pattern)
            .expect("pattern")
            .matches(destination, claims)
    }

    #[test]
    fn wildcards_stay_in_their_segment_and_never_match_broker_wildcards() {
        let none = ClaimLists::new();
        assert!(matches("/topic/*", "/topic/news", &none));
        assert!(!matches("/topic/*", "/topic/news/eu", &none));
        assert!(!matches("/topic/*", "/topic/", &none), "one or more");
        assert!(!matches("/topic/*", "/topic/a.b", &none));
        assert!(matches("/topic/**", "/topic/news/eu.x", &none));
        assert!(!matches("/topic/**", "/topic/", &none));
        for wild in ["/topic/#", "/topic/*", "/topic/a+", "/topic/a\nb"] {
            assert!(!matches("/topic/**", wild, &none), "{wild:?}");
            assert!(!matches("/topic/*", wild, &none), "{wild:?}");
        }
        assert!(matches("/topic/#", "/topic/#", &none), "spelt out");
        assert!(matches("/queue/*.orders", "/queue/eu.orders", &none));
        assert!(!matches("/queue/*.orders", "/queue/eu.x.orders", &none));
    }

    #[test]
    fn a_claim_matches_exactly_and_an_unsafe_value_never() {
        let alice = claims(&[("sub", &["alice"]), ("rooms", &["r1", "r2"])]);
        assert!(matches("/user/{sub}/queue", "/user/alice/queue", &alice));
        assert!(!matches("/user/{sub}/queue", "/user/alicex/queue", &alice));
        assert!(!matches("/user/{sub}/queue", "/user/bob/queue", &alice));
        assert!(matches("/topic/room.{rooms}", "/topic/room.r2", &alice));
        assert!(!matches("/topic/room.{rooms}", "/topic/room.r3", &alice));
        assert!(!matches("/user/{missing}", "/user/", &alice));
        for hostile in ["a/b", "a.b", "*", "#", "a+", "{x}", "a\u{7}", ""] {
            let mallory = claims(&[("sub", &[hostile])]);
            let destination = format!("/user/{hostile}/queue");
            assert!(
                !matches("/user/{sub}/queue", &destination, &mallory),
                "{hostile:?}"
            );
        }
    }

    #[test]
    fn a_bad_pattern_says_why() {
        for (pattern, error) in [
            ("", PatternError::Empty),
            ("/a/**/b", PatternError::RestNotLast),
            ("/a/***", PatternError::ThreeStars),
            ("/a/{sub", PatternError::Brace),
            ("/a/sub}", PatternError::Brace),
            ("/a/{}", PatternError::NoClaimName),
            ("/a/{b{c}", PatternError::Brace),
            ("/a/\n", PatternError::Control),
        ] {
            assert_eq!(Pattern::parse(pattern), Err(error), "{pattern:?}");
        }
        assert_eq!(
            Pattern::parse("/a/{tenant}/{sub}/**")
                .expect("pattern")
                .claims()
                .collect::<Vec<_>>(),
            ["tenant", "sub"]
        );
    }

    /// The same rules, written as plain backtracking over the pattern's text.
    fn reference(pattern: &str, destination: &str, claims: &ClaimLists) -> bool {
        if let Some(rest) = pattern.strip_prefix("**") {
            return rest.is_empty()
                && !destination.is_empty()
                && !destination.chars().any(wild_forbidden);
        }
        if let Some(rest) = pattern.strip_prefix('*') {
            let segment: usize = destination
                .chars()
                .take_while(|c| !matches!(c, '/' | '.') && !wild_forbidden(*c))
                .map(char::len_utf8)
                .sum();
            return (1..=segment)
                .filter(|n| destination.is_char_boundary(*n))
                .any(|n| reference(rest, &destination[n..], claims));
        }
        if let Some(rest) = pattern.strip_prefix('{') {
            let (name, after) = rest.split_once('}').expect("a brace that closes");
            return claims.get(name).into_iter().flatten().any(|value| {
                usable_claim_value(value)
                    && destination
                        .strip_prefix(value.as_str())
                        .is_some_and(|d| reference(after, d, claims))
            });
        }
        match pattern.chars().next() {
            None => destination.is_empty(),
            Some(c) => destination
                .strip_prefix(c)
                .is_some_and(|d| reference(&pattern[c.len_utf8()..], d, claims)),
        }
    }

    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("*".to_string()),
            Just("{a}".to_string()),
            Just("{b}".to_string()),
            "[/.xy#+]{1,3}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn the_table_agrees_with_plain_backtracking(
            pieces in proptest::collection::vec(piece(), 1..6),
            rest in any::<bool>(),
            destination in "[/.xy#+*\n]{0,12}",
            a in proptest::collection::vec("[/.xy#]{0,3}", 0..3),
            b in "[xy]{1,2}",
        ) {
            let mut pattern: String = pieces.concat();
            if rest {
                pattern.push_str("**");
            }
            let Ok(parsed) = Pattern::parse(&pattern) else {
                return Ok(());
            };
            let claims: ClaimLists = [("a".to_string(), a), ("b".to_string(), vec![b])].into();
            prop_assert_eq!(
                parsed.matches(&destination, &claims),
                reference(&pattern, &destination, &claims),
                "{:?} against {:?}", pattern, destination
            );
        }
    }
}
