//! `limits:`: slow clients lose their connection; an upgraded WebSocket is governed by its
//! own idle timeout instead.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::common::config::{self, TicketOptions};
use crate::common::{Gate, raw, upstream, ws};

async fn gate() -> (upstream::Server, Gate) {
    let upstream = upstream::echo().await;
    let config = config::File {
        limits: config::Limits {
            header_timeout_seconds: Some(1),
            keepalive_timeout_seconds: Some(2),
            ..Default::default()
        },
        ..config::tickets(upstream.addr, &TicketOptions::default())
    };
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
    // A keep-alive connection opened after the socket, cut by the gate: both limits have
    // passed for the quiet socket too.
    let mut control = connect(&gate).await;
    control
        .write_all(b"GET /public HTTP/1.1\r\nHost: g\r\n\r\n")
        .await
        .expect("send");
    let (_, closed) = raw::read_until_closed(&mut control, Duration::from_secs(6)).await;
    assert!(closed, "the keep-alive connection was not cut");
    ws::assert_echoes(&mut socket, &[Message::text("still here")]).await;
}
