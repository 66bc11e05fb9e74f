//! Tickets end to end with the memory store: issuance (and its CORS), the upgrade through
//! to a real WebSocket echo upstream, and every way a ticket is refused.

use jsonwebtoken::Algorithm;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::Message;

use crate::common::config::{self, TicketOptions};
use crate::common::tokens::{mint, valid_claims};
use crate::common::ws::{self, assert_echoes, connect, request_ticket, upstream_report};
use crate::common::{Gate, get, tokens, upstream};

async fn gate_with(options: &TicketOptions) -> (upstream::Server, Gate) {
    let upstream = upstream::echo().await;
    let gate = Gate::start(&config::tickets(upstream.addr, options)).await;
    (upstream, gate)
}

#[tokio::test]
async fn a_ticket_opens_a_websocket_to_the_unmodified_upstream() {
    let (_upstream, gate) = gate_with(&TicketOptions::default()).await;
    let jwt = mint(Algorithm::RS256, &valid_claims());
    let (status, headers, body) = request_ticket(&gate.url("/ws-ticket"), &jwt).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["expires_in"], 30);
    let ticket = body["ticket"].as_str().expect("ticket").to_string();
    assert!(ticket.len() <= 256);
    assert!(
        ticket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    );

    let path = format!("/ws/room?a=1&ticket={ticket}&b=two");
    let mut socket = connect(gate.port, &path, &[]).await.expect("101");
    let seen = upstream_report(&mut socket).await;
    assert_eq!(seen["uri"], "/ws/room?a=1&b=two");
    assert_eq!(seen["headers"]["x-auth-subject"], json!(["alice"]));
    assert_eq!(
        seen["headers"]["x-auth-email"],
        json!(["alice@example.com"])
    );
    assert_eq!(seen["headers"]["upgrade"], json!(["websocket"]));
    assert!(seen["headers"].get("authorization").is_none());
    assert!(!seen.to_string().contains(&ticket));
    assert_echoes(
        &mut socket,
        &[
            Message::text("hello"),
            Message::binary(vec![0u8, 1, 2, 255]),
            Message::text("x".repeat(70_000)),
            Message::text("last"),
        ],
    )
    .await;
    gate.assert_metrics(&["ticketgate_websocket_connections 1"])
        .await;
    socket.close(None).await.expect("close");
    drop(socket);

    let lines = gate.wait_for_log_lines(2).await;
    let line = lines
        .iter()
        .find(|l| l["status"] == 101)
        .expect("the WebSocket's line");
    assert_eq!(line["path"], "/ws/room?a=1&ticket=REDACTED&b=two");
    assert_eq!(line["auth"], "ticket");
    assert_eq!(line["subject"], "alice");
    assert_eq!(line["route"], "/ws");
    gate.assert_metrics(&[
        "ticketgate_websocket_connections 0",
        "ticketgate_tickets_issued_total 1",
        "ticketgate_tickets_redeemed_total 1",
        r#"ticketgate_requests_total{route="/ws",status="101"} 1"#,
        r#"ticketgate_requests_total{route="/ws-ticket",status="200"} 1"#,
    ])
    .await;
    gate.assert_never_printed(&[&jwt, &ticket]);
}

fn description(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body).expect("JSON")["error_description"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn every_bad_ticket_is_refused_with_401() {
    let (_upstream, gate) = gate_with(&TicketOptions::default()).await;
    let jwt = mint(Algorithm::HS256, &valid_claims());
    let used = ws::ticket(&gate.url("/ws-ticket"), &jwt).await;
    connect(gate.port, &format!("/ws?ticket={used}"), &[])
        .await
        .expect("first use");

    let fresh = ws::ticket(&gate.url("/ws-ticket"), &jwt).await;
    let mut tampered = fresh.clone().into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let secret = std::fs::read(crate::common::fixture("hs.secret")).expect("secret");
    let foreign = sealed(&secret, tokens::now() as u64 + 30);
    let cases = [
        ("replayed", used.clone(), "ticket already used"),
        ("tampered", tampered, "ticket invalid"),
        (
            "truncated",
            fresh[..fresh.len() - 5].to_string(),
            "ticket invalid",
        ),
        (
            "signed with another secret",
            foreign.clone(),
            "ticket invalid",
        ),
        ("a JWT as ticket", jwt.clone(), "ticket invalid"),
        ("garbage", "tg2.x.y".to_string(), "ticket invalid"),
    ];
    for (name, ticket, expected) in &cases {
        let (status, body) = connect(gate.port, &format!("/ws?ticket={ticket}"), &[])
            .await
            .expect_err(name);
        assert_eq!(status, 401, "{name}");
        assert_eq!(description(&body), *expected, "{name}");
        assert!(body.contains("invalid_ticket"), "{name}");
        assert!(!body.contains(ticket.as_str()), "{name}");
    }
    // A ticket is never a bearer token, on the API or on the upgrade.
    let (status, _, body) = get(&gate.url("/api"), Some(&fresh)).await;
    assert_eq!(status, 401);
    assert_eq!(description(&body), "token malformed");
    let bearer = format!("Bearer {fresh}");
    let (status, _) = connect(gate.port, "/ws", &[("authorization", &bearer)])
        .await
        .expect_err("bearer ticket");
    assert_eq!(status, 401);
    // The tampered-with ticket's original is still good: refusals consumed nothing.
    connect(gate.port, &format!("/ws?ticket={fresh}"), &[])
        .await
        .expect("fresh ticket");

    gate.assert_metrics(&[
        r#"ticketgate_tickets_rejected_total{reason="replayed"} 1"#,
        r#"ticketgate_tickets_rejected_total{reason="invalid"} 5"#,
        "ticketgate_tickets_redeemed_total 2",
        "ticketgate_tickets_issued_total 2",
    ])
    .await;
    gate.assert_never_printed(&[&jwt, &used, &fresh, &foreign]);
}

/// A ticket for alice sealed under `secret`, expiring at `expires_at`.
fn sealed(secret: &[u8], expires_at: u64) -> String {
    let identity = ticketgate::auth::Identity {
        issuer: Default::default(),
        subject: "alice".into(),
        claims: Default::default(),
        lists: Default::default(),
    };
    let lifetime = ticketgate::tickets::codec::Lifetime {
        minted_at_ms: (expires_at - 30) * 1000,
        expires_at,
        login_expires_at: expires_at + 600,
    };
    ticketgate::tickets::codec::Codec::new(secret)
        .seal(&identity, lifetime, &[0; 8])
        .expect("seal")
        .ticket
}

/// A ticket sealed under the gate's own secret with an expiry already past: what an issued
/// ticket becomes after its TTL, without waiting the TTL out.
fn expired_ticket() -> String {
    sealed(&crate::common::ticket_secret(), tokens::now() as u64 - 1)
}

#[tokio::test]
async fn a_ticket_past_its_ttl_is_refused() {
    let (_upstream, gate) = gate_with(&TicketOptions {
        ttl_seconds: 7,
        ..Default::default()
    })
    .await;
    let jwt = mint(Algorithm::HS256, &valid_claims());
    let (status, _, issued) = request_ticket(&gate.url("/ws-ticket"), &jwt).await;
    assert_eq!(status, 200);
    assert_eq!(
        issued["expires_in"], 7,
        "the TTL configured is the TTL issued"
    );
    let expired = expired_ticket();
    let (status, body) = connect(gate.port, &format!("/ws?ticket={expired}"), &[])
        .await
        .expect_err("expired");
    assert_eq!(status, 401);
    assert_eq!(description(&body), "ticket too old, fetch a new one");
    gate.assert_metrics(&[r#"ticketgate_tickets_rejected_total{reason="expired"} 1"#])
        .await;
    gate.assert_never_printed(&[&jwt, &expired]);
}

#[tokio::test]
async fn one_ticket_twenty_concurrent_upgrades_exactly_one_wins() {
    let (_upstream, gate) = gate_with(&TicketOptions::default()).await;
    let jwt = mint(Algorithm::HS256, &valid_claims());
    let ticket = ws::ticket(&gate.url("/ws-ticket"), &jwt).await;
    let path = format!("/ws?ticket={ticket}");
    let opened = ws::count_upgrades(&[gate.port; 20], &path).await;
    assert_eq!(opened, 1);
}

#[tokio::test]
async fn tickets_work_only_on_websocket_upgrades() {
    let (_upstream, gate) = gate_with(&TicketOptions::default()).await;
    let jwt = mint(Algorithm::HS256, &valid_claims());
    let ticket = ws::ticket(&gate.url("/ws-ticket"), &jwt).await;
    let (status, _, body) = get(&gate.url(&format!("/ws?ticket={ticket}")), None).await;
    assert_eq!(status, 401);
    assert_eq!(
        description(&body),
        "tickets are only accepted on WebSocket upgrades"
    );
    // Not consumed by the refused request.
    connect(gate.port, &format!("/ws?ticket={ticket}"), &[])
        .await
        .expect("upgrade");
    // Without any credential the upgrade is refused; with a bearer JWT it passes (native clients).
    let (status, _) = connect(gate.port, "/ws", &[])
        .await
        .expect_err("no credentials");
    assert_eq!(status, 401);
    let bearer = format!("Bearer {jwt}");
    let mut socket = connect(gate.port, "/ws?x=1", &[("authorization", &bearer)])
        .await
        .expect("bearer upgrade");
    let seen = upstream_report(&mut socket).await;
    assert_eq!(seen["headers"]["x-auth-subject"], json!(["alice"]));
    assert!(seen["headers"].get("authorization").is_none());
}

#[tokio::test]
async fn an_expired_login_is_told_to_refresh_before_the_socket() {
    let (_upstream, gate) = gate_with(&TicketOptions::default()).await;
    let mut claims = valid_claims();
    claims["exp"] = json!(tokens::now() - 120);
    let expired = mint(Algorithm::RS256, &claims);
    let (status, headers, body) = request_ticket(&gate.url("/ws-ticket"), &expired).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(body["error_description"], "token expired");
    assert!(
        headers["www-authenticate"]
            .to_str()
            .expect("ascii")
            .contains(r#"error_description="token expired""#)
    );
    let (status, _, body) = request_ticket(&gate.url("/ws-ticket"), "").await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn the_ticket_endpoint_speaks_cors_to_allowed_origins_only() {
    let (_upstream, gate) = gate_with(&TicketOptions::default()).await;
    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, gate.url("/ws-ticket"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight("https://app.test").await.expect("preflight");
    assert_eq!(allowed.status(), 204);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.test"
    );
    assert_eq!(allowed.headers()["access-control-allow-methods"], "POST");
    assert_eq!(
        allowed.headers()["access-control-allow-headers"],
        "Authorization, Content-Type"
    );
    let other = preflight("https://evil.test").await.expect("preflight");
    assert!(other.headers().get("access-control-allow-origin").is_none());
    assert!(
        other
            .headers()
            .get("access-control-allow-methods")
            .is_none()
    );

    let jwt = mint(Algorithm::HS256, &valid_claims());
    for (token, status) in [(jwt.as_str(), 200), ("garbage", 401)] {
        let response = client
            .post(gate.url("/ws-ticket"))
            .header("origin", "https://app.test")
            .bearer_auth(token)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), status);
        assert_eq!(
            response.headers()["access-control-allow-origin"],
            "https://app.test"
        );
    }
    let response = client
        .get(gate.url("/ws-ticket"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST, OPTIONS");
}

#[tokio::test]
async fn upgrades_from_other_origins_get_403_and_keep_their_ticket() {
    let options = TicketOptions {
        websocket_origins: vec!["https://app.test".into()],
        ..Default::default()
    };
    let (_upstream, gate) = gate_with(&options).await;
    let jwt = mint(Algorithm::HS256, &valid_claims());
    let ticket = ws::ticket(&gate.url("/ws-ticket"), &jwt).await;
    let path = format!("/ws?ticket={ticket}");
    let (status, body) = connect(gate.port, &path, &[("origin", "https://evil.test")])
        .await
        .expect_err("origin");
    assert_eq!(status, 403, "{body}");
    connect(gate.port, &path, &[("origin", "https://app.test")])
        .await
        .expect("allowed origin");
    let other = ws::ticket(&gate.url("/ws-ticket"), &jwt).await;
    connect(gate.port, &format!("/ws?ticket={other}"), &[])
        .await
        .expect("no Origin: not a browser");
}
