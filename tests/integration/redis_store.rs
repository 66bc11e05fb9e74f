//! The Redis ticket store: single use across replicas, fail-closed while Redis is down,
//! and recovery without a restart. Runs a real `redis-server`.

use std::time::Duration;

use jsonwebtoken::Algorithm;

use crate::common::redis::Redis;
use crate::common::tokens::{mint, valid_claims};
use crate::common::ws::{self, connect, request_ticket};
use crate::common::{Gate, TicketOptions, get, ticket_config, upstream, wait_for};

async fn replica(upstream: std::net::SocketAddr, redis: &Redis) -> Gate {
    let options = TicketOptions {
        store: redis.url(),
        ..Default::default()
    };
    let gate = Gate::start(&ticket_config(upstream, &options)).await;
    wait_until_ready(&gate, 200).await;
    gate
}

async fn readyz(gate: &Gate) -> u16 {
    reqwest::get(gate.admin_url("/readyz"))
        .await
        .map_or(0, |r| r.status().as_u16())
}

async fn wait_until_ready(gate: &Gate, status: u16) {
    wait_for(
        &format!("/readyz {status}"),
        Duration::from_secs(15),
        || async { readyz(gate).await == status },
    )
    .await;
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
    let attempts: Vec<_> = (0..20)
        .map(|i| {
            let port = if i % 2 == 0 { a.port } else { b.port };
            let path = format!("/ws?ticket={contested}");
            tokio::spawn(async move {
                connect(port, &path, &[])
                    .await
                    .map_err(|(status, _)| status)
            })
        })
        .collect();
    let mut opened = 0;
    for attempt in attempts {
        match attempt.await.expect("join") {
            Ok(_) => opened += 1,
            Err(status) => assert_eq!(status, 401),
        }
    }
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
    wait_until_ready(&gate, 503).await;
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
    wait_until_ready(&gate, 200).await;
    connect(gate.port, &format!("/ws?ticket={held}"), &[])
        .await
        .expect("the held ticket, unused, now works");
    let fresh = ws::ticket(&gate.url("/ws-ticket"), &jwt).await;
    connect(gate.port, &format!("/ws?ticket={fresh}"), &[])
        .await
        .expect("a fresh ticket works");
    let metrics = gate.metrics().await;
    assert!(
        metrics.contains(r#"ticketgate_tickets_rejected_total{reason="store_unavailable"} 1"#),
        "{metrics}"
    );
    gate.assert_never_printed(&[&jwt, &held, &fresh]);
}
