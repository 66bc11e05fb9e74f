//! Real Redis topologies on ephemeral loopback ports, started and stopped by the test: a
//! node (optionally with TLS or an ACL user), a 3-master Cluster with a replica each
//! (`redis-cli --cluster create`), and a Sentinel-managed master with one replica.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ticketgate::config::file::{ClusterStore, Sentinel as SentinelSettings, SentinelStore, Store};

use super::tls::TestPki;
use super::{free_port, wait_for};

const START_DEADLINE: Duration = Duration::from_secs(15);
/// Failover in these topologies takes a few seconds (timeouts below); this bounds it.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(30);

/// One `redis-server` process.
pub struct Redis {
    pub port: u16,
    args: Vec<String>,
    /// How the test itself reaches it (TLS and ACL included).
    client: redis::Client,
    child: Option<Child>,
}

impl Redis {
    /// A plain node.
    pub async fn start() -> Redis {
        Redis::start_with(Vec::new(), None, None).await
    }

    /// A node that serves only TLS, with a certificate from `pki` for 127.0.0.1.
    pub async fn start_tls(pki: &TestPki) -> Redis {
        let args = [
            "--tls-port",
            "{port}",
            "--port",
            "0",
            "--tls-cert-file",
            &pki.cert.display().to_string(),
            "--tls-key-file",
            &pki.key.display().to_string(),
            "--tls-ca-cert-file",
            &pki.ca.display().to_string(),
            "--tls-auth-clients",
            "no",
        ]
        .map(String::from)
        .to_vec();
        Redis::start_with(args, Some(pki), None).await
    }

    /// A node whose default user is off: only `user` with `password` may use it, and only
    /// for what ticketgate needs (the README's ACL line).
    pub async fn start_acl(user: &str, password: &str) -> Redis {
        let mut args: Vec<String> = ["--user", "default", "off", "--user", user, "on"]
            .map(String::from)
            .to_vec();
        args.push(format!(">{password}"));
        args.extend(ticketgate_acl().split(' ').map(String::from));
        Redis::start_with(args, None, Some((user, password))).await
    }

    async fn start_with(
        extra: Vec<String>,
        pki: Option<&TestPki>,
        credentials: Option<(&str, &str)>,
    ) -> Redis {
        let port = free_port();
        let args: Vec<String> = extra
            .into_iter()
            .map(|a| a.replace("{port}", &port.to_string()))
            .collect();
        let mut redis = Redis {
            port,
            client: test_client(port, pki, credentials),
            args,
            child: None,
        };
        redis.restart().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// `tickets.store` for this server.
    pub fn store(&self) -> Store {
        Store::Url(self.url())
    }

    /// (Re)starts the server on the same port and waits until it answers PING.
    pub async fn restart(&mut self) {
        let mut args = vec!["--port".to_string(), self.port.to_string()];
        args.extend(self.args.iter().cloned());
        self.child = Some(spawn("redis-server", &args));
        let client = self.client.clone();
        wait_for("redis-server to answer PING", START_DEADLINE, || {
            let client = client.clone();
            async move { answers(&client).await }
        })
        .await;
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The ACL rules ticketgate needs, as the README recommends them.
pub fn ticketgate_acl() -> &'static str {
    "resetkeys ~ticketgate:* resetchannels -@all +ping +set +wait +xadd +xread"
}

fn test_client(
    port: u16,
    pki: Option<&TestPki>,
    credentials: Option<(&str, &str)>,
) -> redis::Client {
    let userinfo = credentials.map_or(String::new(), |(u, p)| format!("{u}:{p}@"));
    match pki {
        None => redis::Client::open(format!("redis://{userinfo}127.0.0.1:{port}/0")),
        Some(pki) => {
            // As in ticketgate's own `main`: the crate graph holds two rustls providers.
            ticketgate::tls::install_process_provider();
            redis::Client::build_with_tls(
                format!("rediss://{userinfo}127.0.0.1:{port}/0"),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(&pki.ca).expect("test CA")),
                },
            )
        }
    }
    .expect("redis test client")
}

fn spawn(program: &str, args: &[String]) -> Child {
    Command::new(program)
        .args(args)
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {program} ({e}); install it: scripts/setup.sh, or apt-get install redis-server redis-sentinel")
        })
}

async fn answers(client: &redis::Client) -> bool {
    ask::<String>(client, &redis::cmd("PING")).await.is_some()
}

/// `command`'s answer from the plain node at `port`, `None` if it cannot be had.
async fn query<T: redis::FromRedisValue>(port: u16, command: &redis::Cmd) -> Option<T> {
    ask(&test_client(port, None, None), command).await
}

async fn ask<T: redis::FromRedisValue>(client: &redis::Client, command: &redis::Cmd) -> Option<T> {
    let mut connection = tokio::time::timeout(
        Duration::from_secs(1),
        client.get_multiplexed_async_connection(),
    )
    .await
    .ok()?
    .ok()?;
    command.query_async(&mut connection).await.ok()
}

/// A Redis Cluster of three masters with a replica each, failing over after 2 s.
pub struct Cluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

struct Node {
    port: u16,
    child: Option<Child>,
}

impl Cluster {
    pub async fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("cluster dir");
        let nodes: Vec<Node> = (0..6)
            .map(|_| {
                let port = free_port();
                let args = cluster_args(port, dir.path());
                Node {
                    port,
                    child: Some(spawn("redis-server", &args)),
                }
            })
            .collect();
        for node in &nodes {
            let port = node.port;
            wait_for("cluster node to answer", START_DEADLINE, || async move {
                query::<String>(port, &redis::cmd("PING")).await.is_some()
            })
            .await;
        }
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli --cluster create");
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = Cluster { nodes, _dir: dir };
        cluster.wait_until_whole().await;
        cluster.wait_until_replicas_synced().await;
        cluster
    }

    pub fn store(&self) -> Store {
        Store::Cluster(ClusterStore {
            redis_cluster: self
                .nodes
                .iter()
                .take(2)
                .map(|n| format!("redis://127.0.0.1:{}", n.port))
                .collect(),
        })
    }

    /// Until every running node reports `cluster_state:ok` and every slot has a master.
    pub async fn wait_until_whole(&self) {
        let ports: Vec<u16> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect();
        wait_for("the cluster to be whole", FAILOVER_DEADLINE, || {
            let ports = ports.clone();
            async move {
                for port in ports {
                    let info: Option<String> = query(port, redis::cmd("CLUSTER").arg("INFO")).await;
                    if !info.is_some_and(|i| i.contains("cluster_state:ok")) {
                        return false;
                    }
                }
                true
            }
        })
        .await;
    }

    /// Until every replica has synced with its master: a replica that never did may not
    /// take over (its data counts as too old).
    async fn wait_until_replicas_synced(&self) {
        let ports: Vec<u16> = self.nodes.iter().map(|n| n.port).collect();
        wait_for("the cluster's replicas to sync", START_DEADLINE, || {
            let ports = ports.clone();
            async move {
                let mut synced = 0;
                for port in ports {
                    let info: Option<String> =
                        query(port, redis::cmd("INFO").arg("replication")).await;
                    if info.is_some_and(|i| i.contains("master_link_status:up")) {
                        synced += 1;
                    }
                }
                synced == 3
            }
        })
        .await;
    }

    /// Kills the master that serves `key`'s slot; returns its port.
    pub async fn kill_master_of(&mut self, key: &str) -> u16 {
        let some_node = self.live_port();
        let slot: i64 = query(some_node, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
            .await
            .expect("CLUSTER KEYSLOT");
        let (_, _, port) = slot_masters(some_node)
            .await
            .into_iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .expect("a master serves the slot");
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("the master is one of ours");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        port
    }

    /// Until a replica has taken over every slot of the killed master at `port`, and the
    /// cluster is whole again.
    pub async fn wait_for_promotion(&self, port: u16) {
        let some_node = self.live_port();
        wait_for(
            "a replica to take over the slots",
            FAILOVER_DEADLINE,
            || async move {
                let masters = slot_masters(some_node).await;
                !masters.is_empty() && masters.iter().all(|(_, _, master)| *master != port)
            },
        )
        .await;
        self.wait_until_whole().await;
    }

    fn live_port(&self) -> u16 {
        self.nodes
            .iter()
            .find(|n| n.child.is_some())
            .map(|n| n.port)
            .expect("a live node")
    }
}

/// `(first slot, last slot, master port)` per slot range, as the node at `port` sees them.
async fn slot_masters(port: u16) -> Vec<(i64, i64, u16)> {
    let slots: Vec<Vec<redis::Value>> = query(port, redis::cmd("CLUSTER").arg("SLOTS"))
        .await
        .unwrap_or_default();
    slots
        .into_iter()
        .filter_map(|range| {
            let start = redis::from_redis_value(range.first()?.clone()).ok()?;
            let end = redis::from_redis_value(range.get(1)?.clone()).ok()?;
            let master: Vec<redis::Value> = redis::from_redis_value(range.get(2)?.clone()).ok()?;
            let port = redis::from_redis_value(master.get(1)?.clone()).ok()?;
            Some((start, end, port))
        })
        .collect()
}

async fn is_master(port: u16) -> bool {
    let role: Option<Vec<redis::Value>> = query(port, &redis::cmd("ROLE")).await;
    matches!(
        role.as_deref(),
        Some([redis::Value::BulkString(r), ..]) if r.as_slice() == b"master"
    )
}

fn cluster_args(port: u16, dir: &Path) -> Vec<String> {
    [
        "--port".to_string(),
        port.to_string(),
        "--cluster-enabled".into(),
        "yes".into(),
        "--cluster-config-file".into(),
        dir.join(format!("nodes-{port}.conf")).display().to_string(),
        "--cluster-node-timeout".into(),
        "2000".into(),
        // The default bus port, port + 10000, may be taken or past 65535 for an ephemeral port.
        "--cluster-port".into(),
        free_port().to_string(),
        "--dir".into(),
        dir.display().to_string(),
    ]
    .to_vec()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

pub const SENTINEL_MASTER: &str = "mymaster";

/// A master with two replicas (so that one is left to acknowledge writes after a failover),
/// watched by one sentinel (quorum 1) that fails over 2 s after the master stops answering.
pub struct SentinelSetup {
    pub master: Redis,
    pub replicas: Vec<Redis>,
    sentinel_port: u16,
    sentinel: Option<Child>,
    _dir: tempfile::TempDir,
}

impl SentinelSetup {
    pub async fn start() -> SentinelSetup {
        let master = Redis::start().await;
        let mut replicas = Vec::new();
        for _ in 0..2 {
            let of_master = ["--replicaof", "127.0.0.1", &master.port.to_string()]
                .map(String::from)
                .to_vec();
            replicas.push(Redis::start_with(of_master, None, None).await);
        }
        let dir = tempfile::tempdir().expect("sentinel dir");
        let sentinel_port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master} 1\n\
                 sentinel down-after-milliseconds {SENTINEL_MASTER} 2000\n\
                 sentinel failover-timeout {SENTINEL_MASTER} 10000\n",
                dir = dir.path().display(),
                master = master.port,
            ),
        )
        .expect("sentinel.conf");
        let sentinel = Command::new("redis-sentinel")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-sentinel ({e}); install it: scripts/setup.sh or apt-get install redis-sentinel")
            });
        let setup = SentinelSetup {
            master,
            replicas,
            sentinel_port,
            sentinel: Some(sentinel),
            _dir: dir,
        };
        setup.wait_until_replicated().await;
        setup
    }

    pub fn store(&self, db: i64) -> Store {
        Store::Sentinel(SentinelStore {
            redis_sentinel: SentinelSettings {
                master: SENTINEL_MASTER.into(),
                nodes: vec![format!("redis://127.0.0.1:{}", self.sentinel_port)],
                db: Some(db),
            },
        })
    }

    /// Until the sentinel knows both replicas and both are in sync: a failover needs that.
    async fn wait_until_replicated(&self) {
        let sentinel = self.sentinel_port;
        let ports: Vec<u16> = self.replicas.iter().map(|r| r.port).collect();
        wait_for(
            "the sentinel to see in-sync replicas",
            START_DEADLINE,
            || {
                let ports = ports.clone();
                async move {
                    let known: Option<Vec<redis::Value>> = query(
                        sentinel,
                        redis::cmd("SENTINEL").arg("REPLICAS").arg(SENTINEL_MASTER),
                    )
                    .await;
                    if known.is_none_or(|r| r.len() < ports.len()) {
                        return false;
                    }
                    for port in ports {
                        let info: Option<String> =
                            query(port, redis::cmd("INFO").arg("replication")).await;
                        if !info.is_some_and(|i| i.contains("master_link_status:up")) {
                            return false;
                        }
                    }
                    true
                }
            },
        )
        .await;
    }

    /// The port of the master the sentinel names now.
    pub async fn named_master(&self) -> Option<u16> {
        let address: Option<(String, String)> = query(
            self.sentinel_port,
            redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(SENTINEL_MASTER),
        )
        .await;
        address.and_then(|(_, port)| port.parse().ok())
    }

    /// Until the sentinel has promoted a replica that says it is master; returns its port.
    pub async fn wait_for_promotion(&self) -> u16 {
        let ports: Vec<u16> = self.replicas.iter().map(|r| r.port).collect();
        wait_for(
            "the sentinel to promote a replica",
            FAILOVER_DEADLINE,
            || async {
                match self.named_master().await {
                    Some(port) if ports.contains(&port) => is_master(port).await,
                    _ => false,
                }
            },
        )
        .await;
        self.named_master().await.expect("a named master")
    }
}

impl Drop for SentinelSetup {
    fn drop(&mut self) {
        if let Some(mut child) = self.sentinel.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
