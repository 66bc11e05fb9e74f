//! One connection to the shared Redis, whatever its topology: commands and pipelines go
//! through it alike, so the code that builds them does not know which topology it talks to.

use std::collections::BTreeSet;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Value};

/// Cheap to clone: clones share the connection and the task that drives it.
#[derive(Clone)]
pub enum Connection {
    /// A node: the one of a URL, or the master a sentinel named.
    Node(ConnectionManager),
    /// A cluster: routes each command to the master of its key's slot, follows redirects.
    Cluster(ClusterConnection),
}

impl Connection {
    /// The addresses of a cluster's masters as the cluster itself reports them now
    /// (`CLUSTER SLOTS`); `None` for a node, which is its own master.
    pub async fn cluster_masters(&mut self) -> RedisResult<Option<BTreeSet<(String, u16)>>> {
        let Connection::Cluster(cluster) = self else {
            return Ok(None);
        };
        let slots: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(cluster)
            .await?;
        let masters = masters(&slots);
        if masters.is_empty() {
            return Err(RedisError::from((
                ErrorKind::ClusterConnectionNotFound,
                "no master serves a slot",
            )));
        }
        Ok(Some(masters))
    }
}

/// The masters' addresses in a `CLUSTER SLOTS` answer: each slot range is
/// `[start, end, [host, port, id, ...], replicas...]`.
fn masters(slots: &Value) -> BTreeSet<(String, u16)> {
    let Value::Array(ranges) = slots else {
        return BTreeSet::new();
    };
    ranges
        .iter()
        .filter_map(|range| {
            let Value::Array(parts) = range else {
                return None;
            };
            let Some(Value::Array(master)) = parts.get(2) else {
                return None;
            };
            match (master.first(), master.get(1)) {
                (Some(Value::BulkString(host)), Some(Value::Int(port))) => Some((
                    String::from_utf8_lossy(host).into_owned(),
                    u16::try_from(*port).ok()?,
                )),
                _ => None,
            }
        })
        .collect()
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Node(node) => node.req_packed_command(cmd),
            Connection::Cluster(cluster) => cluster.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Node(node) => node.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(cluster) => cluster.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Node(node) => node.get_db(),
            Connection::Cluster(cluster) => cluster.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: i64, end: i64, host: &str, port: i64) -> Value {
        let node = |host: &str, port| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        Value::Array(vec![
            Value::Int(start),
            Value::Int(end),
            node(host, port),
            node("10.0.0.9", 7009),
        ])
    }

    #[test]
    fn the_masters_are_read_from_cluster_slots_and_replicas_ignored() {
        let slots = Value::Array(vec![
            range(0, 5460, "10.0.0.1", 7000),
            range(5461, 10922, "10.0.0.2", 7000),
            range(10923, 16383, "10.0.0.1", 7000),
            Value::Int(3),
            Value::Array(vec![Value::Int(1)]),
        ]);
        let found: Vec<_> = masters(&slots).into_iter().collect();
        assert_eq!(
            found,
            [
                ("10.0.0.1".to_string(), 7000),
                ("10.0.0.2".to_string(), 7000)
            ]
        );
        assert!(masters(&Value::Nil).is_empty());
    }
}
