//! Peers that stop: a client that reads nothing while the upstream keeps sending is still
//! closed at its login's expiry, on revocation and when idle, and its upstream connection
//! with it; a plain response the client does not take is cut at `limits.write_timeout_seconds`;
//! a subject revoked while its upgrade waits for the upstream's 101 does not keep the socket.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::config::{self, TicketOptions};
use crate::common::ws::{self, close_of, connect};
use crate::common::{Gate, raw, upstream, wait_for};
use crate::live::{assert_closed_once_for, login, revoke, revoking_gate, strict};
use ticketgate::config::file::Store;

/// Opens a ticket upgrade on `/ws` over a raw socket that will read nothing more.
async fn open_and_stop_reading(gate: &Gate, jwt: &str) -> TcpStream {
    let ticket = ws::ticket(&gate.url("/ws-ticket"), jwt).await;
    let (head, stream) = raw::upgrade(gate.port, &format!("/ws?ticket={ticket}"), "").await;
    assert_eq!(raw::status(&head), 101, "{head}");
    stream
}

/// Waits until the flooding upstream has had its connection closed.
async fn upstream_closed(upstream: &upstream::Server, within: Duration) {
    wait_for("the upstream's connection to close", within, || async {
        upstream.open_connections() == 0
    })
    .await;
}

/// Until every buffer between the flooding upstream and the client is full: no frame has
/// gone out for a quarter of a second.
async fn wait_until_stalled(upstream: &upstream::Server, sent: &Arc<AtomicUsize>) {
    assert_eq!(upstream.open_connections(), 1);
    let mut last = (usize::MAX, Instant::now());
    wait_for("the flood to stall", Duration::from_secs(10), || {
        let now = sent.load(Ordering::SeqCst);
        if now != last.0 {
            last = (now, Instant::now());
        }
        let stalled = last.1.elapsed() >= Duration::from_millis(250);
        async move { stalled }
    })
    .await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_at_its_login_expiry() {
    let (upstream, sent) = upstream::flooding_websocket().await;
    let gate = Gate::start(&strict(&upstream)).await;
    let jwt = login("alice", 2, 0);
    let expires_at = Instant::now() + Duration::from_secs(2);
    let _client = open_and_stop_reading(&gate, &jwt).await;
    wait_until_stalled(&upstream, &sent).await;
    upstream_closed(
        &upstream,
        expires_at + Duration::from_secs(3) - Instant::now(),
    )
    .await;
    assert_closed_once_for(&gate, "login_expired").await;
    gate.assert_never_printed(&[&jwt]);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_on_revocation() {
    let (upstream, sent) = upstream::flooding_websocket().await;
    let (gate, admin) = revoking_gate(upstream.addr, Store::Url("memory".into())).await;
    let jwt = login("alice", 600, 5);
    let _client = open_and_stop_reading(&gate, &jwt).await;
    wait_until_stalled(&upstream, &sent).await;
    let revoked = Instant::now();
    assert_eq!(
        revoke(&gate, Some(&admin), r#"{"subject":"alice"}"#)
            .await
            .0,
        200
    );
    upstream_closed(&upstream, Duration::from_secs(3)).await;
    assert!(revoked.elapsed() < Duration::from_secs(3));
    assert_closed_once_for(&gate, "revoked").await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_when_idle() {
    let (upstream, _sent) = upstream::flooding_websocket().await;
    let options = TicketOptions {
        idle_timeout_seconds: 2,
        ..Default::default()
    };
    let gate = Gate::start(&config::tickets(upstream.addr, &options)).await;
    let jwt = login("alice", 600, 5);
    let opened = Instant::now();
    let _client = open_and_stop_reading(&gate, &jwt).await;
    // The client never sends: quiet one way for 2 s, however busy the other way is.
    upstream_closed(&upstream, Duration::from_secs(6)).await;
    assert!(opened.elapsed() >= Duration::from_secs(2));
    assert_closed_once_for(&gate, "idle").await;
}

#[tokio::test]
async fn a_response_the_client_does_not_take_is_cut_at_the_write_timeout() {
    let upstream = upstream::large_body().await;
    let file = config::File {
        limits: config::Limits {
            write_timeout_seconds: Some(1),
            ..Default::default()
        },
        ..config::tickets(upstream.addr, &TicketOptions::default())
    };
    let gate = Gate::start(&file).await;
    let mut client = TcpStream::connect(("127.0.0.1", gate.port))
        .await
        .expect("connect");
    client
        .write_all(raw::get("/public/big", "").as_bytes())
        .await
        .expect("send");
    let asked = Instant::now();
    wait_for(
        "the upstream to start sending",
        Duration::from_secs(5),
        || async { upstream.open_connections() == 1 },
    )
    .await;
    upstream_closed(&upstream, Duration::from_secs(8)).await;
    assert!(asked.elapsed() >= Duration::from_secs(1));
    // The client's connection is gone too: what was buffered, then the end.
    let (_, closed) = raw::read_until_closed(&mut client, Duration::from_secs(10)).await;
    assert!(closed);
    assert_eq!(gate.readyz().await, 200, "the process serves on");
}

/// Revokes alice while her upgrade waits for the upstream's 101, then lets the 101 go: the
/// socket opens and is closed at once with 4403, and the upstream's connection with it.
async fn revoked_during_the_upgrade(bearer: bool) {
    let mut held = upstream::held_upgrade().await;
    let (gate, admin) = revoking_gate(held.addr, Store::Url("memory".into())).await;
    let jwt = login("alice", 600, 5);
    let port = gate.port;
    let upgrade = if bearer {
        let header = format!("Bearer {jwt}");
        tokio::spawn(async move { connect(port, "/ws", &[("authorization", &header)]).await })
    } else {
        let ticket = ws::ticket(&gate.url("/ws-ticket"), &jwt).await;
        tokio::spawn(async move { connect(port, &format!("/ws?ticket={ticket}"), &[]).await })
    };
    tokio::time::timeout(Duration::from_secs(5), held.arrived.recv())
        .await
        .expect("the handshake reached the upstream");
    assert_eq!(
        revoke(&gate, Some(&admin), r#"{"subject":"alice"}"#)
            .await
            .0,
        200
    );
    held.release.notify_one();
    let mut socket = upgrade
        .await
        .expect("task")
        .expect("the 101 still reaches the client");
    let close = close_of(&mut socket, Duration::from_secs(3)).await;
    assert_eq!(close, Some((4403, "revoked".to_string())));
    wait_for(
        "the upstream's connection to close",
        Duration::from_secs(3),
        || async { held.open.load(Ordering::SeqCst) == 0 },
    )
    .await;
    gate.assert_never_printed(&[&jwt, &admin]);
}

#[tokio::test]
async fn a_ticket_socket_revoked_while_its_101_is_on_the_way_is_closed() {
    revoked_during_the_upgrade(false).await;
}

#[tokio::test]
async fn a_bearer_socket_revoked_while_its_101_is_on_the_way_is_closed() {
    revoked_during_the_upgrade(true).await;
}
