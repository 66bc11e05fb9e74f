//! `limits:`: slow clients lose their connection; an upgraded WebSocket is governed by its
//! own idle timeout instead.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{Gate, TicketOptions, raw, ticket_config, upstream, ws};

const LIMITS: &str = "limits:\n  header_timeout_seconds: 1\n  keepalive_timeout_seconds: 2\n";

async fn gate() -> (upstream::Server, Gate) {
    let upstream = upstream::echo().await;
    let config = ticket_config(upstream.addr, &TicketOptions::default()) + LIMITS;
    (upstream, Gate::start(&config).await)
}

async fn connect(gate: &Gate) -> TcpStream {
    TcpStream::connect(("127.0.0.1", gate.port))
        .await
        .expect("connect")
}

#[tokio::test]
async fn an_idle_keepalive_connection_is_closed() {
    let (_upstream, gate) = gate().await;
    let mut stream = connect(&gate).await;
    stream
        .write_all(b"GET /public HTTP/1.1\r\nHost: g\r\n\r\n")
        .await
        .expect("send");
    let started = Instant::now();
    let (answer, closed) = raw::read_until_closed(&mut stream, Duration::from_secs(6)).await;
    assert_eq!(raw::status(&answer), 200);
    assert!(closed, "still open after 6 s");
    let idle = started.elapsed();
    assert!(
        idle >= Duration::from_millis(1900),
        "closed too early: {idle:?}"
    );
}

#[tokio::test]
async fn a_trickled_header_is_cut_at_the_header_timeout() {
    let (_upstream, gate) = gate().await;
    let mut stream = connect(&gate).await;
    let started = Instant::now();
    let request =
        b"GET /public HTTP/1.1\r\nHost: g\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut = false;
    for byte in request {
        if stream.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    let (answer, closed) = raw::read_until_closed(&mut stream, Duration::from_secs(2)).await;
    assert!(
        cut || closed,
        "a header trickled over 4 s was still being read"
    );
    assert_eq!(
        raw::status(&answer),
        0,
        "a trickled request was served: {answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    let (_upstream, gate) = gate().await;
    let mut stream = connect(&gate).await;
    let (answer, closed) = raw::read_until_closed(&mut stream, Duration::from_secs(4)).await;
    assert!(closed && answer.is_empty());
}

#[tokio::test]
async fn a_websocket_outlives_both_limits() {
    let (_upstream, gate) = gate().await;
    let (mut socket, _, _) = ws::open_with_ticket(&gate).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    ws::assert_echoes(&mut socket, &[Message::text("still here")]).await;
}
