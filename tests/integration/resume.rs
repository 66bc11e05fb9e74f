//! Resume (contract: "Resume: the upstream never sees a client's blip"): a client whose
//! connection breaks comes back with its token and the count of messages it received, and
//! the upstream, a raw recording server streaming numbered messages, sees one connection
//! that never ended while the client sees every message once and in order. Every refusal;
//! the window passing (the upstream told 1001, `client_gone`); a held session revoked.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::SinkExt;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::Message;

use crate::common::config::{self, TicketOptions, route};
use crate::common::tokens::{self, mint, valid_claims};
use crate::common::ws::{Socket, next_message, request_ticket};
use crate::common::{Gate, secrets, upstream, wait_for};
use crate::live::revoke;

const REFRESH: &str = "/ws-refresh";

/// What the numbered upstream saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    ended: AtomicUsize,
    heads: Mutex<Vec<String>>,
    /// Every byte the client side sent after the handshake, all connections.
    from_client: Mutex<Vec<u8>>,
}

/// An upstream that answers each handshake with a 101, then sends text messages "0", "1",
/// ... one every `every`, and records what it is sent.
async fn numbered(every: Duration) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let recorded = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = recorded.clone();
            tokio::spawn(serve_numbered(stream, seen, every));
        }
    });
    (addr, seen)
}

async fn serve_numbered(mut stream: tokio::net::TcpStream, seen: Arc<Seen>, every: Duration) {
    seen.connections.fetch_add(1, Ordering::SeqCst);
    let Some((head, answer)) = upstream::read_upgrade(&mut stream).await else {
        return;
    };
    seen.heads.lock().expect("heads").push(head);
    let (mut reader, mut writer) = stream.into_split();
    if writer.write_all(answer.as_bytes()).await.is_err() {
        return;
    }
    let sending = tokio::spawn(async move {
        for n in 0u64.. {
            let text = n.to_string();
            let mut frame = vec![0x81, text.len() as u8];
            frame.extend_from_slice(text.as_bytes());
            if writer.write_all(&frame).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => seen
                .from_client
                .lock()
                .expect("bytes")
                .extend_from_slice(&buf[..n]),
        }
    }
    sending.abort();
    seen.ended.fetch_add(1, Ordering::SeqCst);
}

/// The client frames in `bytes` (masked, as a client sends them): opcode and payload.
fn client_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while bytes.len() >= 6 {
        let opcode = bytes[0] & 0x0f;
        let len = usize::from(bytes[1] & 0x7f);
        assert!(
            len < 126 && bytes[1] & 0x80 != 0,
            "short masked frames only"
        );
        let mask = [bytes[2], bytes[3], bytes[4], bytes[5]];
        let payload = bytes[6..6 + len]
            .iter()
            .zip(mask.iter().cycle())
            .map(|(b, m)| b ^ m)
            .collect();
        frames.push((opcode, payload));
        bytes = &bytes[6 + len..];
    }
    frames
}

/// A gate with tickets on `/ws` and `/ws2`, refresh, and resume with `window` seconds and
/// `buffer` bytes.
async fn resuming_gate(upstream: SocketAddr, window: u64, buffer: Option<u64>) -> Gate {
    let options = TicketOptions {
        refresh_path: Some(REFRESH.into()),
        resume_window_seconds: Some(window),
        ..Default::default()
    };
    let mut file = config::tickets(upstream, &options);
    file.routes.insert(0, route("/ws2", "ticket"));
    file.websocket.resume_buffer_bytes = buffer;
    file.admin.token_file = Some(crate::common::fixture("admin.token"));
    Gate::start(&file).await
}

/// A login of `subject` for `seconds`, its ticket answer (ticket, session, first resume
/// token), remembered as secrets.
async fn ticket_answer(gate: &Gate, subject: &str, seconds: i64) -> (String, Value) {
    let mut claims = valid_claims();
    claims["sub"] = json!(subject);
    claims["exp"] = json!(tokens::now() + seconds);
    let jwt = mint(Algorithm::HS256, &claims);
    let (status, _, body) = request_ticket(&gate.url("/ws-ticket"), &jwt).await;
    assert_eq!(status, 200, "{body}");
    let resume = body["resume"].as_str().expect("a resume token");
    assert_eq!(resume.len(), 22, "128 bits, base64url");
    secrets::remember(resume);
    (jwt, body)
}

/// A fresh socket on `/ws` for a ten-minute login of `subject`: the socket, its ticket answer
/// and the login.
async fn opened(gate: &Gate, subject: &str) -> (Socket, Value, String) {
    opened_for(gate, subject, 600).await
}

async fn opened_for(gate: &Gate, subject: &str, seconds: i64) -> (Socket, Value, String) {
    let (jwt, answer) = ticket_answer(gate, subject, seconds).await;
    let ticket = answer["ticket"].as_str().expect("ticket");
    let (socket, _) = open(gate, &format!("/ws?ticket={ticket}"), None)
        .await
        .expect("101");
    (socket, answer, jwt)
}

/// Opens `path` offering `protocols`: the socket and the 101's `Ticketgate-Resume`, or the
/// refusal's status and body.
async fn open(
    gate: &Gate,
    path: &str,
    protocols: Option<&str>,
) -> Result<(Socket, Option<String>), (u16, String)> {
    let mut request = format!("ws://127.0.0.1:{}{path}", gate.port)
        .into_client_request()
        .expect("request");
    if let Some(protocols) = protocols {
        let value = protocols.parse().expect("header value");
        request
            .headers_mut()
            .insert("sec-websocket-protocol", value);
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, response)) => {
            let next = response
                .headers()
                .get("ticketgate-resume")
                .map(|v| v.to_str().expect("ascii").to_string());
            if let Some(next) = &next {
                secrets::remember(next);
            }
            Ok((socket, next))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned());
            Err((response.status().as_u16(), body.unwrap_or_default()))
        }
        Err(other) => panic!("handshake failed below HTTP: {other}"),
    }
}

/// Resumes on `path` with `token` after `received` messages.
async fn resume(
    gate: &Gate,
    path: &str,
    token: &str,
    received: u64,
) -> Result<(Socket, Option<String>), (u16, String)> {
    let offer = format!("ticketgate.resume.{token}.{received}, ticketgate");
    open(gate, path, Some(&offer)).await
}

/// Reads `n` messages, each the number after the last.
async fn read_numbered(socket: &mut Socket, received: &mut u64, n: u64) {
    for _ in 0..n {
        match next_message(socket).await {
            Message::Text(text) => assert_eq!(text.as_str(), received.to_string()),
            other => panic!("expected message {received}, got {other:?}"),
        }
        *received += 1;
    }
}

fn refused_as_invalid_ticket(refusal: Result<(Socket, Option<String>), (u16, String)>) {
    let Err((status, body)) = refusal else {
        panic!("a resume the contract refuses was accepted");
    };
    assert_eq!(status, 401, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["error"], "invalid_ticket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_cuts_reach_neither_the_upstream_nor_the_message_order() {
    let (upstream, seen) = numbered(Duration::from_millis(1)).await;
    let gate = resuming_gate(upstream, 10, None).await;
    let (mut socket, answer, jwt) = opened(&gate, "alice").await;
    let mut token = answer["resume"].as_str().expect("token").to_string();
    let mut received = 0;
    let mut tokens = vec![token.clone()];
    for cut in 0..100u64 {
        read_numbered(&mut socket, &mut received, 1 + cut % 3).await;
        drop(socket);
        let (resumed, next) = resume(&gate, "/ws", &token, received)
            .await
            .unwrap_or_else(|e| panic!("resume {cut} refused: {e:?}"));
        socket = resumed;
        token = next.expect("the resume's 101 names the next token");
        tokens.push(token.clone());
    }
    read_numbered(&mut socket, &mut received, 5).await;
    socket.send(Message::text("still me")).await.expect("send");
    wait_for(
        "the message at the upstream",
        Duration::from_secs(5),
        || async {
            let bytes = seen.from_client.lock().expect("bytes").clone();
            client_frames(&bytes).iter().any(|(_, p)| p == b"still me")
        },
    )
    .await;
    assert_eq!(
        seen.connections.load(Ordering::SeqCst),
        1,
        "one upstream connection"
    );
    assert_eq!(seen.ended.load(Ordering::SeqCst), 0, "that never ended");
    let head = seen.heads.lock().expect("heads")[0].clone();
    assert!(!head.to_ascii_lowercase().contains("resume"), "{head}");
    let mut all: Vec<&str> = tokens.iter().map(String::as_str).collect();
    all.extend([jwt.as_str(), answer["ticket"].as_str().expect("ticket")]);
    gate.assert_never_printed(&all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_401_invalid_ticket_and_spends_the_token() {
    let (upstream, seen) = numbered(Duration::from_millis(20)).await;
    let gate = resuming_gate(upstream, 10, None).await;
    let (mut socket, answer, jwt) = opened(&gate, "bob").await;
    let session = answer["session"].as_str().expect("session");
    let first = answer["resume"].as_str().expect("token");
    let mut received = 0;
    read_numbered(&mut socket, &mut received, 2).await;
    refused_as_invalid_ticket(resume(&gate, "/ws", "AAAAAAAAAAAAAAAAAAAAAA", received).await);
    refused_as_invalid_ticket(resume(&gate, "/ws2", first, received).await);
    refused_as_invalid_ticket(resume(&gate, "/ws", first, received).await);
    let refreshed = refresh(&gate, &jwt, session).await;
    let second = refreshed["resume"]
        .as_str()
        .expect("a refresh names the next token");
    secrets::remember(second);
    refused_as_invalid_ticket(resume(&gate, "/ws", second, 1_000_000).await);
    refused_as_invalid_ticket(resume(&gate, "/ws", second, received).await);
    let unreadable = format!("ticketgate.resume.{first}");
    refused_as_invalid_ticket(open(&gate, "/ws", Some(&unreadable)).await);
    // The socket, all along, went on.
    read_numbered(&mut socket, &mut received, 2).await;
    let third = refresh(&gate, &jwt, session).await["resume"]
        .as_str()
        .expect("token")
        .to_string();
    secrets::remember(&third);
    drop(socket);
    let (mut socket, _) = resume(&gate, "/ws", &third, received)
        .await
        .expect("resumed");
    read_numbered(&mut socket, &mut received, 2).await;
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    wait_for(
        "a refused resume's line",
        Duration::from_secs(5),
        || async {
            let log = gate.access_log();
            log.iter()
                .any(|l| l["reason"] == "resume_refused" && l["status"] == 401)
        },
    )
    .await;
    gate.assert_never_printed(&[first, second, &third, session]);
}

/// `POST` to the refresh endpoint for `session`: the 200's body.
async fn refresh(gate: &Gate, jwt: &str, session: &str) -> Value {
    let response = reqwest::Client::new()
        .post(gate.url(REFRESH))
        .bearer_auth(jwt)
        .header("content-type", "application/json")
        .body(json!({ "session": session }).to_string())
        .send()
        .await
        .expect("refresh");
    assert_eq!(response.status(), 200);
    serde_json::from_str(&response.text().await.expect("body")).expect("JSON")
}

/// Waits until the upstream's connection ended; the close frame's code it was sent, if any.
async fn upstream_told(seen: &Seen) -> Option<u16> {
    wait_for(
        "the upstream connection's end",
        Duration::from_secs(10),
        || async { seen.ended.load(Ordering::SeqCst) == 1 },
    )
    .await;
    let bytes = seen.from_client.lock().expect("bytes").clone();
    client_frames(&bytes)
        .into_iter()
        .find(|(opcode, _)| *opcode == 8)
        .map(|(_, payload)| u16::from_be_bytes([payload[0], payload[1]]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_window_passes_the_upstream_is_told_1001_and_the_line_says_client_gone() {
    let (upstream, seen) = numbered(Duration::from_millis(50)).await;
    let gate = resuming_gate(upstream, 1, None).await;
    let (mut socket, answer, _) = opened(&gate, "carol").await;
    let token = answer["resume"].as_str().expect("token");
    let mut received = 0;
    read_numbered(&mut socket, &mut received, 1).await;
    drop(socket);
    assert_eq!(upstream_told(&seen).await, Some(1001));
    refused_as_invalid_ticket(resume(&gate, "/ws", token, received).await);
    let log = gate.wait_for_log_lines(3).await;
    assert!(
        log.iter()
            .any(|l| l["reason"] == "client_gone" && l["status"] == 101),
        "{log:?}"
    );
    gate.assert_metrics(&[r#"ticketgate_websocket_closed_total{reason="client_gone"} 1"#])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_asking_for_messages_no_longer_kept_ends_the_socket() {
    let (upstream, seen) = numbered(Duration::from_millis(1)).await;
    let gate = resuming_gate(upstream, 10, Some(256)).await;
    let (mut socket, answer, _) = opened(&gate, "dave").await;
    let token = answer["resume"].as_str().expect("token");
    let mut received = 0;
    // 256 bytes hold fewer than 100 of these messages.
    read_numbered(&mut socket, &mut received, 150).await;
    drop(socket);
    refused_as_invalid_ticket(resume(&gate, "/ws", token, 0).await);
    assert_eq!(upstream_told(&seen).await, Some(1001));
    wait_for("the socket's line", Duration::from_secs(5), || async {
        gate.access_log()
            .iter()
            .any(|l| l["reason"] == "client_gone")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_session_revoked_while_away_ends_and_cannot_resume() {
    let (upstream, seen) = numbered(Duration::from_millis(50)).await;
    let gate = resuming_gate(upstream, 30, None).await;
    let (mut socket, answer, _) = opened(&gate, "erin").await;
    let token = answer["resume"].as_str().expect("token");
    let mut received = 0;
    read_numbered(&mut socket, &mut received, 1).await;
    drop(socket);
    let admin = std::fs::read_to_string(crate::common::fixture("admin.token")).expect("token");
    let (status, _) = revoke(&gate, Some(admin.trim_end()), r#"{"subject":"erin"}"#).await;
    assert_eq!(status, 200);
    upstream_told(&seen).await;
    refused_as_invalid_ticket(resume(&gate, "/ws", token, received).await);
    wait_for("the socket's line", Duration::from_secs(5), || async {
        gate.access_log()
            .iter()
            .any(|l| l["reason"] == "revoked" && l["status"] == 101)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_route_offers_the_upstream_no_extension() {
    let (upstream, seen) = numbered(Duration::from_millis(50)).await;
    let gate = resuming_gate(upstream, 10, None).await;
    let (_, answer) = ticket_answer(&gate, "frank", 600).await;
    let ticket = answer["ticket"].as_str().expect("ticket");
    let mut request = format!("ws://127.0.0.1:{}/ws?ticket={ticket}", gate.port)
        .into_client_request()
        .expect("request");
    let deflate = "permessage-deflate; client_max_window_bits"
        .parse()
        .expect("value");
    request
        .headers_mut()
        .insert("sec-websocket-extensions", deflate);
    let (_socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("101");
    assert!(response.headers().get("sec-websocket-extensions").is_none());
    let head = seen.heads.lock().expect("heads")[0].to_ascii_lowercase();
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
}

/// Opens a socket for `subject` whose login ends in `seconds`, reads a message, cuts it.
async fn open_and_cut(gate: &Gate, subject: &str, seconds: i64) -> String {
    let (mut socket, answer, _) = opened_for(gate, subject, seconds).await;
    read_numbered(&mut socket, &mut 0, 1).await;
    drop(socket);
    answer["resume"].as_str().expect("token").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_session_whose_login_expires_while_away_ends_and_cannot_resume() {
    let (upstream, seen) = numbered(Duration::from_millis(50)).await;
    let options = TicketOptions {
        refresh_path: Some(REFRESH.into()),
        resume_window_seconds: Some(30),
        ..Default::default()
    };
    let mut file = config::tickets(upstream, &options);
    file.jwt.as_mut().expect("jwt").leeway_seconds = Some(0);
    let gate = Gate::start(&file).await;
    let token = open_and_cut(&gate, "grace", 2).await;
    upstream_told(&seen).await;
    refused_as_invalid_ticket(resume(&gate, "/ws", &token, 1).await);
    wait_for("the socket's line", Duration::from_secs(5), || async {
        gate.access_log()
            .iter()
            .any(|l| l["reason"] == "login_expired" && l["status"] == 101)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_closes_held_sessions_and_logs_them() {
    let (upstream, seen) = numbered(Duration::from_millis(50)).await;
    let mut gate = resuming_gate(upstream, 30, None).await;
    open_and_cut(&gate, "heidi", 600).await;
    gate.signal("TERM");
    assert!(gate.exit_within(Duration::from_secs(10)).await.is_some());
    upstream_told(&seen).await;
    let log = gate.access_log();
    assert!(
        log.iter()
            .any(|l| l["reason"] == "shutdown" && l["status"] == 101),
        "{log:?}"
    );
}
