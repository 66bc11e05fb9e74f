//! The bench upstream: answers any HTTP request with a tiny 200 and echoes WebSocket
//! messages, on one thread. It is the "direct" baseline and sits behind every proxy.
//!
//! For the admission storm several of them share one port (`--reuse-port`: a process holds at
//! most the machine's file limit of sockets), and each prints `accepts <unix second> <n>`
//! for every second in which it accepted WebSocket upgrades.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    listen: SocketAddr,
    /// Share the port with other upstream processes (SO_REUSEPORT).
    #[arg(long)]
    reuse_port: bool,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(args.listen, args.reuse_port))
}

/// WebSocket upgrades accepted in the current wall-clock second: (second, count).
static ACCEPTS: Mutex<(u64, u64)> = Mutex::new((0, 0));

fn unix_second() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Counts one upgrade, printing the previous second's count when a new second begins.
fn count_upgrade() {
    let now = unix_second();
    let mut accepts = ACCEPTS.lock().unwrap_or_else(|e| e.into_inner());
    if accepts.0 != now {
        if accepts.1 > 0 {
            println!("accepts {} {}", accepts.0, accepts.1);
        }
        *accepts = (now, 0);
    }
    accepts.1 += 1;
}

/// Prints the last second's count once it is over, when no upgrade came after it.
async fn flush_accepts() {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut accepts = ACCEPTS.lock().unwrap_or_else(|e| e.into_inner());
        if accepts.0 < unix_second() && accepts.1 > 0 {
            println!("accepts {} {}", accepts.0, accepts.1);
            accepts.1 = 0;
        }
    }
}

async fn serve(addr: SocketAddr, reuse_port: bool) -> std::io::Result<()> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    let listener = socket.listen(4096)?;
    tokio::spawn(flush_accepts());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|req| async move { Ok::<_, Infallible>(answer(req)) });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

fn answer(req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.headers().contains_key("sec-websocket-key") {
        if let Some(upgraded) = ticketgate::demo::echo::accept(req, None) {
            count_upgrade();
            return upgraded;
        }
        return Response::new(Full::new(Bytes::new()));
    }
    let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    response
}
