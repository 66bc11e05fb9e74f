//! The demo's stand-in for a legacy service — it knows nothing about JWTs or tickets and
//! trusts the identity headers ticketgate sets. It serves the demo page and the JS helper,
//! the development identity provider, the tail of ticketgate's access log, and a WebSocket
//! echo that greets each connection with what it received.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::idp::DevIdp;
use super::network::Network;

const PAGE: &str = include_str!("page.html");
const CLIENT: &str = include_str!("../../clients/js/ticketgate.js");
const MAX_BODY_BYTES: usize = 4096;
const ACCESS_LOG_LINES: usize = 30;

pub struct DemoUpstream {
    pub idp: DevIdp,
    pub access_log: PathBuf,
    pub subject_header: String,
    pub admin: AdminClient,
    /// The network stand-in the page's "cut my connection" button cuts.
    pub network: Arc<Network>,
    /// WebSocket connections this service accepted, and how many of them ended: what the
    /// page shows to prove a resume never reached it.
    pub sockets: Arc<SocketCount>,
}

/// WebSocket connections accepted and ended.
#[derive(Default)]
pub struct SocketCount {
    accepted: AtomicUsize,
    ended: AtomicUsize,
}

/// Counts its connection as ended when the echo drops it.
struct Ends(Arc<SocketCount>);

impl Drop for Ends {
    fn drop(&mut self) {
        self.0.ended.fetch_add(1, Ordering::SeqCst);
    }
}

/// ticketgate's admin listener as the page reaches it through this service: the page's
/// revoke button and live figures. The admin port itself stays off the page's origin.
pub struct AdminClient {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl DemoUpstream {
    /// Serves connections from `listener` until the process ends.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let app = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(app.handle(req).await) }
                });
                let served = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
                if let Err(e) = served {
                    log::debug!("demo upstream connection ended: {e}");
                }
            });
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        match (req.method().clone(), path.as_str()) {
            (Method::GET, p) if p == "/ws" || p.starts_with("/ws/") => self.websocket(req),
            (Method::GET, "/") => reply(StatusCode::OK, "text/html; charset=utf-8", PAGE),
            (Method::GET, "/ticketgate.js") => reply(StatusCode::OK, "text/javascript", CLIENT),
            (Method::GET, "/api/me") => json_reply(StatusCode::OK, &self.identity(&req)),
            (Method::GET, "/demo/access-log") => {
                json_reply(StatusCode::OK, &self.access_log_tail())
            }
            (Method::POST, "/demo/revoke") => self.revoke(req).await,
            (Method::GET, "/demo/metrics") => self.metrics().await,
            (Method::GET, "/demo/network") => self.network_state(),
            (Method::POST, "/demo/cut") => {
                let cut = self.network.cut();
                json_reply(StatusCode::OK, &json!({ "cut": cut }))
            }
            (Method::POST, "/idp/login") => self.login(req).await,
            (Method::POST, "/idp/refresh") => self.refresh(req).await,
            (Method::POST, "/idp/expired-token") => {
                self.idp_answer(self.idp.expired("alice").map(Some))
            }
            _ => json_reply(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
        }
    }

    /// What ticketgate told this service about the caller.
    fn identity(&self, req: &Request<Incoming>) -> Value {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        json!({
            "subject": header(&self.subject_header),
            "email": header("x-auth-email"),
            "uri": req.uri().to_string(),
        })
    }

    async fn login(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let body = read_json(req).await;
        let user = body["user"]
            .as_str()
            .filter(|u| !u.is_empty())
            .unwrap_or("alice");
        let ttl = body["ttl_seconds"].as_i64();
        self.idp_answer(self.idp.login(user, ttl).map(Some))
    }

    async fn refresh(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let body = read_json(req).await;
        let token = body["refresh_token"].as_str().unwrap_or_default();
        self.idp_answer(self.idp.refresh(token))
    }

    fn idp_answer(
        &self,
        answer: Result<Option<Value>, super::idp::IdpError>,
    ) -> Response<Full<Bytes>> {
        match answer {
            Ok(Some(body)) => json_reply(StatusCode::OK, &body),
            Ok(None) => json_reply(StatusCode::UNAUTHORIZED, &json!({"error": "invalid_grant"})),
            Err(e) => json_reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": e.to_string()}),
            ),
        }
    }

    /// `POST /revoke` on ticketgate's admin listener for the subject the page names.
    async fn revoke(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let body = read_json(req).await;
        let subject = body["subject"].as_str().unwrap_or("alice");
        let answer = self
            .admin
            .http
            .post(format!("{}/revoke", self.admin.base))
            .bearer_auth(&self.admin.token)
            .body(json!({ "subject": subject }).to_string())
            .send()
            .await;
        match answer {
            Ok(response) => {
                let status = StatusCode::from_u16(response.status().as_u16())
                    .unwrap_or(StatusCode::BAD_GATEWAY);
                let text = response.text().await.unwrap_or_default();
                let body = serde_json::from_str(&text).unwrap_or(Value::Null);
                json_reply(status, &body)
            }
            Err(e) => json_reply(StatusCode::BAD_GATEWAY, &json!({"error": e.to_string()})),
        }
    }

    /// ticketgate's own metric lines from its `/metrics`, for the page's live figures.
    async fn metrics(&self) -> Response<Full<Bytes>> {
        let scrape = match self
            .admin
            .http
            .get(format!("{}/metrics", self.admin.base))
            .send()
            .await
        {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(e) => return json_reply(StatusCode::BAD_GATEWAY, &json!({"error": e.to_string()})),
        };
        let ours: String = scrape
            .lines()
            .filter(|line| line.starts_with("ticketgate_"))
            .flat_map(|line| [line, "\n"])
            .collect();
        let mut response = Response::new(Full::new(Bytes::from(ours)));
        response.headers_mut().insert(
            "content-type",
            hyper::header::HeaderValue::from_static("text/plain"),
        );
        response
    }

    /// The last access-log lines, without the page's own polling of this endpoint.
    fn access_log_tail(&self) -> Value {
        let text = std::fs::read_to_string(&self.access_log).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| {
                !line["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("/demo/"))
            })
            .collect();
        let start = lines.len().saturating_sub(ACCESS_LOG_LINES);
        Value::Array(lines[start..].to_vec())
    }

    /// Where the page's sockets go through the network stand-in, and what this service saw.
    fn network_state(&self) -> Response<Full<Bytes>> {
        let body = json!({
            "port": self.network.listen.port(),
            "upstream_sockets_accepted": self.sockets.accepted.load(Ordering::SeqCst),
            "upstream_sockets_ended": self.sockets.ended.load(Ordering::SeqCst),
        });
        json_reply(StatusCode::OK, &body)
    }

    /// Accepts the upgrade ticketgate forwarded, greets with what it received, then echoes.
    fn websocket(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let hello = json!({ "hello": self.identity(&req) }).to_string();
        let ends = Ends(self.sockets.clone());
        let accepted = super::echo::accept_until(req, Some(hello), ends);
        if accepted.is_some() {
            self.sockets.accepted.fetch_add(1, Ordering::SeqCst);
        }
        accepted.unwrap_or_else(|| {
            json_reply(
                StatusCode::BAD_REQUEST,
                &json!({"error": "not a WebSocket handshake"}),
            )
        })
    }
}

async fn read_json(req: Request<Incoming>) -> Value {
    match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(body) => serde_json::from_slice(&body.to_bytes()).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: &'static str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

fn json_reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "cache-control",
        hyper::header::HeaderValue::from_static("no-store"),
    );
    response
}
