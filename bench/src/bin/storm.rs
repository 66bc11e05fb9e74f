//! The admission storm's browsers, and the ticket endpoint's cost per answer.
//!
//! - `browsers`: browsers `--first`..`--first + --count`, each with its own login (line `i`
//!   of `--tokens-file`), each behaving as the browser helper (`clients/js/ticketgate.js`)
//!   does: buy a ticket, wait its `connect_after_ms`, open the socket; after a close or a
//!   failed handshake wait a full-jitter backoff (`backoffMs`), after a refused ticket never
//!   less than its `Retry-After`. Browser `i` starts at replica `i % replicas`; when its
//!   replica refuses connections it moves to another, as a load balancer would send it.
//!   Prints `ready N` once every socket is open, then `open N C` every second (C: sockets
//!   closed so far); on a line
//!   `report` on stdin prints one JSON line: per wall-clock second the tickets issued, each
//!   refusal, upgrades and open sockets; every reconnect's time from close to open; and the
//!   asks made before their `Retry-After` (the simulation's own check: always 0).
//! - `tickets`: keep-alive POSTs to one ticket endpoint (or `--path`), rotating through the
//!   logins, for `--seconds`; prints the answers counted by status. The runner reads the
//!   server's CPU.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncBufReadExt;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
struct Args {
    /// Logins, one JWT per line.
    #[arg(long)]
    tokens_file: std::path::PathBuf,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    Browsers {
        /// host:port of each replica; sockets open on /ws, tickets come from /ws-ticket.
        #[arg(long, value_delimiter = ',')]
        replicas: Vec<String>,
        #[arg(long, default_value_t = 0)]
        first: usize,
        #[arg(long)]
        count: usize,
    },
    Tickets {
        /// host:port of the replica.
        #[arg(long)]
        replica: String,
        /// The path asked (the ticket endpoint, or one no route serves, for the floor).
        #[arg(long, default_value = "/ws-ticket")]
        path: String,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
}

fn main() -> Result<(), Error> {
    let args = Args::parse();
    let tokens: Vec<String> = std::fs::read_to_string(&args.tokens_file)?
        .lines()
        .map(str::to_string)
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match args.mode {
        Mode::Browsers {
            replicas,
            first,
            count,
        } => runtime.block_on(browsers(replicas, tokens, first, count)),
        Mode::Tickets {
            replica,
            path,
            connections,
            seconds,
        } => runtime.block_on(tickets(
            format!("http://{replica}{path}"),
            replica,
            tokens,
            connections,
            Duration::from_secs_f64(seconds),
        )),
    }
}

/// What happened in one wall-clock second, summed over the browsers.
#[derive(Default, Clone)]
struct Second {
    issued: u64,
    busy: u64,
    too_many_sockets: u64,
    upstream_unavailable: u64,
    other_refusals: u64,
    upgrades: u64,
    failed_upgrades: u64,
    open: usize,
}

/// Everything the browsers of this process saw.
#[derive(Default)]
struct Record {
    seconds: Mutex<BTreeMap<u64, Second>>,
    reconnect_ms: Mutex<Vec<u64>>,
    open: AtomicUsize,
    closes: AtomicU64,
    early_asks: AtomicU64,
}

impl Second {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "issued": self.issued,
            "busy": self.busy,
            "too_many_sockets": self.too_many_sockets,
            "upstream_unavailable": self.upstream_unavailable,
            "other_refusals": self.other_refusals,
            "upgrades": self.upgrades,
            "failed_upgrades": self.failed_upgrades,
            "open": self.open,
        })
    }
}

impl Record {
    fn count(&self, what: impl FnOnce(&mut Second)) {
        let mut seconds = self.seconds.lock().unwrap_or_else(|e| e.into_inner());
        what(seconds.entry(unix_second()).or_default());
    }
}

fn unix_second() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The helper's `backoffMs`: full jitter over 250 ms · 2^attempt, capped at 10 s.
fn backoff(attempt: u32) -> Duration {
    let cap = (250u64 << attempt.min(16)).min(10_000);
    Duration::from_millis(fastrand::u64(0..cap.max(1)))
}

/// The answer to one ticket request.
enum Answer {
    Ticket {
        ticket: String,
        connect_after: Duration,
    },
    Refused {
        error: String,
        retry_after: Duration,
    },
}

async fn browsers(
    replicas: Vec<String>,
    tokens: Vec<String>,
    first: usize,
    count: usize,
) -> Result<(), Error> {
    let record = Arc::new(Record::default());
    let replicas = Arc::new(replicas);
    let tokens = Arc::new(tokens);
    for (n, i) in (first..first + count).enumerate() {
        let (record, replicas, tokens) = (record.clone(), replicas.clone(), tokens.clone());
        // The first sockets open at a thousand a second (set-up, not the storm).
        let starts_after = Duration::from_millis(n as u64);
        tokio::spawn(async move {
            tokio::time::sleep(starts_after).await;
            browse(i, &replicas, &tokens[i % tokens.len()], &record).await
        });
    }
    while record.open.load(Ordering::Relaxed) < count {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("ready {count}");
    tokio::spawn(sample_open(record.clone()));
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line == "report" {
            break;
        }
    }
    let mut reconnect_ms = record
        .reconnect_ms
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    reconnect_ms.sort_unstable();
    let seconds: serde_json::Map<String, serde_json::Value> = record
        .seconds
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(second, what)| (second.to_string(), what.json()))
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "seconds": seconds,
            "reconnect_ms": reconnect_ms,
            "early_asks": record.early_asks.load(Ordering::Relaxed),
        })
    );
    Ok(())
}

/// Writes the open sockets into each second, and tells the runner.
async fn sample_open(record: Arc<Record>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let open = record.open.load(Ordering::Relaxed);
        record.count(|s| s.open = open);
        println!("open {open} {}", record.closes.load(Ordering::Relaxed));
    }
}

/// One browser, for ever: open, wait for the close, reconnect as the helper does.
async fn browse(i: usize, replicas: &[String], token: &str, record: &Record) {
    let mut replica = i % replicas.len();
    let mut failures = 0u32;
    let mut not_before = Instant::now();
    let mut closed_at: Option<Instant> = None;
    loop {
        if Instant::now() < not_before {
            record.early_asks.fetch_add(1, Ordering::Relaxed);
        }
        let wait = match ask(&replicas[replica], token).await {
            Ok(Answer::Ticket {
                ticket,
                connect_after,
            }) => {
                record.count(|s| s.issued += 1);
                tokio::time::sleep(connect_after).await;
                let url = format!("ws://{}/ws?ticket={ticket}", replicas[replica]);
                match tokio_tungstenite::connect_async(url).await {
                    Ok((mut socket, _)) => {
                        failures = 0;
                        record.count(|s| s.upgrades += 1);
                        record.open.fetch_add(1, Ordering::Relaxed);
                        if let Some(closed) = closed_at.take() {
                            let took = closed.elapsed().as_millis() as u64;
                            record
                                .reconnect_ms
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(took);
                        }
                        while let Some(Ok(_)) = socket.next().await {}
                        record.open.fetch_sub(1, Ordering::Relaxed);
                        record.closes.fetch_add(1, Ordering::Relaxed);
                        closed_at = Some(Instant::now());
                    }
                    Err(_) => record.count(|s| s.failed_upgrades += 1),
                }
                failures += 1;
                backoff(failures)
            }
            Ok(Answer::Refused { error, retry_after }) => {
                record.count(|s| match error.as_str() {
                    "busy" => s.busy += 1,
                    "too_many_sockets" => s.too_many_sockets += 1,
                    "upstream_unavailable" => s.upstream_unavailable += 1,
                    _ => s.other_refusals += 1,
                });
                failures += 1;
                not_before = Instant::now() + retry_after;
                retry_after.max(backoff(failures))
            }
            Err(_) => {
                // This replica is gone: the load balancer sends the browser to another.
                let others = replicas.len().saturating_sub(1).max(1);
                replica = (replica + 1 + fastrand::usize(0..others)) % replicas.len();
                failures += 1;
                backoff(failures)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// One ticket request on a connection of its own, as a browser after a blip makes it.
async fn ask(replica: &str, token: &str) -> Result<Answer, Error> {
    let stream = tokio::net::TcpStream::connect(replica).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::post(format!("http://{replica}/ws-ticket"))
        .header("host", replica)
        .header("authorization", format!("Bearer {token}"))
        .header("connection", "close")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let body = response.into_body().collect().await?.to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body)?;
    if status.is_success() {
        let ticket = json["ticket"].as_str().ok_or("no ticket in the answer")?;
        let connect_after = json["connect_after_ms"].as_u64().unwrap_or(0);
        return Ok(Answer::Ticket {
            ticket: ticket.to_string(),
            connect_after: Duration::from_millis(connect_after),
        });
    }
    Ok(Answer::Refused {
        error: json["error"].as_str().unwrap_or("").to_string(),
        retry_after: Duration::from_secs(retry_after.unwrap_or(0)),
    })
}

/// `connections` keep-alive connections asking for tickets with rotating logins.
async fn tickets(
    url: String,
    replica: String,
    tokens: Vec<String>,
    connections: usize,
    limit: Duration,
) -> Result<(), Error> {
    let tokens = Arc::new(tokens);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..connections {
        let (url, replica, tokens, next) =
            (url.clone(), replica.clone(), tokens.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(&replica).await?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            while start.elapsed() < limit {
                let token = &tokens[next.fetch_add(1, Ordering::Relaxed) % tokens.len()];
                let request = Request::post(&url)
                    .header("host", &replica)
                    .header("authorization", format!("Bearer {token}"))
                    .body(Empty::<Bytes>::new())?;
                let response = sender.send_request(request).await?;
                let status = response.status().as_u16();
                response.into_body().collect().await?;
                *statuses.entry(status).or_default() += 1;
            }
            Ok::<_, Error>(statuses)
        }));
    }
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    for worker in workers {
        for (status, n) in worker.await?? {
            *statuses.entry(status).or_default() += n;
        }
    }
    println!(
        "{}",
        serde_json::json!({ "statuses": statuses, "seconds": start.elapsed().as_secs_f64() })
    );
    Ok(())
}
