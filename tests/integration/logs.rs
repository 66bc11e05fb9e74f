//! The access log and the never-leak rule: a run full of requests, every credential it used
//! grepped for in everything ticketgate printed.

use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::common::tokens::{mint, valid_claims};
use tokio_tungstenite::tungstenite::protocol::Message;

use crate::common::config::{self, Keys, TicketOptions};
use crate::common::ws::{self, assert_echoes};
use crate::common::{Gate, free_port, get, upstream};

#[tokio::test]
async fn access_log_lines_carry_the_contract_fields() {
    let upstream = upstream::echo().await;
    let gate = Gate::start(&config::jwt(upstream.addr, Keys::AllStatic)).await;
    let token = mint(Algorithm::ES256, &valid_claims());
    assert_eq!(
        get(&gate.url("/api/me?ticket=t0p&room=1"), Some(&token))
            .await
            .0,
        200
    );
    assert_eq!(get(&gate.url("/api/me"), Some("garbage")).await.0, 401);
    let lines = gate.wait_for_log_lines(2).await;
    let ok = &lines[0];
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/api/me?ticket=REDACTED&room=1");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["subject"], "alice");
    assert_eq!(ok["auth"], "jwt");
    assert_eq!(ok["route"], "/");
    // Milliseconds with whole microseconds: at most three decimals.
    let ms = ok["duration_ms"].as_f64().expect("duration_ms");
    assert!(
        ms >= 0.0 && (ms * 1000.0 - (ms * 1000.0).round()).abs() < 1e-6,
        "{ms}"
    );
    assert!(ok["ts"].as_str().is_some_and(|ts| ts.ends_with('Z')));
    assert!(ok.get("reason").is_none());
    let denied = &lines[1];
    assert_eq!(denied["status"], 401);
    assert_eq!(denied["reason"], "malformed");
    assert_eq!(denied["subject"], json!(null));
}

#[tokio::test]
async fn no_credential_reaches_any_output() {
    // An upstream that is down makes Pingora write its own error log lines too.
    let down = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let gate = Gate::start(&config::jwt(down, Keys::AllStatic)).await;
    let mut secrets = Vec::new();
    for alg in [
        Algorithm::HS256,
        Algorithm::RS256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ] {
        let token = mint(alg, &valid_claims());
        for path in [
            format!("/api?access_token={token}"),
            format!("/api?ticket={token}"),
            format!("/public/x?q={token}"),
            "/api/plain".to_string(),
        ] {
            let (status, _, body) = get(&gate.url(&path), Some(&token)).await;
            assert_eq!(status, 502, "{path}");
            assert!(!body.contains(&token));
        }
        secrets.push(token);
    }
    gate.wait_for_log_lines(16).await;
    let output = gate.output();
    assert!(output.contains("access_token=REDACTED"), "{output}");
    assert!(output.contains("ticket=REDACTED"));
    gate.assert_never_printed(&secrets.iter().map(String::as_str).collect::<Vec<_>>());
}

#[tokio::test]
async fn sigterm_exits_zero_as_soon_as_nothing_is_in_flight() {
    let upstream = upstream::echo().await;
    // A long grace period: the exit must not wait for it when nothing is open.
    let config = config::File {
        shutdown_grace_seconds: Some(30),
        ..config::jwt(upstream.addr, Keys::AllStatic)
    };
    let mut gate = Gate::start(&config).await;
    let token = mint(Algorithm::HS256, &valid_claims());
    assert_eq!(
        get(&gate.url("/api/last-before-exit"), Some(&token))
            .await
            .0,
        200
    );
    let started = Instant::now();
    gate.signal("TERM");
    let status = gate
        .exit_within(Duration::from_secs(10))
        .await
        .expect("exited");
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    // The access log's last batch is written before the process exits.
    assert!(gate.output().contains("/api/last-before-exit"));
}

#[tokio::test]
async fn sigterm_lets_an_open_websocket_finish_first() {
    let upstream = upstream::echo().await;
    let config = config::File {
        shutdown_grace_seconds: Some(30),
        ..config::tickets(upstream.addr, &TicketOptions::default())
    };
    let mut gate = Gate::start(&config).await;
    let (mut socket, _, _) = ws::open_with_ticket(&gate).await;
    gate.signal("TERM");
    assert!(
        gate.exit_within(Duration::from_secs(1)).await.is_none(),
        "exited with a socket open"
    );
    assert_echoes(&mut socket, &[Message::text("still served while draining")]).await;
    socket.close(None).await.expect("close");
    drop(socket);
    let status = gate
        .exit_within(Duration::from_secs(10))
        .await
        .expect("exited after the close");
    assert!(status.success(), "{status:?}");
    let lines = gate.access_log();
    assert!(
        lines.iter().any(|l| l["status"] == 101),
        "the socket's line was flushed"
    );
}

#[tokio::test]
async fn sockets_still_open_as_the_grace_period_ends_get_a_close_frame() {
    use futures_util::StreamExt;
    let upstream = upstream::echo().await;
    let config = config::File {
        shutdown_grace_seconds: Some(3),
        ..config::tickets(upstream.addr, &TicketOptions::default())
    };
    let mut gate = Gate::start(&config).await;
    let (mut socket, _, _) = ws::open_with_ticket(&gate).await;
    let mut public = ws::connect(gate.port, "/public/ws", &[])
        .await
        .expect("public upgrade");
    ws::upstream_report(&mut public).await;
    let terminated = Instant::now();
    gate.signal("TERM");
    for socket in [&mut socket, &mut public] {
        let frame = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match socket.next().await {
                    Some(Ok(Message::Close(frame))) => return frame,
                    Some(Ok(_)) => {}
                    other => panic!("ended without a close frame: {other:?}"),
                }
            }
        })
        .await
        .expect("a close frame before the grace period ended")
        .expect("with a code");
        assert_eq!(
            (u16::from(frame.code), frame.reason.as_str()),
            (1001, "going away")
        );
    }
    let closed_after = terminated.elapsed();
    assert!(
        (Duration::from_millis(1500)..Duration::from_secs(3)).contains(&closed_after),
        "closed {closed_after:?} after SIGTERM, grace 3 s"
    );
    let status = gate
        .exit_within(Duration::from_secs(5))
        .await
        .expect("exited");
    assert!(status.success(), "{status:?}");
    let lines = gate.access_log();
    let shut = lines.iter().filter(|l| l["reason"] == "shutdown").count();
    assert_eq!(shut, 2, "{lines:?}");
}
