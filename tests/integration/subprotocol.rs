//! Credentials in `Sec-WebSocket-Protocol`, over raw sockets: what the client gets back in
//! the 101, what the upstream is offered, and the refusals that consume nothing.

use jsonwebtoken::Algorithm;
use serde_json::Value;

use crate::common::config::{self, TicketOptions};
use crate::common::tokens::{mint, valid_claims};
use crate::common::{Gate, raw, upstream, ws};

async fn gate() -> (upstream::Server, Gate) {
    let upstream = upstream::echo().await;
    let gate = Gate::start(&config::tickets(upstream.addr, &TicketOptions::default())).await;
    (upstream, gate)
}

/// Upgrades `target` offering `protocols`; the 101's head and the upstream's report.
async fn upgrade(gate: &Gate, target: &str, protocols: &str, extra: &str) -> (String, Value) {
    let (head, mut stream) = raw::upgrade(
        gate.port,
        target,
        &format!("Sec-WebSocket-Protocol: {protocols}\r\n{extra}"),
    )
    .await;
    assert_eq!(raw::status(&head), 101, "{head}");
    let report = serde_json::from_slice(&raw::next_frame(&mut stream).await).expect("report");
    (head, report)
}

async fn refused(gate: &Gate, target: &str, protocols: &str, extra: &str) -> String {
    let (head, mut stream) = raw::upgrade(
        gate.port,
        target,
        &format!("Sec-WebSocket-Protocol: {protocols}\r\nConnection: close\r\n{extra}"),
    )
    .await;
    let (body, _) = raw::read_until_closed(&mut stream, raw::ANSWER_DEADLINE).await;
    assert_eq!(raw::status(&head), 401, "{head}");
    head + &body
}

fn offered_upstream(report: &Value) -> &Value {
    &report["headers"]["sec-websocket-protocol"]
}

#[tokio::test]
async fn a_ticket_entry_opens_the_socket_and_never_reaches_the_upstream() {
    let (_upstream, gate) = gate().await;
    let jwt = mint(Algorithm::HS256, &valid_claims());
    let ticket = ws::ticket(&gate.url("/ws-ticket"), &jwt).await;
    let entry = format!("ticketgate, ticketgate.ticket.{ticket}");
    let (head, report) = upgrade(&gate, "/ws?room=1", &entry, "").await;
    assert_eq!(
        raw::header(&head, "sec-websocket-protocol"),
        Some("ticketgate")
    );
    assert!(!head.contains(&ticket));
    assert_eq!(*offered_upstream(&report), Value::Null, "{report}");
    assert_eq!(report["uri"], "/ws?room=1");
    assert_eq!(report["headers"]["x-auth-subject"][0], "alice");
    // Single use, as in the URL.
    let again = refused(&gate, "/ws", &entry, "").await;
    assert!(again.contains("ticket already used"), "{again}");
    gate.assert_never_printed(&[&jwt, &ticket]);
}

#[tokio::test]
async fn application_protocols_pass_both_ways() {
    let (_upstream, gate) = gate().await;
    let jwt = mint(Algorithm::HS256, &valid_claims());
    let offered = format!("v12.stomp, ticketgate.bearer.{jwt}, v11.stomp");
    let (head, report) = upgrade(&gate, "/ws", &offered, "").await;
    assert_eq!(
        *offered_upstream(&report),
        serde_json::json!(["v12.stomp, v11.stomp"])
    );
    assert_eq!(
        raw::header(&head, "sec-websocket-protocol"),
        Some("v12.stomp")
    );
    assert_eq!(report["headers"]["x-auth-subject"][0], "alice");
    // On a jwt route a bearer entry serves too.
    let (_, report) = upgrade(&gate, "/api/ws", &format!("ticketgate.bearer.{jwt}"), "").await;
    assert_eq!(report["headers"]["x-auth-subject"][0], "alice");
    gate.assert_never_printed(&[&jwt]);
}

#[tokio::test]
async fn two_credentials_are_refused_and_consume_nothing() {
    let (_upstream, gate) = gate().await;
    let jwt = mint(Algorithm::HS256, &valid_claims());
    let ticket = ws::ticket(&gate.url("/ws-ticket"), &jwt).await;
    let entry = format!("ticketgate.ticket.{ticket}");
    for (target, protocols, extra) in [
        (
            "/ws".to_string(),
            format!("{entry}, {entry}"),
            String::new(),
        ),
        (
            "/ws".to_string(),
            format!("{entry}, ticketgate.bearer.{jwt}"),
            String::new(),
        ),
        (format!("/ws?ticket={ticket}"), entry.clone(), String::new()),
        (
            "/ws".to_string(),
            entry.clone(),
            format!("Authorization: Bearer {jwt}\r\n"),
        ),
    ] {
        let answer = refused(&gate, &target, &protocols, &extra).await;
        assert!(answer.contains("more than one credential"), "{answer}");
        assert!(answer.contains(r#"error="invalid_request""#), "{answer}");
        assert!(!answer.contains(&ticket) && !answer.contains(&jwt));
    }
    // None of those consumed the ticket.
    upgrade(&gate, "/ws", &format!("ticketgate, {entry}"), "").await;
    gate.assert_metrics(&[
        r#"ticketgate_auth_failures_total{reason="two_credentials"} 4"#,
        "ticketgate_tickets_redeemed_total 1",
    ])
    .await;
    gate.assert_never_printed(&[&jwt, &ticket]);
}

#[tokio::test]
async fn bad_entries_get_the_usual_refusals() {
    let (_upstream, gate) = gate().await;
    let refusal = refused(&gate, "/ws", "ticketgate, ticketgate.ticket.tg2.forged", "").await;
    assert!(refusal.contains("invalid_ticket"), "{refusal}");
    let refusal = refused(&gate, "/ws", "ticketgate.bearer.not-a-jwt", "").await;
    assert!(refusal.contains("token malformed"), "{refusal}");
    let ticket = ws::ticket(
        &gate.url("/ws-ticket"),
        &mint(Algorithm::HS256, &valid_claims()),
    )
    .await;
    let refusal = refused(&gate, "/api/ws", &format!("ticketgate.ticket.{ticket}"), "").await;
    assert!(refusal.contains("no credentials"), "{refusal}");
}

/// A `Sec-WebSocket-Protocol` line that is not text cannot be rewritten, so a credential on
/// the readable line beside it is not taken either: 401 `invalid_request`, nothing consumed,
/// nothing reaches the upstream.
#[tokio::test]
async fn an_unreadable_protocol_line_beside_a_credential_is_refused() {
    use tokio::io::AsyncWriteExt;
    let (upstream, gate) = gate().await;
    let jwt = mint(Algorithm::HS256, &valid_claims());
    let ticket = ws::ticket(&gate.url("/ws-ticket"), &jwt).await;
    for credential in [
        format!("ticketgate.ticket.{ticket}"),
        format!("ticketgate.bearer.{jwt}"),
    ] {
        let mut request = raw::upgrade_request("/ws", "Connection: close\r\n").into_bytes();
        request.truncate(request.len() - 2);
        request.extend(b"Sec-WebSocket-Protocol: v12.stomp, \xff\xfe\r\n");
        request.extend(format!("Sec-WebSocket-Protocol: {credential}\r\n\r\n").as_bytes());
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", gate.port))
            .await
            .expect("connect");
        stream.write_all(&request).await.expect("send");
        let (answer, closed) = raw::read_until_closed(&mut stream, raw::ANSWER_DEADLINE).await;
        assert!(closed);
        assert_eq!(raw::status(&answer), 401, "{answer}");
        assert!(answer.contains(r#""error":"invalid_request""#), "{answer}");
        assert!(!answer.contains(&ticket) && !answer.contains(&jwt));
    }
    assert_eq!(upstream.open_connections(), 0, "nothing went upstream");
    let entry = format!("ticketgate.ticket.{ticket}");
    let (_, report) = upgrade(&gate, "/ws", &entry, "").await;
    assert_eq!(
        report["headers"]["x-auth-subject"][0], "alice",
        "still unused"
    );
    let log = gate.wait_for_log_lines(4).await;
    assert_eq!(
        log.iter()
            .filter(|l| l["reason"] == "unreadable_protocols")
            .count(),
        2,
        "{log:?}"
    );
    gate.assert_never_printed(&[&jwt, &ticket]);
}
