//! Upgraded connections over time: sessions against a fast local upstream
//! (cloudflare/pingora#946 tore such sessions down right after the 101), and the idle
//! timeout that replaces Pingora's 60 s read timeout on upgraded sessions: a quiet socket is
//! closed at it, and it also bounds the wait for an upstream that never answers the upgrade.
//! How traffic each way moves it is the connection stream's own rule, tested under paused
//! time in `src/connection.rs`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::protocol::Message;

use crate::common::config::{self, TicketOptions};
use crate::common::raw::{read_until_closed, upgrade_request};
use crate::common::tokens::{mint, valid_claims};
use crate::common::ws::{self, assert_echoes, close_of, connect, upstream_report};
use crate::common::{Gate, upstream};

async fn open(gate: &Gate, jwt: &str) -> ws::Socket {
    let ticket = ws::ticket(&gate.url("/ws-ticket"), jwt).await;
    let mut socket = connect(gate.port, &format!("/ws?ticket={ticket}"), &[])
        .await
        .expect("101");
    upstream_report(&mut socket).await;
    socket
}

#[tokio::test]
async fn sessions_against_a_fast_local_upstream_stay_up() {
    let upstream = upstream::echo().await;
    let gate = Gate::start(&config::tickets(upstream.addr, &TicketOptions::default())).await;
    let jwt = mint(Algorithm::HS256, &valid_claims());
    // Many fresh handshakes, each used at once: the race of #946 is right after the 101.
    for i in 0..20 {
        let mut socket = open(&gate, &jwt).await;
        assert_echoes(&mut socket, &[Message::text(format!("first {i}"))]).await;
    }
    // One session that keeps talking.
    let mut socket = open(&gate, &jwt).await;
    for round_trip in 0..500 {
        assert_echoes(&mut socket, &[Message::text(format!("tick {round_trip}"))]).await;
    }
}

/// A gate in front of `upstream` whose WebSockets close after `idle_seconds` quiet one way.
async fn idle_gate(upstream: SocketAddr, idle_seconds: u64) -> Gate {
    let options = TicketOptions {
        idle_timeout_seconds: idle_seconds,
        ..Default::default()
    };
    Gate::start(&config::tickets(upstream, &options)).await
}

/// A fresh ticket bought with a valid HS256 login.
async fn fresh_ticket(gate: &Gate) -> String {
    ws::ticket(
        &gate.url("/ws-ticket"),
        &mint(Algorithm::HS256, &valid_claims()),
    )
    .await
}

/// A gate whose WebSockets close after `idle_seconds` without traffic, and one open socket.
async fn open_with_idle_timeout(idle_seconds: u64) -> (upstream::Server, Gate, ws::Socket) {
    let upstream = upstream::echo().await;
    let gate = idle_gate(upstream.addr, idle_seconds).await;
    let socket = open(&gate, &mint(Algorithm::HS256, &valid_claims())).await;
    (upstream, gate, socket)
}

/// Waits (up to 10 s) for the close frame of an idle timeout: a normal closure that says why.
async fn assert_idle_close(socket: &mut ws::Socket) {
    let close = close_of(socket, Duration::from_secs(10)).await;
    assert_eq!(close, Some((1000, "idle timeout".to_string())));
}

#[tokio::test]
async fn a_session_quiet_past_the_idle_timeout_is_closed() {
    let (_upstream, gate, mut socket) = open_with_idle_timeout(2).await;
    let quiet_since = Instant::now();
    assert_idle_close(&mut socket).await;
    // Lived until the configured timeout, not a shorter default.
    let lived = quiet_since.elapsed();
    assert!(
        lived >= Duration::from_millis(1_900),
        "closed after {lived:?}, before the idle timeout"
    );
    // The closed WebSocket is logged and no longer counted as open.
    let lines = gate.wait_for_log_lines(2).await;
    assert!(
        lines.iter().any(|l| l["status"] == 101
            && l["reason"] == "idle"
            && l["duration_ms"].as_f64().is_some_and(|ms| ms >= 1_500.0)),
        "{lines:?}"
    );
    crate::common::wait_for("the gauge to drop", Duration::from_secs(5), || async {
        gate.metrics()
            .await
            .contains("ticketgate_websocket_connections 0")
    })
    .await;
    gate.assert_metrics(&[r#"ticketgate_websocket_closed_total{reason="idle"} 1"#])
        .await;
}

#[tokio::test]
async fn an_upgrade_the_upstream_never_answers_ends_at_the_idle_timeout() {
    let gate = idle_gate(upstream::mute().await, 2).await;
    let ticket = fresh_ticket(&gate).await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", gate.port))
        .await
        .expect("connect");
    let request = upgrade_request(&format!("/ws?ticket={ticket}"), "");
    stream.write_all(request.as_bytes()).await.expect("send");
    let sent = Instant::now();
    let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(closed, "still waiting for the upstream after 10 s");
    assert_eq!(answer, "", "no upstream answer to pass on");
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_millis(1_900),
        "ended after {waited:?}"
    );
    let lines = gate.wait_for_log_lines(2).await;
    assert!(
        lines
            .iter()
            .any(|l| l["path"] == "/ws?ticket=REDACTED" && l["reason"] == "idle"),
        "{lines:?}"
    );
    gate.assert_never_printed(&[&ticket]);
}
