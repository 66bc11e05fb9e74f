//! Ticket stores for several replicas, on real topologies: one `redis-server`, a 3-master
//! Cluster, a Sentinel-managed master and replica, a TLS node, an ACL user. Single use
//! across replicas, fail-closed while no master answers, recovery without a restart, and
//! `WAIT` keeping a redemption through a failover.

use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;

use crate::common::config::{self, Store, TicketOptions};
use crate::common::redis::{Cluster, Redis, SentinelSetup};
use crate::common::tls::TestPki;
use crate::common::tokens::{mint, valid_claims};
use crate::common::ws::{self, connect, request_ticket};
use crate::common::{Gate, get, upstream, wait_for};

/// How soon after a failover every replica must serve again (the contract's promise).
const RECOVERY: Duration = Duration::from_secs(10);

async fn replica(upstream: std::net::SocketAddr, redis: &Redis) -> Gate {
    replica_on(upstream, redis.store(), None, &[]).await
}

/// A ready ticketgate on `store`, with `tickets.redis_wait_replicas: wait_replicas`.
async fn replica_on(
    upstream: std::net::SocketAddr,
    store: Store,
    wait_replicas: Option<u32>,
    env: &[(&str, &str)],
) -> Gate {
    let gate = unready_replica_on(upstream, store, wait_replicas, env).await;
    gate.wait_for_readyz(200).await;
    gate
}

async fn unready_replica_on(
    upstream: std::net::SocketAddr,
    store: Store,
    wait_replicas: Option<u32>,
    env: &[(&str, &str)],
) -> Gate {
    let options = TicketOptions {
        store,
        wait_replicas,
        ..Default::default()
    };
    Gate::start_with_env(&config::tickets(upstream, &options), env).await
}

/// Issued at A, redeemed at B, replayed at both; one ticket raced at both: one winner.
/// Returns the credentials used, for the leak check.
async fn assert_single_use_across(a: &Gate, b: &Gate) -> Vec<String> {
    let jwt = mint(Algorithm::HS256, &valid_claims());
    let ticket = ws::ticket(&a.url("/ws-ticket"), &jwt).await;
    connect(b.port, &format!("/ws?ticket={ticket}"), &[])
        .await
        .expect("issued at A, redeemed at B");
    for replay_at in [a, b] {
        let (status, body) = connect(replay_at.port, &format!("/ws?ticket={ticket}"), &[])
            .await
            .expect_err("a replay");
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("ticket already used"), "{body}");
    }
    let contested = ws::ticket(&a.url("/ws-ticket"), &jwt).await;
    let ports: Vec<u16> = (0..20)
        .map(|i| if i % 2 == 0 { a.port } else { b.port })
        .collect();
    let opened = ws::count_upgrades(&ports, &format!("/ws?ticket={contested}")).await;
    assert_eq!(opened, 1, "one ticket, two replicas: exactly one upgrade");
    vec![jwt, ticket, contested]
}

/// The Redis key that marks `ticket` used, opened with the gates' own secret.
fn used_key_of(ticket: &str) -> String {
    let opened = ticketgate::tickets::codec::Codec::new(&crate::common::ticket_secret())
        .open(ticket, ticketgate::clock::unix_now())
        .expect("a ticket of these gates");
    ticketgate::tickets::store::redis::used_key(&opened.id)
}

async fn readiness(gate: &Gate) -> String {
    match reqwest::get(gate.admin_url("/readyz")).await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

fn assert_nothing_leaked(gates: &[&Gate], secrets: &[String]) {
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    for gate in gates {
        gate.assert_never_printed(&secrets);
    }
}

/// While no master answers: `/readyz` 503, issuance 503, redemption of `held` 503.
async fn assert_fails_closed(gate: &Gate, held: &str, jwt: &str) {
    gate.wait_for_readyz(503).await;
    let (status, _, body) = request_ticket(&gate.url("/ws-ticket"), jwt).await;
    assert_eq!(status, 503, "issuance while no master answers");
    assert_eq!(body["error"], "ticket_store_unavailable");
    let (status, body) = connect(gate.port, &format!("/ws?ticket={held}"), &[])
        .await
        .expect_err("redemption while no master answers");
    assert_eq!(status, 503, "{body}");
}

/// Every gate ready again within `RECOVERY` of the promotion, with no restart.
async fn assert_recovers(gates: &[&Gate], promoted_at: Instant) {
    for gate in gates {
        wait_for("recovery after the failover", RECOVERY, || async {
            gate.readyz().await == 200
        })
        .await;
    }
    assert!(
        promoted_at.elapsed() < RECOVERY,
        "recovered {:?} after the promotion",
        promoted_at.elapsed()
    );
}

#[tokio::test]
async fn replicas_sharing_redis_redeem_each_ticket_once() {
    let redis = Redis::start().await;
    let upstream = upstream::echo().await;
    let a = replica(upstream.addr, &redis).await;
    let b = replica(upstream.addr, &redis).await;
    let used = assert_single_use_across(&a, &b).await;
    assert_nothing_leaked(&[&a, &b], &used);
}

#[tokio::test]
async fn a_cluster_keeps_single_use_and_survives_a_master_failover() {
    let mut cluster = Cluster::start().await;
    let upstream = upstream::echo().await;
    let a = replica_on(upstream.addr, cluster.store(), None, &[]).await;
    let b = replica_on(upstream.addr, cluster.store(), None, &[]).await;
    let mut used = assert_single_use_across(&a, &b).await;
    let jwt = mint(Algorithm::HS256, &valid_claims());
    let held = ws::ticket(&a.url("/ws-ticket"), &jwt).await;

    let killed = cluster.kill_master_of(&used_key_of(&held)).await;
    assert_fails_closed(&a, &held, &jwt).await;
    cluster.wait_for_promotion(killed).await;
    assert_recovers(&[&a, &b], Instant::now()).await;
    used.extend(assert_single_use_across(&b, &a).await);
    used.extend([jwt, held]);
    assert_nothing_leaked(&[&a, &b], &used);
}

/// With `redis_wait_replicas: 1` a redemption is acknowledged only once the replica holds
/// it, so the promoted replica still refuses the ticket.
#[tokio::test]
async fn behind_sentinel_a_redeemed_ticket_stays_redeemed_through_a_failover() {
    let mut setup = SentinelSetup::start().await;
    let upstream = upstream::echo().await;
    let a = replica_on(upstream.addr, setup.store(2), Some(1), &[]).await;
    let b = replica_on(upstream.addr, setup.store(2), Some(1), &[]).await;
    let mut used = assert_single_use_across(&a, &b).await;
    let jwt = mint(Algorithm::HS256, &valid_claims());
    let redeemed = ws::ticket(&a.url("/ws-ticket"), &jwt).await;
    connect(a.port, &format!("/ws?ticket={redeemed}"), &[])
        .await
        .expect("redeemed before the failover");
    let held = ws::ticket(&b.url("/ws-ticket"), &jwt).await;

    setup.master.stop();
    assert_fails_closed(&b, &held, &jwt).await;
    let promoted = setup.wait_for_promotion().await;
    assert_recovers(&[&a, &b], Instant::now()).await;
    let (status, body) = connect(b.port, &format!("/ws?ticket={redeemed}"), &[])
        .await
        .expect_err("the promoted replica remembers the redemption");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("ticket already used"), "{body}");
    connect(b.port, &format!("/ws?ticket={held}"), &[])
        .await
        .expect("the ticket refused during the outage was never used");
    let expected = format!("master 127.0.0.1:{promoted}, up, 1 replicas attached");
    let status = readiness(&b).await;
    assert!(status.contains(&expected), "{status}");
    used.extend(assert_single_use_across(&b, &a).await);
    used.extend([jwt, redeemed, held]);
    assert_nothing_leaked(&[&a, &b], &used);
}

/// `WAIT` for more replicas than are attached: not ready, and no ticket is handed out.
#[tokio::test]
async fn too_few_replicas_for_wait_fail_closed() {
    let redis = Redis::start().await;
    let upstream = upstream::echo().await;
    let gate = unready_replica_on(upstream.addr, redis.store(), Some(1), &[]).await;
    wait_for("/readyz to name the missing replica", RECOVERY, || async {
        readiness(&gate)
            .await
            .contains("only 0 of 1 Redis replicas acknowledged")
    })
    .await;
    assert_eq!(gate.readyz().await, 503);
    let jwt = mint(Algorithm::HS256, &valid_claims());
    let (status, _, _) = request_ticket(&gate.url("/ws-ticket"), &jwt).await;
    assert_eq!(status, 503);
    assert_nothing_leaked(&[&gate], &[jwt]);
}

#[tokio::test]
async fn a_tls_node_is_trusted_through_ssl_cert_file_and_only_then() {
    let pki = TestPki::new();
    let redis = Redis::start_tls(&pki).await;
    let upstream = upstream::echo().await;
    let store = Store::Url(format!("rediss://127.0.0.1:{}/0", redis.port));
    let ca = pki.ca.display().to_string();
    let trusting = [("SSL_CERT_FILE", ca.as_str())];
    let a = replica_on(upstream.addr, store.clone(), None, &trusting).await;
    let b = replica_on(upstream.addr, store.clone(), None, &trusting).await;
    let used = assert_single_use_across(&a, &b).await;

    let stranger = tempfile::NamedTempFile::new().expect("empty bundle");
    let untrusting = [("SSL_CERT_FILE", stranger.path().to_str().expect("path"))];
    let doubting = unready_replica_on(upstream.addr, store, None, &untrusting).await;
    doubting.wait_for_readyz(503).await;
    assert_nothing_leaked(&[&a, &b, &doubting], &used);
}

#[tokio::test]
async fn an_acl_user_with_only_what_ticketgate_needs_suffices() {
    let password = "acl-password-7f3a9c41d2e8";
    crate::common::secrets::remember(password);
    let redis = Redis::start_acl("ticketgate", password).await;
    let upstream = upstream::echo().await;
    let store = Store::Url(format!(
        "redis://ticketgate:{password}@127.0.0.1:{}/0",
        redis.port
    ));
    let a = replica_on(upstream.addr, store.clone(), None, &[]).await;
    let b = replica_on(upstream.addr, store, None, &[]).await;
    let mut used = assert_single_use_across(&a, &b).await;

    let wrong = "wrong-password-0b5e1d77a9";
    let refused = unready_replica_on(
        upstream.addr,
        Store::Url(format!(
            "redis://ticketgate:{wrong}@127.0.0.1:{}/0",
            redis.port
        )),
        None,
        &[],
    )
    .await;
    refused.wait_for_readyz(503).await;
    used.extend([password.to_string(), wrong.to_string()]);
    assert_nothing_leaked(&[&a, &b, &refused], &used);
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
