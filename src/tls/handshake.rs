//! `Terminate`: the Pingora app in front of every data-plane connection. With `tls:` set it
//! runs the handshake under the settings current when the connection was accepted, within
//! `limits.header_timeout`, and passes the decrypted stream on; without, it passes the
//! connection on as it came.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::server::ShutdownWatch;
use rustls::{AlertDescription, InvalidMessage, PeerIncompatible};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Tls;
use super::refusal::Refusal;
use crate::limits::Limits;
use crate::metrics::Metrics;

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// The handshake type of a ClientHello, after the record's 5-byte header.
const CLIENT_HELLO: u8 = 0x01;
/// Record header (5), handshake type and length (4), then the 2-byte `legacy_version`.
const HELLO_VERSION_END: usize = 11;
const TLS_1_2: u16 = 0x0303;
/// A fatal `protocol_version` alert, in a TLS 1.0 record every old client can read.
const PROTOCOL_VERSION_ALERT: [u8; 7] = [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46];

/// The answer to a plain HTTP request on the TLS port, so that whoever typed `http://`
/// learns why nothing works, instead of reading a reset connection.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
content-type: text/plain\r\n\
content-length: 45\r\n\
connection: close\r\n\r\n\
this port speaks TLS: use https:// or wss://\n";

/// A Pingora app that terminates TLS, when configured, before `inner` sees the connection.
pub struct Terminate<A> {
    pub inner: Arc<A>,
    /// The settings new handshakes use; `None` serves plain HTTP.
    pub tls: Arc<ArcSwapOption<Tls>>,
    pub limits: Arc<ArcSwap<Limits>>,
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Terminate<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let Some(tls) = self.tls.load_full() else {
            return self.inner.process_new(stream, shutdown).await;
        };
        // Boxed, so that its state (the whole rustls handshake) is freed once it is done
        // instead of sizing the future this connection keeps until it closes.
        match Box::pin(accept(&tls, stream, self.limits.load().header_timeout)).await {
            Ok(stream) => self.inner.process_new(stream, shutdown).await,
            Err(refusal) => {
                self.metrics.tls_handshake_failed(refusal.label());
                None
            }
        }
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// The handshake, all of it within `within`.
async fn accept(tls: &Tls, stream: Stream, within: Duration) -> Result<Stream, Refusal> {
    // Pingora's handshake wants the listener's own TCP stream, which is what arrives.
    let Ok(mut tcp) = stream.into_any().downcast::<TcpStream>() else {
        log::error!("a data-plane connection is not a TCP stream: cannot start TLS");
        return Err(Refusal::Other);
    };
    let handshake = async {
        let start = read_hello_start(&mut tcp).await?;
        tcp.rewind(&start);
        match tls.acceptor.tls_handshake(*tcp).await {
            Ok(stream) => Ok(Box::new(stream) as Stream),
            Err(e) => Err(refusal_of(&e.to_string())),
        }
    };
    tokio::time::timeout(within, handshake)
        .await
        .unwrap_or(Err(Refusal::Timeout))
}

/// The first bytes of a ClientHello, up to its `legacy_version`: refused here when they are
/// not TLS (plain HTTP gets a 400) or when the client cannot speak TLS 1.2.
async fn read_hello_start(tcp: &mut TcpStream) -> Result<Vec<u8>, Refusal> {
    let mut start = Vec::with_capacity(HELLO_VERSION_END);
    let mut buf = [0u8; HELLO_VERSION_END];
    while start.len() < HELLO_VERSION_END {
        let wanted = HELLO_VERSION_END - start.len();
        match tcp.read(&mut buf[..wanted]).await {
            Ok(0) | Err(_) => return Err(Refusal::Closed),
            Ok(n) => start.extend_from_slice(&buf[..n]),
        }
        if start[0] != TLS_HANDSHAKE_RECORD {
            return Err(refuse_plain(tcp, start[0]).await);
        }
    }
    let version = u16::from_be_bytes([start[9], start[10]]);
    if start[5] == CLIENT_HELLO && version < TLS_1_2 {
        let _ = tcp.write_all(&PROTOCOL_VERSION_ALERT).await;
        let _ = tcp.flush().await;
        return Err(Refusal::ProtocolVersion);
    }
    Ok(start)
}

/// An uppercase letter starts an HTTP method: such a client gets told in its own protocol.
async fn refuse_plain(tcp: &mut TcpStream, first: u8) -> Refusal {
    if !first.is_ascii_uppercase() {
        return Refusal::Malformed;
    }
    if tcp.write_all(PLAIN_HTTP_ANSWER).await.is_ok() {
        let _ = tcp.flush().await;
    }
    Refusal::PlainHttp
}

/// Pingora keeps only the text of a failed handshake's error (its `explain_err` formats the
/// rustls error into a context string), so the reason is found by rustls' own wording of
/// each error it could be.
fn refusal_of(text: &str) -> Refusal {
    use PeerIncompatible as P;
    let says = |error: rustls::Error| text.contains(&error.to_string());
    let alert = |alert: AlertDescription| says(rustls::Error::AlertReceived(alert));
    if [
        P::NoCipherSuitesInCommon,
        P::NoKxGroupsInCommon,
        P::NoSignatureSchemesInCommon,
        P::NoEcPointFormatsInCommon,
    ]
    .into_iter()
    .any(|p| says(rustls::Error::PeerIncompatible(p)))
    {
        return Refusal::NoSharedCipher;
    }
    // A client that cannot verify the certificate's signature answers `decrypt_error`.
    if [
        AlertDescription::BadCertificate,
        AlertDescription::UnknownCA,
        AlertDescription::CertificateUnknown,
        AlertDescription::CertificateExpired,
        AlertDescription::UnsupportedCertificate,
        AlertDescription::DecryptError,
    ]
    .into_iter()
    .any(alert)
    {
        return Refusal::CertificateRejected;
    }
    if [
        P::Tls12NotOffered,
        P::Tls12NotOfferedOrEnabled,
        P::SupportedVersionsExtensionRequired,
    ]
    .into_iter()
    .any(|p| says(rustls::Error::PeerIncompatible(p)))
        || alert(AlertDescription::ProtocolVersion)
    {
        return Refusal::ProtocolVersion;
    }
    let corrupt = rustls::Error::InvalidMessage(InvalidMessage::InvalidContentType).to_string();
    if text.contains(corrupt.trim_end_matches("InvalidContentType")) {
        return Refusal::Malformed;
    }
    let lower = text.to_ascii_lowercase();
    if ["eof", "reset by peer", "broken pipe"]
        .iter()
        .any(|gone| lower.contains(gone))
    {
        return Refusal::Closed;
    }
    Refusal::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How Pingora 0.9.1 words a failed handshake around rustls' error.
    fn pingora_says(error: impl std::fmt::Display) -> String {
        format!(
            "TLSHandshakeFailure context: TLS accept() failed:  TLSHandshakeFailure context: tls connect error: {error}"
        )
    }

    #[test]
    fn the_reason_is_read_from_pingoras_text() {
        let cases = [
            (
                rustls::Error::PeerIncompatible(PeerIncompatible::Tls12NotOffered),
                Refusal::ProtocolVersion,
            ),
            (
                rustls::Error::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon),
                Refusal::NoSharedCipher,
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::UnknownCA),
                Refusal::CertificateRejected,
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::DecryptError),
                Refusal::CertificateRejected,
            ),
            (
                rustls::Error::InvalidMessage(InvalidMessage::HandshakePayloadTooLarge),
                Refusal::Malformed,
            ),
            (rustls::Error::HandshakeNotComplete, Refusal::Other),
        ];
        for (error, expected) in cases {
            assert_eq!(refusal_of(&pingora_says(&error)), expected, "{error}");
        }
        assert_eq!(
            refusal_of(&pingora_says("tls handshake eof")),
            Refusal::Closed
        );
    }
}
