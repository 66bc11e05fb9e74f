//! The attacker's view: every request ticketgate lets through must reach the upstream under
//! the rule the upstream's own reading of it deserves. Requests go over raw sockets where a
//! client library would tidy them up; every assertion is on what the upstream received or
//! on what ticketgate answered.

use base64::Engine;
use jsonwebtoken::{Algorithm, Header};
use serde_json::{Value, json};

use crate::common::config::{self, Keys, route};
use crate::common::tokens::{self, mint, valid_claims};
use crate::common::ws::{self, connect, request_ticket};
use crate::common::{Gate, free_port, raw, upstream};

/// A strong rule on `/api` and `/ws`, and everything else public: the layout where reading
/// a path differently from the upstream is a bypass.
fn hardened(upstream: std::net::SocketAddr) -> config::File {
    config::File {
        routes: vec![
            route("/api", "jwt"),
            route("/ws", "ticket"),
            route("/", "none"),
        ],
        tickets: Some(config::Tickets {
            secret_file: crate::common::fixture("ticket.secret"),
            ..Default::default()
        }),
        forward: config::identity_headers(),
        ..config::base(upstream, config::issuer(Keys::Hs256))
    }
}

async fn gate() -> (upstream::Server, Gate) {
    let upstream = upstream::echo().await;
    let gate = Gate::start(&hardened(upstream.addr)).await;
    (upstream, gate)
}

/// The upstream echo's report in a raw response's body.
fn report(response: &str) -> Value {
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|_| panic!("no upstream report in:\n{response}"))
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

#[tokio::test]
async fn routes_match_the_path_the_upstream_serves() {
    let (_upstream, gate) = gate().await;
    let token = mint(Algorithm::HS256, &valid_claims());
    for target in [
        "/%61pi/x",
        "//api/x",
        "/api;v=1/x",
        "/%61%70%69",
        "http://gate.test/api/x",
    ] {
        let answer = raw::exchange(gate.port, &raw::get(target, "")).await;
        assert_eq!(raw::status(&answer), 401, "{target} passed without a token");
    }
    let forwarded = [
        ("/%61pi/x", "/api/x"),
        ("//api//x/", "/api/x/"),
        ("/api;v=1/x?q=%61", "/api;v=1/x?q=%61"),
        ("http://gate.test/api/x?y", "/api/x?y"),
    ];
    for (target, seen) in forwarded {
        let answer = raw::exchange(gate.port, &raw::get(target, &bearer(&token))).await;
        assert_eq!(raw::status(&answer), 200, "{target}");
        let report = report(&answer);
        assert_eq!(report["uri"], seen, "{target}");
        assert_eq!(report["headers"]["x-auth-subject"], json!(["alice"]));
    }
    let upgrade = "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let answer = raw::exchange(gate.port, &raw::get("/%77s/room", upgrade)).await;
    assert_eq!(
        raw::status(&answer),
        401,
        "ticket route reached in disguise"
    );
}

#[tokio::test]
async fn targets_without_one_reading_are_refused() {
    let (_upstream, gate) = gate().await;
    let refused = [
        "/api%2Fx",
        "/api%2fx",
        "/public/..;/api/x",
        "/public/..;x/api/x",
        "/public/%2e%2e/api/x",
        "/public/.%2E;v=1/api",
        "/public/../api/x",
        "/a%00b",
        "/a%zz",
        "/x%5capi",
        "/..%3B/api",
        "api/x",
        "x:/api/x",
        "*/api/x",
        "ftp://gate.test/api",
    ];
    for target in refused {
        let answer = raw::exchange(gate.port, &raw::get(target, "")).await;
        assert_eq!(raw::status(&answer), 400, "{target}:\n{answer}");
        assert!(answer.contains(r#""error":"invalid_request""#), "{target}");
    }
    let log = gate.wait_for_log_lines(refused.len()).await;
    let logged: Vec<&str> = log.iter().filter_map(|l| l["path"].as_str()).collect();
    for target in ["api/x", "x:/api/x", "*/api/x"] {
        assert!(logged.contains(&target), "{target} logged as {logged:?}");
    }
    assert!(
        log.iter()
            .all(|l| l["status"] == 400 && l["route"] == "unmatched")
    );
    assert!(log.iter().any(|l| l["reason"] == "dot_segments"));
    assert!(log.iter().any(|l| l["reason"] == "target_form"));
}

#[tokio::test]
async fn options_asterisk_is_forwarded_under_the_root_route() {
    let (_upstream, gate) = gate().await;
    let answer = raw::exchange(
        gate.port,
        "OPTIONS * HTTP/1.1\r\nHost: gate.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw::status(&answer), 200, "{answer}");
    assert_eq!(report(&answer)["method"], "OPTIONS");
    let answer = raw::exchange(gate.port, &raw::get("*", "")).await;
    assert_eq!(raw::status(&answer), 400);
}

#[tokio::test]
async fn identity_headers_spelt_with_underscores_never_reach_the_upstream() {
    let (_upstream, gate) = gate().await;
    let token = mint(Algorithm::HS256, &valid_claims());
    let spoofs = "X_Auth_Subject: root\r\nx_auth-email: root@evil.test\r\nX-AUTH_SUBJECT: r2\r\n";
    let cases = [
        ("/public", String::new(), Value::Null, Value::Null),
        (
            "/api/x",
            bearer(&token),
            json!(["alice"]),
            json!(["alice@example.com"]),
        ),
    ];
    for (target, auth, subject, email) in cases {
        let answer = raw::exchange(gate.port, &raw::get(target, &(auth + spoofs))).await;
        assert_eq!(raw::status(&answer), 200, "{target}");
        let headers = &report(&answer)["headers"];
        let names: Vec<&String> = headers.as_object().expect("headers").keys().collect();
        assert!(
            !names.iter().any(|n| n.contains('_')),
            "{target}: {headers}"
        );
        assert_eq!(headers["x-auth-subject"], subject, "{target}");
        assert_eq!(headers["x-auth-email"], email, "{target}");
    }
}

#[tokio::test]
async fn the_ticket_parameter_is_stripped_on_jwt_routes_and_kept_on_public_ones() {
    let (_upstream, gate) = gate().await;
    let token = mint(Algorithm::HS256, &valid_claims());
    let ticket = ws::ticket(&gate.url("/ws-ticket"), &token).await;
    let target = format!("/api/x?a=1&ticket={ticket}&b=2");
    let answer = raw::exchange(gate.port, &raw::get(&target, &bearer(&token))).await;
    assert_eq!(report(&answer)["uri"], "/api/x?a=1&b=2");
    let answer = raw::exchange(gate.port, &raw::get("/public?ticket=x1", "")).await;
    assert_eq!(report(&answer)["uri"], "/public?ticket=x1");
    connect(gate.port, &format!("/ws?ticket={ticket}"), &[])
        .await
        .expect("the ticket was not consumed on the jwt route");
}

#[tokio::test]
async fn a_ticket_is_redeemed_only_on_a_complete_handshake() {
    let (_upstream, gate) = gate().await;
    let token = mint(Algorithm::HS256, &valid_claims());
    let ticket = ws::ticket(&gate.url("/ws-ticket"), &token).await;
    let target = format!("/ws?ticket={ticket}");
    let full = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let partial = [
        format!("GET {target} HTTP/1.0\r\nHost: g\r\n{full}\r\n"),
        raw::get(&target, "Upgrade: websocket\r\n"),
        raw::get(
            &target,
            "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: x\r\n",
        ),
        raw::get(&target, &full.replace(": 13", ": 8")),
        format!("POST {target} HTTP/1.1\r\nHost: g\r\nContent-Length: 0\r\n{full}\r\n"),
    ];
    for request in &partial {
        let answer = raw::exchange(gate.port, request).await;
        assert_eq!(raw::status(&answer), 401, "{request}\n{answer}");
        assert!(answer.contains("invalid_ticket"), "{answer}");
    }
    connect(gate.port, &target, &[])
        .await
        .expect("none of those consumed the ticket");
    gate.assert_metrics(&["ticketgate_tickets_redeemed_total 1"])
        .await;
}

#[tokio::test]
async fn a_ticket_never_buys_a_plain_response() {
    let (addr, head) = upstream::raw_once().await;
    let gate = Gate::start(&hardened(addr)).await;
    let token = mint(Algorithm::HS256, &valid_claims());
    let ticket = ws::ticket(&gate.url("/ws-ticket"), &token).await;
    let (status, body) = connect(gate.port, &format!("/ws/room?ticket={ticket}"), &[])
        .await
        .expect_err("the upstream answered 200");
    assert_eq!(status, 502, "{body}");
    assert!(
        !body.contains("ok"),
        "the upstream's body reached the client"
    );
    let seen = head.await.expect("upstream task");
    assert!(seen.starts_with("GET /ws/room HTTP/1.1"), "{seen}");
    let log = gate.wait_for_log_lines(2).await;
    assert!(
        log.iter().any(|l| l["reason"] == "upgrade_refused"),
        "{log:?}"
    );
}

#[tokio::test]
async fn a_ticket_from_an_earlier_run_is_refused_with_the_memory_store() {
    let upstream = upstream::echo().await;
    let config = hardened(upstream.addr);
    let before = Gate::start(&config).await;
    let token = mint(Algorithm::HS256, &valid_claims());
    let used = ws::ticket(&before.url("/ws-ticket"), &token).await;
    let unused = ws::ticket(&before.url("/ws-ticket"), &token).await;
    connect(before.port, &format!("/ws?ticket={used}"), &[])
        .await
        .expect("first use");
    drop(before);

    let after = Gate::start(&config).await;
    for ticket in [&used, &unused] {
        let (status, body) = connect(after.port, &format!("/ws?ticket={ticket}"), &[])
            .await
            .expect_err("a ticket of the previous run");
        assert_eq!(status, 401);
        assert!(body.contains("ticket from before a restart"), "{body}");
    }
    after
        .assert_metrics(&[r#"ticketgate_tickets_rejected_total{reason="earlier_run"} 2"#])
        .await;
}

#[tokio::test]
async fn a_ticket_reveals_nothing_about_its_caller() {
    let (_upstream, gate) = gate().await;
    let token = mint(Algorithm::HS256, &valid_claims());
    let ticket = ws::ticket(&gate.url("/ws-ticket"), &token).await;
    assert!(ticket.len() <= 256);
    let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(ticket.trim_start_matches("tg2."))
        .expect("base64url");
    let text = String::from_utf8_lossy(&sealed);
    for needle in ["alice", "example.com", "\"s\""] {
        assert!(!text.contains(needle), "{needle} readable in the ticket");
    }
}

#[tokio::test]
async fn tokens_with_a_critical_header_are_refused() {
    let (_upstream, gate) = gate().await;
    let mut header = Header::new(Algorithm::HS256);
    header.crit = Some(vec!["b64".to_string()]);
    let key = tokens::encoding_key(Algorithm::HS256, "hs.secret");
    let token = jsonwebtoken::encode(&header, &valid_claims(), &key).expect("sign");
    crate::common::secrets::remember(&token);
    let answer = raw::exchange(gate.port, &raw::get("/api", &bearer(&token))).await;
    assert_eq!(raw::status(&answer), 401);
    assert!(
        answer.contains("token has a critical header extension"),
        "{answer}"
    );
}

#[tokio::test]
async fn an_identity_that_cannot_be_a_header_is_refused() {
    let (_upstream, gate) = gate().await;
    let mut claims = Vec::new();
    for (claim, value) in [
        ("sub", ""),
        ("sub", " admin"),
        ("sub", "alice\r\nX-Auth-Subject: root"),
        ("email", "a@b\u{0}"),
    ] {
        let mut c = valid_claims();
        c[claim] = json!(value);
        claims.push(c);
    }
    for claim in &claims {
        let token = mint(Algorithm::HS256, claim);
        let answer = raw::exchange(gate.port, &raw::get("/api", &bearer(&token))).await;
        assert_eq!(raw::status(&answer), 401, "{claim}");
        assert!(
            answer.contains("token identity cannot be forwarded"),
            "{answer}"
        );
        let (status, _, body) = request_ticket(&gate.url("/ws-ticket"), &token).await;
        assert_eq!(status, 401, "{body}");
    }
}

#[tokio::test]
async fn credentials_anywhere_in_a_target_are_redacted() {
    let (_upstream, gate) = gate().await;
    let token = mint(Algorithm::HS256, &valid_claims());
    let ticket = ws::ticket(&gate.url("/ws-ticket"), &token).await;
    let encoded_ticket = format!("%74{}", &ticket[1..]);
    let targets = [
        format!("/ws/{ticket}/room"),
        format!("/public?{ticket}"),
        format!("/public?a=1?ticket={ticket}"),
        format!("/public?a=1;t={ticket}"),
        format!("/public?next=%2Fws%3Fticket%3D{ticket}"),
        format!("/public?n={encoded_ticket}"),
        format!("/public/{token}"),
        format!("/public;jsessionid={token}"),
    ];
    for target in &targets {
        raw::exchange(gate.port, &raw::get(target, "")).await;
    }
    let log = gate.wait_for_log_lines(targets.len() + 1).await;
    assert!(
        log.iter()
            .filter(|l| l["path"] != "/ws-ticket")
            .all(|l| l["path"].as_str().is_some_and(|p| p.contains("REDACTED"))),
        "{log:?}"
    );
    gate.assert_never_printed(&[&token, &ticket, &encoded_ticket]);
}

#[tokio::test]
async fn pingoras_error_log_prints_targets_redacted() {
    let closed = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let gate = Gate::start(&hardened(closed)).await;
    let token = mint(Algorithm::HS256, &valid_claims());
    let target = format!("/public/{token}?ticket=tg2.abcdefghijklmnopqrstuvwxyz0123");
    let answer = raw::exchange(gate.port, &raw::get(&target, "")).await;
    assert_eq!(raw::status(&answer), 502);
    crate::common::wait_for(
        "Pingora's error line",
        std::time::Duration::from_secs(5),
        || async { gate.output().contains("REDACTED") },
    )
    .await;
    gate.assert_never_printed(&[&token, "abcdefghijklmnopqrstuvwxyz0123"]);
}

#[tokio::test]
async fn debug_directives_for_pingora_modules_cannot_dump_headers() {
    let upstream = upstream::echo().await;
    let config = hardened(upstream.addr);
    let env = [(
        "TICKETGATE_LOG",
        "debug,pingora_proxy::proxy_h1=trace,pingora_core::protocols=debug,hyper_util=trace",
    )];
    let gate = Gate::start_with_env(&config, &env).await;
    let token = mint(Algorithm::HS256, &valid_claims());
    let ticket = ws::ticket(&gate.url("/ws-ticket"), &token).await;
    let answer = raw::exchange(gate.port, &raw::get("/api/x", &bearer(&token))).await;
    assert_eq!(raw::status(&answer), 200);
    // `auth: none` passes both on: Pingora's debug dump of the upstream request would show them.
    let public = format!("/public?ticket={ticket}");
    let answer = raw::exchange(gate.port, &raw::get(&public, &bearer(&token))).await;
    assert_eq!(
        report(&answer)["headers"]["authorization"],
        json!([format!("Bearer {token}")])
    );
    connect(gate.port, &format!("/ws?ticket={ticket}"), &[])
        .await
        .expect("upgrade");
    gate.wait_for_log_lines(4).await;
    gate.assert_never_printed(&[&token, &ticket, &token[..40]]);
}
