//! Live sessions: a WebSocket closes when its login expires (4401) or its subject is revoked
//! (4403), also when silent, with the upstream's connection closed too; `POST /revoke` and
//! what it refuses afterwards.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::Algorithm;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common::config::{self, Edit, TicketOptions};
use crate::common::tokens::{self, mint, valid_claims};
use crate::common::ws::{self, Socket, close_of, connect, upstream_report};
use crate::common::{Gate, get, upstream, wait_for};
use ticketgate::config::file::Store;

/// A ticket gate without leeway, so a login's `exp` is the moment its socket closes.
pub(crate) fn strict(upstream: &upstream::Server) -> config::File {
    let mut file = config::tickets(upstream.addr, &TicketOptions::default());
    file.jwt_mut().leeway_seconds = Some(0);
    file
}

/// A login for `subject` valid for `seconds` more, issued `issued_ago` seconds ago.
pub(crate) fn login(subject: &str, seconds: i64, issued_ago: i64) -> String {
    let mut claims = valid_claims();
    claims["sub"] = json!(subject);
    claims["exp"] = json!(tokens::now() + seconds);
    claims["iat"] = json!(tokens::now() - issued_ago);
    mint(Algorithm::HS256, &claims)
}

async fn open(gate: &Gate, jwt: &str, path: &str) -> Socket {
    let ticket = ws::ticket(&gate.url("/ws-ticket"), jwt).await;
    let mut socket = connect(gate.port, &format!("{path}?ticket={ticket}"), &[])
        .await
        .expect("upgrade");
    upstream_report(&mut socket).await;
    socket
}

#[tokio::test]
async fn a_silent_socket_is_closed_with_4401_when_its_login_expires() {
    let upstream = upstream::echo().await;
    let gate = Gate::start(&strict(&upstream)).await;
    let exp = tokens::now() + 2;
    let mut claims = valid_claims();
    claims["exp"] = json!(exp);
    let jwt = mint(Algorithm::HS256, &claims);
    let mut socket = open(&gate, &jwt, "/ws").await;
    assert_eq!(upstream.open_connections(), 1);
    let close = close_of(&mut socket, Duration::from_secs(6)).await;
    assert_eq!(close, Some((4401, "login expired".to_string())));
    // Not before `exp` (leeway 0), and within 2 s of it.
    let closed_ms = i64::try_from(ticketgate::clock::unix_now_ms()).expect("ms");
    assert!(
        closed_ms >= exp * 1000,
        "closed {} ms early",
        exp * 1000 - closed_ms
    );
    assert!(
        closed_ms < (exp + 2) * 1000,
        "closed {} ms late",
        closed_ms - exp * 1000
    );
    wait_for(
        "the upstream's connection to close",
        Duration::from_secs(2),
        || async { upstream.open_connections() == 0 },
    )
    .await;
    assert_closed_once_for(&gate, "login_expired").await;
}

/// The gate's one WebSocket was closed by ticketgate for `reason`: its access-log line and
/// the metrics say so, and none is open.
pub(crate) async fn assert_closed_once_for(gate: &Gate, reason: &str) {
    let log = gate.wait_for_log_lines(2).await;
    assert!(
        log.iter()
            .any(|l| l["status"] == 101 && l["reason"] == reason),
        "{log:?}"
    );
    gate.assert_metrics(&[
        &format!(r#"ticketgate_websocket_closed_total{{reason="{reason}"}} 1"#),
        "ticketgate_websocket_connections 0",
    ])
    .await;
}

#[tokio::test]
async fn a_bearer_upgrade_lives_no_longer_than_its_token() {
    let upstream = upstream::echo().await;
    let gate = Gate::start(&strict(&upstream)).await;
    let jwt = login("alice", 2, 0);
    let mut socket = connect(
        gate.port,
        "/ws",
        &[("authorization", &format!("Bearer {jwt}"))],
    )
    .await
    .expect("upgrade with a bearer JWT");
    upstream_report(&mut socket).await;
    let close = close_of(&mut socket, Duration::from_secs(6)).await;
    assert_eq!(close, Some((4401, "login expired".to_string())));
}

#[tokio::test]
async fn a_busy_socket_gets_its_close_between_two_frames() {
    let upstream = upstream::echo().await;
    let gate = Gate::start(&strict(&upstream)).await;
    let mut socket = open(&gate, &login("alice", 2, 0), "/ws").await;
    // Large messages in flight both ways when the login expires: a close frame spliced into
    // one of them would break the client's framing instead of closing it.
    let payload = vec![7u8; 200_000];
    let close = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            if socket.send(Message::binary(payload.clone())).await.is_err() {
                break None;
            }
            match socket.next().await {
                Some(Ok(Message::Binary(echoed))) => assert_eq!(echoed.len(), payload.len()),
                Some(Ok(Message::Close(frame))) => {
                    break frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                }
                Some(Ok(other)) => panic!("unexpected {other:?}"),
                Some(Err(e)) => panic!("framing broke: {e}"),
                None => break None,
            }
        }
    })
    .await
    .expect("closed in time");
    assert_eq!(close, Some((4401, "login expired".to_string())));
}

#[tokio::test]
async fn public_sockets_and_the_switch_off_are_never_closed_for_expiry() {
    let upstream = upstream::echo().await;
    let on = Gate::start(&strict(&upstream)).await;
    let mut off_file = strict(&upstream);
    off_file.websocket.close_at_login_expiry = Some(false);
    let off = Gate::start(&off_file).await;
    let jwt = login("alice", 2, 0);
    let mut closing = open(&on, &jwt, "/ws").await;
    let mut kept = open(&off, &jwt, "/ws").await;
    let mut public = connect(on.port, "/public/ws", &[])
        .await
        .expect("public upgrade");
    upstream_report(&mut public).await;
    // The control socket's close says the login has expired for the others too.
    let close = close_of(&mut closing, Duration::from_secs(6)).await;
    assert_eq!(close.map(|c| c.0), Some(4401));
    ws::assert_echoes(&mut kept, &[Message::text("switch off: still open")]).await;
    ws::assert_echoes(&mut public, &[Message::text("auth none: still open")]).await;
}

/// A gate with `POST /revoke` enabled, and the token it takes.
pub(crate) async fn revoking_gate(upstream: std::net::SocketAddr, store: Store) -> (Gate, String) {
    let mut file = config::tickets(
        upstream,
        &TicketOptions {
            store,
            ..Default::default()
        },
    );
    file.admin.token_file = Some(crate::common::fixture("admin.token"));
    let token = std::fs::read_to_string(crate::common::fixture("admin.token"))
        .expect("admin token fixture")
        .trim_end()
        .to_string();
    crate::common::secrets::remember(&token);
    (Gate::start(&file).await, token)
}

pub(crate) async fn revoke(
    gate: &Gate,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new()
        .post(gate.admin_url("/revoke"))
        .body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("revoke");
    let status = response.status().as_u16();
    let body = response.text().await.expect("body");
    (status, serde_json::from_str(&body).unwrap_or_default())
}

#[tokio::test]
async fn revoking_a_subject_closes_its_sockets_and_refuses_its_earlier_logins() {
    let upstream = upstream::echo().await;
    let (gate, admin) = revoking_gate(upstream.addr, Store::Url("memory".into())).await;
    let (old, bobs) = (login("alice", 600, 5), login("bob", 600, 5));
    let mut alice = open(&gate, &old, "/ws").await;
    let mut alice_again = connect(
        gate.port,
        "/ws",
        &[("authorization", &format!("Bearer {old}"))],
    )
    .await
    .expect("a second socket of alice, by bearer");
    upstream_report(&mut alice_again).await;
    let mut bob = open(&gate, &bobs, "/ws").await;
    let unused = ws::ticket(&gate.url("/ws-ticket"), &old).await;

    let alice_body = r#"{"subject":"alice"}"#;
    for (token, body, status) in [
        (None, alice_body, 401),
        (
            Some("not-the-admin-token-but-long-enough-000"),
            alice_body,
            401,
        ),
        (Some(admin.as_str()), r#"{"who":"alice"}"#, 400),
        (Some(admin.as_str()), "not json", 400),
    ] {
        assert_eq!(revoke(&gate, token, body).await.0, status, "{body}");
    }
    ws::assert_echoes(
        &mut alice,
        &[Message::text("a refused revoke changed nothing")],
    )
    .await;

    let (status, answer) = revoke(&gate, Some(&admin), alice_body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["subject"], "alice");
    let revoked_at = answer["revoked_at"].as_i64().expect("revoked_at");
    assert!((revoked_at - tokens::now()).abs() <= 1);
    for socket in [&mut alice, &mut alice_again] {
        let close = close_of(socket, Duration::from_secs(2)).await;
        assert_eq!(close, Some((4403, "revoked".to_string())));
    }
    ws::assert_echoes(&mut bob, &[Message::text("bob is not alice")]).await;

    let (status, headers, _) = get(&gate.url("/api"), Some(&old)).await;
    assert_eq!(status, 401);
    let challenge = headers["www-authenticate"].to_str().expect("ascii");
    assert!(challenge.contains("token revoked"), "{challenge}");
    assert_eq!(
        ws::request_ticket(&gate.url("/ws-ticket"), &old).await.0,
        401
    );
    let (status, body) = connect(gate.port, &format!("/ws?ticket={unused}"), &[])
        .await
        .expect_err("a ticket minted before the revocation");
    assert_eq!(status, 401);
    assert!(body.contains("invalid_ticket"), "{body}");
    let mut no_iat = valid_claims();
    no_iat.as_object_mut().expect("claims").remove("iat");
    assert_eq!(
        get(&gate.url("/api"), Some(&mint(Algorithm::HS256, &no_iat)))
            .await
            .0,
        401
    );

    // A login issued after the revocation works.
    let fresh = login("alice", 600, -1);
    assert_eq!(get(&gate.url("/api"), Some(&fresh)).await.0, 200);
    open(&gate, &fresh, "/ws").await;

    let log = gate.wait_for_log_lines(8).await;
    assert!(
        log.iter()
            .any(|l| l["status"] == 101 && l["reason"] == "revoked"),
        "{log:?}"
    );
    gate.assert_metrics(&[
        "ticketgate_revocations_total 1",
        r#"ticketgate_websocket_closed_total{reason="revoked"} 2"#,
        r#"ticketgate_tickets_rejected_total{reason="revoked"} 1"#,
    ])
    .await;
    gate.assert_never_printed(&[&admin, &old, &unused, &fresh]);
}

#[tokio::test]
async fn without_an_admin_token_there_is_no_revoke() {
    let upstream = upstream::echo().await;
    let gate = Gate::start(&strict(&upstream)).await;
    assert_eq!(
        revoke(&gate, Some("x"), r#"{"subject":"alice"}"#).await.0,
        404
    );
}

#[tokio::test]
async fn a_revocation_reaches_every_replica_sharing_redis_and_later_ones() {
    let redis = crate::common::redis::Redis::start().await;
    revocation_reaches_every_replica_and_later_ones(redis.store()).await;
}

/// The revocation stream is one key, so a Cluster carries it as a node does.
#[tokio::test]
async fn a_revocation_reaches_every_replica_on_a_cluster() {
    let cluster = crate::common::redis::Cluster::start().await;
    revocation_reaches_every_replica_and_later_ones(cluster.store()).await;
}

async fn revocation_reaches_every_replica_and_later_ones(store: Store) {
    let upstream = upstream::echo().await;
    let (first, admin) = revoking_gate(upstream.addr, store.clone()).await;
    let (second, _) = revoking_gate(upstream.addr, store.clone()).await;
    let old = login("alice", 600, 5);
    let mut at_second = open(&second, &old, "/ws").await;

    assert_eq!(
        revoke(&first, Some(&admin), r#"{"subject":"alice"}"#)
            .await
            .0,
        200
    );
    let close = close_of(&mut at_second, Duration::from_secs(2)).await;
    assert_eq!(close, Some((4403, "revoked".to_string())));
    assert_eq!(get(&second.url("/api"), Some(&old)).await.0, 401);

    let (later, _) = revoking_gate(upstream.addr, store).await;
    later.wait_for_readyz(200).await;
    assert_eq!(get(&later.url("/api"), Some(&old)).await.0, 401);
    later.assert_never_printed(&[&admin, &old]);
}
