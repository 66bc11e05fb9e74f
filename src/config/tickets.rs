//! The `tickets:` section: the ticket endpoint, lifetime, secret and used-ticket store.

use std::path::Path;
use std::time::Duration;

use super::{Problems, file, secret_file};
use crate::shared_redis::{SharedRedisConfig, Topology};
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
    let store = store_config(raw.store, raw.redis_wait_replicas, problems);
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

/// Most replicas `WAIT` may ask for; a Redis master with more is unusual.
const MAX_WAIT_REPLICAS: u32 = 16;

fn store_config(
    raw: Option<file::Store>,
    wait_replicas: Option<u32>,
    problems: &mut Problems,
) -> StoreConfig {
    let topology = match raw {
        None => None,
        Some(file::Store::Url(url)) if url == "memory" => None,
        Some(file::Store::Url(url)) => {
            redis_url(&url, "tickets.store", UrlUse::Node, problems);
            Some(Topology::Node(url))
        }
        Some(file::Store::Cluster(cluster)) => {
            Some(cluster_topology(cluster.redis_cluster, problems))
        }
        Some(file::Store::Sentinel(sentinel)) => {
            Some(sentinel_topology(sentinel.redis_sentinel, problems))
        }
    };
    let wait_replicas = wait_replicas.unwrap_or(0);
    if wait_replicas > MAX_WAIT_REPLICAS {
        problems.add(
            "tickets.redis_wait_replicas",
            format!("must be at most {MAX_WAIT_REPLICAS}"),
        );
    }
    match topology {
        Some(topology) => StoreConfig::Redis(SharedRedisConfig {
            topology,
            wait_replicas,
        }),
        None => {
            if wait_replicas > 0 {
                problems.add(
                    "tickets.redis_wait_replicas",
                    "needs a Redis `tickets.store`: the memory store has no replicas",
                );
            }
            StoreConfig::Memory
        }
    }
}

fn cluster_topology(nodes: Vec<String>, problems: &mut Problems) -> Topology {
    if nodes.is_empty() {
        problems.add("tickets.store.redis_cluster", "needs at least one node URL");
    }
    for (i, url) in nodes.iter().enumerate() {
        redis_url(
            url,
            &format!("tickets.store.redis_cluster[{i}]"),
            UrlUse::Cluster,
            problems,
        );
    }
    Topology::Cluster(nodes)
}

fn sentinel_topology(sentinel: file::Sentinel, problems: &mut Problems) -> Topology {
    if sentinel.master.trim().is_empty() {
        problems.add(
            "tickets.store.redis_sentinel.master",
            "must name the master",
        );
    }
    if sentinel.nodes.is_empty() {
        problems.add(
            "tickets.store.redis_sentinel.nodes",
            "needs at least one sentinel URL",
        );
    }
    for (i, url) in sentinel.nodes.iter().enumerate() {
        redis_url(
            url,
            &format!("tickets.store.redis_sentinel.nodes[{i}]"),
            UrlUse::Sentinel,
            problems,
        );
    }
    let db = sentinel.db.unwrap_or(0);
    if db < 0 {
        problems.add("tickets.store.redis_sentinel.db", "must be 0 or more");
    }
    Topology::Sentinel {
        master: sentinel.master,
        nodes: sentinel.nodes,
        db,
    }
}

/// What a URL points at: a node may name a database; a cluster node has only database 0,
/// and a sentinel none (its `db` is a key of its own).
#[derive(Clone, Copy, PartialEq, Eq)]
enum UrlUse {
    Node,
    Cluster,
    Sentinel,
}

/// Checks a Redis URL's shape offline. Never echoes it: it may carry a password.
fn redis_url(value: &str, key: &str, usage: UrlUse, problems: &mut Problems) {
    let url = match reqwest::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "redis" | "rediss") && url.host().is_some() => url,
        _ if usage == UrlUse::Node => {
            problems.add(key, "must be \"memory\", a redis:// or rediss:// URL, {redis_cluster: [...]} or {redis_sentinel: {...}}");
            return;
        }
        _ => {
            problems.add(key, "must be a redis://host:port or rediss://host:port URL");
            return;
        }
    };
    let path = url.path().trim_matches('/');
    match usage {
        UrlUse::Node if !path.is_empty() && path.parse::<u16>().is_err() => {
            problems.add(
                key,
                "the path must be a database number, as in redis://host:6379/0",
            );
        }
        UrlUse::Cluster if !matches!(path, "" | "0") => {
            problems.add(key, "a cluster has only database 0: leave the path out");
        }
        UrlUse::Sentinel if !path.is_empty() => {
            problems.add(
                key,
                "a sentinel has no database: set `db` beside `nodes` instead",
            );
        }
        _ => {}
    }
    if url.query().is_some() || url.fragment().is_some() {
        problems.add(
            key,
            "takes no query or fragment: TLS is chosen by rediss://",
        );
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
    fn every_store_form_is_checked_offline_and_names_its_key() {
        for good in [
            "  store: \"rediss://app:pw@cache:6380/2\"\n  redis_wait_replicas: 1\n",
            "  store: {redis_cluster: [\"redis://a:7000\", \"rediss://b:7000/0\"]}\n",
            "  store: {redis_sentinel: {master: m, nodes: [\"redis://s:26379\"], db: 3}}\n",
        ] {
            assert_eq!(
                problems(&with_tickets(good)),
                Vec::<String>::new(),
                "{good}"
            );
        }
        let cases = [
            (
                "{redis_cluster: []}",
                "tickets.store.redis_cluster",
                "at least one",
            ),
            (
                "{redis_cluster: [\"redis://a:7000\", \"http://b\"]}",
                "tickets.store.redis_cluster[1]",
                "redis://host:port",
            ),
            (
                "{redis_cluster: [\"redis://a:7000/3\"]}",
                "tickets.store.redis_cluster[0]",
                "only database 0",
            ),
            (
                "{redis_sentinel: {master: \" \", nodes: [\"redis://s\"]}}",
                "tickets.store.redis_sentinel.master",
                "name the master",
            ),
            (
                "{redis_sentinel: {master: m, nodes: []}}",
                "tickets.store.redis_sentinel.nodes",
                "at least one",
            ),
            (
                "{redis_sentinel: {master: m, nodes: [\"redis://s/1\"]}}",
                "tickets.store.redis_sentinel.nodes[0]",
                "set `db` beside `nodes`",
            ),
            (
                "{redis_sentinel: {master: m, nodes: [\"redis://s\"], db: -1}}",
                "tickets.store.redis_sentinel.db",
                "0 or more",
            ),
            (
                "\"redis://h/0#insecure\"",
                "tickets.store",
                "no query or fragment",
            ),
            ("\"redis://h/zero\"", "tickets.store", "database number"),
        ];
        for (store, key, message) in cases {
            refused(&with_tickets(&format!("  store: {store}\n")), key, message);
        }
        for (store, key, message) in [
            (
                "{redis_clustr: [a]}",
                "tickets.store.redis_clustr",
                "redis_cluster",
            ),
            (
                "{redis_sentinel: {mastr: m, nodes: []}}",
                "tickets.store.redis_sentinel.mastr",
                "unknown field",
            ),
            ("{}", "tickets.store", "{redis_cluster: [url, ...]}"),
            ("7", "tickets.store", "{redis_cluster: [url, ...]}"),
            (
                "{redis_cluster: [a], redis_sentinel: {master: m, nodes: []}}",
                "tickets.store",
                "one form",
            ),
        ] {
            let parsed = crate::config::parse(&with_tickets(&format!("  store: {store}\n")));
            assert!(
                matches!(&parsed, Err((k, _, m)) if k == key && m.contains(message)),
                "{store}: {:?}",
                parsed.err()
            );
        }
        refused(
            &with_tickets("  redis_wait_replicas: 1\n"),
            "tickets.redis_wait_replicas",
            "needs a Redis",
        );
        refused(
            &with_tickets("  store: \"redis://h\"\n  redis_wait_replicas: 17\n"),
            "tickets.redis_wait_replicas",
            "at most 16",
        );
    }

    #[test]
    fn no_store_form_echoes_a_password() {
        for store in [
            "{redis_cluster: [\"redis://u:hunter2secret@a:7000/9\"]}",
            "{redis_sentinel: {master: \"\", nodes: [\"redis://:hunter2secret@s/1\"]}}",
            "\"rediss://u:hunter2secret@h/x?y\"",
        ] {
            let found = problems(&with_tickets(&format!("  store: {store}\n")));
            assert!(!found.is_empty(), "{store}");
            assert!(
                found.iter().all(|p| !p.contains("hunter2secret")),
                "{found:?}"
            );
        }
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
