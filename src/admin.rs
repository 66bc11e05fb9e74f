//! The admin listener: `/metrics`, `/healthz`, `/readyz`, and `POST /revoke` when an admin
//! token is configured, from one path match. It runs on its own port so that probes and
//! scrapes never share the data plane's routes or auth.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode, header};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use arc_swap::ArcSwap;

use crate::metrics::Metrics;
use crate::proxy::Policy;
use crate::refusal::{Allowed, Rejection};
use crate::revocations::Revocations;

/// A revocation request's body is one subject; anything larger is not one.
const MAX_REVOKE_BODY: usize = 4096;

pub struct Admin {
    pub metrics: Arc<Metrics>,
    /// The policy in force: readiness is about the keys and store new requests will use.
    pub policy: Arc<ArcSwap<Policy>>,
    pub revocations: Arc<Revocations>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    subject: String,
}

impl Admin {
    /// `ready` or `not ready` with what waits, then the ticket store's state, whichever
    /// the answer: an operator sees which master or node it is on.
    fn readiness(&self) -> Response<Vec<u8>> {
        let waiting = self.not_ready();
        let mut body = if waiting.is_empty() {
            "ready\n".to_string()
        } else {
            format!("not ready:\n{}\n", waiting.join("\n"))
        };
        if let Some(tickets) = self.policy.load().tickets.as_ref() {
            body.push_str(&format!(
                "ticket store {}\n",
                tickets.tickets.store_status()
            ));
        }
        let status = if waiting.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        reply(status, "text/plain", body.into_bytes())
    }

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
        if !self.revocations.is_loaded() {
            waiting.push("revocations not yet read from the ticket store".to_string());
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
            "/readyz" => self.readiness(),
            "/revoke" => self.revoke(session).await,
            _ => not_found(),
        }
    }
}

fn not_found() -> Response<Vec<u8>> {
    reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec())
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Vec<u8>> {
    reply(status, "application/json", body.to_string().into_bytes())
}

/// A refusal in the data plane's shape: the same codes and JSON (`crate::refusal`).
fn refused(rejection: Rejection) -> Response<Vec<u8>> {
    let status = StatusCode::from_u16(rejection.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = json(status, rejection.body());
    for (name, value) in rejection.headers() {
        if let Ok(value) = header::HeaderValue::from_str(&value) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

impl Admin {
    /// `POST /revoke` with the admin token and `{"subject": "..."}`: that subject's logins
    /// until now are void, and its open WebSockets close.
    async fn revoke(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let policy = self.policy.load_full();
        let Some(token) = policy.admin_token.clone() else {
            return not_found();
        };
        if session.req_header().method != http::Method::POST {
            return refused(Rejection::MethodNotAllowed(Allowed::Post));
        }
        let presented = crate::auth::bearer_token(session.req_header())
            .ok()
            .flatten();
        if !presented.is_some_and(|p| token.matches(p.as_bytes())) {
            return refused(Rejection::AdminTokenRequired);
        }
        let Some(request) = read_revoke_request(session).await else {
            return refused(Rejection::BadRevocation);
        };
        let now_ms = crate::clock::unix_now_ms();
        let revoked = self
            .revocations
            .revoke(&request.subject, now_ms, policy.revocation_ttl)
            .await;
        match revoked {
            Ok(revoked) => {
                self.metrics.revoked();
                log::info!(
                    "logins of subject {:?} revoked for {} s",
                    request.subject,
                    revoked.until_ms.saturating_sub(revoked.at_ms) / 1000
                );
                json(
                    StatusCode::OK,
                    serde_json::json!({"subject": request.subject, "revoked_at": revoked.at_ms / 1000}),
                )
            }
            Err(e) => {
                log::error!("{e}");
                refused(Rejection::RevokedHereOnly)
            }
        }
    }
}

/// The body of a revocation, when it is one: a non-empty subject, in at most
/// `MAX_REVOKE_BODY` bytes of JSON.
async fn read_revoke_request(session: &mut ServerSession) -> Option<RevokeRequest> {
    let mut body = Vec::new();
    while let Some(chunk) = session.read_request_body().await.ok()? {
        if body.len() + chunk.len() > MAX_REVOKE_BODY {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    let request: RevokeRequest = serde_json::from_slice(&body).ok()?;
    (!request.subject.is_empty()).then_some(request)
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
