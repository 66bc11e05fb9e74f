//! A Pingora TLS listener on the `openssl` backend (Mozilla's intermediate settings, as
//! Pingora's `TlsSettings::intermediate` sets them) whose app answers a request's header
//! with a 404 and closes: `bench/tls.py` measures what a TLS connection costs it, beside
//! ticketgate's rustls one and HAProxy's.
//!
//!     tls-openssl <listen> <cert.pem> <key.pem>

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::listening::Service;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ANSWER: &[u8] = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

struct NotFound;

#[async_trait]
impl ServerApp for NotFound {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        _: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut header = Vec::new();
        let mut buf = [0u8; 1024];
        while !header.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(n) if n > 0 => header.extend_from_slice(&buf[..n]),
                _ => return None,
            }
        }
        let _ = stream.write_all(ANSWER).await;
        let _ = stream.flush().await;
        None
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, cert, key] = args.as_slice() else {
        eprintln!("usage: tls-openssl <listen> <cert.pem> <key.pem>");
        std::process::exit(2);
    };
    let mut server = Server::new(None).expect("server");
    server.bootstrap();
    let mut service = Service::new("tls".to_string(), NotFound);
    service
        .add_tls(listen, cert, key)
        .expect("certificate and key");
    service.threads = Some(1);
    server.add_service(service);
    server.run_forever();
}
