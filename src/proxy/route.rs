//! The one routing decision: where a request goes, before anything else looks at it. It is
//! made on the route path of `boundary::Target`, the canonical reading the upstream shares.

use std::sync::Arc;

use crate::stomp::StompRules;

/// A route's `auth` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    None,
    Jwt,
    Ticket,
}

impl AuthMode {
    pub const ALL: [AuthMode; 3] = [AuthMode::None, AuthMode::Jwt, AuthMode::Ticket];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::None => "none",
            AuthMode::Jwt => "jwt",
            AuthMode::Ticket => "ticket",
        }
    }
}

/// One entry of `routes:`.
#[derive(Clone)]
pub struct Route {
    /// As configured; also the `route` label of metrics.
    pub prefix: String,
    pub auth: AuthMode,
    /// The STOMP destinations its callers may use (`stomp:`), when it judges them.
    pub stomp: Option<Arc<StompRules>>,
}

/// The claims the routes' STOMP patterns name (besides the subject): identities keep them.
pub fn listed_claims(routes: &[Route]) -> Vec<String> {
    let names: std::collections::BTreeSet<String> = routes
        .iter()
        .filter_map(|r| r.stomp.as_ref())
        .flat_map(|rules| rules.listed_claims())
        .collect();
    names.into_iter().collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// `POST tickets.issue_path` (and its preflight): answered by ticketgate itself.
    IssueTicket,
    /// `POST websocket.refresh_path` (and its preflight): answered by ticketgate itself.
    RefreshSession,
    /// The index of the first configured route whose prefix matches.
    Route(usize),
    NotFound,
}

/// The `route` label of requests that matched no route.
const UNMATCHED_ROUTE: &str = "unmatched";

/// The paths ticketgate answers itself, when configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct OwnPaths<'a> {
    pub issue: Option<&'a str>,
    pub refresh: Option<&'a str>,
}

/// The `route` label of metrics and the access log: the matched route's prefix, or the path
/// ticketgate answered, never the request's own path.
pub fn label<'a>(routes: &'a [Route], own: OwnPaths<'a>, destination: Destination) -> &'a str {
    match destination {
        Destination::Route(i) => &routes[i].prefix,
        Destination::IssueTicket => own.issue.unwrap_or(UNMATCHED_ROUTE),
        Destination::RefreshSession => own.refresh.unwrap_or(UNMATCHED_ROUTE),
        Destination::NotFound => UNMATCHED_ROUTE,
    }
}

/// `path` is a route path (`boundary::Target::route_path`).
pub fn decide(routes: &[Route], own: OwnPaths, path: &str) -> Destination {
    if own.issue == Some(path) {
        return Destination::IssueTicket;
    }
    if own.refresh == Some(path) {
        return Destination::RefreshSession;
    }
    routes
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
    use proptest::strategy::Strategy;

    use super::prefix_matches;
    use crate::boundary;

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix_matches("/ws", "/ws"));
        assert!(prefix_matches("/ws", "/ws/room"));
        assert!(prefix_matches("/ws/", "/ws/room"));
        assert!(!prefix_matches("/ws", "/wsx"));
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/", "/"));
    }

    /// An upstream that normalises as hard as any: strips `;parameters` first (as servlet
    /// containers do), decodes every escape, treats `\\` and a decoded `/` as separators,
    /// resolves dot segments and merges slashes. Whatever ticketgate lets through must reach
    /// the same route there as in ticketgate.
    fn upstream_reading(raw_path: &str) -> String {
        let stripped: Vec<&str> = raw_path
            .split('/')
            .map(|segment| segment.split(';').next().unwrap_or_default())
            .collect();
        let decoded = percent_encoding::percent_decode_str(&stripped.join("/"))
            .decode_utf8_lossy()
            .replace('\\', "/");
        let mut resolved: Vec<&str> = Vec::new();
        for segment in decoded.split('/') {
            match segment {
                "" | "." => {}
                ".." => {
                    resolved.pop();
                }
                other => resolved.push(other),
            }
        }
        let trailing = if decoded.ends_with('/') && !resolved.is_empty() {
            "/"
        } else {
            ""
        };
        format!("/{}{trailing}", resolved.join("/"))
    }

    const PREFIXES: [&str; 4] = ["/api", "/ws", "/public/x", "/"];

    fn first_match(path: &str) -> Option<usize> {
        PREFIXES.iter().position(|p| prefix_matches(p, path))
    }

    fn segment() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::sample::select(vec![
            "api", "ws", "public", "x", "a", ".", "..", "%2e", "%2E%2e", ".%2e", "%61pi", "%77s",
            "%2F", "%2f", "%5C", "\\", ";v=1", "..;", "..;x", "api;v", "", "%3B", "%25", "%2561pi",
            "%41", "~", "%7E", "%00", "%", "%4", "a%20b",
        ])
        .prop_map(str::to_string)
    }

    proptest::proptest! {
        #[test]
        fn what_passes_reaches_the_same_route_upstream(
            segments in proptest::collection::vec(segment(), 0..6),
            trailing in proptest::bool::ANY,
        ) {
            let raw = format!("/{}{}", segments.join("/"), if trailing { "/" } else { "" });
            if let Ok(target) = boundary::read(raw.as_bytes(), false) {
                let upstream = upstream_reading(&raw);
                proptest::prop_assert_eq!(
                    first_match(&target.route_path),
                    first_match(&upstream),
                    "{} routes as {} here and {} upstream", raw, target.route_path, upstream
                );
                // What the upstream is sent reads the same way again.
                let sent = boundary::read(target.path.as_bytes(), false);
                proptest::prop_assert!(sent.is_ok_and(|again| again.route_path == target.route_path));
            }
        }
    }
}
