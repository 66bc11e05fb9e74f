//! `jwks_url`: fetched at startup, refreshed, refetched early for an unknown `kid` (rate
//! limited), last good keys kept when the server goes away, and readiness until then.

use std::time::Duration;

use jsonwebtoken::Algorithm;

use crate::common::config::{self, Keys};
use crate::common::tokens::{self, mint_with, valid_claims};
use crate::common::upstream::{self, Jwks};
use crate::common::{Gate, get, wait_for, ws};

/// A gate whose only issuer takes its keys from `jwks`, once those keys have loaded.
async fn gate_on(upstream: &upstream::Server, jwks: &Jwks, refresh_seconds: u64) -> Gate {
    let keys = Keys::Jwks {
        url: jwks.url(),
        refresh_seconds,
    };
    let gate = Gate::start(&config::jwt(upstream.addr, keys)).await;
    gate.wait_for_readyz(200).await;
    gate
}

#[tokio::test]
async fn rotation_to_a_new_kid_needs_no_restart() {
    let upstream = upstream::echo().await;
    let jwks = Jwks::start(tokens::jwks(&[(Algorithm::RS256, "rsa.key.pem", "k1")])).await;
    let gate = gate_on(&upstream, &jwks, 3600).await;

    let old = mint_with(Algorithm::RS256, "rsa.key.pem", Some("k1"), &valid_claims());
    assert_eq!(get(&gate.url("/api"), Some(&old)).await.0, 200);

    // The provider publishes a new key; a token under its kid triggers an early refetch.
    jwks.set(Some(tokens::jwks(&[
        (Algorithm::RS256, "rsa.key.pem", "k1"),
        (Algorithm::ES256, "ec256.key.pem", "k2"),
    ])));
    let new = mint_with(
        Algorithm::ES256,
        "ec256.key.pem",
        Some("k2"),
        &valid_claims(),
    );
    let (status, _, body) = get(&gate.url("/api"), Some(&new)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(&gate.url("/api"), Some(&old)).await.0, 200);
    gate.assert_never_printed(&[&old, &new]);
}

#[tokio::test]
async fn unknown_kids_cannot_flood_the_jwks_server() {
    let upstream = upstream::echo().await;
    let jwks = Jwks::start(tokens::jwks(&[(Algorithm::RS256, "rsa.key.pem", "k1")])).await;
    let gate = gate_on(&upstream, &jwks, 3600).await;
    let before = jwks.hits();
    for i in 0..30 {
        let bogus = mint_with(
            Algorithm::RS256,
            "rsa.key.pem",
            Some(&format!("bogus-{i}")),
            &valid_claims(),
        );
        assert_eq!(get(&gate.url("/api"), Some(&bogus)).await.0, 401);
    }
    let fetched = jwks.hits() - before;
    assert!(fetched <= 1, "30 unknown kids caused {fetched} fetches");
}

#[tokio::test]
async fn last_good_keys_survive_the_jwks_server_going_down() {
    let upstream = upstream::echo().await;
    let mut jwks = Jwks::start(tokens::jwks(&[(Algorithm::RS256, "rsa.key.pem", "k1")])).await;
    let gate = gate_on(&upstream, &jwks, 1).await;
    let loaded = jwks.hits();
    jwks.server.stop();
    // Wait until at least one refresh has failed against the stopped server.
    wait_for("a failed refresh", Duration::from_secs(10), || async {
        gate.metrics().await.contains(
            r#"ticketgate_jwks_refreshes_total{issuer="https://auth.test/",result="error"}"#,
        )
    })
    .await;
    assert!(loaded >= 1);
    let token = mint_with(Algorithm::RS256, "rsa.key.pem", Some("k1"), &valid_claims());
    assert_eq!(get(&gate.url("/api"), Some(&token)).await.0, 200);
    assert_eq!(gate.readyz().await, 200);
}

#[tokio::test]
async fn not_ready_until_the_first_keys_arrive() {
    let upstream = upstream::echo().await;
    let jwks = Jwks::start(String::new()).await;
    jwks.set(None);
    let keys = Keys::Jwks {
        url: jwks.url(),
        refresh_seconds: 3600,
    };
    let gate = Gate::start(&config::jwt(upstream.addr, keys)).await;
    wait_for("a failed first fetch", Duration::from_secs(10), || async {
        jwks.hits() >= 1
    })
    .await;
    let response = reqwest::get(gate.admin_url("/readyz"))
        .await
        .expect("readyz");
    assert_eq!(response.status(), 503);
    assert!(
        response
            .text()
            .await
            .expect("body")
            .contains("issuer https://auth.test/ has no usable keys")
    );
    let token = mint_with(Algorithm::RS256, "rsa.key.pem", Some("k1"), &valid_claims());
    assert_eq!(get(&gate.url("/api"), Some(&token)).await.0, 401);
    gate.assert_metrics(&["ticketgate_ready 0"]).await;

    jwks.set(Some(tokens::jwks(&[(
        Algorithm::RS256,
        "rsa.key.pem",
        "k1",
    )])));
    gate.wait_for_readyz(200).await;
    assert_eq!(get(&gate.url("/api"), Some(&token)).await.0, 200);
}

/// A token verified (and cached) under a key is refused once that key is withdrawn from the
/// JWK Set, within one refresh: the cache holds a verification only while the set that
/// vouched for it is unchanged.
#[tokio::test]
async fn a_withdrawn_key_stops_vouching_for_tokens_verified_before() {
    let upstream = upstream::echo().await;
    let both = tokens::jwks(&[
        (Algorithm::RS256, "rsa.key.pem", "k1"),
        (Algorithm::ES256, "ec256.key.pem", "k2"),
    ]);
    let jwks = Jwks::start(both).await;
    let keys = Keys::Jwks {
        url: jwks.url(),
        refresh_seconds: 1,
    };
    let file = config::File {
        jwt: config::jwt(upstream.addr, keys).jwt,
        ..config::tickets(upstream.addr, &config::TicketOptions::default())
    };
    let gate = Gate::start(&file).await;
    gate.wait_for_readyz(200).await;
    let stolen = mint_with(Algorithm::RS256, "rsa.key.pem", Some("k1"), &valid_claims());
    let kept = mint_with(
        Algorithm::ES256,
        "ec256.key.pem",
        Some("k2"),
        &valid_claims(),
    );
    for token in [&stolen, &kept] {
        assert_eq!(get(&gate.url("/api"), Some(token)).await.0, 200);
    }
    assert_eq!(
        ws::request_ticket(&gate.url("/ws-ticket"), &stolen).await.0,
        200
    );
    jwks.set(Some(tokens::jwks(&[(
        Algorithm::ES256,
        "ec256.key.pem",
        "k2",
    )])));
    wait_for(
        "the cached token to be refused",
        Duration::from_secs(5),
        || async { get(&gate.url("/api"), Some(&stolen)).await.0 == 401 },
    )
    .await;
    let (status, _, _) = ws::request_ticket(&gate.url("/ws-ticket"), &stolen).await;
    assert_eq!(status, 401, "no ticket for it either");
    assert_eq!(get(&gate.url("/api"), Some(&kept)).await.0, 200);
    gate.assert_never_printed(&[&stolen, &kept]);
}
