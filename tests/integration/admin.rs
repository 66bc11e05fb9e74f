//! The admin listener: health, readiness and metrics on their own port.

use jsonwebtoken::Algorithm;

use crate::common::config::{self, Keys};
use crate::common::tokens::{mint, valid_claims};
use crate::common::{Gate, get, upstream};

#[tokio::test]
async fn health_readiness_and_unknown_paths() {
    let upstream = upstream::echo().await;
    let gate = Gate::start(&config::jwt(upstream.addr, Keys::AllStatic)).await;
    for (path, status) in [
        ("/healthz", 200),
        ("/readyz", 200),
        ("/admin", 404),
        ("/", 404),
    ] {
        let response = reqwest::get(gate.admin_url(path)).await.expect("admin");
        assert_eq!(response.status().as_u16(), status, "{path}");
    }
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let upstream = upstream::echo().await;
    let gate = Gate::start(&config::jwt(upstream.addr, Keys::AllStatic)).await;
    let token = mint(Algorithm::HS256, &valid_claims());
    assert_eq!(get(&gate.url("/api/a"), Some(&token)).await.0, 200);
    assert_eq!(get(&gate.url("/api/b?x=1"), Some(&token)).await.0, 200);
    assert_eq!(get(&gate.url("/api/c"), None).await.0, 401);
    assert_eq!(get(&gate.url("/public/d"), None).await.0, 200);
    gate.wait_for_log_lines(4).await;
    let metrics = gate
        .assert_metrics(&[
            r#"ticketgate_requests_total{route="/",status="200"} 2"#,
            r#"ticketgate_requests_total{route="/",status="401"} 1"#,
            r#"ticketgate_requests_total{route="/public",status="200"} 1"#,
            r#"ticketgate_auth_failures_total{reason="missing"} 1"#,
            r#"ticketgate_request_duration_seconds_count{route="/"} 3"#,
            "ticketgate_upstream_errors_total 0",
            "ticketgate_ready 1",
        ])
        .await;
    assert!(
        !metrics.contains("/api/a"),
        "raw paths must not become labels"
    );
}

#[tokio::test]
async fn the_probe_command_reports_health() {
    let upstream = upstream::echo().await;
    let gate = Gate::start(&config::jwt(upstream.addr, Keys::AllStatic)).await;
    let probe = |url: String| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ticketgate"))
            .args(["probe", "--url", &url])
            .output()
            .expect("probe")
            .status
            .success()
    };
    assert!(probe(gate.admin_url("/healthz")));
    assert!(!probe(gate.admin_url("/nothing-here")));
    assert!(!probe(format!(
        "http://127.0.0.1:{}/healthz",
        crate::common::free_port()
    )));
}
