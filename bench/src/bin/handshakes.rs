//! TLS connections as fast as `--concurrency` clients on one thread can open them: each does
//! a full handshake (no resumption, unless `--resume`), one `GET` the server answers by
//! itself, and closes. For `bench/tls.py`, which measures the server's CPU around it.
//!
//!     handshakes --port 8443 --ca ca.pem --seconds 4
//!
//! Prints one JSON line: connections/s, p50 and p99 in µs, and failures.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const REQUEST: &[u8] =
    b"GET /nothing-here HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

/// A connection that has not been answered by then counts as failed.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Parser)]
struct Args {
    #[arg(long)]
    port: u16,
    /// The CA that signed the server's certificate (for `localhost`).
    #[arg(long)]
    ca: PathBuf,
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Resume TLS sessions (tickets) instead of a full handshake each time.
    #[arg(long)]
    resume: bool,
}

fn client(args: &Args) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&args.ca).expect("CA file") {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    if !args.resume {
        config.resumption = Resumption::disabled();
    }
    Arc::new(config)
}

/// One connection: handshake, request, the answer up to the server's close.
async fn connection(port: u16, connector: &TlsConnector) -> std::io::Result<()> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").expect("server name");
    let mut tls = connector.connect(name, tcp).await?;
    tls.write_all(REQUEST).await?;
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await.or_else(|e| {
        // A server that closes without close_notify still answered.
        (e.kind() == std::io::ErrorKind::UnexpectedEof)
            .then_some(0)
            .ok_or(e)
    })?;
    if answer.starts_with(b"HTTP/1.1 ") {
        Ok(())
    } else {
        Err(std::io::Error::other("no HTTP answer"))
    }
}

async fn connect_until(port: u16, connector: TlsConnector, until: Instant) -> (Vec<u64>, u64) {
    let mut latencies = Vec::new();
    let mut failures = 0;
    while Instant::now() < until {
        let started = Instant::now();
        match tokio::time::timeout(CONNECTION_DEADLINE, connection(port, &connector)).await {
            Ok(Ok(())) => latencies.push(started.elapsed().as_micros() as u64),
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
    let connector = TlsConnector::from(client(&args));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let warm_up = Instant::now() + Duration::from_millis(300);
        connect_until(args.port, connector.clone(), warm_up).await;
        // The caller reads the server's CPU time from here: a marker line on stderr.
        eprintln!("timed phase");
        let started = Instant::now();
        let until = started + Duration::from_secs_f64(args.seconds);
        let workers: Vec<_> = (0..args.concurrency)
            .map(|_| tokio::spawn(connect_until(args.port, connector.clone(), until)))
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
                "connections": latencies.len(),
                "p50_us": percentile(&latencies, 0.50),
                "p99_us": percentile(&latencies, 0.99),
                "failures": failures,
            })
        );
    });
}
