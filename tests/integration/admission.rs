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
use crate::common::{Gate, get, raw, upstream, wait_for};

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
    // Asked faster than 2 a second (however slow the machine), a refusal comes.
    let mut issued = 0;
    let refused = loop {
        let (status, headers, body) = ws::request_ticket(&url, &jwt).await;
        if status != 200 {
            break (status, headers, body);
        }
        issued += 1;
        assert!(issued < 20, "a budget of 2 a second never refused");
    };
    assert!(issued >= 2, "the second's burst: {issued}");
    assert_come_back_later(refused.0, &refused.1, &refused.2, (429, "busy"));
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

/// With `admission:` set, the sockets open at SIGTERM close one by one over the first 80 % of
/// the grace period, each with 1001: their reconnects spread too.
#[tokio::test]
async fn a_paced_drain_spreads_the_closes_measured_at_the_clients() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let upstream = upstream::echo().await;
    let file = config::File {
        shutdown_grace_seconds: Some(5),
        admission: Some(Admission::default()),
        ..config::tickets(upstream.addr, &TicketOptions::default())
    };
    let mut gate = Gate::start(&file).await;
    let mut sockets = Vec::new();
    for _ in 0..4 {
        sockets.push(ws::open_with_ticket(&gate).await.0);
    }
    let terminated = std::time::Instant::now();
    gate.signal("TERM");
    let mut closed_at = Vec::new();
    for socket in &mut sockets {
        let code = tokio::time::timeout(Duration::from_secs(6), async {
            loop {
                match socket.next().await {
                    Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
                    Some(Ok(_)) => {}
                    other => panic!("ended without a close frame: {other:?}"),
                }
            }
        })
        .await
        .expect("closed within the grace period");
        assert_eq!(code, 1001);
        closed_at.push(terminated.elapsed());
    }
    closed_at.sort();
    let (first, last) = (closed_at[0], closed_at[3]);
    // 4 s over 4 sockets: at about 0, 1, 2 and 3 s; all before the grace period's last second.
    assert!(first < Duration::from_millis(1_500), "{closed_at:?}");
    assert!(
        last - first >= Duration::from_secs(2),
        "not spread: {closed_at:?}"
    );
    assert!(last < Duration::from_millis(4_500), "{closed_at:?}");
    assert!(gate.exit_within(Duration::from_secs(6)).await.is_some());
}

/// With `upgrades_per_second`, tickets issued faster than the budget say when to connect, and
/// an upgrade that does not wait is refused (503) before its ticket is consumed.
#[tokio::test]
async fn tickets_are_paced_to_the_upgrade_budget_and_an_early_upgrade_waits() {
    let upstream = upstream::echo().await;
    let gate = gate(
        upstream.addr,
        Admission {
            upgrades_per_second: Some(1),
            ..Default::default()
        },
    )
    .await;
    let url = gate.url("/ws-ticket");
    let jwt = mint(Algorithm::HS256, &valid_claims());
    let mut tickets = Vec::new();
    let mut waits = Vec::new();
    for _ in 0..3 {
        let (status, _, body) = ws::request_ticket(&url, &jwt).await;
        assert_eq!(status, 200, "{body}");
        waits.push(body["connect_after_ms"].as_u64().expect("connect_after_ms"));
        tickets.push(body["ticket"].as_str().expect("ticket").to_string());
        assert!(
            body["expires_in"].as_u64().is_some_and(|s| s >= 30),
            "valid a whole TTL from its moment"
        );
    }
    // One a second: now, then about 1 s and 2 s later (less the time the requests took).
    assert_eq!(waits[0], 0, "{waits:?}");
    assert!(
        waits[1] > 0 && waits[2] > waits[1] && waits[2] <= 2_000,
        "{waits:?}"
    );
    // The budget holds two (a tenth of a second's worth, at least two: the reserve for a
    // client late for its slot), so the first two open at once...
    for ticket in &tickets[..2] {
        connect(gate.port, &format!("/ws?ticket={ticket}"), &[])
            .await
            .expect("within the budget");
    }
    // ...and the third, without waiting its connect_after_ms, is refused before its ticket is read.
    let (status, body) = connect(gate.port, &format!("/ws?ticket={}", tickets[2]), &[])
        .await
        .expect_err("beyond the budget");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("busy"), "{body}");
    assert_counted(&gate, "upgrades_rate").await;
    // Its ticket was not consumed: at its moment it opens the socket.
    wait_for("the upgrade's slot", Duration::from_secs(3), || async {
        connect(gate.port, &format!("/ws?ticket={}", tickets[2]), &[])
            .await
            .is_ok()
    })
    .await;
}

async fn capped_gate(
    upstream: std::net::SocketAddr,
    store: ticketgate::config::file::Store,
) -> Gate {
    let options = TicketOptions {
        store,
        ..Default::default()
    };
    let file = config::File {
        admission: Some(Admission {
            max_websockets_per_subject: Some(1),
            ..Default::default()
        }),
        ..config::tickets(upstream, &options)
    };
    Gate::start(&file).await
}

#[tokio::test]
async fn a_subject_at_its_cap_gets_no_ticket_and_no_bearer_upgrade_until_a_socket_closes() {
    let upstream = upstream::echo().await;
    let gate = capped_gate(upstream.addr, config::Store::Url("memory".into())).await;
    let url = gate.url("/ws-ticket");
    let jwt = mint(Algorithm::HS256, &valid_claims());
    let ticket = ws::ticket(&url, &jwt).await;
    let mut socket = connect(gate.port, &format!("/ws?ticket={ticket}"), &[])
        .await
        .expect("the subject's first socket");
    upstream_report(&mut socket).await;
    let (status, headers, body) = ws::request_ticket(&url, &jwt).await;
    assert_come_back_later(status, &headers, &body, (429, "too_many_sockets"));
    let bearer = format!("Bearer {jwt}");
    let (status, body) = connect(gate.port, "/ws", &[("authorization", &bearer)])
        .await
        .expect_err("a bearer upgrade past the cap");
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("too_many_sockets"), "{body}");
    let mut bob = valid_claims();
    bob["sub"] = serde_json::json!("bob");
    assert_eq!(
        ws::request_ticket(&url, &mint(Algorithm::HS256, &bob))
            .await
            .0,
        200,
        "another subject"
    );
    socket.close(None).await.expect("close");
    wait_for("the place to free", Duration::from_secs(5), || async {
        ws::request_ticket(&url, &jwt).await.0 == 200
    })
    .await;
    assert_counted(&gate, "subject").await;
}

#[tokio::test]
async fn the_cap_holds_across_replicas_sharing_redis_and_a_dead_replica_frees_its_places() {
    let redis = crate::common::redis::Redis::start().await;
    let upstream = upstream::echo().await;
    let a = capped_gate(upstream.addr, redis.store()).await;
    let b = capped_gate(upstream.addr, redis.store()).await;
    b.wait_for_readyz(200).await;
    let jwt = mint(Algorithm::HS256, &valid_claims());
    let ticket = ws::ticket(&a.url("/ws-ticket"), &jwt).await;
    let mut socket = connect(a.port, &format!("/ws?ticket={ticket}"), &[])
        .await
        .expect("a socket at A");
    upstream_report(&mut socket).await;
    let (status, headers, body) = ws::request_ticket(&b.url("/ws-ticket"), &jwt).await;
    assert_come_back_later(status, &headers, &body, (429, "too_many_sockets"));
    // A dies with its socket open: its lease ends within 30 s, and its place with it.
    drop(a);
    wait_for(
        "the dead replica's place to free",
        Duration::from_secs(40),
        || async { ws::request_ticket(&b.url("/ws-ticket"), &jwt).await.0 == 200 },
    )
    .await;
}

/// A refused browser asks again on the connection it has: a refusal of a bodiless request
/// keeps the connection (the next request on it is answered), while a refusal of a request
/// whose body was never read, or of an upgrade, closes it.
#[tokio::test]
async fn a_bodiless_refusal_keeps_the_connection_and_others_close_it() {
    let upstream = upstream::echo().await;
    let gate = gate(upstream.addr, Admission::default()).await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", gate.port))
        .await
        .expect("connect");
    let mut statuses = Vec::new();
    let mut closed = false;
    for request in [
        "POST /ws-ticket HTTP/1.1\r\nHost: g\r\nContent-Length: 0\r\n\r\n",
        "GET /public HTTP/1.1\r\nHost: g\r\n\r\n",
    ] {
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
            .await
            .expect("send");
        let answer;
        (answer, closed) = raw::read_until_closed(&mut stream, Duration::from_millis(500)).await;
        statuses.push(raw::status(&answer));
    }
    assert_eq!(statuses, [401, 200], "one connection, two answers");
    assert!(!closed, "the connection was kept");

    for (what, request) in [
        (
            "a refused request with a body",
            "POST /ws-ticket HTTP/1.1\r\nHost: g\r\nContent-Length: 5\r\n\r\nhello".to_string(),
        ),
        ("a refused upgrade", raw::upgrade_request("/ws", "")),
    ] {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", gate.port))
            .await
            .expect("connect");
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
            .await
            .expect("send");
        let (answer, closed) = raw::read_until_closed(&mut stream, Duration::from_secs(5)).await;
        assert_eq!(raw::status(&answer), 401, "{what}: {answer}");
        assert!(closed, "{what}: the connection was kept");
    }
}
