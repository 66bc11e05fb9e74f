//! Bearer JWTs on `auth: jwt` routes: every algorithm family with its key source, and every
//! way a token can be wrong, each answered with the contract's RFC 6750 401.

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::common::config::{self, Edit, Keys};
use crate::common::tokens::{self, mint, mint_with, unsigned, valid_claims};
use crate::common::{Gate, echoed, get, upstream};

const ALL_ALGORITHMS: [Algorithm; 12] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

#[tokio::test]
async fn every_algorithm_verifies_with_static_keys() {
    let upstream = upstream::echo().await;
    let gate = Gate::start(&config::jwt(upstream.addr, Keys::AllStatic)).await;
    let mut issued = Vec::new();
    for alg in ALL_ALGORITHMS {
        let token = mint(alg, &valid_claims());
        let (status, _, body) = get(&gate.url("/api/me"), Some(&token)).await;
        assert_eq!(status, 200, "{alg:?}: {body}");
        let seen = echoed(&body);
        assert_eq!(
            seen["headers"]["x-auth-subject"],
            json!(["alice"]),
            "{alg:?}"
        );
        assert_eq!(
            seen["headers"]["x-auth-email"],
            json!(["alice@example.com"])
        );
        assert!(seen["headers"].get("authorization").is_none(), "{alg:?}");
        issued.push(token);
    }
    gate.assert_never_printed(&issued.iter().map(String::as_str).collect::<Vec<_>>());
}

#[tokio::test]
async fn jwk_set_file_selects_keys_by_kid() {
    let upstream = upstream::echo().await;
    let keys = tempfile::tempdir().expect("dir");
    let set = tokens::jwks(&[
        (Algorithm::RS256, "rsa.key.pem", "rsa-1"),
        (Algorithm::RS256, "rsa2.key.pem", "rsa-2"),
        (Algorithm::ES256, "ec256.key.pem", "ec-1"),
        (Algorithm::EdDSA, "ed25519.key.pem", "ed-1"),
    ]);
    let path = keys.path().join("jwks.json");
    std::fs::write(&path, set).expect("write jwks");
    let mut config = config::jwt(upstream.addr, Keys::Hs256);
    let issuer = config.issuer_mut();
    issuer.secret_file = None;
    issuer.algorithms = ["RS256", "ES256", "EdDSA"].map(String::from).to_vec();
    issuer.jwks_file = Some(path.display().to_string());
    let gate = Gate::start(&config).await;
    for (alg, file, kid) in [
        (Algorithm::RS256, "rsa.key.pem", "rsa-1"),
        (Algorithm::RS256, "rsa2.key.pem", "rsa-2"),
        (Algorithm::ES256, "ec256.key.pem", "ec-1"),
        (Algorithm::EdDSA, "ed25519.key.pem", "ed-1"),
    ] {
        let token = mint_with(alg, file, Some(kid), &valid_claims());
        let (status, _, body) = get(&gate.url("/api"), Some(&token)).await;
        assert_eq!(status, 200, "{kid}: {body}");
    }
    // The second RSA key's token under the first key's kid does not verify.
    let token = mint_with(
        Algorithm::RS256,
        "rsa2.key.pem",
        Some("rsa-1"),
        &valid_claims(),
    );
    let (status, _, _) = get(&gate.url("/api"), Some(&token)).await;
    assert_eq!(status, 401);
    // A kid nobody published has no key.
    let token = mint_with(
        Algorithm::RS256,
        "rsa.key.pem",
        Some("nope"),
        &valid_claims(),
    );
    let (status, headers, _) = get(&gate.url("/api"), Some(&token)).await;
    assert_eq!(status, 401);
    assert!(challenge(&headers).contains("no key for this token"));
}

fn challenge(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn with(changes: &[(&str, Value)]) -> Value {
    let mut claims = valid_claims();
    for (name, value) in changes {
        claims[*name] = value.clone();
    }
    claims
}

fn without(name: &str) -> Value {
    let mut claims = valid_claims();
    claims.as_object_mut().expect("object").remove(name);
    claims
}

/// Flips one character of the payload, keeping the original signature.
fn tampered(token: &str) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let payload = &mut parts[1];
    let last = payload.pop().expect("payload");
    payload.push(if last == 'A' { 'B' } else { 'A' });
    parts.join(".")
}

#[tokio::test]
async fn every_bad_token_gets_the_rfc6750_401() {
    let upstream = upstream::echo().await;
    let gate = Gate::start(&config::jwt(upstream.addr, Keys::HsAndRs)).await;
    let now = tokens::now();
    let rsa_public_pem =
        std::fs::read_to_string(crate::common::fixture("rsa.pub.pem")).expect("pem");
    let confused = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &valid_claims(),
        &jsonwebtoken::EncodingKey::from_secret(rsa_public_pem.as_bytes()),
    )
    .expect("sign");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            mint(Algorithm::RS256, &with(&[("exp", json!(now - 120))])),
            "token expired",
        ),
        (
            "not yet valid",
            mint(Algorithm::RS256, &with(&[("nbf", json!(now + 120))])),
            "token not yet valid",
        ),
        (
            "issued in the future",
            mint(Algorithm::RS256, &with(&[("iat", json!(now + 120))])),
            "token issued in the future",
        ),
        (
            "wrong issuer",
            mint(
                Algorithm::RS256,
                &with(&[("iss", json!("https://evil.test/"))]),
            ),
            "token issuer not accepted",
        ),
        (
            "wrong audience",
            mint(Algorithm::RS256, &with(&[("aud", json!("other-api"))])),
            "token audience not accepted",
        ),
        (
            "missing exp",
            mint(Algorithm::RS256, &without("exp")),
            "token lacks a required claim",
        ),
        (
            "missing sub",
            mint(Algorithm::HS256, &without("sub")),
            "token lacks a required claim",
        ),
        (
            "alg none",
            unsigned(&json!({"alg": "none", "typ": "JWT"}), &valid_claims()),
            "token malformed",
        ),
        (
            "HS256 with the RSA public key as secret",
            confused,
            "token signature invalid",
        ),
        (
            "algorithm not allowed",
            mint(Algorithm::ES256, &valid_claims()),
            "token algorithm not allowed",
        ),
        (
            "tampered",
            tampered(&mint(Algorithm::RS256, &valid_claims())),
            "token signature invalid",
        ),
        (
            "signed by another key",
            mint_with(Algorithm::RS256, "rsa2.key.pem", None, &valid_claims()),
            "token signature invalid",
        ),
        ("garbage", "not-a-jwt".to_string(), "token malformed"),
        (
            "three garbage parts",
            "a.b.c".to_string(),
            "token malformed",
        ),
        (
            "oversized",
            format!("{}.{}.sig", "eyJhbGciOiJIUzI1NiJ9", "A".repeat(9000)),
            "token too large",
        ),
    ];
    let mut secrets = Vec::new();
    for (name, token, description) in &cases {
        let (status, headers, body) = get(&gate.url("/api"), Some(token)).await;
        assert_eq!(status, 401, "{name}");
        assert_eq!(
            challenge(&headers),
            format!(
                r#"Bearer realm="ticketgate", error="invalid_token", error_description="{description}""#
            ),
            "{name}"
        );
        let body: Value = serde_json::from_str(&body).expect("JSON body");
        assert_eq!(body["error"], "invalid_token", "{name}");
        assert_eq!(body["error_description"], *description, "{name}");
        assert_eq!(
            description.contains("expired"),
            *name == "expired",
            "{name}"
        );
        assert!(
            !body.to_string().contains(token.as_str()),
            "{name}: body echoes the token"
        );
        secrets.push(token.as_str());
    }
    // The process is still up and still admits a good token.
    let (status, _, _) = get(
        &gate.url("/api"),
        Some(&mint(Algorithm::HS256, &valid_claims())),
    )
    .await;
    assert_eq!(status, 200);
    gate.assert_metrics(&[
        r#"ticketgate_auth_failures_total{reason="expired"} 1"#,
        r#"ticketgate_auth_failures_total{reason="bad_signature"} 3"#,
    ])
    .await;
    gate.assert_never_printed(&secrets);
}

#[tokio::test]
async fn missing_or_foreign_credentials_get_a_bare_challenge() {
    let upstream = upstream::echo().await;
    let gate = Gate::start(&config::jwt(upstream.addr, Keys::AllStatic)).await;
    let client = reqwest::Client::new();
    for request in [
        client.get(gate.url("/api")),
        client.get(gate.url("/api")).basic_auth("alice", Some("pw")),
    ] {
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), 401);
        assert_eq!(
            challenge(response.headers()),
            r#"Bearer realm="ticketgate""#
        );
        let body: Value =
            serde_json::from_str(&response.text().await.expect("body")).expect("JSON");
        assert_eq!(body["error"], "missing_token");
    }
}

#[tokio::test]
async fn the_scheme_is_case_insensitive() {
    let upstream = upstream::echo().await;
    let gate = Gate::start(&config::jwt(upstream.addr, Keys::AllStatic)).await;
    let token = mint(Algorithm::HS256, &valid_claims());
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let response = reqwest::Client::new()
            .get(gate.url("/api"))
            .header("authorization", format!("{scheme} {token}"))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200, "{scheme}");
    }
}

#[tokio::test]
async fn the_tokens_iss_picks_its_issuer_entry() {
    let upstream = upstream::echo().await;
    let first = config::Issuer {
        issuer: "https://first.test/".into(),
        ..config::issuer(Keys::Hs256)
    };
    let second = config::Issuer {
        issuer: "https://second.test/".into(),
        audiences: ["other-api", "chat-api"].map(String::from).to_vec(),
        algorithms: vec!["ES256".into()],
        secret_file: None,
        public_key_files: vec![crate::common::fixture("ec256.pub.pem")],
        ..Default::default()
    };
    let mut config = config::base(upstream.addr, first);
    config.jwt_mut().issuers.push(second);
    config.routes = vec![config::route("/", "jwt")];
    let gate = Gate::start(&config).await;
    let first = with(&[("iss", json!("https://first.test/"))]);
    let second = with(&[
        ("iss", json!("https://second.test/")),
        ("aud", json!(["x", "other-api"])),
    ]);
    let unknown = with(&[("iss", json!("https://third.test/"))]);
    assert_eq!(
        get(&gate.url("/a"), Some(&mint(Algorithm::HS256, &first)))
            .await
            .0,
        200
    );
    assert_eq!(
        get(&gate.url("/a"), Some(&mint(Algorithm::ES256, &second)))
            .await
            .0,
        200
    );
    let cases = [
        (
            "first issuer, second's algorithm",
            mint(Algorithm::ES256, &first),
            "token algorithm not allowed",
        ),
        (
            "second issuer, first's key",
            mint(Algorithm::HS256, &second),
            "token algorithm not allowed",
        ),
        (
            "unknown issuer",
            mint(Algorithm::HS256, &unknown),
            "token issuer not accepted",
        ),
        (
            "no issuer",
            mint(Algorithm::HS256, &without("iss")),
            "token lacks a required claim",
        ),
    ];
    for (name, token, description) in cases {
        let (status, headers, _) = get(&gate.url("/a"), Some(&token)).await;
        assert_eq!(status, 401, "{name}");
        assert!(
            challenge(&headers).contains(description),
            "{name}: {}",
            challenge(&headers)
        );
    }
}

#[tokio::test]
async fn the_token_cache_changes_no_refusal() {
    let upstream = upstream::echo().await;
    let mut config = config::jwt(upstream.addr, Keys::AllStatic);
    config.jwt_mut().leeway_seconds = Some(0);
    let gate = Gate::start(&config).await;
    let token = mint(
        Algorithm::ES256,
        &with(&[("exp", json!(tokens::now() + 2))]),
    );
    for _ in 0..3 {
        assert_eq!(get(&gate.url("/api"), Some(&token)).await.0, 200);
    }
    // Near-copies of a cached token are verified on their own, and fail.
    assert_eq!(get(&gate.url("/api"), Some(&tampered(&token))).await.0, 401);
    assert_eq!(
        get(&gate.url("/api"), Some(&format!("{token}x"))).await.0,
        401
    );
    // Once the token's exp has passed, the cached verification is gone: "token expired".
    crate::common::wait_for(
        "the cached token to expire",
        std::time::Duration::from_secs(5),
        || async { get(&gate.url("/api"), Some(&token)).await.0 != 200 },
    )
    .await;
    let (status, headers, _) = get(&gate.url("/api"), Some(&token)).await;
    assert_eq!(status, 401);
    assert!(challenge(&headers).contains("token expired"));
}

#[tokio::test]
async fn a_token_is_refused_from_the_second_its_exp_names() {
    let upstream = upstream::echo().await;
    let mut config = config::jwt(upstream.addr, Keys::AllStatic);
    config.jwt_mut().leeway_seconds = Some(0);
    let gate = Gate::start(&config).await;
    // RFC 7519 §4.1.4: not accepted "on or after" exp, as a WebSocket closes at exp.
    let token = mint(Algorithm::HS256, &with(&[("exp", json!(tokens::now()))]));
    let (status, headers, _) = get(&gate.url("/api"), Some(&token)).await;
    assert_eq!(status, 401);
    assert!(challenge(&headers).contains("token expired"));
}
