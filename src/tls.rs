//! TLS on the data plane (`tls:`): the certificate ticketgate presents and the handshake
//! settings built around it.
//!
//! ticketgate terminates TLS itself (`handshake::Terminate`, ahead of every connection's
//! `Watch`) rather than through Pingora's TLS listener, because that listener logs a failed
//! handshake and drops it: ticketgate bounds a handshake by `limits.header_timeout`, counts
//! each failure by reason, answers plain HTTP with a 400 that says what is wrong, and swaps
//! its settings on SIGHUP. The handshake itself is Pingora's rustls one, so what comes out
//! is the stream Pingora's HTTP/1.1 and h2 servers know (ALPN, TLS digest).
//!
//! The settings are built once per config (at start and on each reload) from the bytes the
//! config read, so a pair half-rewritten by cert-manager or certbot is refused as a whole and
//! the running one stays; connections already open keep the settings they shook hands with.

pub mod handshake;
pub mod refusal;

use std::path::PathBuf;
use std::sync::Arc;

use pingora::listeners::tls::Acceptor;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;
use rustls::version::{TLS12, TLS13};

/// What a certificate or key file holds that cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("holds no PEM certificate")]
    NoCertificate,
    #[error("the first certificate is not valid X.509")]
    BadCertificate,
    #[error("holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey,
    #[error("the private key is of a kind TLS cannot use")]
    UnusableKey,
    #[error("the private key does not match the certificate")]
    Mismatch,
}

impl IdentityError {
    /// Whether the key file, rather than the certificate file, is at fault.
    pub fn in_key_file(&self) -> bool {
        matches!(self, Self::NoKey | Self::UnusableKey | Self::Mismatch)
    }
}

/// A certificate chain with the private key that matches its first certificate.
pub struct Identity {
    key: Arc<CertifiedKey>,
    /// The first certificate's `notAfter`, in Unix seconds.
    expires_at: i64,
}

impl Identity {
    /// Parses PEM files' bytes. Errors never quote them: the key file is a secret.
    pub fn from_pem(
        certificate: &[u8],
        private_key: &[u8],
        provider: &CryptoProvider,
    ) -> Result<Self, IdentityError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(certificate)
            .collect::<Result<_, _>>()
            .map_err(|_| IdentityError::NoCertificate)?;
        let leaf = chain.first().ok_or(IdentityError::NoCertificate)?;
        let expires_at = x509_parser::parse_x509_certificate(leaf)
            .map_err(|_| IdentityError::BadCertificate)?
            .1
            .validity()
            .not_after
            .timestamp();
        let der = PrivateKeyDer::from_pem_slice(private_key).map_err(|_| IdentityError::NoKey)?;
        let key = CertifiedKey::from_der(chain, der, provider).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => IdentityError::Mismatch,
            rustls::Error::InvalidCertificate(_) => IdentityError::BadCertificate,
            _ => IdentityError::UnusableKey,
        })?;
        Ok(Identity {
            key: Arc::new(key),
            expires_at,
        })
    }

    pub fn expires_at(&self) -> i64 {
        self.expires_at
    }
}

/// The files an identity was read from, and a digest of the bytes read, to notice when a
/// renewal (cert-manager, certbot) has rewritten them.
pub struct Files {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    digest: Digest,
}

type Digest = [u8; 32];

impl Files {
    pub fn new(cert_file: PathBuf, key_file: PathBuf, certificate: &[u8], key: &[u8]) -> Self {
        Files {
            cert_file,
            key_file,
            digest: digest_of(certificate, key),
        }
    }

    /// The digest of what the files hold now, when it differs from what was read; `None`
    /// while they are unchanged or one cannot be read (a renewal mid-way).
    pub fn changed(&self) -> Option<Digest> {
        let certificate = std::fs::read(&self.cert_file).ok()?;
        let key = std::fs::read(&self.key_file).ok()?;
        Some(digest_of(&certificate, &key)).filter(|now| *now != self.digest)
    }
}

fn digest_of(certificate: &[u8], key: &[u8]) -> Digest {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    context.update(&(certificate.len() as u64).to_be_bytes());
    context.update(certificate);
    context.update(key);
    let mut digest = [0u8; 32];
    digest.copy_from_slice(context.finish().as_ref());
    digest
}

/// The `tls:` settings: one identity, where it came from, and whether h2 is offered.
pub struct TlsConfig {
    pub identity: Identity,
    pub files: Files,
    pub http2: bool,
}

/// The cryptography every handshake uses: aws-lc-rs, the provider ticketgate's JWT checks
/// already use, with rustls' defaults — TLS 1.3 and 1.2 suites with AEAD ciphers and
/// (EC)DHE key exchange only.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Makes `provider()`'s aws-lc-rs the process default. Pingora's rustls backend compiles
/// ring in beside it, and with two providers rustls cannot choose one by itself: every TLS
/// client that asks for the default (redis' `rediss://` connections) would panic. Returns
/// false if another default was installed first.
pub fn install_process_provider() -> bool {
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .is_ok()
}

/// A running listener's TLS: the handshake settings and what the metrics report of them.
pub struct Tls {
    acceptor: Acceptor,
    expires_at: i64,
    http2: bool,
    files: Files,
}

impl Tls {
    /// TLS 1.2 and 1.3 only. h2 is offered first when `http2` is set; a client that asks for
    /// neither gets HTTP/1.1, which is also what a WebSocket upgrade needs.
    pub fn new(config: TlsConfig, provider: Arc<CryptoProvider>) -> Result<Self, rustls::Error> {
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&TLS13, &TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(OneCertificate(config.identity.key.clone())));
        server.alpn_protocols = if config.http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Ok(Tls {
            acceptor: Acceptor::from_server_config(Arc::new(server)),
            expires_at: config.identity.expires_at,
            http2: config.http2,
            files: config.files,
        })
    }

    pub fn files(&self) -> &Files {
        &self.files
    }

    pub fn expires_at(&self) -> i64 {
        self.expires_at
    }

    /// What `check` and the start line say about it: `TLS, h2; certificate expires 2027-03-01`.
    pub fn summary(&self) -> String {
        let expires = chrono::DateTime::from_timestamp(self.expires_at, 0).map_or_else(
            || self.expires_at.to_string(),
            |at| at.format("%Y-%m-%d").to_string(),
        );
        let h2 = if self.http2 { ", h2" } else { "" };
        format!("TLS{h2}; certificate expires {expires}")
    }
}

/// Every client gets the one certificate, whatever name it asks for: a sidecar serves one
/// service.
#[derive(Debug)]
struct OneCertificate(Arc<CertifiedKey>);

impl ResolvesServerCert for OneCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}
