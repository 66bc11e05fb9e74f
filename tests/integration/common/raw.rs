//! HTTP over a bare TCP socket, for requests no well-behaved client library would send:
//! odd request targets, HTTP/1.0 upgrades, trickled headers.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a raw exchange waits for the server to finish answering.
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(5);

/// Sends `request` on a new connection and returns everything the server sent until it
/// closed the connection (or `ANSWER_DEADLINE` passed).
pub async fn exchange(port: u16, request: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(request.as_bytes()).await.expect("send");
    read_until_closed(&mut stream, ANSWER_DEADLINE).await.0
}

/// Reads until the peer closes; returns what was read and whether it closed in time.
pub async fn read_until_closed<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    deadline: Duration,
) -> (String, bool) {
    let mut seen = Vec::new();
    let closed = tokio::time::timeout(deadline, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&seen).into_owned(), closed)
}

/// The status code of a raw HTTP response (0 when there is none).
pub fn status(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// A `GET` of `target` with `Connection: close` and extra header lines (each ending `\r\n`).
pub fn get(target: &str, extra: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: gate.test\r\n{extra}Connection: close\r\n\r\n")
}

/// A WebSocket opening handshake for `target` with extra header lines (each ending `\r\n`).
pub fn upgrade_request(target: &str, extra: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: gate.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Sends a WebSocket opening handshake for `target` with extra header lines (each ending
/// `\r\n`); returns the response head and, after a 101, the socket.
pub async fn upgrade(port: u16, target: &str, extra: &str) -> (String, TcpStream) {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let request = upgrade_request(target, extra);
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut head = Vec::new();
    let read = tokio::time::timeout(ANSWER_DEADLINE, async {
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.map_or(true, |n| n == 0) {
                break;
            }
            head.push(byte[0]);
        }
    })
    .await;
    assert!(read.is_ok(), "no response head in time");
    (String::from_utf8_lossy(&head).into_owned(), stream)
}

/// The payload of the next (unmasked, server-sent) frame.
pub async fn next_frame(stream: &mut TcpStream) -> Vec<u8> {
    let mut header = [0u8; 2];
    stream.read_exact(&mut header).await.expect("frame header");
    let length = match header[1] & 0x7f {
        126 => u64::from(stream.read_u16().await.expect("length")),
        127 => stream.read_u64().await.expect("length"),
        short => u64::from(short),
    };
    let mut payload = vec![0u8; usize::try_from(length).expect("length")];
    stream.read_exact(&mut payload).await.expect("payload");
    payload
}

/// The value of header `name` in a raw response head (first one, case-insensitive).
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}
