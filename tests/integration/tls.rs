//! `tls:`: HTTPS and `wss://` on the data plane, with real TLS clients trusting a CA the test
//! made: the ticket flow end to end, what is refused (plain HTTP, TLS 1.1, a slow or
//! distrustful client, each counted by reason), h2 for requests beside HTTP/1.1 upgrades,
//! and certificates rotated on SIGHUP under an open WebSocket.

use std::time::Duration;

use bytes::Bytes;
use jsonwebtoken::Algorithm;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::config::{self, TicketOptions};
use crate::common::tls::{self, TestPki, alpn, presented};
use crate::common::ws::{assert_echoes, upstream_report};
use crate::common::{Gate, raw, secrets, tokens, upstream, wait_for};

const H2: &[u8] = b"h2";
const H1: &[u8] = b"http/1.1";

fn tls_file(pki: &TestPki, http2: bool) -> config::Tls {
    config::Tls {
        cert_file: pki.cert.display().to_string(),
        key_file: pki.key.display().to_string(),
        http2: Some(http2),
    }
}

async fn gate(pki: &TestPki, http2: bool) -> (upstream::Server, Gate) {
    let upstream = upstream::echo().await;
    let file = config::File {
        tls: Some(tls_file(pki, http2)),
        limits: config::Limits {
            header_timeout_seconds: Some(1),
            keepalive_timeout_seconds: None,
            ..Default::default()
        },
        ..config::tickets(upstream.addr, &TicketOptions::default())
    };
    (upstream, Gate::start(&file).await)
}

/// One HTTP/1.1 request over `stream` with `Connection: close`; status and body.
async fn exchange(mut stream: TlsStream<TcpStream>, request: &str) -> (u16, String) {
    stream.write_all(request.as_bytes()).await.expect("send");
    let (answer, closed) = raw::read_until_closed(&mut stream, raw::ANSWER_DEADLINE).await;
    assert!(closed, "the answer did not end: {answer}");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (raw::status(&answer), body.to_string())
}

/// A ticket bought over HTTPS with a fresh HS256 login; both join the secrets to grep for.
async fn https_ticket(gate: &Gate, pki: &TestPki) -> String {
    let jwt = tokens::mint(Algorithm::HS256, &tokens::valid_claims());
    let stream = tls::connect(gate.port, pki.client(&[H1]))
        .await
        .expect("TLS");
    let (status, body) = exchange(
        stream,
        &format!(
            "POST /ws-ticket HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {jwt}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("ticket JSON");
    let ticket = body["ticket"].as_str().expect("ticket").to_string();
    secrets::remember(&ticket);
    ticket
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// `wss://localhost/ws?ticket=...` over a connection made with `client`.
async fn wss(gate: &Gate, client: std::sync::Arc<rustls::ClientConfig>, ticket: &str) -> Wss {
    let stream = tls::connect(gate.port, client).await.expect("TLS");
    let request = format!("wss://localhost:{}/ws?ticket={ticket}", gate.port)
        .into_client_request()
        .expect("request");
    let (socket, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("upgrade over TLS");
    assert_eq!(response.status(), 101);
    socket
}

async fn failures(gate: &Gate, reason: &str) -> String {
    let line = format!("ticketgate_tls_handshake_failures_total{{reason=\"{reason}\"}} 1");
    wait_for(&line, Duration::from_secs(5), || async {
        gate.metrics().await.lines().any(|l| l == line)
    })
    .await;
    line
}

#[tokio::test]
async fn the_ticket_flow_runs_over_https_and_wss() {
    let pki = TestPki::new();
    let (_upstream, gate) = gate(&pki, false).await;
    let ticket = https_ticket(&gate, &pki).await;
    let mut socket = wss(&gate, pki.client(&[]), &ticket).await;
    let seen = upstream_report(&mut socket).await;
    assert_eq!(seen["uri"], "/ws");
    assert_eq!(seen["headers"]["x-auth-subject"], json!(["alice"]));
    assert_echoes(&mut socket, &[Message::text("over TLS")]).await;
    gate.assert_metrics(&["ticketgate_tickets_redeemed_total 1"])
        .await;
    gate.assert_never_printed(&[&ticket]);
}

#[tokio::test]
async fn plain_http_on_the_tls_port_is_told_so_and_counted() {
    let pki = TestPki::new();
    let (upstream, gate) = gate(&pki, false).await;
    let answer = raw::exchange(gate.port, &raw::get("/public", "")).await;
    assert_eq!(raw::status(&answer), 400, "{answer}");
    assert!(answer.ends_with("this port speaks TLS: use https:// or wss://\n"));
    failures(&gate, "plain_http").await;
    assert_eq!(upstream.open_connections(), 0);
}

/// A TLS 1.1 ClientHello, byte by byte: no `supported_versions`, legacy version 3.2, two
/// CBC suites a TLS 1.1 client would offer.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[7u8; 32]);
    body.extend_from_slice(&[0x00, 0x00, 0x04, 0x00, 0x2f, 0x00, 0x35, 0x01, 0x00]);
    let mut handshake = vec![0x01, 0x00, 0x00, body.len() as u8];
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn tls_1_1_is_refused_and_tls_1_2_is_served() {
    let pki = TestPki::new();
    let (_upstream, gate) = gate(&pki, false).await;
    let mut stream = TcpStream::connect(("127.0.0.1", gate.port))
        .await
        .expect("connect");
    stream
        .write_all(&tls11_client_hello())
        .await
        .expect("send hello");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(raw::ANSWER_DEADLINE, stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection stayed open");
    assert_eq!(answer.first(), Some(&0x15), "an alert, not a ServerHello");
    failures(&gate, "protocol_version").await;

    let tls12 = tls::client_config(&pki.ca, &[&rustls::version::TLS12], &[]);
    let stream = tls::connect(gate.port, tls12).await.expect("TLS 1.2");
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let (status, _) = exchange(stream, &raw::get("/public", "")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_silent_client_and_a_distrustful_one_are_counted() {
    let pki = TestPki::new();
    let (_upstream, gate) = gate(&pki, false).await;
    let mut silent = TcpStream::connect(("127.0.0.1", gate.port))
        .await
        .expect("connect");
    let (_, closed) = raw::read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(
        closed,
        "a silent client is cut after limits.header_timeout_seconds"
    );
    failures(&gate, "timeout").await;

    let stranger = TestPki::new();
    let refused = tls::connect(gate.port, stranger.client(&[])).await;

    assert!(
        refused.is_err(),
        "a client trusting another CA refuses the certificate"
    );
    failures(&gate, "certificate_rejected").await;
}

#[tokio::test]
async fn h2_is_offered_for_requests_while_upgrades_stay_on_http_1_1() {
    let pki = TestPki::new();
    let (_upstream, gate) = gate(&pki, true).await;
    let stream = tls::connect(gate.port, pki.client(&[H2, H1]))
        .await
        .expect("TLS");
    assert_eq!(alpn(&stream).as_deref(), Some(H2));
    let jwt = tokens::mint(Algorithm::HS256, &tokens::valid_claims());
    let (mut client, connection) = h2::client::handshake(stream).await.expect("h2");
    tokio::spawn(connection);
    let request = http::Request::get("https://localhost/api/items?x=1")
        .header("authorization", format!("Bearer {jwt}"))
        .header("x-auth-subject", "mallory")
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("send");
    let response = response.await.expect("h2 response");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk: Bytes = chunk.expect("body");
        bytes.extend_from_slice(&chunk);
    }
    let seen: serde_json::Value = serde_json::from_slice(&bytes).expect("upstream echo");
    assert_eq!(seen["uri"], "/api/items?x=1");
    assert_eq!(seen["headers"]["x-auth-subject"], json!(["alice"]));
    assert!(seen["headers"].get("authorization").is_none());
    assert_eq!(seen["headers"]["host"], json!(["localhost"]));

    let ticket = https_ticket(&gate, &pki).await;
    let mut socket = wss(&gate, pki.client(&[H1]), &ticket).await;
    upstream_report(&mut socket).await;
    assert_echoes(&mut socket, &[Message::text("beside h2")]).await;
    let log = gate.wait_for_log_lines(2).await;
    assert_eq!(log[0]["path"], "/api/items?x=1");
    assert_eq!(log[0]["protocol"], "HTTP/2");
    assert!(
        log.iter()
            .any(|l| l["protocol"] == "HTTP/1.1" && l["route"] == "/ws-ticket")
    );
}

#[tokio::test]
async fn without_http2_a_client_asking_for_h2_gets_http_1_1() {
    let pki = TestPki::new();
    let (_upstream, gate) = gate(&pki, false).await;
    let stream = tls::connect(gate.port, pki.client(&[H2, H1]))
        .await
        .expect("TLS");
    assert_eq!(alpn(&stream).as_deref(), Some(H1));
    let (status, _) = exchange(stream, &raw::get("/public", "")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_rotated_certificate_serves_new_handshakes_while_an_open_socket_goes_on() {
    let old = TestPki::new();
    let (_upstream, gate) = gate(&old, false).await;
    let ticket = https_ticket(&gate, &old).await;
    let mut socket = wss(&gate, old.client(&[]), &ticket).await;
    upstream_report(&mut socket).await;

    let new = TestPki::expiring(Some((2031, 1, 1)));
    new.install_over(&old.cert, &old.key);
    gate.signal("HUP");

    wait_for("the reload", Duration::from_secs(10), || async {
        gate.metrics()
            .await
            .contains("ticketgate_config_reloads_total{result=\"success\"} 1")
    })
    .await;
    let fresh = tls::connect(gate.port, new.client(&[]))
        .await
        .expect("a handshake trusting only the new CA");
    assert_eq!(presented(&fresh), new.der);
    gate.assert_metrics(&["ticketgate_tls_certificate_expiry_timestamp_seconds 1924992000"])
        .await;
    assert_echoes(&mut socket, &[Message::text("still the old handshake")]).await;

    // certbot caught mid-write: half a certificate. The pair in use stays.
    let text = std::fs::read_to_string(&old.cert).expect("read");
    std::fs::write(&old.cert, &text[..text.len() / 2]).expect("truncate");
    gate.signal("HUP");
    wait_for("the failed reload", Duration::from_secs(10), || async {
        gate.metrics()
            .await
            .contains("ticketgate_config_reloads_total{result=\"failure\"} 1")
    })
    .await;
    let after = tls::connect(gate.port, new.client(&[]))
        .await
        .expect("the last good pair still serves");
    assert_eq!(presented(&after), new.der);
    assert!(gate.output().contains("tls.cert_file"), "{}", gate.output());
    assert_echoes(&mut socket, &[Message::text("through both reloads")]).await;
}

#[tokio::test]
async fn a_renewal_on_disk_is_picked_up_without_a_signal() {
    let old = TestPki::new();
    let (_upstream, gate) = gate(&old, false).await;
    let new = TestPki::new();
    new.install_over(&old.cert, &old.key);
    wait_for(
        "the reload on the files' change",
        Duration::from_secs(15),
        || async {
            gate.metrics()
                .await
                .contains("ticketgate_config_reloads_total{result=\"success\"} 1")
        },
    )
    .await;
    let fresh = tls::connect(gate.port, new.client(&[]))
        .await
        .expect("a handshake trusting only the new CA");
    assert_eq!(presented(&fresh), new.der);
    assert!(
        gate.output()
            .contains("the TLS certificate or key file changed")
    );
}

/// Pingora's h2 handshake and its wait for a first stream have no timeout of their own: the
/// header deadline covers them, and every header block (one left unfinished by a HEADERS
/// frame without END_HEADERS is cut too, not only at the keep-alive timeout).
#[tokio::test]
async fn idle_and_half_sent_h2_connections_are_cut_at_the_header_timeout() {
    let pki = TestPki::new();
    let (_upstream, gate) = gate(&pki, true).await;
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let settings = [0, 0, 0, 0x4, 0, 0, 0, 0, 0];
    // HEADERS on stream 1, END_STREAM but no END_HEADERS, four bytes of a header block.
    let half_headers = [0, 0, 4, 0x1, 0x1, 0, 0, 0, 1, 0x82, 0x86, 0x84, 0x41];
    for (what, sent) in [
        ("nothing", Vec::new()),
        ("the preface alone", preface.clone()),
        (
            "half a header block",
            [&preface[..], &settings, &half_headers].concat(),
        ),
    ] {
        let mut stream = tls::connect(gate.port, pki.client(&[H2]))
            .await
            .expect("TLS");
        assert_eq!(alpn(&stream).as_deref(), Some(H2));
        stream.write_all(&sent).await.expect("send");
        let started = std::time::Instant::now();
        let (_, closed) = raw::read_until_closed(&mut stream, Duration::from_secs(5)).await;
        assert!(closed, "an h2 connection that sent {what} is still open");
        assert!(started.elapsed() >= Duration::from_millis(500), "{what}");
    }
}
