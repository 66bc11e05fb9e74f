//! A real WebSocket client (tokio-tungstenite) and the ticket endpoint as a browser uses it.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// What a WebSocket runs over: TCP, or TLS over TCP.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin {}
impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Stream for S {}

/// Opens `ws://127.0.0.1:{port}{path}` with extra headers. `Err` carries the HTTP status
/// and body of a refused handshake.
pub async fn connect(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Socket, (u16, String)> {
    let mut request = format!("ws://127.0.0.1:{port}{path}")
        .into_client_request()
        .expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value.parse().expect("value"),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, response)) => {
            assert_eq!(response.status(), 101);
            Ok(socket)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((status, body))
        }
        Err(other) => panic!("handshake failed below HTTP: {other}"),
    }
}

/// The upstream's first message: what it received in the upgrade request.
pub async fn upstream_report<S: Stream>(socket: &mut WebSocketStream<S>) -> serde_json::Value {
    match next_message(socket).await {
        Message::Text(text) => serde_json::from_str(&text).expect("report JSON"),
        other => panic!("expected the upstream report, got {other:?}"),
    }
}

pub async fn next_message<S: Stream>(socket: &mut WebSocketStream<S>) -> Message {
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), socket.next()).await;
    next.expect("a message within 5 s")
        .expect("stream open")
        .expect("a frame")
}

/// Sends each message and asserts the echo comes back unchanged.
pub async fn assert_echoes<S: Stream>(socket: &mut WebSocketStream<S>, messages: &[Message]) {
    for message in messages {
        socket.send(message.clone()).await.expect("send");
        assert_eq!(&next_message(socket).await, message);
    }
}

/// `POST` to the ticket endpoint with a bearer token; returns status, headers and JSON body.
/// An issued ticket joins the credentials no gate may print.
pub async fn request_ticket(
    url: &str,
    token: &str,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("ticket request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body: serde_json::Value =
        serde_json::from_str(&response.text().await.expect("body")).unwrap_or_default();
    // Every gate's output is grepped for every ticket handed out, as for every JWT.
    if let Some(ticket) = body["ticket"].as_str() {
        super::secrets::remember(ticket);
    }
    if let Some(session) = body["session"].as_str() {
        super::secrets::remember(session);
    }
    (status, headers, body)
}

/// A fresh ticket for `token`, asserting issuance works.
pub async fn ticket(url: &str, token: &str) -> String {
    let (status, _, body) = request_ticket(url, token).await;
    assert_eq!(status, 200, "{body}");
    body["ticket"].as_str().expect("ticket").to_string()
}

/// Races one upgrade per entry of `ports` with the same `path` (and so the same ticket);
/// every loser must get 401. Returns how many opened.
pub async fn count_upgrades(ports: &[u16], path: &str) -> usize {
    let attempts: Vec<_> = ports
        .iter()
        .map(|&port| {
            let path = path.to_string();
            tokio::spawn(async move {
                connect(port, &path, &[])
                    .await
                    .map_err(|(status, _)| status)
            })
        })
        .collect();
    let mut opened = 0;
    for attempt in attempts {
        match attempt.await.expect("join") {
            Ok(_) => opened += 1,
            Err(status) => assert_eq!(status, 401),
        }
    }
    opened
}

/// A WebSocket opened on `/ws` of `gate` with a fresh ticket bought by a valid HS256 login,
/// past the upstream's first (report) message; also the login and the ticket, to grep for.
pub async fn open_with_ticket(gate: &super::Gate) -> (Socket, String, String) {
    use jsonwebtoken::Algorithm;
    let jwt = super::tokens::mint(Algorithm::HS256, &super::tokens::valid_claims());
    let ticket = ticket(&gate.url("/ws-ticket"), &jwt).await;
    let mut socket = connect(gate.port, &format!("/ws?ticket={ticket}"), &[])
        .await
        .expect("upgrade with a fresh ticket");
    upstream_report(&mut socket).await;
    (socket, jwt, ticket)
}

/// Reads until the socket ends; the close frame's code and reason, if one came.
pub async fn close_of(socket: &mut Socket, within: std::time::Duration) -> Option<(u16, String)> {
    tokio::time::timeout(within, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return Some((u16::from(frame.code), frame.reason.to_string()));
                }
                Some(Ok(Message::Close(None))) | None => return None,
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("the socket broke instead of closing: {e}"),
            }
        }
    })
    .await
    .expect("the socket ended in time")
}
