//! The `tls:` section: the certificate and key files, read once and checked as a pair.

use std::path::Path;

use super::{Problems, resolve};
use crate::tls::{Files, Identity, Tls, TlsConfig, provider};

/// The settings new handshakes use, or `None` (problems recorded) when the pair cannot serve.
pub(super) fn tls(
    raw: Option<super::file::Tls>,
    base: &Path,
    problems: &mut Problems,
) -> Option<Tls> {
    let raw = raw?;
    let (cert_file, key_file) = (resolve(base, &raw.cert_file), resolve(base, &raw.key_file));
    let certificate = read(&raw.cert_file, &cert_file, "tls.cert_file", problems);
    let key = read(&raw.key_file, &key_file, "tls.key_file", problems);
    let (certificate, key) = (certificate?, key?);
    let provider = provider();
    let identity = match Identity::from_pem(&certificate, &key, &provider) {
        Ok(identity) => identity,
        Err(e) => {
            let at = if e.in_key_file() {
                "tls.key_file"
            } else {
                "tls.cert_file"
            };
            problems.add(at, e);
            return None;
        }
    };
    let config = TlsConfig {
        identity,
        files: Files::new(cert_file, key_file, &certificate, &key),
        http2: raw.http2.unwrap_or(false),
    };
    Tls::new(config, provider)
        .map_err(|e| problems.add("tls", format!("cannot set up TLS: {e}")))
        .ok()
}

/// The file's bytes; the problem names the file and the reason, never its content.
fn read(shown: &str, path: &Path, key: &str, problems: &mut Problems) -> Option<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| problems.add(key, format!("cannot read {shown:?}: {}", e.kind())))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::super::testing::{GOOD, problems, refused};

    fn with_tls(cert: &str, key: &str) -> String {
        format!("{GOOD}tls:\n  cert_file: {cert}\n  key_file: {key}\n  http2: true\n")
    }

    #[test]
    fn a_matching_pair_passes() {
        assert_eq!(
            problems(&with_tls("tls/server.crt", "tls/server.key")),
            Vec::<String>::new()
        );
    }

    #[test]
    fn unreadable_files_are_named() {
        refused(
            &with_tls("tls/missing.crt", "tls/server.key"),
            "tls.cert_file",
            "cannot read \"tls/missing.crt\": entity not found",
        );
        refused(
            &with_tls("tls/server.crt", "tls/missing.key"),
            "tls.key_file",
            "cannot read",
        );
    }

    #[test]
    fn files_that_are_not_pem_are_named() {
        refused(
            &with_tls("hs.secret", "tls/server.key"),
            "tls.cert_file",
            "holds no PEM certificate",
        );
        refused(
            &with_tls("tls/server.crt", "tls/server.crt"),
            "tls.key_file",
            "holds no PEM private key",
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_without_showing_it() {
        let found = problems(&with_tls("tls/server.crt", "tls/other.key"));
        assert_eq!(
            found,
            ["tls.key_file: the private key does not match the certificate"]
        );
        let key = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/other.key"),
        )
        .expect("fixture");
        let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!found[0].contains(&body[..16]));
    }
}
