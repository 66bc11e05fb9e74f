//! The Redis ticket store: single use across replicas, fail-closed while Redis is down,
//! and recovery without a restart. Runs a real `redis-server`.

use jsonwebtoken::Algorithm;

use crate::common::config::{self, TicketOptions};
use crate::common::redis::Redis;
use crate::common::tokens::{mint, valid_claims};
use crate::common::ws::{self, connect, request_ticket};
use crate::common::{Gate, get, upstream};

async fn replica(upstream: std::net::SocketAddr, redis: &Redis) -> Gate {
    let options = TicketOptions {
        store: redis.store(),
        ..Default::default()
    };
    let gate = Gate::start(&config::tickets(upstream, &options)).await;
    gate.wait_for_readyz(200).await;
    gate
}

#[tokio::test]
async fn replicas_sharing_redis_redeem_each_ticket_once() {
    let redis = Redis::start().await;
    let upstream = upstream::echo().await;
    let a = replica(upstream.addr, &redis).await;
    let b = replica(upstream.addr, &redis).await;
    let jwt = mint(Algorithm::HS256, &valid_claims());

    let ticket = ws::ticket(&a.url("/ws-ticket"), &jwt).await;
    connect(b.port, &format!("/ws?ticket={ticket}"), &[])
        .await
        .expect("issued at A, redeemed at B");
    let (status, body) = connect(a.port, &format!("/ws?ticket={ticket}"), &[])
        .await
        .expect_err("replay at A");
    assert_eq!(status, 401);
    assert!(body.contains("ticket already used"));

    let contested = ws::ticket(&a.url("/ws-ticket"), &jwt).await;
    let ports: Vec<u16> = (0..20)
        .map(|i| if i % 2 == 0 { a.port } else { b.port })
        .collect();
    let opened = ws::count_upgrades(&ports, &format!("/ws?ticket={contested}")).await;
    assert_eq!(opened, 1, "one ticket, two replicas: exactly one upgrade");
    a.assert_never_printed(&[&jwt, &ticket, &contested]);
    b.assert_never_printed(&[&jwt, &ticket, &contested]);
}

#[tokio::test]
async fn redis_down_fails_closed_and_recovers_by_itself() {
    let mut redis = Redis::start().await;
    let upstream = upstream::echo().await;
    let gate = replica(upstream.addr, &redis).await;
    let jwt = mint(Algorithm::HS256, &valid_claims());
    let held = ws::ticket(&gate.url("/ws-ticket"), &jwt).await;

    redis.stop();
    gate.wait_for_readyz(503).await;
    let (status, body) = connect(gate.port, &format!("/ws?ticket={held}"), &[])
        .await
        .expect_err("store down");
    assert_eq!(status, 503, "{body}");
    let (status, _, body) = request_ticket(&gate.url("/ws-ticket"), &jwt).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"], "ticket_store_unavailable");
    assert_eq!(
        get(&gate.url("/api"), Some(&jwt)).await.0,
        200,
        "JWT routes keep working"
    );

    redis.restart().await;
    gate.wait_for_readyz(200).await;
    connect(gate.port, &format!("/ws?ticket={held}"), &[])
        .await
        .expect("the held ticket, unused, now works");
    let fresh = ws::ticket(&gate.url("/ws-ticket"), &jwt).await;
    connect(gate.port, &format!("/ws?ticket={fresh}"), &[])
        .await
        .expect("a fresh ticket works");
    gate.assert_metrics(&[r#"ticketgate_tickets_rejected_total{reason="store_unavailable"} 1"#])
        .await;
    gate.assert_never_printed(&[&jwt, &held, &fresh]);
}

/// A worker whose connection was used before Redis restarted reconnects and retries within
/// the redemption: once `/readyz` says 200, the first redemption works too.
#[tokio::test]
async fn a_redis_restart_costs_no_redemption() {
    let mut redis = Redis::start().await;
    let upstream = upstream::echo().await;
    let gate = replica(upstream.addr, &redis).await;
    let jwt = mint(Algorithm::HS256, &valid_claims());
    let before = ws::ticket(&gate.url("/ws-ticket"), &jwt).await;
    connect(gate.port, &format!("/ws?ticket={before}"), &[])
        .await
        .expect("the worker's connection is in use");
    let after = ws::ticket(&gate.url("/ws-ticket"), &jwt).await;

    redis.stop();
    redis.restart().await;
    gate.wait_for_readyz(200).await;
    connect(gate.port, &format!("/ws?ticket={after}"), &[])
        .await
        .expect("the first redemption after the restart");
    gate.assert_metrics(&["ticketgate_tickets_redeemed_total 2"])
        .await;
    gate.assert_never_printed(&[&jwt, &before, &after]);
}
