//! The `routes:` section: prefixes, in order, each with its `auth`.

use std::collections::HashSet;
use std::sync::Arc;

use super::{AuthMode, Problems, Route, file};
use crate::auth::jwt::JwtConfig;
use crate::boundary;
use crate::stomp::StompRules;
use crate::stomp::pattern::Pattern;

pub(super) fn routes(
    raw: Vec<file::Route>,
    jwt: &JwtConfig,
    has_tickets: bool,
    problems: &mut Problems,
) -> Vec<Route> {
    if raw.is_empty() {
        problems.add("routes", "at least one route is required");
    }
    let mut seen = HashSet::new();
    raw.into_iter()
        .enumerate()
        .filter_map(|(i, route)| {
            let key = format!("routes[{i}]");
            if !route.prefix.starts_with('/') || route.prefix.contains(['?', '#']) {
                problems.add(
                    format!("{key}.prefix"),
                    format!("{:?} must be a path starting with '/'", route.prefix),
                );
            } else if !is_canonical(&route.prefix) {
                problems.add(
                    format!("{key}.prefix"),
                    format!(
                        "{:?} is not a canonical path (no escapes, `;`, `//` or dot segments): requests are matched in canonical form, so it would never match",
                        route.prefix
                    ),
                );
            }
            if !seen.insert(route.prefix.trim_end_matches('/').to_string()) {
                problems.add(
                    format!("{key}.prefix"),
                    "duplicate prefix: this route would never match",
                );
            }
            let Some(auth) = AuthMode::ALL.into_iter().find(|m| m.as_str() == route.auth) else {
                let expected: Vec<&str> = AuthMode::ALL.map(AuthMode::as_str).into();
                problems.add(
                    format!("{key}.auth"),
                    format!(
                        "unknown auth {:?} (expected {})",
                        route.auth,
                        expected.join(", ")
                    ),
                );
                return None;
            };
            if auth != AuthMode::None && jwt.issuers.is_empty() {
                problems.add(
                    format!("{key}.auth"),
                    format!("`auth: {}` needs `jwt.issuers`", auth.as_str()),
                );
            }
            if auth == AuthMode::Ticket && !has_tickets {
                problems.add(
                    format!("{key}.auth"),
                    "`auth: ticket` needs a `tickets` section",
                );
            }
            let stomp = route
                .stomp
                .map(|raw| stomp_rules(raw, auth, &key, problems));
            Some(Route {
                prefix: route.prefix,
                auth,
                stomp,
            })
        })
        .collect()
}

/// A route's `stomp:` patterns, each bad one named with why.
fn stomp_rules(
    raw: file::Stomp,
    auth: AuthMode,
    key: &str,
    problems: &mut Problems,
) -> Arc<StompRules> {
    if auth == AuthMode::None {
        problems.add(
            format!("{key}.stomp"),
            "judges destinations by the caller's claims: needs `auth: ticket` or `auth: jwt`",
        );
    }
    let mut patterns = |list: Vec<String>, name: &str| -> Vec<Pattern> {
        list.iter()
            .enumerate()
            .filter_map(|(j, text)| match Pattern::parse(text) {
                Ok(pattern) => Some(pattern),
                Err(e) => {
                    problems.add(format!("{key}.stomp.{name}[{j}]"), format!("{text:?} {e}"));
                    None
                }
            })
            .collect()
    };
    Arc::new(StompRules {
        subscribe: patterns(raw.subscribe, "subscribe"),
        send: patterns(raw.send, "send"),
    })
}

/// Whether requests can match `prefix`: routes compare canonical route paths.
fn is_canonical(prefix: &str) -> bool {
    boundary::read(prefix.as_bytes(), false).is_ok_and(|t| t.route_path == prefix)
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{GOOD, refused};

    #[test]
    fn prefixes_must_be_canonical_paths() {
        refused(
            &GOOD.replace("prefix: /", "prefix: api"),
            "routes[0].prefix",
            "must be a path",
        );
        refused(
            &GOOD.replace("prefix: /", "prefix: /a?b"),
            "routes[0].prefix",
            "must be a path",
        );
        for odd in ["/%61pi", "/a;b", "//a", "/a/../b", "/a/./b", "/a%2Fb"] {
            refused(
                &GOOD.replace("prefix: /", &format!("prefix: \"{odd}\"")),
                "routes[0].prefix",
                "is not a canonical path",
            );
        }
    }

    #[test]
    fn each_route_is_reachable_and_its_auth_possible() {
        let twice = GOOD.to_string() + "  - prefix: /\n    auth: none\n";
        refused(&twice, "routes[1].prefix", "duplicate prefix");
        refused(
            &GOOD.replace("auth: jwt", "auth: jwtt"),
            "routes[0].auth",
            "unknown auth",
        );
        refused(
            &GOOD.replace("auth: jwt", "auth: ticket"),
            "routes[0].auth",
            "needs a `tickets` section",
        );
        let no_issuers = GOOD.replace(
            &GOOD[GOOD.find("jwt:").unwrap_or_default()..GOOD.find("routes:").unwrap_or_default()],
            "",
        );
        refused(&no_issuers, "routes[0].auth", "needs `jwt.issuers`");
        refused(
            &GOOD.replace("routes:\n  - prefix: /\n    auth: jwt\n", "routes: []\n"),
            "routes",
            "at least one route",
        );
    }

    #[test]
    fn stomp_patterns_are_checked_one_by_one() {
        let with = |stomp: &str| {
            GOOD.replace(
                "    auth: jwt\n",
                &format!("    auth: jwt\n    stomp:\n{stomp}"),
            )
        };
        refused(
            &with("      subscribe: [\"/topic/*\", \"/a/**/b\"]\n"),
            "routes[0].stomp.subscribe[1]",
            "\"/a/**/b\" `**` must be the pattern's last element",
        );
        refused(
            &with("      send: [\"/user/{sub\"]\n"),
            "routes[0].stomp.send[0]",
            "without its",
        );
        refused(
            &GOOD.replace(
                "    auth: jwt\n",
                "    auth: none\n    stomp:\n      send: [\"/a\"]\n",
            ),
            "routes[0].stomp",
            "needs `auth: ticket` or `auth: jwt`",
        );
        assert!(
            crate::config::testing::problems(&with("      subscribe: [\"/user/{sub}/**\"]\n"))
                .is_empty()
        );
    }
}
