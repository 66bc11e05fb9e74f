//! The admin listener: `/metrics`, `/healthz`, `/readyz`, from one path match. It runs on
//! its own port so that probes and scrapes never share the data plane's routes or auth.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode, header};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use arc_swap::ArcSwap;

use crate::metrics::Metrics;
use crate::proxy::Policy;

pub struct Admin {
    pub metrics: Arc<Metrics>,
    /// The policy in force: readiness is about the keys and store new requests will use.
    pub policy: Arc<ArcSwap<Policy>>,
}

impl Admin {
    /// What still keeps the proxy from serving every route; empty when ready.
    fn not_ready(&self) -> Vec<String> {
        let policy = self.policy.load();
        let mut waiting: Vec<String> = policy
            .verifier
            .issuer_keys()
            .filter(|keys| !keys.is_ready())
            .map(|keys| format!("issuer {} has no usable keys yet", keys.issuer()))
            .collect();
        if policy
            .tickets
            .as_ref()
            .is_some_and(|t| !t.tickets.is_ready())
        {
            waiting.push("ticket store unreachable".to_string());
        }
        waiting
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/metrics" => {
                self.metrics.set_ready(self.not_ready().is_empty());
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    self.metrics.render(),
                )
            }
            "/healthz" => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" => {
                let waiting = self.not_ready();
                if waiting.is_empty() {
                    reply(StatusCode::OK, "text/plain", b"ready\n".to_vec())
                } else {
                    let body = format!("not ready:\n{}\n", waiting.join("\n"));
                    reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        body.into_bytes(),
                    )
                }
            }
            _ => reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let length = body.len();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::CONTENT_LENGTH, length.into());
    response
}
