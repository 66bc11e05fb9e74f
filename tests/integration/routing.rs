//! Routes and forwarding: prefix matching, identity headers that cannot be spoofed,
//! credentials kept from the upstream, 404/400/502, and upgrades that cannot skip auth.

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::config::{self, Keys};
use crate::common::tokens::{mint, valid_claims};
use crate::common::{Gate, echoed, free_port, get, upstream};

async fn get_with(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = reqwest::Client::new().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request");
    (
        response.status().as_u16(),
        response.text().await.expect("body"),
    )
}

#[tokio::test]
async fn identity_headers_cannot_be_spoofed() {
    let upstream = upstream::echo().await;
    let gate = Gate::start(&config::jwt(upstream.addr, Keys::AllStatic)).await;
    let token = mint(Algorithm::RS256, &valid_claims());
    let bearer = format!("Bearer {token}");
    let spoofed = [
        ("authorization", bearer.as_str()),
        ("x-auth-subject", "mallory"),
        ("X-Auth-Email", "mallory@evil.test"),
    ];
    let (status, body) = get_with(&gate.url("/api/x?a=1&b=2"), &spoofed).await;
    assert_eq!(status, 200);
    let seen = echoed(&body);
    assert_eq!(seen["uri"], "/api/x?a=1&b=2");
    assert_eq!(seen["headers"]["x-auth-subject"], json!(["alice"]));
    assert_eq!(
        seen["headers"]["x-auth-email"],
        json!(["alice@example.com"])
    );
    assert!(seen["headers"].get("authorization").is_none());

    // On `auth: none` the spoofed copies go too; everything else passes unchanged.
    let (status, body) = get_with(&gate.url("/public/page"), &spoofed).await;
    assert_eq!(status, 200);
    let seen = echoed(&body);
    assert!(seen["headers"].get("x-auth-subject").is_none());
    assert!(seen["headers"].get("x-auth-email").is_none());
    assert_eq!(seen["headers"]["authorization"], json!([bearer]));
    gate.assert_never_printed(&[&token]);
}

#[tokio::test]
async fn authorization_is_forwarded_only_when_configured() {
    let upstream = upstream::echo().await;
    let mut config = config::jwt(upstream.addr, Keys::AllStatic);
    config.forward.forward_authorization = true;
    let gate = Gate::start(&config).await;
    let token = mint(Algorithm::HS256, &valid_claims());
    let (status, _, body) = get(&gate.url("/api"), Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(
        echoed(&body)["headers"]["authorization"],
        json!([format!("Bearer {token}")])
    );
}

#[tokio::test]
async fn prefixes_match_whole_segments_and_unmatched_paths_get_404() {
    let upstream = upstream::echo().await;
    let config = config::File {
        upstream: upstream.addr.to_string(),
        routes: vec![config::route("/public", "none")],
        ..Default::default()
    };
    let gate = Gate::start(&config).await;
    assert_eq!(get(&gate.url("/public"), None).await.0, 200);
    assert_eq!(get(&gate.url("/public/a/b"), None).await.0, 200);
    assert_eq!(get(&gate.url("/public?x=1"), None).await.0, 200);
    let (status, _, body) = get(&gate.url("/publicity"), None).await;
    assert_eq!(status, 404);
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn dot_segments_cannot_walk_out_of_a_public_route() {
    let upstream = upstream::echo().await;
    let gate = Gate::start(&config::jwt(upstream.addr, Keys::AllStatic)).await;
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/..%2Fadmin",
    ] {
        let (status, body) = raw_request(
            gate.port,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 400, "{path}: {body}");
    }
}

#[tokio::test]
async fn unreachable_upstream_gets_a_json_502() {
    let upstream_port = free_port();
    let config = config::jwt(
        format!("127.0.0.1:{upstream_port}").parse().expect("addr"),
        Keys::AllStatic,
    );
    let gate = Gate::start(&config).await;
    let (status, _, body) = get(&gate.url("/public/x"), None).await;
    assert_eq!(status, 502);
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["error"], "bad_gateway");
    gate.assert_metrics(&[
        "ticketgate_upstream_errors_total 1",
        r#"ticketgate_requests_total{route="/public",status="502"} 1"#,
    ])
    .await;
}

/// Sends raw bytes and returns the status code and the whole answer.
async fn raw_request(port: u16, request: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut answer),
    )
    .await;
    assert!(read.is_ok(), "no answer within 5 s");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

#[tokio::test]
async fn an_upgrade_request_never_skips_auth() {
    let upstream = upstream::echo().await;
    let gate = Gate::start(&config::jwt(upstream.addr, Keys::AllStatic)).await;
    let upgrade = "GET /api/socket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    let (status, answer) = raw_request(gate.port, &format!("{upgrade}\r\n")).await;
    assert_eq!(status, 401, "{answer}");
    let bad = format!("{upgrade}Authorization: Bearer not-a-jwt\r\n\r\n");
    let (status, answer) = raw_request(gate.port, &bad).await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("invalid_token"));
}

#[tokio::test]
async fn identity_headers_keep_their_configured_spelling() {
    let (addr, head) = upstream::raw_once().await;
    let gate = Gate::start(&config::jwt(addr, Keys::AllStatic)).await;
    let token = mint(Algorithm::HS256, &valid_claims());
    assert_eq!(get(&gate.url("/api"), Some(&token)).await.0, 200);
    let head = head.await.expect("the upstream saw the request");
    assert!(head.contains("\r\nX-Auth-Subject: alice\r\n"), "{head}");
    assert!(
        head.contains("\r\nX-Auth-Email: alice@example.com\r\n"),
        "{head}"
    );
    assert!(
        !head.to_ascii_lowercase().contains("authorization"),
        "{head}"
    );
}
