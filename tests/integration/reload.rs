//! SIGHUP: the file is read again and takes effect for new requests; what is open keeps
//! going; a bad file or a restart-only change leaves everything as it was, and says why.

use std::time::Duration;

use jsonwebtoken::Algorithm;
use tokio_tungstenite::tungstenite::Message;

use crate::common::config::{self, Edit, TicketOptions};
use crate::common::tokens::{self, mint, mint_with, valid_claims};
use crate::common::upstream::{self, Jwks};
use crate::common::{Gate, get, wait_for, ws};

/// Sends SIGHUP and waits until the reload counter for `result` reaches `count`.
async fn reload(gate: &Gate, result: &str, count: u32) {
    gate.signal("HUP");
    let line = format!("ticketgate_config_reloads_total{{result=\"{result}\"}} {count}");
    wait_for(&line, Duration::from_secs(15), || async {
        gate.metrics().await.lines().any(|l| l == line)
    })
    .await;
}

async fn gate() -> (upstream::Server, Gate) {
    let upstream = upstream::echo().await;
    let gate = Gate::start(&config::tickets(upstream.addr, &TicketOptions::default())).await;
    (upstream, gate)
}

#[tokio::test]
async fn a_reload_takes_effect_for_new_requests_and_open_websockets_keep_going() {
    let (_upstream, gate) = gate().await;
    gate.assert_metrics(&["ticketgate_config_last_reload_successful 1"])
        .await;
    let (mut socket, jwt, ticket) = ws::open_with_ticket(&gate).await;
    assert_eq!(get(&gate.url("/public/x"), None).await.0, 200);

    // `/public` now needs a JWT, and the WebSocket's own route changes its rule too.
    gate.edit_config(|c| {
        c.routes = vec![
            config::route("/ws", "jwt"),
            config::route("/ws2", "ticket"),
            config::route("/public", "jwt"),
            config::route("/", "jwt"),
        ]
    });
    reload(&gate, "success", 1).await;
    assert_eq!(get(&gate.url("/public/x"), None).await.0, 401);
    assert_eq!(get(&gate.url("/public/x"), Some(&jwt)).await.0, 200);
    ws::assert_echoes(&mut socket, &[Message::text("still open")]).await;
    gate.assert_metrics(&[
        "ticketgate_config_last_reload_successful 1",
        "ticketgate_websocket_connections 1",
    ])
    .await;
    gate.assert_never_printed(&[&jwt, &ticket]);
}

#[tokio::test]
async fn an_invalid_file_changes_nothing_and_says_which_key() {
    let (_upstream, gate) = gate().await;
    let jwt = mint(Algorithm::HS256, &valid_claims());
    gate.edit_config(|c| c.issuer_mut().algorithms[1] = "RS257".into());
    reload(&gate, "failure", 1).await;
    gate.assert_metrics(&["ticketgate_config_last_reload_successful 0"])
        .await;
    assert!(
        gate.output()
            .contains(r#"jwt.issuers[0].algorithms[1]: unknown algorithm "RS257""#),
        "{}",
        gate.output()
    );
    assert_eq!(get(&gate.url("/api"), Some(&jwt)).await.0, 200);
    assert_eq!(get(&gate.url("/public"), None).await.0, 200);

    gate.edit_config(|c| c.issuer_mut().algorithms[1] = "RS256".into());
    reload(&gate, "success", 1).await;
    gate.assert_metrics(&["ticketgate_config_last_reload_successful 1"])
        .await;
}

#[tokio::test]
async fn restart_only_keys_are_refused_by_name() {
    let (_upstream, gate) = gate().await;
    gate.edit_config(|c| c.threads = Some(2));
    reload(&gate, "failure", 1).await;
    assert!(
        gate.output()
            .contains("threads: changing it needs a restart")
    );
    gate.edit_config(|c| {
        c.threads = None;
        c.shutdown_grace_seconds = Some(2);
    });
    reload(&gate, "failure", 2).await;
    assert!(
        gate.output()
            .contains("shutdown_grace_seconds: changing it needs a restart")
    );
}

#[tokio::test]
async fn tickets_of_the_previous_secret_stay_redeemable() {
    let (_upstream, gate) = gate().await;
    let jwt = mint(Algorithm::HS256, &valid_claims());
    let before = ws::ticket(&gate.url("/ws-ticket"), &jwt).await;
    let rotated = gate.dir.path().join("rotated.secret");
    std::fs::write(&rotated, [b'r'; 48]).expect("secret");
    gate.edit_config(|c| c.tickets_mut().secret_file = rotated.display().to_string());
    reload(&gate, "success", 1).await;
    let after = ws::ticket(&gate.url("/ws-ticket"), &jwt).await;
    for ticket in [&before, &after] {
        ws::connect(gate.port, &format!("/ws?ticket={ticket}"), &[])
            .await
            .expect("redeemable across the rotation");
    }
    let (status, _) = ws::connect(gate.port, &format!("/ws?ticket={before}"), &[])
        .await
        .expect_err("still single use");
    assert_eq!(status, 401);
    gate.assert_never_printed(&[&jwt, &before, &after]);
}

#[tokio::test]
async fn a_new_issuers_keys_are_fetched_before_it_takes_effect() {
    let (_upstream, gate) = gate().await;
    let jwks = Jwks::start(tokens::jwks(&[(Algorithm::RS256, "rsa2.key.pem", "k2")])).await;
    let second = "https://second.test/";
    let mut claims = valid_claims();
    claims["iss"] = second.into();
    let token = mint_with(Algorithm::RS256, "rsa2.key.pem", Some("k2"), &claims);
    assert_eq!(get(&gate.url("/api"), Some(&token)).await.0, 401);

    jwks.set(None);
    let issuer = config::Issuer {
        issuer: second.into(),
        algorithms: vec!["RS256".into()],
        ..config::issuer(config::Keys::Jwks {
            url: jwks.url(),
            refresh_seconds: 3600,
        })
    };
    gate.edit_config(|c| c.jwt_mut().issuers.push(issuer));
    reload(&gate, "failure", 1).await;
    assert!(
        gate.output()
            .contains("no usable keys for issuer https://second.test/")
    );

    jwks.set(Some(tokens::jwks(&[(
        Algorithm::RS256,
        "rsa2.key.pem",
        "k2",
    )])));
    reload(&gate, "success", 1).await;
    assert_eq!(get(&gate.url("/api"), Some(&token)).await.0, 200);
    let first = mint(Algorithm::HS256, &valid_claims());
    assert_eq!(get(&gate.url("/api"), Some(&first)).await.0, 200);
}

#[tokio::test]
async fn reloads_under_a_request_loop_lose_no_request() {
    let (_upstream, gate) = gate().await;
    let jwt = mint(Algorithm::HS256, &valid_claims());
    let url = gate.url("/api/x");
    let client = reqwest::Client::new();
    let load = {
        let (client, url, jwt) = (client.clone(), url.clone(), jwt.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..300 {
                let status = client
                    .get(&url)
                    .bearer_auth(&jwt)
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16());
                statuses.push(status);
            }
            statuses
        })
    };
    for round in 1..=3 {
        gate.edit_config(|c| c.websocket.idle_timeout_seconds = Some(3600 + u64::from(round)));
        reload(&gate, "success", round).await;
    }
    let statuses = load.await.expect("load task");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}

/// Moving the ticket store in place would forget which tickets were used (a ticket redeemed
/// just before the reload would open a second socket after it) and leave revocations on the
/// old store, so it needs a restart, both ways; single use holds across the refused reload.
#[tokio::test]
async fn moving_the_ticket_store_is_refused_by_name_both_ways() {
    use ticketgate::config::file::Store;
    let redis = crate::common::redis::Redis::start().await;
    for (from, to) in [
        (Store::Url("memory".into()), redis.store()),
        (redis.store(), Store::Url("memory".into())),
    ] {
        let upstream = upstream::echo().await;
        let options = TicketOptions {
            store: from,
            ..Default::default()
        };
        let gate = Gate::start(&config::tickets(upstream.addr, &options)).await;
        gate.wait_for_readyz(200).await;
        let jwt = mint(Algorithm::HS256, &valid_claims());
        let used = ws::ticket(&gate.url("/ws-ticket"), &jwt).await;
        ws::connect(gate.port, &format!("/ws?ticket={used}"), &[])
            .await
            .expect("redeemed before the reload");
        gate.edit_config(|c| c.tickets_mut().store = Some(to.clone()));
        reload(&gate, "failure", 1).await;
        assert!(
            gate.output()
                .contains("tickets.store: changing it needs a restart")
        );
        let (status, _) = ws::connect(gate.port, &format!("/ws?ticket={used}"), &[])
            .await
            .expect_err("still used after the refused reload");
        assert_eq!(status, 401);
        gate.assert_metrics(&["ticketgate_config_last_reload_successful 0"])
            .await;
        gate.assert_never_printed(&[&jwt, &used]);
    }
}
