//! Why a TLS handshake did not complete, as operators read it.

/// Why a handshake did not complete: the `reason` of
/// `ticketgate_tls_handshake_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Plain HTTP on the TLS port (answered with a 400).
    PlainHttp,
    /// The handshake did not finish within `limits.header_timeout`.
    Timeout,
    /// The client offered only protocol versions below TLS 1.2.
    ProtocolVersion,
    /// No cipher suite, key exchange group or signature scheme in common.
    NoSharedCipher,
    /// The client refused ticketgate's certificate (an alert saying so).
    CertificateRejected,
    /// The client went away before the handshake ended.
    Closed,
    /// Bytes that are not a well-formed TLS handshake.
    Malformed,
    Other,
}

impl Refusal {
    pub const ALL: [Refusal; 8] = [
        Refusal::PlainHttp,
        Refusal::Timeout,
        Refusal::ProtocolVersion,
        Refusal::NoSharedCipher,
        Refusal::CertificateRejected,
        Refusal::Closed,
        Refusal::Malformed,
        Refusal::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::PlainHttp => "plain_http",
            Refusal::Timeout => "timeout",
            Refusal::ProtocolVersion => "protocol_version",
            Refusal::NoSharedCipher => "no_shared_cipher",
            Refusal::CertificateRejected => "certificate_rejected",
            Refusal::Closed => "closed",
            Refusal::Malformed => "malformed",
            Refusal::Other => "other",
        }
    }
}
