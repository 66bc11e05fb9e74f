//! What a redemption costs in the shared Redis, per topology: ticketgate's own Redis store
//! (`SET NX PX`, plus `WAIT` with `--wait`) driven by `--concurrency` redemptions in flight
//! on one thread, as on one Pingora worker, for `--seconds`.
//!
//!     cargo run --release -p ticketgate-bench --bin store -- --node redis://127.0.0.1:6379/0
//!     ... --cluster redis://127.0.0.1:7000 --cluster redis://127.0.0.1:7001
//!     ... --sentinel redis://127.0.0.1:26379 --master mymaster --wait 1
//!
//! Prints one JSON line: redemptions/s, p50 and p99 in µs, and failures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use ticketgate::metrics::Metrics;
use ticketgate::shared_redis::{SharedRedis, SharedRedisConfig, Topology};
use ticketgate::tickets::store::UsedTickets;
use ticketgate::tickets::store::redis::RedisStore;

#[derive(Parser)]
struct Args {
    /// One node's URL.
    #[arg(long)]
    node: Option<String>,
    /// A cluster node's URL (repeat for more).
    #[arg(long)]
    cluster: Vec<String>,
    /// A sentinel's URL (repeat for more); needs `--master`.
    #[arg(long)]
    sentinel: Vec<String>,
    #[arg(long, default_value = "mymaster")]
    master: String,
    /// Replicas each redemption waits for (`tickets.redis_wait_replicas`).
    #[arg(long, default_value_t = 0)]
    wait: u32,
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

fn topology(args: &Args) -> Topology {
    match (
        &args.node,
        args.cluster.is_empty(),
        args.sentinel.is_empty(),
    ) {
        (Some(url), true, true) => Topology::Node(url.clone()),
        (None, false, true) => Topology::Cluster(args.cluster.clone()),
        (None, true, false) => Topology::Sentinel {
            master: args.master.clone(),
            nodes: args.sentinel.clone(),
            db: 0,
        },
        _ => panic!("give exactly one of --node, --cluster or --sentinel"),
    }
}

/// Redemptions of fresh ids until `until`; each one's latency in µs, and the failures.
async fn redeem_until(store: Arc<RedisStore>, worker: u64, until: Instant) -> (Vec<u64>, u64) {
    let mut latencies = Vec::new();
    let mut failures = 0;
    let mut n = 0u64;
    while Instant::now() < until {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&worker.to_be_bytes());
        id[8..].copy_from_slice(&n.to_be_bytes());
        n += 1;
        let started = Instant::now();
        let now = ticketgate::clock::unix_now();
        match store.consume(&id, now + 30, now).await {
            Ok(true) => latencies.push(started.elapsed().as_micros() as u64),
            _ => failures += 1,
        }
    }
    (latencies, failures)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args = Args::parse();
    let config = SharedRedisConfig {
        topology: topology(&args),
        wait_replicas: args.wait,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let redis = SharedRedis::new(&config, Arc::new(Metrics::new())).expect("store settings");
        let store = Arc::new(RedisStore::new(redis));
        // A run nonce, so ids of an earlier run in the same Redis are not replays.
        let nonce = u64::from(std::process::id()) << 32;
        let warm_up = Instant::now() + Duration::from_millis(500);
        redeem_until(store.clone(), nonce, warm_up).await;
        let started = Instant::now();
        let until = started + Duration::from_secs_f64(args.seconds);
        let workers: Vec<_> = (0..args.concurrency as u64)
            .map(|w| tokio::spawn(redeem_until(store.clone(), nonce + w + 1, until)))
            .collect();
        let mut latencies = Vec::new();
        let mut failures = 0;
        for worker in workers {
            let (done, failed) = worker.await.expect("worker");
            latencies.extend(done);
            failures += failed;
        }
        let elapsed = started.elapsed().as_secs_f64();
        latencies.sort_unstable();
        println!(
            "{}",
            serde_json::json!({
                "per_second": latencies.len() as f64 / elapsed,
                "p50_us": percentile(&latencies, 0.50),
                "p99_us": percentile(&latencies, 0.99),
                "failures": failures,
            })
        );
    });
}
