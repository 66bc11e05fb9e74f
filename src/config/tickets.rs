//! The `tickets:` section: the ticket endpoint, lifetime, secret and used-ticket store.

use std::path::Path;
use std::time::Duration;

use super::{Problems, file, secret_file};
use crate::tickets::{StoreConfig, TicketsConfig};

const DEFAULT_ISSUE_PATH: &str = "/ws-ticket";
const DEFAULT_TICKET_TTL_SECONDS: u64 = 30;
const MAX_TICKET_TTL_SECONDS: u64 = 3600;
const MIN_TICKET_SECRET_BYTES: usize = 32;

pub(super) fn tickets_config(
    raw: file::Tickets,
    base: &Path,
    problems: &mut Problems,
) -> TicketsConfig {
    let issue_path = raw
        .issue_path
        .unwrap_or_else(|| DEFAULT_ISSUE_PATH.to_string());
    if !issue_path.starts_with('/') || issue_path.contains(['?', '#']) {
        problems.add(
            "tickets.issue_path",
            format!("{issue_path:?} must be a path starting with '/'"),
        );
    }
    let ttl = raw.ttl_seconds.unwrap_or(DEFAULT_TICKET_TTL_SECONDS);
    if ttl == 0 || ttl > MAX_TICKET_TTL_SECONDS {
        problems.add(
            "tickets.ttl_seconds",
            format!("must be between 1 and {MAX_TICKET_TTL_SECONDS}"),
        );
    }
    let secret = secret_file(
        &raw.secret_file,
        base,
        "tickets.secret_file",
        MIN_TICKET_SECRET_BYTES,
        problems,
    );
    let store = store_config(raw.store.as_deref().unwrap_or("memory"), problems);
    let query_param = raw.query_param.unwrap_or_else(|| "ticket".to_string());
    if query_param.is_empty()
        || !query_param
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        problems.add(
            "tickets.query_param",
            "must be a non-empty name of letters, digits, '-', '_' or '.'",
        );
    }
    TicketsConfig {
        issue_path,
        ttl: Duration::from_secs(ttl),
        secret,
        store,
        query_param,
    }
}

fn store_config(value: &str, problems: &mut Problems) -> StoreConfig {
    if value == "memory" {
        return StoreConfig::Memory;
    }
    match reqwest::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "redis" | "rediss") && url.host().is_some() => {
            StoreConfig::Redis(value.to_string())
        }
        // Not echoed: a Redis URL may carry a password.
        _ => {
            problems.add(
                "tickets.store",
                "must be \"memory\" or a redis://host:port/db URL",
            );
            StoreConfig::Memory
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{GOOD, problems, refused};

    fn with_tickets(lines: &str) -> String {
        GOOD.replace("auth: jwt", "auth: ticket")
            + "tickets:\n  secret_file: ticket.secret\n"
            + lines
    }

    #[test]
    fn the_ticket_section_is_checked_key_by_key() {
        assert_eq!(problems(&with_tickets("")), Vec::<String>::new());
        refused(
            &with_tickets("").replace("ticket.secret", "short.secret"),
            "tickets.secret_file",
            "at least 32 bytes",
        );
        refused(
            &with_tickets("  ttl_seconds: 0\n"),
            "tickets.ttl_seconds",
            "between 1 and 3600",
        );
        refused(
            &with_tickets("  ttl_seconds: 3601\n"),
            "tickets.ttl_seconds",
            "between 1 and 3600",
        );
        refused(
            &with_tickets("  issue_path: ws-ticket\n"),
            "tickets.issue_path",
            "must be a path",
        );
        refused(
            &with_tickets("  query_param: \"a b\"\n"),
            "tickets.query_param",
            "non-empty name",
        );
        refused(
            &with_tickets("  store: \"memcached://x\"\n"),
            "tickets.store",
            "must be \"memory\"",
        );
    }

    #[test]
    fn a_bad_store_url_never_echoes_its_password() {
        let found = problems(&with_tickets("  store: \"redis://user:hunter2secret@\"\n"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(!found[0].contains("hunter2secret"), "{found:?}");
    }

    #[test]
    fn tickets_need_a_ticket_route() {
        refused(
            &(GOOD.to_string() + "tickets:\n  secret_file: ticket.secret\n"),
            "tickets",
            "no route has `auth: ticket`",
        );
    }
}
