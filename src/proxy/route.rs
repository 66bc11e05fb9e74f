//! The one routing decision: where a request goes, before anything else looks at it. It is
//! made on the route path of `boundary::Target`, the canonical reading the upstream shares.

use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// `POST tickets.issue_path` (and its preflight): answered by ticketgate itself.
    IssueTicket,
    /// The index of the first configured route whose prefix matches.
    Route(usize),
    NotFound,
}

/// `path` is a route path (`boundary::Target::route_path`).
pub fn decide(config: &Config, path: &str) -> Destination {
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

#[cfg(test)]
mod tests {
    use super::prefix_matches;

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix_matches("/ws", "/ws"));
        assert!(prefix_matches("/ws", "/ws/room"));
        assert!(prefix_matches("/ws/", "/ws/room"));
        assert!(!prefix_matches("/ws", "/wsx"));
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/", "/"));
    }
}
