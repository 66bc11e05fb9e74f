//! STOMP destinations by claim (contract: "STOMP destinations by claim"), against a raw
//! recording upstream: what it received, byte for byte, and what never reached it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::SinkExt;
use jsonwebtoken::Algorithm;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::Message;

use crate::common::config::{self, TicketOptions};
use crate::common::tokens::{self, mint, valid_claims};
use crate::common::ws::{Socket, close_of, connect, next_message, request_ticket};
use crate::common::{Gate, upstream, wait_for};
use ticketgate::config::file::Stomp;

/// What the recording upstream got: each handshake's head, the bytes after, and whether a
/// connection ended.
#[derive(Default)]
struct Recorded {
    heads: Mutex<Vec<String>>,
    bytes: Mutex<Vec<u8>>,
    ended: Mutex<bool>,
}

/// An upstream that answers every handshake with a 101 and records what follows.
async fn recording() -> (SocketAddr, Arc<Recorded>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let recorded = Arc::new(Recorded::default());
    let shared = recorded.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let recorded = shared.clone();
            tokio::spawn(async move {
                let Some((head, answer)) = upstream::read_upgrade(&mut stream).await else {
                    return;
                };
                recorded.heads.lock().expect("heads").push(head);
                let mut buf = [0u8; 4096];
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => recorded
                            .bytes
                            .lock()
                            .expect("bytes")
                            .extend_from_slice(&buf[..n]),
                    }
                }
                *recorded.ended.lock().expect("ended") = true;
            });
        }
    });
    (addr, recorded)
}

/// The data payloads of the client frames in `bytes` (unmasked), each frame's on its own.
fn payloads(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while bytes.len() >= 2 {
        let opcode = bytes[0] & 0x0f;
        let (len, mut at) = match bytes[1] & 0x7f {
            126 if bytes.len() >= 4 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
            127 => panic!("no frame this large is sent"),
            n if n < 126 => (usize::from(n), 2),
            _ => break,
        };
        if bytes.len() < at + 4 + len {
            break;
        }
        let mask = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
        at += 4;
        if opcode < 8 {
            out.push(
                bytes[at..at + len]
                    .iter()
                    .zip(mask.iter().cycle())
                    .map(|(b, m)| b ^ m)
                    .collect(),
            );
        }
        bytes = &bytes[at + len..];
    }
    out
}

const ROUTE: &str = "/stomp";

/// A gate with a ticket route `/stomp` judging STOMP frames: subscribe to `/topic/public`,
/// the caller's own `/user/{sub}/**` and its rooms; send to `/app/**`.
async fn stomp_gate(upstream: SocketAddr, leeway: Option<u64>) -> Gate {
    stomp_gate_with(upstream, leeway, TicketOptions::default()).await
}

async fn stomp_gate_with(
    upstream: SocketAddr,
    leeway: Option<u64>,
    options: TicketOptions,
) -> Gate {
    let mut file = config::tickets(upstream, &options);
    let mut route = config::route(ROUTE, "ticket");
    route.stomp = Some(Stomp {
        subscribe: vec![
            "/topic/public".into(),
            "/user/{sub}/**".into(),
            "/topic/room.{rooms}".into(),
        ],
        send: vec!["/app/**".into()],
    });
    file.routes.insert(0, route);
    if let Some(leeway) = leeway {
        file.jwt.as_mut().expect("jwt").leeway_seconds = Some(leeway);
    }
    Gate::start(&file).await
}

/// A STOMP socket for `subject` (rooms r1 and r2), its login valid `seconds`, past CONNECT.
async fn stomp_socket(gate: &Gate, subject: &str, seconds: i64) -> Socket {
    stomp_socket_offering(gate, subject, seconds, &[]).await.0
}

/// As `stomp_socket`, with extra handshake headers; also the ticket answer.
async fn stomp_socket_offering(
    gate: &Gate,
    subject: &str,
    seconds: i64,
    headers: &[(&str, &str)],
) -> (Socket, serde_json::Value) {
    let mut claims = valid_claims();
    claims["sub"] = json!(subject);
    claims["rooms"] = json!(["r1", "r2", 7]);
    claims["exp"] = json!(tokens::now() + seconds);
    let jwt = mint(Algorithm::HS256, &claims);
    let (status, _, body) = request_ticket(&gate.url("/ws-ticket"), &jwt).await;
    assert_eq!(status, 200, "{body}");
    let ticket = body["ticket"].as_str().expect("ticket");
    let mut socket = connect(gate.port, &format!("{ROUTE}?ticket={ticket}"), headers)
        .await
        .expect("101");
    socket.send(Message::text(CONNECT)).await.expect("CONNECT");
    (socket, body)
}

const CONNECT: &str = "CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0";

/// Waits until the upstream received `n` data frames; their payloads.
async fn upstream_got(recorded: &Recorded, n: usize) -> Vec<Vec<u8>> {
    wait_for("frames at the upstream", Duration::from_secs(5), || async {
        payloads(&recorded.bytes.lock().expect("bytes")).len() >= n
    })
    .await;
    payloads(&recorded.bytes.lock().expect("bytes"))
}

/// The socket's ERROR frame and close: the frame's text and the close code.
async fn refused_with(socket: &mut Socket) -> (String, u16) {
    let error = match next_message(socket).await {
        Message::Text(text) => text.to_string(),
        other => panic!("expected an ERROR frame, got {other:?}"),
    };
    let (code, _) = close_of(socket, Duration::from_secs(5))
        .await
        .expect("a close frame");
    (error, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_frames_reach_the_broker_byte_for_byte() {
    let (upstream, recorded) = recording().await;
    let gate = stomp_gate(upstream, None).await;
    let mut socket = stomp_socket(&gate, "alice", 600).await;
    let body = b"a\0SUBSCRIBE\ndestination:/topic/secret\n\n";
    let send = [
        format!(
            "SEND\ndestination:/app/chat\ncontent-length:{}\n\n",
            body.len()
        )
        .as_bytes(),
        body,
        b"\0",
    ]
    .concat();
    let messages = [
        Message::text(
            "SUBSCRIBE\nid:0\ndestination:/topic/public\n\n\0\n\
             SUBSCRIBE\nid:1\ndestination:/user/alice/queue/inbox\n\n\0",
        ),
        Message::text("\n"),
        Message::text("SUBSCRIBE\nid:2\ndestination:/topic/room.r2\n\n\0"),
        Message::binary(send),
        Message::text("UNSUBSCRIBE\nid:2\n\n\0"),
    ];
    for message in &messages {
        socket.send(message.clone()).await.expect("send");
    }
    let got = upstream_got(&recorded, 1 + messages.len()).await;
    let mut expected = vec![CONNECT.as_bytes().to_vec()];
    expected.extend(messages.iter().map(|m| m.clone().into_data().to_vec()));
    assert_eq!(got, expected);
    assert!(!*recorded.ended.lock().expect("ended"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_subscribe_never_reaches_the_broker_and_closes_with_1008() {
    let (upstream, recorded) = recording().await;
    let gate = stomp_gate(upstream, None).await;
    let mut socket = stomp_socket(&gate, "alice", 600).await;
    let forbidden = [
        "SUBSCRIBE\nid:9\ndestination:/topic/secret\nreceipt:r-1\n\n\0",
        // Escaped to look like the caller's own queue: judged unescaped, `/user/alice:/..`.
        "SUBSCRIBE\nid:9\ndestination:/user/alice\\c/../bob/x\n\n\0",
        "SUBSCRIBE\nid:9\ndestination:/topic/room.r3\n\n\0",
        "SEND\ndestination:/topic/public\n\nhi\0",
    ];
    socket
        .send(Message::text(forbidden[0]))
        .await
        .expect("send");
    let (error, code) = refused_with(&mut socket).await;
    assert_eq!(code, 1008);
    assert!(error.starts_with("ERROR\n"), "{error}");
    assert!(
        error.contains("\nmessage:forbidden destination\n"),
        "{error}"
    );
    assert!(error.contains("\nreceipt-id:r-1\n"), "{error}");
    wait_for(
        "the upstream connection's end",
        Duration::from_secs(5),
        || async { *recorded.ended.lock().expect("ended") },
    )
    .await;
    assert_eq!(
        upstream_got(&recorded, 1).await,
        vec![CONNECT.as_bytes().to_vec()]
    );
    for frame in &forbidden[1..] {
        let mut socket = stomp_socket(&gate, "alice", 600).await;
        socket.send(Message::text(*frame)).await.expect("send");
        let (error, code) = refused_with(&mut socket).await;
        assert_eq!(
            (code, error.contains("forbidden destination")),
            (1008, true),
            "{frame:?}"
        );
    }
    let all = recorded.bytes.lock().expect("bytes").clone();
    let seen: Vec<u8> = payloads(&all).concat();
    for never in [&b"secret"[..], b"bob", b"room.r3", b"SEND"] {
        assert!(
            !seen.windows(never.len()).any(|w| w == never),
            "{}",
            String::from_utf8_lossy(never)
        );
    }
    gate.assert_metrics(&[
        r#"ticketgate_stomp_frames_refused_total{command="SUBSCRIBE"} 3"#,
        r#"ticketgate_stomp_frames_refused_total{command="SEND"} 1"#,
        r#"ticketgate_websocket_closed_total{reason="forbidden_destination"} 4"#,
    ])
    .await;
    wait_for(
        "the refused socket's line",
        Duration::from_secs(5),
        || async {
            gate.access_log()
                .iter()
                .any(|l| l["reason"] == "forbidden_destination" && l["status"] == 101)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_holding_a_separator_never_matches_its_own_pattern() {
    let (upstream, _recorded) = recording().await;
    let gate = stomp_gate(upstream, None).await;
    let mut socket = stomp_socket(&gate, "eve/../alice", 600).await;
    socket
        .send(Message::text(
            "SUBSCRIBE\nid:0\ndestination:/user/eve/../alice/inbox\n\n\0",
        ))
        .await
        .expect("send");
    assert_eq!(refused_with(&mut socket).await.1, 1008);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_is_refused_alike() {
    let (upstream, recorded) = recording().await;
    let gate = stomp_gate(upstream, None).await;
    let oversized = format!("SEND\ndestination:/app/x\nx:{}\n\n\0", "a".repeat(9000));
    for (frame, command) in [
        (
            "SUBSCRIBE\nid:0\ndestination:/topic/public\ndestination:/topic/secret\n\n\0",
            "SUBSCRIBE",
        ),
        ("HELLO\n\n\0", "unknown"),
        // A header block over 8 KiB is refused before its end is read.
        (oversized.as_str(), "unknown"),
    ] {
        let mut socket = stomp_socket(&gate, "alice", 600).await;
        socket.send(Message::text(frame)).await.expect("send");
        let (error, code) = refused_with(&mut socket).await;
        assert_eq!(code, 1008);
        assert!(error.contains("\nmessage:malformed frame\n"), "{error}");
        let metrics = gate.metrics().await;
        assert!(
            metrics.contains(&format!(
                r#"ticketgate_stomp_frames_refused_total{{command="{command}"}} "#
            )),
            "{metrics}"
        );
    }
    gate.assert_metrics(&[r#"ticketgate_stomp_frames_refused_total{command="unknown"} 2"#])
        .await;
    let seen: Vec<u8> = payloads(&recorded.bytes.lock().expect("bytes")).concat();
    assert!(!seen.windows(6).any(|w| w == b"secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticketgates_own_close_on_a_stomp_route_says_why_in_an_error_frame() {
    let (upstream, _recorded) = recording().await;
    let gate = stomp_gate(upstream, Some(0)).await;
    let mut socket = stomp_socket(&gate, "alice", 2).await;
    let (error, code) = refused_with(&mut socket).await;
    assert_eq!(code, 4401);
    assert!(error.contains("\nmessage:login expired\n"), "{error}");
}

/// `payload` as one text message cut into one-byte fragments, each its own frame.
async fn send_fragmented(socket: &mut Socket, payload: &[u8]) {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    for (i, byte) in payload.iter().enumerate() {
        let opcode = OpCode::Data(if i == 0 { Data::Text } else { Data::Continue });
        let frame = Frame::message(vec![*byte], opcode, i + 1 == payload.len());
        socket.send(Message::Frame(frame)).await.expect("fragment");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_cut_into_one_byte_fragments_is_judged_whole() {
    let (upstream, recorded) = recording().await;
    let gate = stomp_gate(upstream, None).await;
    let mut socket = stomp_socket(&gate, "alice", 600).await;
    let allowed = b"SUBSCRIBE\nid:0\ndestination:/topic/public\n\n\0";
    send_fragmented(&mut socket, allowed).await;
    let got = upstream_got(&recorded, 1 + allowed.len()).await;
    assert_eq!(got[1..].concat(), allowed.to_vec(), "every fragment passed");
    assert_eq!(got.len(), 1 + allowed.len(), "as the client framed it");
    send_fragmented(
        &mut socket,
        b"SUBSCRIBE\nid:1\ndestination:/topic/secret\n\n\0",
    )
    .await;
    assert_eq!(refused_with(&mut socket).await.1, 1008);
    let seen: Vec<u8> = payloads(&recorded.bytes.lock().expect("bytes")).concat();
    assert_eq!(
        seen,
        [CONNECT.as_bytes(), allowed].concat(),
        "no byte of the refused frame's payload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stomp_route_offers_the_broker_no_extension() {
    let (upstream, recorded) = recording().await;
    let gate = stomp_gate(upstream, None).await;
    let deflate = [("sec-websocket-extensions", "permessage-deflate")];
    let (_socket, _) = stomp_socket_offering(&gate, "alice", 600, &deflate).await;
    upstream_got(&recorded, 1).await;
    let head = recorded.heads.lock().expect("heads")[0].to_ascii_lowercase();
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_stomp_socket_is_still_judged() {
    let (upstream, recorded) = recording().await;
    let options = TicketOptions {
        refresh_path: Some("/ws-refresh".into()),
        resume_window_seconds: Some(10),
        ..Default::default()
    };
    let gate = stomp_gate_with(upstream, None, options).await;
    let (mut socket, answer) = stomp_socket_offering(&gate, "alice", 600, &[]).await;
    let token = answer["resume"].as_str().expect("a resume token");
    crate::common::secrets::remember(token);
    let allowed = "SUBSCRIBE\nid:0\ndestination:/topic/public\n\n\0";
    socket.send(Message::text(allowed)).await.expect("send");
    upstream_got(&recorded, 2).await;
    drop(socket);
    // The upstream sent nothing: the client received 0 messages.
    let offer = format!("ticketgate.resume.{token}.0, ticketgate");
    let mut resumed = connect(gate.port, ROUTE, &[("sec-websocket-protocol", &offer)])
        .await
        .expect("resumed");
    let own = "SUBSCRIBE\nid:1\ndestination:/user/alice/inbox\n\n\0";
    resumed.send(Message::text(own)).await.expect("send");
    let got = upstream_got(&recorded, 3).await;
    assert_eq!(
        got[1..],
        [allowed.as_bytes().to_vec(), own.as_bytes().to_vec()]
    );
    resumed
        .send(Message::text(
            "SUBSCRIBE\nid:2\ndestination:/topic/secret\n\n\0",
        ))
        .await
        .expect("send");
    assert_eq!(refused_with(&mut resumed).await.1, 1008);
    assert_eq!(
        recorded.heads.lock().expect("heads").len(),
        1,
        "one upstream connection"
    );
    let seen: Vec<u8> = payloads(&recorded.bytes.lock().expect("bytes")).concat();
    assert!(!seen.windows(6).any(|w| w == b"secret"));
}
