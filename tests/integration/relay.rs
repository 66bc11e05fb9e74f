//! After the 101 ticketgate's relay carries the socket (`src/relay.rs`): what the upstream
//! sends together with its 101 reaches the client, in order; both sides' ends reach the
//! other; the socket's access-log line and metrics are written when it ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::Message;

use jsonwebtoken::Algorithm;

use crate::common::config::{self, TicketOptions};
use crate::common::tokens::{mint, valid_claims};
use crate::common::ws::{self, connect};
use crate::common::{Gate, upstream, wait_for};

/// How the upstream writes its answer: the 101 and two frames in one write, or byte by byte.
#[derive(Clone, Copy)]
enum Writes {
    Together,
    ByteByByte,
}

/// An upstream that answers each handshake with its 101 and two text frames (written as
/// `writes` says), then reads until its connection ends; `ended` counts connections that ended.
async fn eager_upstream(writes: Writes) -> (SocketAddr, Arc<tokio::sync::Semaphore>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let ended = Arc::new(tokio::sync::Semaphore::new(0));
    let counted = ended.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let Some(answer) = upstream::read_handshake(&mut stream).await else {
                    return;
                };
                let mut answer = answer.into_bytes();
                for text in ["first", "second"] {
                    answer.extend_from_slice(&[0x81, text.len() as u8]);
                    answer.extend_from_slice(text.as_bytes());
                }
                let written = match writes {
                    Writes::Together => stream.write_all(&answer).await,
                    Writes::ByteByByte => write_byte_by_byte(&mut stream, &answer).await,
                };
                if written.is_ok() {
                    let _ = tokio::io::copy(&mut stream, &mut tokio::io::sink()).await;
                }
                counted.add_permits(1);
            });
        }
    });
    (addr, ended)
}

async fn write_byte_by_byte(
    stream: &mut tokio::net::TcpStream,
    bytes: &[u8],
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    for byte in bytes {
        stream.write_all(std::slice::from_ref(byte)).await?;
        stream.flush().await?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

async fn open(gate: &Gate) -> ws::Socket {
    let jwt = mint(Algorithm::HS256, &valid_claims());
    let ticket = ws::ticket(&gate.url("/ws-ticket"), &jwt).await;
    connect(gate.port, &format!("/ws?ticket={ticket}"), &[])
        .await
        .expect("101")
}

/// Receives the upstream's two frames, in order.
async fn assert_first_and_second(socket: &mut ws::Socket) {
    for expected in ["first", "second"] {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message in time")
            .expect("a message")
            .expect("readable");
        assert_eq!(message, Message::text(expected));
    }
}

#[tokio::test]
async fn frames_sent_with_the_101_arrive_first_and_the_close_reaches_the_upstream() {
    let (upstream, ended) = eager_upstream(Writes::Together).await;
    let gate = Gate::start(&config::tickets(upstream, &TicketOptions::default())).await;
    let mut socket = open(&gate).await;
    assert_first_and_second(&mut socket).await;
    // The close frame goes through; this upstream never answers it, so the client hangs up.
    socket.close(None).await.expect("close");
    drop(socket);
    let upstream_saw_the_end = tokio::time::timeout(Duration::from_secs(5), ended.acquire())
        .await
        .is_ok();
    assert!(
        upstream_saw_the_end,
        "the upstream's connection did not end"
    );
    let lines = gate.wait_for_log_lines(2).await;
    let socket_line = lines
        .iter()
        .find(|l| l["status"] == 101)
        .unwrap_or_else(|| panic!("no 101 line: {lines:?}"));
    assert_eq!(socket_line["path"], "/ws?ticket=REDACTED");
    assert_eq!(socket_line["auth"], "ticket");
    wait_for(
        "the socket counted closed",
        Duration::from_secs(5),
        || async {
            gate.metrics()
                .await
                .contains("ticketgate_websocket_connections 0")
        },
    )
    .await;
}

/// A client that goes away without a close frame ends the upstream's connection too.
#[tokio::test]
async fn a_client_that_vanishes_ends_the_upstreams_connection() {
    let (upstream, ended) = eager_upstream(Writes::Together).await;
    let gate = Gate::start(&config::tickets(upstream, &TicketOptions::default())).await;
    drop(open(&gate).await);
    let upstream_saw_the_end = tokio::time::timeout(Duration::from_secs(5), ended.acquire())
        .await
        .is_ok();
    assert!(
        upstream_saw_the_end,
        "the upstream's connection outlived the client's"
    );
}

/// An upstream that trickles its 101's head and frames a byte at a time: the head's end is
/// found across reads, and not a byte of the frames is lost or shown to Pingora.
#[tokio::test]
async fn a_101_trickled_byte_by_byte_is_relayed_whole() {
    let (upstream, _ended) = eager_upstream(Writes::ByteByByte).await;
    let gate = Gate::start(&config::tickets(upstream, &TicketOptions::default())).await;
    let mut socket = open(&gate).await;
    assert_first_and_second(&mut socket).await;
}

/// An upstream that stops reading cannot hold a socket open: once the relay's writes to it
/// make no progress for `limits.write_timeout_seconds`, both connections close.
#[tokio::test]
async fn an_upstream_that_stops_reading_is_cut_at_the_write_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let upstream = listener.local_addr().expect("addr");
    let drain = Arc::new(tokio::sync::Notify::new());
    let drained = drain.clone();
    let upstream_end = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let answer = upstream::read_handshake(&mut stream)
            .await
            .expect("handshake");
        stream.write_all(answer.as_bytes()).await.expect("101");
        // Reads nothing until told; then reads what was buffered, to the end the gate made.
        drained.notified().await;
        let mut rest = Vec::new();
        let read = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest),
        )
        .await;
        read.is_ok()
    });
    let file = config::File {
        limits: config::Limits {
            write_timeout_seconds: Some(1),
            ..Default::default()
        },
        ..config::tickets(upstream, &TicketOptions::default())
    };
    let gate = Gate::start(&file).await;
    let mut socket = open(&gate).await;
    // The client sends until its sends fail: every buffer toward the mute upstream fills,
    // then the relay's write waits, and a second later the gate cuts both connections.
    let started = std::time::Instant::now();
    let payload = vec![b'x'; 64 * 1024];
    let cut = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let sent = futures_util::SinkExt::send(&mut socket, Message::binary(payload.clone()));
            if sent.await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(cut.is_ok(), "the client's connection was never cut");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "cut before the write timeout"
    );
    drain.notify_one();
    assert!(
        upstream_end.await.expect("upstream task"),
        "the upstream's connection was not closed"
    );
    let lines = gate.wait_for_log_lines(2).await;
    assert!(lines.iter().any(|l| l["status"] == 101), "{lines:?}");
}
