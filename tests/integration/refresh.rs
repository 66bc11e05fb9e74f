//! Session refresh: `POST websocket.refresh_path` extends an open socket's login without a
//! reconnect, for the same caller telling the upstream the same thing; every refusal the
//! contract lists, over real sockets; the handle never reaches the upstream or a log line.

use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common::config::{self, TicketOptions};
use crate::common::tokens::{self, mint, valid_claims};
use crate::common::ws::{self, Socket, close_of, connect, upstream_report};
use crate::common::{Gate, secrets, upstream};
use crate::live::revoke;
use ticketgate::config::file::Store;

const REFRESH: &str = "/ws-refresh";

/// A gate with refresh on, no leeway (a login's `exp` is its socket's end) and `/revoke`.
async fn refreshing_gate(upstream: &upstream::Server) -> (Gate, String) {
    refreshing_gate_on(upstream, Store::Url("memory".into())).await
}

async fn refreshing_gate_on(upstream: &upstream::Server, store: Store) -> (Gate, String) {
    let options = TicketOptions {
        refresh_path: Some(REFRESH.into()),
        store,
        ..Default::default()
    };
    let mut file = config::tickets(upstream.addr, &options);
    file.jwt.as_mut().expect("jwt").leeway_seconds = Some(0);
    file.admin.token_file = Some(crate::common::fixture("admin.token"));
    let admin = std::fs::read_to_string(crate::common::fixture("admin.token"))
        .expect("admin token")
        .trim_end()
        .to_string();
    secrets::remember(&admin);
    (Gate::start(&file).await, admin)
}

/// A login of `subject` valid `seconds` more, with `claims` changed.
fn login(subject: &str, seconds: i64, change: impl FnOnce(&mut Value)) -> String {
    let mut claims = valid_claims();
    claims["sub"] = json!(subject);
    claims["exp"] = json!(tokens::now() + seconds);
    change(&mut claims);
    mint(Algorithm::HS256, &claims)
}

/// `POST` to the refresh endpoint: status, headers, JSON body.
async fn refresh(
    gate: &Gate,
    jwt: Option<&str>,
    body: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = reqwest::Client::new()
        .post(gate.url(REFRESH))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(jwt) = jwt {
        request = request.bearer_auth(jwt);
    }
    let response = request.send().await.expect("refresh");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = serde_json::from_str(&response.text().await.expect("body")).unwrap_or_default();
    (status, headers, body)
}

fn session_body(session: &str) -> String {
    json!({ "session": session }).to_string()
}

/// A socket opened with a ticket bought by `jwt`, and its session handle.
async fn open(gate: &Gate, jwt: &str) -> (Socket, String) {
    let (status, _, answer) = ws::request_ticket(&gate.url("/ws-ticket"), jwt).await;
    assert_eq!(status, 200, "{answer}");
    let ticket = answer["ticket"].as_str().expect("ticket");
    let session = answer["session"]
        .as_str()
        .expect("a session handle")
        .to_string();
    assert_eq!(session.len(), 22, "128 bits, base64url");
    assert!(!ticket.contains(&session) && !session.contains(ticket));
    let mut socket = connect(gate.port, &format!("/ws?ticket={ticket}"), &[])
        .await
        .expect("upgrade");
    let report = upstream_report(&mut socket).await;
    assert!(
        !report.to_string().contains(&session),
        "the handle reached the upstream"
    );
    (socket, session)
}

#[tokio::test]
async fn a_socket_refreshed_twice_outlives_both_old_expiries_and_closes_at_the_last() {
    let upstream = upstream::echo().await;
    let (gate, _) = refreshing_gate(&upstream).await;
    let first = login("alice", 2, |_| {});
    let (mut socket, session) = open(&gate, &first).await;
    let mut last_exp = 0;
    for extra in [4, 6] {
        let renewed = login("alice", extra, |_| {});
        let (status, headers, answer) =
            refresh(&gate, Some(&renewed), &session_body(&session)).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["session"], session.as_str());
        last_exp = tokens::now() + extra;
        let expires_at = answer["expires_at"].as_i64().expect("expires_at");
        assert!((expires_at - last_exp).abs() <= 1, "{answer}");
        assert!(
            answer["expires_in"]
                .as_i64()
                .is_some_and(|s| s > 0 && s <= extra)
        );
        assert_eq!(headers["cache-control"], "no-store");
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        ws::assert_echoes(&mut socket, &[Message::text("still open")]).await;
    }
    // Past both old expiries (2 s, then 4 s); closes at the last one, within 2 s.
    let close = close_of(&mut socket, Duration::from_secs(8)).await;
    assert_eq!(close, Some((4401, "login expired".to_string())));
    let closed = tokens::now();
    assert!(
        closed >= last_exp - 1 && closed <= last_exp + 2,
        "closed at {closed}, exp {last_exp}"
    );
    gate.assert_metrics(&[r#"ticketgate_session_refreshes_total{result="extended"} 2"#])
        .await;
    // The ticket, the upgrade (still open: its line comes when it closes) and two refreshes.
    let log = gate.wait_for_log_lines(4).await;
    let refreshes: Vec<&Value> = log.iter().filter(|l| l["route"] == REFRESH).collect();
    assert_eq!(refreshes.len(), 2, "{log:?}");
    assert!(
        refreshes
            .iter()
            .all(|l| l["auth"] == "jwt" && l["subject"] == "alice" && l["status"] == 200)
    );
    gate.assert_never_printed(&[&session, &first]);
}

#[tokio::test]
async fn every_refusal_leaves_the_socket_as_it_was() {
    let upstream = upstream::echo().await;
    let (gate, admin) = refreshing_gate(&upstream).await;
    let opened_with = login("alice", 600, |_| {});
    let (mut socket, session) = open(&gate, &opened_with).await;
    let body = session_body(&session);
    let cases: Vec<(&str, Option<String>, String, u16, &str)> = vec![
        (
            "another subject",
            Some(login("bob", 600, |_| {})),
            body.clone(),
            403,
            "session_mismatch",
        ),
        (
            "another issuer",
            Some(login("alice", 600, |c| {
                c["iss"] = json!("https://other.example.com/")
            })),
            body.clone(),
            401,
            "invalid_token",
        ),
        (
            "a changed forwarded claim",
            Some(login("alice", 600, |c| {
                c["email"] = json!("mallory@example.com")
            })),
            body.clone(),
            409,
            "identity_changed",
        ),
        (
            "an expired login",
            Some(login("alice", -120, |_| {})),
            body.clone(),
            401,
            "invalid_token",
        ),
        ("no login", None, body.clone(), 401, "missing_token"),
        (
            "no session",
            Some(login("alice", 600, |_| {})),
            "{}".into(),
            400,
            "invalid_request",
        ),
        (
            "not JSON",
            Some(login("alice", 600, |_| {})),
            "session".into(),
            400,
            "invalid_request",
        ),
        (
            "an unknown session",
            Some(login("alice", 600, |_| {})),
            session_body("AAAAAAAAAAAAAAAAAAAAAA"),
            404,
            "unknown_session",
        ),
    ];
    for (what, jwt, body, status, error) in cases {
        let (got, _, answer) = refresh(&gate, jwt.as_deref(), &body).await;
        assert_eq!(got, status, "{what}: {answer}");
        assert_eq!(answer["error"], error, "{what}");
    }
    ws::assert_echoes(&mut socket, &[Message::text("untouched")]).await;

    // A revoked subject cannot refresh, and revocation still closes the socket.
    let (status, revoked) = revoke(&gate, Some(&admin), r#"{"subject":"alice"}"#).await;
    assert_eq!(status, 200);
    let close = close_of(&mut socket, Duration::from_secs(3)).await;
    assert_eq!(close, Some((4403, "revoked".to_string())));
    let (status, _, answer) = refresh(&gate, Some(&opened_with), &body).await;
    assert_eq!(status, 401, "{answer}");
    // A login issued after the revocation passes, but the socket it would extend is gone.
    let revoked_at = revoked["revoked_at"].as_i64().expect("revoked_at");
    crate::common::wait_for("the next second", Duration::from_secs(3), || async {
        tokens::now() > revoked_at
    })
    .await;
    let after = login("alice", 600, |c| c["iat"] = json!(tokens::now()));
    let (status, _, answer) = refresh(&gate, Some(&after), &body).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("unknown_session")),
        "a closed socket's handle"
    );
    gate.assert_metrics(&[
        r#"ticketgate_session_refreshes_total{result="session_mismatch"} 1"#,
        r#"ticketgate_session_refreshes_total{result="identity_changed"} 1"#,
        r#"ticketgate_session_refreshes_total{result="unknown_session"} 2"#,
        r#"ticketgate_session_refreshes_total{result="extended"} 0"#,
    ])
    .await;
    gate.assert_never_printed(&[&session, &opened_with]);
}

#[tokio::test]
async fn a_changed_claim_leaves_the_old_expiry_and_six_a_minute_is_the_most() {
    let upstream = upstream::echo().await;
    let (gate, _) = refreshing_gate(&upstream).await;
    let (mut socket, session) = open(&gate, &login("alice", 2, |_| {})).await;
    let changed = login("alice", 600, |c| {
        c["email"] = json!("alice@elsewhere.example")
    });
    let (status, _, _) = refresh(&gate, Some(&changed), &session_body(&session)).await;
    assert_eq!(status, 409);
    let close = close_of(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(
        close,
        Some((4401, "login expired".to_string())),
        "closed at its old expiry"
    );

    let (_other_socket, other) = open(&gate, &login("alice", 600, |_| {})).await;
    let same = login("alice", 600, |_| {});
    for _ in 0..6 {
        assert_eq!(
            refresh(&gate, Some(&same), &session_body(&other)).await.0,
            200
        );
    }
    let (status, headers, answer) = refresh(&gate, Some(&same), &session_body(&other)).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (429, Some("too_many_refreshes"))
    );
    let retry: u64 = headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
}

#[tokio::test]
async fn a_bearer_upgrade_gets_its_handle_in_the_101_and_cors_is_the_ticket_endpoints() {
    let upstream = upstream::echo().await;
    let (gate, _) = refreshing_gate(&upstream).await;
    let jwt = login("alice", 600, |_| {});
    let (head, mut stream) = crate::common::raw::upgrade(
        gate.port,
        "/ws",
        &format!("Authorization: Bearer {jwt}\r\n"),
    )
    .await;
    assert_eq!(crate::common::raw::status(&head), 101, "{head}");
    let session = crate::common::raw::header(&head, "ticketgate-session")
        .unwrap_or_else(|| panic!("no Ticketgate-Session: {head}"))
        .to_string();
    secrets::remember(&session);
    assert_eq!(session.len(), 22);
    let report: Value =
        serde_json::from_slice(&crate::common::raw::next_frame(&mut stream).await).expect("report");
    assert!(!report.to_string().contains(&session), "{report}");
    let (status, _, _) = refresh(
        &gate,
        Some(&login("alice", 900, |_| {})),
        &session_body(&session),
    )
    .await;
    assert_eq!(status, 200);

    let client = reqwest::Client::new();
    let preflight = client
        .request(reqwest::Method::OPTIONS, gate.url(REFRESH))
        .header("origin", "https://app.test")
        .send()
        .await
        .expect("preflight");
    assert_eq!(preflight.status(), 204);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.test"
    );
    let get = client.get(gate.url(REFRESH)).send().await.expect("get");
    assert_eq!(get.status(), 405);
    assert_eq!(get.headers()["allow"], "POST, OPTIONS");
    let refused = client
        .post(gate.url(REFRESH))
        .header("origin", "https://app.test")
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status(), 400);
    assert_eq!(
        refused.headers()["access-control-allow-origin"],
        "https://app.test"
    );
    gate.assert_never_printed(&[&session, &jwt]);
}

#[tokio::test]
async fn without_a_shared_store_another_replica_knows_no_session() {
    let upstream = upstream::echo().await;
    let (a, _) = refreshing_gate(&upstream).await;
    let (b, _) = refreshing_gate(&upstream).await;
    let (_socket, session) = open(&a, &login("alice", 600, |_| {})).await;
    let (status, _, answer) = refresh(
        &b,
        Some(&login("alice", 900, |_| {})),
        &session_body(&session),
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("unknown_session"))
    );
}

#[tokio::test]
async fn without_refresh_path_there_is_no_session() {
    let upstream = upstream::echo().await;
    let gate = Gate::start(&config::tickets(upstream.addr, &TicketOptions::default())).await;
    let (_, _, answer) =
        ws::request_ticket(&gate.url("/ws-ticket"), &login("alice", 600, |_| {})).await;
    assert!(answer.get("session").is_none(), "{answer}");
    let jwt = login("alice", 600, |_| {});
    let (head, _) = crate::common::raw::upgrade(
        gate.port,
        "/ws",
        &format!("Authorization: Bearer {jwt}\r\n"),
    )
    .await;
    assert_eq!(
        crate::common::raw::header(&head, "ticketgate-session"),
        None
    );
}

#[tokio::test]
async fn a_refresh_at_another_replica_sharing_redis_extends_the_socket_where_it_is_held() {
    let redis = crate::common::redis::Redis::start().await;
    let upstream = upstream::echo().await;
    let (a, _) = refreshing_gate_on(&upstream, redis.store()).await;
    let (b, _) = refreshing_gate_on(&upstream, redis.store()).await;
    b.wait_for_readyz(200).await;
    let (mut socket, session) = open(&a, &login("alice", 2, |_| {})).await;
    let body = session_body(&session);
    let (status, _, answer) = refresh(&b, Some(&login("bob", 600, |_| {})), &body).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (403, Some("session_mismatch"))
    );
    let changed = login("alice", 600, |c| c["email"] = json!("mallory@example.com"));
    let (status, _, _) = refresh(&b, Some(&changed), &body).await;
    assert_eq!(status, 409);
    let renewed = login("alice", 5, |_| {});
    let new_exp = tokens::now() + 5;
    let (status, _, answer) = refresh(&b, Some(&renewed), &body).await;
    assert_eq!(status, 200, "{answer}");
    // Past the old expiry (2 s) the socket at A is open; it closes at the new one.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    ws::assert_echoes(
        &mut socket,
        &[Message::text("extended at the other replica")],
    )
    .await;
    let close = close_of(&mut socket, Duration::from_secs(6)).await;
    assert_eq!(close, Some((4401, "login expired".to_string())));
    let closed = tokens::now();
    assert!(
        closed >= new_exp - 1 && closed <= new_exp + 2,
        "closed at {closed}, exp {new_exp}"
    );
    b.assert_metrics(&[
        r#"ticketgate_session_refreshes_total{result="extended"} 1"#,
        r#"ticketgate_session_refreshes_total{result="session_mismatch"} 1"#,
        r#"ticketgate_session_refreshes_total{result="identity_changed"} 1"#,
    ])
    .await;
    // Once closed, its record is gone: another replica no longer knows it.
    crate::common::wait_for("the record to go", Duration::from_secs(3), || async {
        refresh(&b, Some(&login("alice", 600, |_| {})), &body)
            .await
            .0
            == 404
    })
    .await;
    for gate in [&a, &b] {
        gate.assert_never_printed(&[&session, &renewed]);
    }
}
