//! Upgraded connections over time: sessions against a fast local upstream
//! (cloudflare/pingora#946 tore such sessions down right after the 101), and the idle
//! timeout that replaces Pingora's 60 s read timeout on upgraded sessions: a quiet socket
//! lives exactly that long.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use jsonwebtoken::Algorithm;
use tokio_tungstenite::tungstenite::protocol::Message;

use crate::common::config::{self, TicketOptions};
use crate::common::tokens::{mint, valid_claims};
use crate::common::ws::{self, assert_echoes, connect, upstream_report};
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

/// A gate whose WebSockets close after `idle_seconds` without traffic, and one open socket.
async fn open_with_idle_timeout(idle_seconds: u64) -> (upstream::Server, Gate, ws::Socket) {
    let upstream = upstream::echo().await;
    let options = TicketOptions {
        idle_timeout_seconds: idle_seconds,
        ..Default::default()
    };
    let gate = Gate::start(&config::tickets(upstream.addr, &options)).await;
    let socket = open(&gate, &mint(Algorithm::HS256, &valid_claims())).await;
    (upstream, gate, socket)
}

#[tokio::test]
async fn a_session_quiet_past_the_idle_timeout_is_closed() {
    let (_upstream, gate, mut socket) = open_with_idle_timeout(2).await;
    let quiet_since = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the idle socket was not closed within 10 s");
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
