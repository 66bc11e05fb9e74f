//! The one routing decision: where a request goes, before anything else looks at it.

use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// `POST tickets.issue_path` (and its preflight): answered by ticketgate itself.
    IssueTicket,
    /// The index of the first configured route whose prefix matches.
    Route(usize),
    NotFound,
    /// A path with `.`/`..` segments: refused, because the upstream would normalise it onto a
    /// different route than the one whose auth rule we would apply (`/public/../admin`).
    DotSegments,
}

pub fn decide(config: &Config, path: &str) -> Destination {
    if has_dot_segments(path) {
        return Destination::DotSegments;
    }
    if config
        .tickets
        .as_ref()
        .is_some_and(|t| t.issue_path == path)
    {
        return Destination::IssueTicket;
    }
    config
        .routes
        .iter()
        .position(|route| prefix_matches(&route.prefix, path))
        .map_or(Destination::NotFound, Destination::Route)
}

/// Prefixes match whole segments: `/ws` matches `/ws` and `/ws/x`, never `/wsx`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Whether any segment is `.` or `..`, also when written with percent-encoded dots or
/// slashes (`%2e%2e`, `..%2f`) or backslashes, which some servers treat as separators.
fn has_dot_segments(path: &str) -> bool {
    // Nearly every path has none of these bytes; only the rest pay for the normalising copy.
    if !path.bytes().any(|b| matches!(b, b'.' | b'%' | b'\\')) {
        return false;
    }
    let lowered = path.to_ascii_lowercase();
    let normalised = lowered
        .replace("%2e", ".")
        .replace("%2f", "/")
        .replace("%5c", "/")
        .replace('\\', "/");
    normalised
        .split('/')
        .any(|segment| segment == "." || segment == "..")
}

#[cfg(test)]
mod tests {
    use super::{has_dot_segments, prefix_matches};

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix_matches("/ws", "/ws"));
        assert!(prefix_matches("/ws", "/ws/room"));
        assert!(prefix_matches("/ws/", "/ws/room"));
        assert!(!prefix_matches("/ws", "/wsx"));
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/", "/"));
    }

    #[test]
    fn dot_segments_are_found_in_any_spelling() {
        assert!(has_dot_segments("/public/../admin"));
        assert!(has_dot_segments("/public/%2E%2e/admin"));
        assert!(has_dot_segments("/public/..%2fadmin"));
        assert!(has_dot_segments("/public/.\\admin"));
        assert!(has_dot_segments("/./x"));
        assert!(!has_dot_segments("/files/a..b/.hidden"));
    }
}
