//! The `jwt:` section: issuers, their algorithms and key sources. Keys are read and parsed
//! here, so a malformed or weak key is a config error, never a 500 on the first request.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily};

use super::{Problems, file, resolve};
use crate::auth::jwt::{IssuerConfig, JwtConfig};
use crate::auth::keys::{self, VerifyKey};

const DEFAULT_JWKS_REFRESH_SECONDS: u64 = 300;
const DEFAULT_LEEWAY_SECONDS: u64 = 60;
const DEFAULT_TOKEN_CACHE_SIZE: usize = 10_000;

pub(super) fn jwt_config(
    raw: Option<file::Jwt>,
    base: &Path,
    problems: &mut Problems,
) -> JwtConfig {
    let Some(raw) = raw else {
        return JwtConfig {
            leeway_seconds: DEFAULT_LEEWAY_SECONDS,
            cache_size: DEFAULT_TOKEN_CACHE_SIZE,
            issuers: Vec::new(),
        };
    };
    if raw.issuers.is_empty() {
        problems.add("jwt.issuers", "at least one issuer is required");
    }
    let mut seen = HashSet::new();
    let issuers = raw
        .issuers
        .into_iter()
        .enumerate()
        .map(|(i, issuer)| {
            let key = format!("jwt.issuers[{i}]");
            if !seen.insert(issuer.issuer.clone()) {
                problems.add(format!("{key}.issuer"), "duplicate issuer");
            }
            issuer_config(issuer, &key, base, problems)
        })
        .collect();
    JwtConfig {
        leeway_seconds: raw.leeway_seconds.unwrap_or(DEFAULT_LEEWAY_SECONDS),
        cache_size: raw.cache_size.unwrap_or(DEFAULT_TOKEN_CACHE_SIZE),
        issuers,
    }
}

fn issuer_config(
    raw: file::Issuer,
    key: &str,
    base: &Path,
    problems: &mut Problems,
) -> IssuerConfig {
    if raw.issuer.is_empty() {
        problems.add(format!("{key}.issuer"), "must not be empty");
    }
    if raw.audiences.is_empty() {
        problems.add(
            format!("{key}.audiences"),
            "at least one audience is required (a token minted for another service must not pass)",
        );
    }
    let algorithms = algorithms(&raw.algorithms, key, problems);
    let reported_before_keys = problems.0.len();
    let mut static_keys = Vec::new();
    if let Some(path) = &raw.secret_file {
        match keys::read_key_file(&resolve(base, path)) {
            Ok(secret) => {
                check_secret_strength(
                    &secret,
                    &algorithms,
                    &format!("{key}.secret_file"),
                    problems,
                );
                static_keys.push(keys::from_secret(&secret));
            }
            Err(e) => problems.add(format!("{key}.secret_file"), e),
        }
    }
    for (i, path) in raw.public_key_files.iter().enumerate() {
        let full = resolve(base, path);
        match keys::read_key_file(&full).and_then(|pem| keys::from_pem(&pem, &full)) {
            Ok(k) => static_keys.push(k),
            Err(e) => problems.add(format!("{key}.public_key_files[{i}]"), e),
        }
    }
    if let Some(path) = &raw.jwks_file {
        match keys::read_key_file(&resolve(base, path)).and_then(|j| keys::from_jwk_set(&j)) {
            Ok(mut set) => static_keys.append(&mut set),
            Err(e) => problems.add(format!("{key}.jwks_file"), e),
        }
    }
    if let Some(url) = &raw.jwks_url {
        check_jwks_url(url, &format!("{key}.jwks_url"), problems);
    }
    let has_source = raw.secret_file.is_some()
        || !raw.public_key_files.is_empty()
        || raw.jwks_file.is_some()
        || raw.jwks_url.is_some();
    if !has_source {
        problems.add(
            key,
            "needs at least one key source: secret_file, public_key_files, jwks_file or jwks_url",
        );
    } else if raw.jwks_url.is_none() && problems.0.len() == reported_before_keys {
        // A key already reported as unreadable or weak would only be reported again here.
        check_every_algorithm_has_a_key(&algorithms, &static_keys, key, problems);
    }
    let refresh = raw
        .jwks_refresh_seconds
        .unwrap_or(DEFAULT_JWKS_REFRESH_SECONDS);
    if refresh == 0 {
        problems.add(format!("{key}.jwks_refresh_seconds"), "must be at least 1");
    }
    IssuerConfig {
        issuer: raw.issuer,
        audiences: raw.audiences,
        algorithms: algorithms.into_iter().map(|(_, alg)| alg).collect(),
        static_keys,
        jwks_url: raw.jwks_url,
        jwks_refresh: Duration::from_secs(refresh),
    }
}

/// Parses the allowlist, keeping each algorithm's index for error messages.
fn algorithms(raw: &[String], key: &str, problems: &mut Problems) -> Vec<(usize, Algorithm)> {
    if raw.is_empty() {
        problems.add(
            format!("{key}.algorithms"),
            "at least one algorithm is required",
        );
    }
    raw.iter()
        .enumerate()
        .filter_map(|(i, name)| {
            let at = format!("{key}.algorithms[{i}]");
            if name.eq_ignore_ascii_case("none") {
                problems.add(
                    at,
                    "\"none\" is never accepted: unsigned tokens prove nothing",
                );
                return None;
            }
            Algorithm::from_str(name)
                .map(|alg| (i, alg))
                .map_err(|_| problems.add(at, format!("unknown algorithm {name:?}")))
                .ok()
        })
        .collect()
}

/// Without a JWKS URL the keys are all known now, so an allowed algorithm without a key of
/// its family is a mistake worth reporting before a token fails for it.
fn check_every_algorithm_has_a_key(
    algorithms: &[(usize, Algorithm)],
    keys: &[VerifyKey],
    key: &str,
    problems: &mut Problems,
) {
    for (i, alg) in algorithms {
        if !keys.iter().any(|k| k.accepts(*alg)) {
            problems.add(
                format!("{key}.algorithms[{i}]"),
                format!(
                    "no configured key can verify {alg:?} (needs {})",
                    family_name(alg.family())
                ),
            );
        }
    }
}

fn family_name(family: AlgorithmFamily) -> &'static str {
    match family {
        AlgorithmFamily::Hmac => "secret_file or an `oct` JWK",
        AlgorithmFamily::Rsa => "an RSA public key",
        AlgorithmFamily::Ec => "an EC public key",
        AlgorithmFamily::Ed => "an Ed25519 public key",
    }
}

/// A secret shorter than the hash of an allowed HMAC algorithm is refused (RFC 7518 §3.2).
fn check_secret_strength(
    secret: &[u8],
    algorithms: &[(usize, Algorithm)],
    key: &str,
    problems: &mut Problems,
) {
    for (_, alg) in algorithms {
        if let Some(min) = keys::hmac_min_bytes(*alg)
            && secret.len() < min
        {
            problems.add(
                key,
                format!("too short for {alg:?}: an HMAC secret needs at least {min} bytes"),
            );
        }
    }
}

/// Keys fetched over plain HTTP could be swapped by anyone on the path, so `http://` is
/// only for a JWKS server on this machine (a local identity provider or sidecar).
fn check_jwks_url(url: &str, key: &str, problems: &mut Problems) {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        problems.add(key, format!("{url:?} is not an http:// or https:// URL"));
        return;
    };
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match parsed.scheme() {
        _ if parsed.host().is_none() => {
            problems.add(key, format!("{url:?} is not an http:// or https:// URL"));
        }
        "https" => {}
        "http" if loopback => {}
        "http" => problems.add(
            key,
            format!("{url:?} fetches keys over plain http: use https (http is for loopback only)"),
        ),
        _ => problems.add(key, format!("{url:?} is not an http:// or https:// URL")),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{GOOD, refused};

    fn with_issuer_line(line: &str) -> String {
        GOOD.replace(
            "      secret_file: hs.secret\n",
            &format!("      secret_file: hs.secret\n{line}\n"),
        )
    }

    #[test]
    fn algorithms_are_an_explicit_allowlist() {
        let at = "jwt.issuers[0].algorithms[0]";
        refused(
            &GOOD.replace(r#"["HS256"]"#, r#"["none"]"#),
            at,
            "never accepted",
        );
        refused(
            &GOOD.replace(r#"["HS256"]"#, r#"["NONE"]"#),
            at,
            "never accepted",
        );
        refused(
            &GOOD.replace(r#"["HS256"]"#, r#"["RS257"]"#),
            at,
            "unknown algorithm",
        );
        refused(
            &GOOD.replace(r#"["HS256"]"#, r#"["ES256"]"#),
            at,
            "no configured key can verify ES256",
        );
        refused(
            &GOOD.replace(r#"["HS256"]"#, "[]"),
            "jwt.issuers[0].algorithms",
            "at least one",
        );
    }

    #[test]
    fn hmac_secrets_are_at_least_their_hash() {
        refused(
            &GOOD.replace("hs.secret", "short.secret"),
            "jwt.issuers[0].secret_file",
            "too short for HS256: an HMAC secret needs at least 32 bytes",
        );
        // hs.secret is 64 bytes: enough for HS512.
        assert!(
            crate::config::testing::problems(&GOOD.replace(r#"["HS256"]"#, r#"["HS512"]"#))
                .is_empty()
        );
    }

    #[test]
    fn jwks_urls_use_https_except_to_loopback() {
        let key = "jwt.issuers[0].jwks_url";
        refused(
            &with_issuer_line(r#"      jwks_url: "http://auth.example.com/jwks""#),
            key,
            "plain http",
        );
        refused(
            &with_issuer_line(r#"      jwks_url: "http://10.0.0.1/jwks""#),
            key,
            "plain http",
        );
        refused(
            &with_issuer_line(r#"      jwks_url: "ftp://auth.example.com/jwks""#),
            key,
            "not an http",
        );
        refused(
            &with_issuer_line(r#"      jwks_url: "not a url""#),
            key,
            "not an http",
        );
        for fine in [
            "https://auth.example.com/jwks",
            "http://127.0.0.1:8081/jwks",
            "http://[::1]/jwks",
            "http://localhost/jwks",
        ] {
            let problems = crate::config::testing::problems(&with_issuer_line(&format!(
                "      jwks_url: \"{fine}\""
            )));
            assert!(problems.is_empty(), "{fine}: {problems:?}");
        }
    }

    #[test]
    fn issuers_need_an_audience_a_key_and_a_name_of_their_own() {
        refused(
            &GOOD.replace(r#"["chat-api"]"#, "[]"),
            "jwt.issuers[0].audiences",
            "at least one audience",
        );
        refused(
            &GOOD.replace("      secret_file: hs.secret\n", ""),
            "jwt.issuers[0]",
            "needs at least one key source",
        );
        refused(
            &GOOD.replace("hs.secret", "missing.secret"),
            "jwt.issuers[0].secret_file",
            "cannot read",
        );
        refused(
            &GOOD.replace(
                "      secret_file: hs.secret",
                "      public_key_files: [hs.secret]",
            ),
            "jwt.issuers[0].public_key_files[0]",
            "is not a PEM",
        );
        refused(
            &with_issuer_line("      jwks_refresh_seconds: 0"),
            "jwt.issuers[0].jwks_refresh_seconds",
            "at least 1",
        );
        let twice = GOOD.replace(
            "routes:",
            "    - issuer: \"https://auth.test/\"\n      audiences: [\"x\"]\n      algorithms: [\"HS256\"]\n      secret_file: hs.secret\nroutes:",
        );
        refused(&twice, "jwt.issuers[1].issuer", "duplicate issuer");
    }
}
