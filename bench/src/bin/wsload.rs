//! The WebSocket load tool. Tickets are single-use, so for a ticket route it first fetches a
//! fresh ticket per connection from the ticket endpoint (over keep-alive HTTP), then:
//!
//! - `handshakes`: opens and drops connections as fast as `--connections` workers can,
//! - `echo`: keeps `--connections` sockets sending `--size`-byte messages and timing echoes,
//! - `idle`: opens `--connections` sockets, prints `ready N`, holds them until stdin closes,
//! - `storm`: a reconnect storm, each "browser" with its own login: a new connection POSTs
//!   the next JWT of `--tokens-file` to the ticket endpoint, then the socket opens with that
//!   ticket on another connection and closes; the tickets are fetched in the timed phase.
//!   With `--bearer-in-protocol` each socket instead opens at once with its JWT offered in
//!   `Sec-WebSocket-Protocol` (`ticketgate`, `ticketgate.bearer.<JWT>`): one request a socket.
//!
//! `handshakes`, `echo` and `storm` print `start` when their timed phase begins; every mode ends with
//! one JSON line with its figures and error count.

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::protocol::Message;

#[derive(Parser)]
struct Args {
    /// ws://host:port/path of the socket to open.
    #[arg(long)]
    url: String,
    /// The ticket endpoint (http://host:port/ws-ticket); without it no ticket is sent.
    #[arg(long)]
    ticket_url: Option<String>,
    /// The bearer JWT for the ticket endpoint.
    #[arg(long, default_value = "")]
    token: String,
    #[arg(long, default_value_t = 16)]
    connections: usize,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    Handshakes {
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Tickets fetched before the timed phase (one per handshake); ignored without --ticket-url.
        #[arg(long, default_value_t = 20_000)]
        tickets: usize,
    },
    Echo {
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        #[arg(long, default_value_t = 128)]
        size: usize,
        /// Each message a STOMP SEND frame of `size` bytes (to /app/echo), as a STOMP client's.
        #[arg(long)]
        stomp: bool,
    },
    Idle,
    Storm {
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Distinct login JWTs, one per line, used in turn.
        #[arg(long)]
        tokens_file: std::path::PathBuf,
        /// Offer the JWT in `Sec-WebSocket-Protocol` instead of buying a ticket with it.
        #[arg(long)]
        bearer_in_protocol: bool,
    },
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<(), Error> {
    match args.mode {
        Mode::Handshakes { seconds, tickets } => {
            let wanted = if args.ticket_url.is_some() {
                tickets
            } else {
                0
            };
            let tickets = fetch_tickets(&args, wanted).await?;
            timed_phase_starts();
            handshakes(&args, tickets, Duration::from_secs_f64(seconds)).await
        }
        Mode::Echo {
            seconds,
            size,
            stomp,
        } => {
            let sockets = open_many(&args, args.connections).await?;
            let payload = if stomp {
                stomp_send(size)
            } else {
                Bytes::from(vec![b'x'; size])
            };
            timed_phase_starts();
            echo(sockets, payload, Duration::from_secs_f64(seconds)).await
        }
        Mode::Idle => idle(&args).await,
        Mode::Storm {
            seconds,
            ref tokens_file,
            bearer_in_protocol,
        } => {
            let tokens: Vec<String> = std::fs::read_to_string(tokens_file)?
                .lines()
                .map(str::to_string)
                .collect();
            timed_phase_starts();
            let limit = Duration::from_secs_f64(seconds);
            storm(&args, tokens, limit, bearer_in_protocol).await
        }
    }
}

/// The socket URL for one connection: with its own ticket when there is one.
fn socket_url(url: &str, ticket: Option<&str>) -> String {
    match ticket {
        Some(ticket) => {
            let joiner = if url.contains('?') { '&' } else { '?' };
            format!("{url}{joiner}ticket={ticket}")
        }
        None => url.to_string(),
    }
}

/// `count` fresh tickets, fetched over four keep-alive connections.
async fn fetch_tickets(args: &Args, count: usize) -> Result<Vec<String>, Error> {
    let Some(url) = &args.ticket_url else {
        return Ok(Vec::new());
    };
    let uri: hyper::Uri = url.parse()?;
    let authority = uri.authority().ok_or("ticket url has no host")?.to_string();
    let mut tasks = Vec::new();
    let fetchers = 4.min(count.max(1));
    for f in 0..fetchers {
        let share = count / fetchers + usize::from(f < count % fetchers);
        let (authority, uri, token) = (authority.clone(), uri.clone(), args.token.clone());
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(&authority).await?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            let mut tickets = Vec::with_capacity(share);
            for _ in 0..share {
                let request = Request::post(uri.clone())
                    .header("host", &authority)
                    .header("authorization", format!("Bearer {token}"))
                    .body(Empty::<Bytes>::new())?;
                let response = sender.send_request(request).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                if !status.is_success() {
                    return Err(format!("ticket endpoint answered {status}").into());
                }
                let json: serde_json::Value = serde_json::from_slice(&body)?;
                let ticket = json["ticket"].as_str().ok_or("no ticket in the answer")?;
                tickets.push(ticket.to_string());
            }
            Ok::<_, Error>(tickets)
        }));
    }
    let mut all = Vec::with_capacity(count);
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(all)
}

async fn connect(url: &str) -> Result<Socket, Error> {
    let (socket, _) = tokio_tungstenite::connect_async(url).await?;
    Ok(socket)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn handshakes(args: &Args, tickets: Vec<String>, limit: Duration) -> Result<(), Error> {
    let with_tickets = args.ticket_url.is_some();
    let tickets = std::sync::Arc::new(std::sync::Mutex::new(tickets));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.connections {
        let tickets = tickets.clone();
        let url = args.url.clone();
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while start.elapsed() < limit {
                let ticket = if with_tickets {
                    match tickets.lock().map(|mut t| t.pop()) {
                        Ok(Some(ticket)) => Some(ticket),
                        _ => break,
                    }
                } else {
                    None
                };
                let began = Instant::now();
                let opened = connect(&socket_url(&url, ticket.as_deref())).await;
                count_opened(&mut tally, began, opened);
            }
            tally
        }));
    }
    gather("handshakes", workers, start).await
}

/// One browser after the blip that keeps its login out of the URL: the socket opens with the
/// JWT as a `Sec-WebSocket-Protocol` entry, next to the `ticketgate` marker the 101 names.
async fn connect_with_bearer(url: &str, token: &str) -> Result<Socket, Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request()?;
    let offered = format!("ticketgate, ticketgate.bearer.{token}");
    request
        .headers_mut()
        .insert("sec-websocket-protocol", offered.parse()?);
    let (socket, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(socket)
}

/// One browser after the blip: a ticket bought with its own login on a fresh connection,
/// then the socket opened with it.
async fn reconnect(url: &str, ticket_url: &hyper::Uri, token: &str) -> Result<Socket, Error> {
    let authority = ticket_url
        .authority()
        .ok_or("ticket url has no host")?
        .to_string();
    let stream = tokio::net::TcpStream::connect(&authority).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::post(ticket_url.clone())
        .header("host", &authority)
        .header("authorization", format!("Bearer {token}"))
        .header("connection", "close")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    if !response.status().is_success() {
        return Err(format!("ticket endpoint answered {}", response.status()).into());
    }
    let body = response.into_body().collect().await?.to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body)?;
    let ticket = json["ticket"].as_str().ok_or("no ticket in the answer")?;
    connect(&socket_url(url, Some(ticket))).await
}

async fn storm(
    args: &Args,
    tokens: Vec<String>,
    limit: Duration,
    bearer_in_protocol: bool,
) -> Result<(), Error> {
    let ticket_url: Option<hyper::Uri> = match (&args.ticket_url, bearer_in_protocol) {
        (_, true) => None,
        (Some(url), false) => Some(url.parse()?),
        (None, false) => return Err("storm needs --ticket-url or --bearer-in-protocol".into()),
    };
    let tokens = std::sync::Arc::new(tokens);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.connections {
        let (tokens, next, url, ticket_url) = (
            tokens.clone(),
            next.clone(),
            args.url.clone(),
            ticket_url.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while start.elapsed() < limit {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let token = &tokens[i % tokens.len()];
                let began = Instant::now();
                let opened = match &ticket_url {
                    Some(ticket_url) => reconnect(&url, ticket_url, token).await,
                    None => connect_with_bearer(&url, token).await,
                };
                count_opened(&mut tally, began, opened);
            }
            tally
        }));
    }
    gather("storm", workers, start).await
}

async fn open_many(args: &Args, count: usize) -> Result<Vec<Socket>, Error> {
    let tickets = fetch_tickets(args, if args.ticket_url.is_some() { count } else { 0 }).await?;
    let mut sockets = Vec::with_capacity(count);
    let mut tickets = tickets.into_iter();
    // Opened in batches so that a few thousand handshakes do not all land at once.
    let mut remaining = count;
    while remaining > 0 {
        let batch = remaining.min(100);
        let mut opening = Vec::with_capacity(batch);
        for _ in 0..batch {
            let url = socket_url(&args.url, tickets.next().as_deref());
            opening.push(tokio::spawn(async move { connect(&url).await }));
        }
        for task in opening {
            sockets.push(task.await??);
        }
        remaining -= batch;
    }
    Ok(sockets)
}

/// A STOMP SEND frame of `size` bytes in all (at least its header's), its body `x`s.
fn stomp_send(size: usize) -> Bytes {
    let header = |body: usize| format!("SEND\ndestination:/app/echo\ncontent-length:{body}\n\n");
    let mut body = size.saturating_sub(header(0).len() + 1);
    while body > 0 && header(body).len() + body + 1 > size {
        body -= 1;
    }
    let mut frame = header(body).into_bytes();
    frame.resize(frame.len() + body, b'x');
    frame.push(0);
    Bytes::from(frame)
}

async fn echo(sockets: Vec<Socket>, payload: Bytes, limit: Duration) -> Result<(), Error> {
    let start = Instant::now();
    let mut workers = Vec::new();
    for mut socket in sockets {
        let payload = payload.clone();
        workers.push(tokio::spawn(async move {
            let (mut done, mut errors, mut latencies) = (0u64, 0u64, Vec::new());
            while start.elapsed() < limit {
                let began = Instant::now();
                if socket.send(Message::Binary(payload.clone())).await.is_err() {
                    errors += 1;
                    break;
                }
                match socket.next().await {
                    Some(Ok(Message::Binary(echoed))) if echoed.len() == payload.len() => {
                        latencies.push(began.elapsed().as_micros() as u64);
                        done += 1;
                    }
                    _ => {
                        errors += 1;
                        break;
                    }
                }
            }
            let _ = socket.close(None).await;
            (done, errors, latencies)
        }));
    }
    gather("echo", workers, start).await
}

/// What one worker did: operations completed, errors, and each operation's latency in µs.
type Tally = (u64, u64, Vec<u64>);

/// Counts one socket opened since `began` (then closed), or one failure.
fn count_opened(tally: &mut Tally, began: Instant, opened: Result<Socket, Error>) {
    match opened {
        Ok(socket) => {
            tally.2.push(began.elapsed().as_micros() as u64);
            tally.0 += 1;
            drop(socket);
        }
        Err(_) => tally.1 += 1,
    }
}

/// Adds up the workers' tallies and prints the mode's figures.
async fn gather(
    mode: &str,
    workers: Vec<tokio::task::JoinHandle<Tally>>,
    start: Instant,
) -> Result<(), Error> {
    let (mut done, mut errors, mut latencies) = (0, 0, Vec::new());
    for worker in workers {
        let (d, e, l) = worker.await?;
        done += d;
        errors += e;
        latencies.extend(l);
    }
    let seconds = start.elapsed().as_secs_f64();
    report(serde_json::json!({
        "mode": mode,
        "count": done,
        "errors": errors,
        "seconds": seconds,
        "rate": done as f64 / seconds,
        "p50_us": percentile(&mut latencies, 0.50),
        "p99_us": percentile(&mut latencies, 0.99),
    }));
    Ok(())
}

async fn idle(args: &Args) -> Result<(), Error> {
    let sockets = open_many(args, args.connections).await?;
    println!("ready {}", sockets.len());
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(_)) = lines.next_line().await {}
    drop(sockets);
    report(serde_json::json!({ "mode": "idle", "count": args.connections, "errors": 0 }));
    Ok(())
}

/// Tells the runner that set-up (ticket fetching, opening sockets) is over, so the CPU it
/// charges to the timed phase starts here.
fn timed_phase_starts() {
    println!("start");
}

fn percentile(samples: &mut [u64], q: f64) -> u64 {
    if samples.is_empty() {
        return 0;
    }
    samples.sort_unstable();
    let index = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[index]
}

fn report(figures: serde_json::Value) {
    println!("{figures}");
}
