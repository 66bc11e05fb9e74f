//! Admission at the ticket endpoint, the one step of a reconnect a browser can hear: the
//! ticket budget (refused before any verification, so bad credentials never use it), the
//! open-socket cap, and the upstream known down; each refusal says when to come back.

use std::time::Duration;

use jsonwebtoken::Algorithm;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::common::config::{self, Admission, TicketOptions};
use crate::common::tokens::{mint, valid_claims};
use crate::common::ws::{self, connect, upstream_report};
use crate::common::{Gate, get, upstream, wait_for};

async fn gate(upstream: std::net::SocketAddr, admission: Admission) -> Gate {
    let file = config::File {
        admission: Some(admission),
        ..config::tickets(upstream, &TicketOptions::default())
    };
    Gate::start(&file).await
}

/// A refusal that says when to come back: in `[5, 10]` seconds, in the header and the body.
fn assert_come_back_later(status: u16, headers: &HeaderMap, body: &Value, expected: (u16, &str)) {
    assert_eq!(
        (status, body["error"].as_str()),
        (expected.0, Some(expected.1)),
        "{body}"
    );
    let header: u64 = headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((5..=10).contains(&header), "{header}");
    assert_eq!(body["retry_after"].as_u64(), Some(header));
}

#[tokio::test]
async fn the_ticket_budget_refuses_before_verifying_and_says_when_to_come_back() {
    let upstream = upstream::echo().await;
    let gate = gate(
        upstream.addr,
        Admission {
            tickets_per_second: Some(2),
            ..Default::default()
        },
    )
    .await;
    let url = gate.url("/ws-ticket");
    // Credentials that fail verification do not use the budget.
    for _ in 0..5 {
        assert_eq!(ws::request_ticket(&url, "not.a.token").await.0, 401);
    }
    let jwt = mint(Algorithm::HS256, &valid_claims());
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(ws::request_ticket(&url, &jwt).await);
    }
    let issued = answers
        .iter()
        .filter(|(status, _, _)| *status == 200)
        .count();
    assert!(
        (2..=3).contains(&issued),
        "a budget of 2 a second issued {issued}"
    );
    let (status, headers, body) = answers.last().expect("four answers");
    assert_come_back_later(*status, headers, body, (429, "busy"));
    // An empty budget refuses before looking at the credentials at all.
    let (status, _, body) = ws::request_ticket(&url, "not.a.token").await;
    assert_eq!((status, body["error"].as_str()), (429, Some("busy")));
    gate.assert_metrics(&[r#"ticketgate_admission_refused_total{reason="websockets"} 0"#])
        .await;
    assert_counted(&gate, "tickets_rate").await;
    // A second later the budget has refilled.
    wait_for("the budget to refill", Duration::from_secs(3), || async {
        ws::request_ticket(&url, &jwt).await.0 == 200
    })
    .await;
    gate.assert_never_printed(&[&jwt]);
}

#[tokio::test]
async fn no_ticket_while_max_websockets_are_open() {
    let upstream = upstream::echo().await;
    let gate = gate(
        upstream.addr,
        Admission {
            max_websockets: Some(1),
            ..Default::default()
        },
    )
    .await;
    let url = gate.url("/ws-ticket");
    let jwt = mint(Algorithm::HS256, &valid_claims());
    let ticket = ws::ticket(&url, &jwt).await;
    let mut socket = connect(gate.port, &format!("/ws?ticket={ticket}"), &[])
        .await
        .expect("the first socket");
    upstream_report(&mut socket).await;
    let (status, headers, body) = ws::request_ticket(&url, &jwt).await;
    assert_come_back_later(status, &headers, &body, (429, "busy"));
    gate.assert_metrics(&[r#"ticketgate_admission_refused_total{reason="websockets"} 1"#])
        .await;
    socket.close(None).await.expect("close");
    wait_for("its place to free", Duration::from_secs(5), || async {
        ws::request_ticket(&url, &jwt).await.0 == 200
    })
    .await;
}

#[tokio::test]
async fn while_the_upstream_is_down_tickets_wait_and_come_back_by_themselves() {
    let mut upstream = upstream::echo().await;
    let addr = upstream.addr;
    let gate = gate(addr, Admission::default()).await;
    let url = gate.url("/ws-ticket");
    let jwt = mint(Algorithm::HS256, &valid_claims());
    assert_eq!(ws::request_ticket(&url, &jwt).await.0, 200);
    upstream.stop();
    drop(upstream);
    // A request the upstream cannot take marks it down.
    wait_for("a connect to fail", Duration::from_secs(5), || async {
        get(&gate.url("/api"), Some(&jwt)).await.0 == 502
    })
    .await;
    let (status, headers, body) = ws::request_ticket(&url, &jwt).await;
    assert_come_back_later(status, &headers, &body, (503, "upstream_unavailable"));
    // The upstream comes back on the same port; the replica notices without any request.
    let _back = upstream::echo_on(addr).await;
    wait_for("tickets again", Duration::from_secs(5), || async {
        ws::request_ticket(&url, &jwt).await.0 == 200
    })
    .await;
    assert_counted(&gate, "upstream_unavailable").await;
}

/// `ticketgate_admission_refused_total{reason}` has counted at least one refusal.
async fn assert_counted(gate: &Gate, reason: &str) {
    let series = format!(r#"ticketgate_admission_refused_total{{reason="{reason}"}} "#);
    let metrics = gate.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.strip_prefix(&series).is_some_and(|n| n != "0")),
        "{metrics}"
    );
}
