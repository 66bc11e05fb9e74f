//! A WebSocket echo endpoint on hyper: accepts the upgrade (choosing the first protocol
//! offered, as a STOMP server would pick `v12.stomp`), optionally greets with one text
//! message, then sends every text or binary message back unchanged. The demo's upstream uses
//! it; so do the tests' and the benchmark's upstreams, which stand in for a legacy service.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Message, Role};

/// The 101 answer to a WebSocket handshake, with the echo running on the upgraded
/// connection; `None` when `req` is not a handshake (no `Sec-WebSocket-Key`).
pub fn accept(req: Request<Incoming>, greeting: Option<String>) -> Option<Response<Full<Bytes>>> {
    accept_until(req, greeting, ())
}

/// As `accept`, holding `guard` until the echo ends (its drop says the connection ended).
pub fn accept_until(
    mut req: Request<Incoming>,
    greeting: Option<String>,
    guard: impl Send + 'static,
) -> Option<Response<Full<Bytes>>> {
    let accept = req
        .headers()
        .get("sec-websocket-key")
        .map(|key| derive_accept_key(key.as_bytes()))?;
    let protocol = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|offered| offered.to_str().ok())
        .and_then(|offered| offered.split(',').next())
        .and_then(|first| HeaderValue::from_str(first.trim()).ok());
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        echo(socket, greeting).await;
        drop(guard);
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert("upgrade", HeaderValue::from_static("websocket"));
    headers.insert("connection", HeaderValue::from_static("Upgrade"));
    if let Ok(value) = accept.parse() {
        headers.insert("sec-websocket-accept", value);
    }
    if let Some(protocol) = protocol {
        headers.insert("sec-websocket-protocol", protocol);
    }
    Some(response)
}

async fn echo<S>(mut socket: WebSocketStream<S>, greeting: Option<String>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Some(greeting) = greeting
        && socket.send(Message::text(greeting)).await.is_err()
    {
        return;
    }
    while let Some(Ok(message)) = socket.next().await {
        let echo = match message {
            Message::Text(_) | Message::Binary(_) => message,
            Message::Close(_) => {
                // Completes the closing handshake the peer started.
                let _ = socket.flush().await;
                return;
            }
            _ => continue,
        };
        if socket.send(echo).await.is_err() {
            return;
        }
    }
}
