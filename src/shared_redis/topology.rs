//! Where the shared Redis is: the settings `tickets.store` and `tickets.redis_wait_replicas`
//! translate into, and how they are shown (never with a user name or password).

use std::fmt;

/// The shared Redis's settings.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedRedisConfig {
    pub topology: Topology,
    /// Replicas that must hold a write before it counts (`WAIT`); 0 trusts the master alone.
    pub wait_replicas: u32,
}

/// The three ways people run Redis. URLs may carry `user:password@` (ACLs) and `rediss://`
/// (TLS); a sentinel URL's credentials and scheme also reach the master it names.
#[derive(Clone, PartialEq, Eq)]
pub enum Topology {
    Node(String),
    Cluster(Vec<String>),
    Sentinel {
        master: String,
        nodes: Vec<String>,
        db: i64,
    },
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topology::Node(url) => write!(f, "{}", Redacted(url)),
            Topology::Cluster(nodes) => write!(f, "redis cluster [{}]", Listed(nodes)),
            Topology::Sentinel { master, nodes, db } => {
                write!(f, "redis sentinel {master} db {db} [{}]", Listed(nodes))
            }
        }
    }
}

/// A URL as `scheme://host:port/path`, without what comes before the host.
struct Redacted<'a>(&'a str);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match url::Url::parse(self.0) {
            Ok(url) => write!(
                f,
                "{}://{}:{}{}",
                url.scheme(),
                url.host_str().unwrap_or("?"),
                url.port().unwrap_or(6379),
                url.path()
            ),
            Err(_) => write!(f, "redis"),
        }
    }
}

struct Listed<'a>(&'a [String]);

impl fmt::Display for Listed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, url) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{}", Redacted(url))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_is_shown_without_credentials() {
        let shown = [
            Topology::Node("rediss://app:s3cretpw@cache:6380/2".into()),
            Topology::Cluster(vec![
                "redis://:s3cretpw@10.0.0.1:7000".into(),
                "redis://app:s3cretpw@10.0.0.2".into(),
            ]),
            Topology::Sentinel {
                master: "mymaster".into(),
                nodes: vec!["redis://app:s3cretpw@10.0.0.5:26379".into()],
                db: 1,
            },
        ]
        .map(|t| t.to_string());
        assert_eq!(
            shown,
            [
                "rediss://cache:6380/2",
                "redis cluster [redis://10.0.0.1:7000, redis://10.0.0.2:6379]",
                "redis sentinel mymaster db 1 [redis://10.0.0.5:26379]",
            ]
        );
    }
}
