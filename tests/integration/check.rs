//! `ticketgate check`: every shipped config passes; every kind of mistake fails with a
//! message naming the key, and never quoting a key file.

use std::path::Path;

use crate::common::{Gate, check, fixture, free_port};

#[test]
fn every_shipped_config_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for folder in ["conf", "deploy/compose"] {
        for entry in std::fs::read_dir(root.join(folder)).expect("config folder") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let (ok, output) = check(&path);
                assert!(ok, "{}: {output}", path.display());
                checked += 1;
            }
        }
    }
    assert!(checked >= 2, "no config in conf/ or deploy/compose/");
}

const GOOD: &str = r#"listen: "127.0.0.1:8080"
upstream: "127.0.0.1:9000"
admin:
  listen: "127.0.0.1:9090"
jwt:
  issuers:
    - issuer: "https://auth.test/"
      audiences: ["chat-api"]
      algorithms: ["RS256", "HS256"]
      secret_file: "{fixtures}/hs.secret"
      public_key_files: ["{fixtures}/rsa.pub.pem"]
routes:
  - prefix: /
    auth: jwt
"#;

/// Writes `yaml` (with `{fixtures}` filled in) and runs check on it.
fn check_yaml(yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bad.yaml");
    let fixtures = fixture("");
    std::fs::write(&path, yaml.replace("{fixtures}/", &fixtures)).expect("write");
    check(&path)
}

#[test]
fn the_base_config_of_these_cases_is_good() {
    let (ok, output) = check_yaml(GOOD);
    assert!(ok, "{output}");
    // With a one-line summary of what the file sets up.
    assert!(
        output.contains("routes: / jwt; issuers: https://auth.test/ [RS256,HS256] from 2 static key(s); tickets: off"),
        "{output}"
    );
}

#[test]
fn the_version_names_pingora_and_jsonwebtoken() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ticketgate"))
        .arg("--version")
        .output()
        .expect("run --version");
    let text = String::from_utf8_lossy(&out.stdout);
    let expected = format!("ticketgate {} (pingora 0.9.", env!("CARGO_PKG_VERSION"));
    assert!(
        text.starts_with(&expected) && text.contains(", jsonwebtoken 11."),
        "{text}"
    );
}

#[test]
fn each_mistake_names_its_key() {
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown key",
            GOOD.replace("audiences:", "audience:"),
            "jwt.issuers[0]",
        ),
        (
            "unknown key message",
            GOOD.replace("audiences:", "audience:"),
            "unknown field `audience`",
        ),
        (
            "unknown algorithm",
            GOOD.replace(r#""HS256""#, r#""RS257""#),
            r#"jwt.issuers[0].algorithms[1]: unknown algorithm "RS257""#,
        ),
        (
            "alg none",
            GOOD.replace(r#""HS256""#, r#""none""#),
            "jwt.issuers[0].algorithms[1]: \"none\" is never accepted",
        ),
        (
            "missing key file",
            GOOD.replace("rsa.pub.pem", "missing.pem"),
            "jwt.issuers[0].public_key_files[0]: cannot read",
        ),
        (
            "not a PEM",
            GOOD.replace("rsa.pub.pem", "hs.secret"),
            "jwt.issuers[0].public_key_files[0]:",
        ),
        (
            "no key for an algorithm",
            GOOD.replace(r#""HS256""#, r#""ES256""#),
            "jwt.issuers[0].algorithms[1]: no configured key can verify ES256",
        ),
        (
            "no key source",
            GOOD.replace("      secret_file: \"{fixtures}/hs.secret\"\n", "")
                .replace("      public_key_files: [\"{fixtures}/rsa.pub.pem\"]\n", ""),
            "jwt.issuers[0]: needs at least one key source",
        ),
        (
            "no audience",
            GOOD.replace(r#"["chat-api"]"#, "[]"),
            "jwt.issuers[0].audiences: at least one audience",
        ),
        (
            "bad jwks url",
            GOOD.replace(
                "      secret_file:",
                "      jwks_url: \"ftp://x\"\n      secret_file:",
            ),
            "jwt.issuers[0].jwks_url",
        ),
        (
            "HMAC secret shorter than its hash",
            GOOD.replace("hs.secret", "short.secret"),
            "jwt.issuers[0].secret_file: too short for HS256: an HMAC secret needs at least 32 bytes",
        ),
        (
            "JWKS over plain http to another host",
            GOOD.replace(
                "      secret_file:",
                "      jwks_url: \"http://auth.example.com/jwks\"\n      secret_file:",
            ),
            "jwt.issuers[0].jwks_url: \"http://auth.example.com/jwks\" fetches keys over plain http",
        ),
        (
            "prefix that no canonical path equals",
            GOOD.replace("prefix: /", "prefix: /%61pi"),
            "routes[0].prefix: \"/%61pi\" is not a canonical path",
        ),
        (
            "bad auth",
            GOOD.replace("auth: jwt", "auth: jwtt"),
            r#"routes[0].auth: unknown auth "jwtt""#,
        ),
        (
            "bad prefix",
            GOOD.replace("prefix: /", "prefix: api"),
            "routes[0].prefix",
        ),
        (
            "bad listen",
            GOOD.replace("127.0.0.1:8080", "localhost"),
            "listen: \"localhost\" is not an IP:port address",
        ),
        (
            "bad upstream",
            GOOD.replace("127.0.0.1:9000", "legacy"),
            r#"upstream: "legacy" is not a host:port address"#,
        ),
        (
            "wrong type",
            GOOD.replace("listen: \"127.0.0.1:9090\"", "listen: [1]"),
            "admin.listen",
        ),
        ("bad yaml", "listen: [".to_string(), "line"),
        (
            "ticket route without tickets",
            GOOD.replace("auth: jwt", "auth: ticket"),
            "routes[0].auth: `auth: ticket` needs a `tickets` section",
        ),
        (
            "short ticket secret",
            GOOD.replace("auth: jwt", "auth: ticket")
                + "tickets:\n  secret_file: \"{fixtures}/short.secret\"\n",
            "tickets.secret_file",
        ),
        (
            "bad origin",
            GOOD.to_string() + "cors:\n  allowed_origins: [\"https://app.test/\"]\n",
            "cors.allowed_origins[0]",
        ),
        (
            "reserved identity header",
            GOOD.to_string() + "forward:\n  subject_header: Authorization\n",
            "forward.subject_header",
        ),
        (
            "bad redis url",
            GOOD.replace("auth: jwt", "auth: ticket")
                + "tickets:\n  secret_file: \"{fixtures}/ticket.secret\"\n  store: \"redis//:hunter2@x\"\n",
            "tickets.store: must be",
        ),
    ];
    for (name, yaml, expected) in cases {
        let (ok, output) = check_yaml(&yaml);
        assert!(!ok, "{name}: check accepted it");
        assert!(
            output.contains(expected),
            "{name}: expected {expected:?} in:\n{output}"
        );
        assert!(!output.contains("hunter2"), "{name}: echoed a password");
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let yaml = GOOD
        .replace(r#""HS256""#, r#""RS257""#)
        .replace("rsa.pub.pem", "missing.pem")
        .replace("auth: jwt", "auth: nope");
    let (ok, output) = check_yaml(&yaml);
    assert!(!ok);
    for expected in ["algorithms[1]", "public_key_files[0]", "routes[0].auth"] {
        assert!(
            output.contains(expected),
            "{expected} missing from:\n{output}"
        );
    }
}

#[test]
fn key_file_contents_are_never_quoted() {
    let dir = tempfile::tempdir().expect("dir");
    let key = dir.path().join("bad.pem");
    std::fs::write(
        &key,
        "-----BEGIN PUBLIC KEY-----\nSUPERSECRETMATERIAL\n-----END PUBLIC KEY-----\n",
    )
    .expect("write");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        r#"{"keys": [{"kty": "oct", "k": SUPERSECRETMATERIAL}]}"#,
    )
    .expect("write");
    let yaml = GOOD
        .replace("{fixtures}/rsa.pub.pem", &key.display().to_string())
        .replace(
            "      secret_file:",
            &format!(
                "      jwks_file: \"{}\"\n      secret_file:",
                jwks.display()
            ),
        );
    let (ok, output) = check_yaml(&yaml);
    assert!(!ok);
    assert!(
        output.contains("public_key_files[0]") && output.contains("jwks_file"),
        "{output}"
    );
    assert!(!output.contains("SUPERSECRETMATERIAL"), "{output}");
}

#[tokio::test]
async fn run_refuses_a_bad_config_with_the_same_message() {
    let (port, admin) = (free_port(), free_port());
    let yaml = format!(
        "listen: \"127.0.0.1:{port}\"\nadmin:\n  listen: \"127.0.0.1:{admin}\"\nupstream: \"127.0.0.1:1\"\nroutes: []\n"
    );
    let mut gate = Gate::spawn_yaml(&yaml, port, admin, &[]);
    let status = tokio::task::spawn_blocking(move || {
        let status = gate.wait();
        (status, gate.output())
    })
    .await
    .expect("join");
    assert_eq!(status.0.code(), Some(1));
    assert!(
        status.1.contains("routes: at least one route is required"),
        "{}",
        status.1
    );
}

#[test]
fn tls_pairs_are_checked_without_printing_the_key() {
    let with = |cert: &str, key: &str| {
        format!(
            "{GOOD}tls:\n  cert_file: \"{{fixtures}}/{cert}\"\n  key_file: \"{{fixtures}}/{key}\"\n  http2: true\n"
        )
    };
    let (ok, output) = check_yaml(&with("tls/server.crt", "tls/server.key"));
    assert!(ok, "{output}");
    assert!(
        output.contains("(TLS, h2; certificate expires 2"),
        "{output}"
    );

    for (cert, key, says) in [
        (
            "tls/server.crt",
            "tls/other.key",
            "tls.key_file: the private key does not match the certificate",
        ),
        (
            "tls/server.key",
            "tls/server.key",
            "tls.cert_file: holds no PEM certificate",
        ),
        (
            "tls/server.crt",
            "tls/server.crt",
            "tls.key_file: holds no PEM private key",
        ),
        (
            "tls/none.crt",
            "tls/server.key",
            "tls.cert_file: cannot read",
        ),
    ] {
        let (ok, output) = check_yaml(&with(cert, key));
        assert!(!ok && output.contains(says), "{cert} {key}: {output}");
        for file in ["tls/server.key", "tls/other.key"] {
            let pem = std::fs::read_to_string(fixture(file)).expect("fixture");
            for line in pem.lines().filter(|l| !l.starts_with("-----")) {
                assert!(!output.contains(line), "{file} printed: {output}");
            }
        }
    }
}
