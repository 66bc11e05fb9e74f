//! Loads the YAML config and validates all of it before anything starts.
//!
//! Every problem is collected and reported at once, each naming its key path
//! (`jwt.issuers[0].algorithms[1]: unknown algorithm "RS257"`), because an operator fixing a
//! file one error per restart loses patience fast. Messages never quote key or secret file
//! contents.

mod admin;
pub mod file;
mod forward;
mod jwt;
mod routes;
mod tickets;
mod tls;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::access_log::AccessLogTarget;
use crate::admission::AdmissionConfig;
use crate::limits::Limits;
use crate::proxy::policy::PolicySettings;
use crate::proxy::route::{AuthMode, Route};
use crate::proxy::upgrade::WebsocketConfig;
use crate::resume::ResumeConfig;
use crate::revocations::RevocationsConfig;
use crate::tls::Tls;

const DEFAULT_SHUTDOWN_GRACE_SECONDS: u64 = 10;
const DEFAULT_WEBSOCKET_IDLE_SECONDS: u64 = 3600;
const DEFAULT_RESUME_BUFFER_BYTES: u64 = 65_536;
/// A held upstream connection is a socket's worth of memory and an upstream that waits: an
/// hour is already more than any network blip.
const MAX_RESUME_WINDOW_SECONDS: u64 = 3600;
/// Below a frame header and a short message a ring keeps nothing useful; above 16 MiB a
/// million sockets could not be held.
const MIN_RESUME_BUFFER_BYTES: u64 = 256;
const MAX_RESUME_BUFFER_BYTES: u64 = 16 << 20;
const DEFAULT_HEADER_TIMEOUT_SECONDS: u64 = 10;
const DEFAULT_KEEPALIVE_TIMEOUT_SECONDS: u64 = 60;
/// As nginx's `send_timeout`: a peer that takes nothing for a minute is not coming back.
const DEFAULT_WRITE_TIMEOUT_SECONDS: u64 = 60;
/// The contract's example: refused clients come back after 5 to 10 seconds.
const DEFAULT_RETRY_AFTER_SECONDS: u64 = 5;
/// A day: longer than most login tokens live.
const DEFAULT_REVOCATION_TTL_SECONDS: u64 = 86_400;

/// The validated configuration: every address parsed, every key file read and parsed.
/// Sorted by what a change of it needs (`reload::RestartOnly` sorts every field): the
/// process's own settings, the policy requests are decided by, and what new connections
/// and log lines take.
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub threads: usize,
    pub shutdown_grace: Duration,
    /// What requests are decided by; a reload builds a new `Policy` from it.
    pub policy: PolicySettings,
    pub access_log: AccessLogTarget,
    pub limits: Limits,
    /// The data plane's TLS, built from the files as they were read.
    pub tls: Option<Tls>,
}

impl Config {
    /// One line saying what the file sets up, for `check` and the start of `run`: listeners,
    /// routes with their auth, issuers with their key sources, the ticket store. No secret
    /// or password appears in it.
    pub fn summary(&self) -> String {
        let routes: Vec<String> = self
            .policy
            .routes
            .iter()
            .map(|r| format!("{} {}", r.prefix, r.auth.as_str()))
            .collect();
        let issuers: Vec<String> = self
            .policy
            .jwt
            .issuers
            .iter()
            .map(|i| {
                let algorithms: Vec<String> =
                    i.algorithms.iter().map(|a| format!("{a:?}")).collect();
                let mut sources = Vec::new();
                if !i.static_keys.is_empty() {
                    sources.push(format!("{} static key(s)", i.static_keys.len()));
                }
                if i.jwks_url.is_some() {
                    sources.push("jwks_url".to_string());
                }
                format!(
                    "{} [{}] from {}",
                    i.issuer,
                    algorithms.join(","),
                    sources.join(" + ")
                )
            })
            .collect();
        let tickets = self.policy.tickets.as_ref().map_or("off".to_string(), |t| {
            format!(
                "{} (ttl {} s, store {})",
                t.issue_path,
                t.ttl.as_secs(),
                t.store
            )
        });
        let tls = self
            .tls
            .as_ref()
            .map_or_else(String::new, |tls| format!(" ({})", tls.summary()));
        format!(
            "listen {}{tls} -> upstream {}; admin {}{}; routes: {}; issuers: {}; tickets: {}",
            self.listen,
            self.policy.upstream,
            self.admin_listen,
            if self.policy.admin_token.is_some() {
                " with POST /revoke"
            } else {
                ""
            },
            routes.join(", "),
            if issuers.is_empty() {
                "none".to_string()
            } else {
                issuers.join("; ")
            },
            tickets,
        )
    }
}

/// One problem in the config file, named by its key path.
#[derive(Debug)]
pub struct Problem {
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = if self.key.is_empty() {
            "(top level)"
        } else {
            &self.key
        };
        match self.line {
            Some(line) => write!(f, "{key} (line {line}): {}", self.message),
            None => write!(f, "{key}: {}", self.message),
        }
    }
}

/// Everything wrong with a config file.
#[derive(Debug)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid config {}:", self.file)?;
        for problem in &self.problems {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads, parses and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let fail = |key: &str, line, message: String| ConfigError {
        file: path.display().to_string(),
        problems: vec![Problem {
            key: key.to_string(),
            line,
            message,
        }],
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail("", None, format!("cannot read the file: {}", e.kind())))?;
    let raw = parse(&text).map_err(|(key, line, message)| fail(&key, line, message))?;
    let base = path.parent().unwrap_or(Path::new("."));
    validate(raw, base).map_err(|problems| ConfigError {
        file: path.display().to_string(),
        problems,
    })
}

/// The YAML shape check. Serde stops at the first structural error, so this reports one;
/// everything past the shape is collected in `validate`.
fn parse(text: &str) -> Result<file::File, (String, Option<usize>, String)> {
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let line = inner.location().map(|l| l.line());
        // The inner message repeats the location; keep only the reason.
        let message = inner.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_string();
        let key = if key == "." { String::new() } else { key };
        (with_unknown_key(key, &message), line, message)
    })
}

/// The path of an unknown key itself (`tickets.store.redis_clustr`), not only of the map it
/// is in: serde names a misspelt key in its message, and the key path should name it too.
fn with_unknown_key(key: String, message: &str) -> String {
    let unknown = message
        .strip_prefix("unknown field `")
        .or_else(|| {
            message
                .split_once(": unknown field `")
                .map(|(_, rest)| rest)
        })
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    match unknown {
        Some(name) if key.is_empty() => name.to_string(),
        Some(name) if !key.ends_with(&format!(".{name}")) => format!("{key}.{name}"),
        _ => key,
    }
}

/// Collects problems as validation walks the file.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl fmt::Display) {
        self.0.push(Problem {
            key: key.into(),
            line: None,
            message: message.to_string(),
        });
    }
}

fn validate(raw: file::File, base: &Path) -> Result<Config, Vec<Problem>> {
    let mut problems = Problems::default();
    let listen = socket_addr(&raw.listen, "listen", &mut problems);
    let admin_listen = socket_addr(&raw.admin.listen, "admin.listen", &mut problems);
    if raw.listen == raw.admin.listen {
        problems.add("admin.listen", "must differ from `listen`");
    }
    check_host_port(&raw.upstream, "upstream", &mut problems);
    let threads = raw.threads.unwrap_or(1);
    if threads == 0 {
        problems.add("threads", "must be at least 1");
    }
    let jwt = jwt::jwt_config(raw.jwt, base, &mut problems);
    let tickets = raw
        .tickets
        .map(|t| tickets::tickets_config(t, base, &mut problems));
    let routes = routes::routes(raw.routes, &jwt, tickets.is_some(), &mut problems);
    if let Some(t) = &tickets
        && routes.iter().all(|r| r.auth != AuthMode::Ticket)
    {
        problems.add(
            "tickets",
            format!(
                "tickets are configured but no route has `auth: ticket` (issue path {})",
                t.issue_path
            ),
        );
    }
    let forward = forward::forward_config(raw.forward, &mut problems);
    let cors_allowed_origins = origins(
        raw.cors.allowed_origins,
        "cors.allowed_origins",
        &mut problems,
    );
    let resume = resume(&raw.websocket, &mut problems);
    let websocket = WebsocketConfig {
        allowed_origins: origins(
            raw.websocket.allowed_origins,
            "websocket.allowed_origins",
            &mut problems,
        ),
        idle_timeout: Duration::from_secs(
            raw.websocket
                .idle_timeout_seconds
                .unwrap_or(DEFAULT_WEBSOCKET_IDLE_SECONDS),
        ),
        close_at_login_expiry: raw.websocket.close_at_login_expiry.unwrap_or(true),
        resume,
        refresh_path: raw.websocket.refresh_path,
    };
    if let Some(path) = &websocket.refresh_path {
        if !path.starts_with('/') || path.contains(['?', '#']) {
            problems.add(
                "websocket.refresh_path",
                format!("{path:?} must be a path starting with '/'"),
            );
        }
        if tickets.as_ref().is_some_and(|t| t.issue_path == *path) {
            problems.add(
                "websocket.refresh_path",
                "must differ from `tickets.issue_path`",
            );
        }
    }
    if websocket.resume.is_some() && websocket.refresh_path.is_none() {
        problems.add(
            "websocket.resume_window_seconds",
            "needs `websocket.refresh_path` (the next resume token comes with each refresh)",
        );
    }
    if websocket.idle_timeout.is_zero() {
        problems.add("websocket.idle_timeout_seconds", "must be at least 1");
    }
    let access_log = access_log_target(raw.access_log.path, base, &mut problems);
    let limits = limits(&raw.limits, &mut problems);
    let admin_token = admin::admin_token(raw.admin.token_file, base, &mut problems);
    let revocations = revocations(&raw.revocations, &mut problems);
    let tls = tls::tls(raw.tls, base, &mut problems);
    let admission = raw.admission.map(|raw| admission(&raw, &mut problems));

    let (Some(listen), Some(admin_listen)) = (listen, admin_listen) else {
        return Err(problems.0);
    };
    if !problems.0.is_empty() {
        return Err(problems.0);
    }
    Ok(Config {
        listen,
        admin_listen,
        threads,
        shutdown_grace: Duration::from_secs(
            raw.shutdown_grace_seconds
                .unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECONDS),
        ),
        policy: PolicySettings {
            upstream: raw.upstream,
            routes,
            jwt,
            tickets,
            forward,
            cors_allowed_origins,
            websocket,
            admin_token,
            revocations,
            admission,
        },
        access_log,
        limits,
        tls,
    })
}

fn revocations(raw: &file::Revocations, problems: &mut Problems) -> RevocationsConfig {
    let ttl = raw.ttl_seconds.unwrap_or(DEFAULT_REVOCATION_TTL_SECONDS);
    if ttl == 0 {
        problems.add("revocations.ttl_seconds", "must be at least 1");
    }
    RevocationsConfig {
        ttl: Duration::from_secs(ttl),
    }
}

fn limits(raw: &file::Limits, problems: &mut Problems) -> Limits {
    let mut seconds = |value: Option<u64>, default, key| {
        let value = value.unwrap_or(default);
        if value == 0 {
            problems.add(key, "must be at least 1");
        }
        Duration::from_secs(value)
    };
    Limits {
        header_timeout: seconds(
            raw.header_timeout_seconds,
            DEFAULT_HEADER_TIMEOUT_SECONDS,
            "limits.header_timeout_seconds",
        ),
        keepalive_timeout: seconds(
            raw.keepalive_timeout_seconds,
            DEFAULT_KEEPALIVE_TIMEOUT_SECONDS,
            "limits.keepalive_timeout_seconds",
        ),
        write_timeout: seconds(
            raw.write_timeout_seconds,
            DEFAULT_WRITE_TIMEOUT_SECONDS,
            "limits.write_timeout_seconds",
        ),
    }
}

fn admission(raw: &file::Admission, problems: &mut Problems) -> AdmissionConfig {
    if raw.tickets_per_second == Some(0) {
        problems.add("admission.tickets_per_second", "must be at least 1");
    }
    if raw.max_websockets == Some(0) {
        problems.add("admission.max_websockets", "must be at least 1");
    }
    if raw.upgrades_per_second == Some(0) {
        problems.add("admission.upgrades_per_second", "must be at least 1");
    }
    if raw.max_websockets_per_subject == Some(0) {
        problems.add("admission.max_websockets_per_subject", "must be at least 1");
    }
    let retry_after = raw
        .retry_after_seconds
        .unwrap_or(DEFAULT_RETRY_AFTER_SECONDS);
    if retry_after == 0 {
        problems.add("admission.retry_after_seconds", "must be at least 1");
    }
    AdmissionConfig {
        tickets_per_second: raw.tickets_per_second.map(f64::from),
        max_websockets: raw
            .max_websockets
            .map(|max| usize::try_from(max).unwrap_or(usize::MAX)),
        upgrades_per_second: raw.upgrades_per_second.map(f64::from),
        max_websockets_per_subject: raw
            .max_websockets_per_subject
            .map(|max| usize::try_from(max).unwrap_or(usize::MAX)),
        retry_after: Duration::from_secs(retry_after),
    }
}

fn socket_addr(value: &str, key: &str, problems: &mut Problems) -> Option<SocketAddr> {
    value
        .parse()
        .map_err(|_| problems.add(key, format!("{value:?} is not an IP:port address")))
        .ok()
}

/// The upstream may be a name (`legacy:9000` in a compose file); only its shape is checked.
fn check_host_port(value: &str, key: &str, problems: &mut Problems) {
    let valid = value
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !valid {
        problems.add(key, format!("{value:?} is not a host:port address"));
    }
}

fn resolve(base: &Path, path: &str) -> PathBuf {
    base.join(path)
}

/// The bytes of the secret file at `path` (`key` in the file), at least `min` of them; the
/// problem names the file, never its content.
fn secret_file(path: &str, base: &Path, key: &str, min: usize, problems: &mut Problems) -> Vec<u8> {
    match crate::auth::keys::read_key_file(&resolve(base, path)) {
        Ok(secret) if secret.len() < min => {
            problems.add(key, format!("the secret must be at least {min} bytes"));
            Vec::new()
        }
        Ok(secret) => secret,
        Err(e) => {
            problems.add(key, e);
            Vec::new()
        }
    }
}

/// Origins are compared byte for byte with the browser's `Origin` header, so they must be
/// in its exact form: scheme://host[:port], no path, no trailing slash.
fn origins(raw: Vec<String>, key: &str, problems: &mut Problems) -> Vec<String> {
    for (i, origin) in raw.iter().enumerate() {
        let valid = reqwest::Url::parse(origin)
            .map(|u| u.host().is_some() && u.origin().ascii_serialization() == *origin)
            .unwrap_or(false);
        if !valid {
            problems.add(
                format!("{key}[{i}]"),
                format!("{origin:?} is not an origin like \"https://app.example.com\""),
            );
        }
    }
    raw
}

fn access_log_target(raw: Option<String>, base: &Path, problems: &mut Problems) -> AccessLogTarget {
    match raw.as_deref() {
        None | Some("-") => AccessLogTarget::Stdout,
        Some(path) => {
            let full = resolve(base, path);
            let folder_exists = full.parent().is_some_and(Path::is_dir);
            if !folder_exists {
                problems.add(
                    "access_log.path",
                    format!("the folder of {path:?} does not exist"),
                );
            }
            AccessLogTarget::File(full)
        }
    }
}

/// Inline-YAML checks of `validate`, shared by the section validators' tests.
/// The resume settings: `None` unless `resume_window_seconds` is above 0.
fn resume(raw: &file::Websocket, problems: &mut Problems) -> Option<ResumeConfig> {
    let seconds = raw.resume_window_seconds.filter(|s| *s > 0)?;
    if seconds > MAX_RESUME_WINDOW_SECONDS {
        problems.add(
            "websocket.resume_window_seconds",
            format!("must be at most {MAX_RESUME_WINDOW_SECONDS}"),
        );
    }
    let bytes = raw
        .resume_buffer_bytes
        .unwrap_or(DEFAULT_RESUME_BUFFER_BYTES);
    if !(MIN_RESUME_BUFFER_BYTES..=MAX_RESUME_BUFFER_BYTES).contains(&bytes) {
        problems.add(
            "websocket.resume_buffer_bytes",
            format!("must be between {MIN_RESUME_BUFFER_BYTES} and {MAX_RESUME_BUFFER_BYTES}"),
        );
    }
    Some(ResumeConfig {
        window: Duration::from_secs(seconds),
        buffer_bytes: usize::try_from(bytes).unwrap_or(usize::MAX),
    })
}

#[cfg(test)]
mod testing {
    use std::path::Path;

    /// A file that passes: one HS256 issuer and one JWT route. Tests append or replace.
    pub const GOOD: &str = r#"listen: "127.0.0.1:8080"
upstream: "127.0.0.1:9000"
admin:
  listen: "127.0.0.1:9090"
jwt:
  issuers:
    - issuer: "https://auth.test/"
      audiences: ["chat-api"]
      algorithms: ["HS256"]
      secret_file: hs.secret
routes:
  - prefix: /
    auth: jwt
"#;

    /// Every problem `yaml` has, as `key: message` lines; key files resolve against the
    /// test fixtures.
    pub fn problems(yaml: &str) -> Vec<String> {
        let raw = super::parse(yaml).unwrap_or_else(|(key, _, message)| panic!("{key}: {message}"));
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        match super::validate(raw, &fixtures) {
            Ok(_) => Vec::new(),
            Err(problems) => problems.iter().map(ToString::to_string).collect(),
        }
    }

    /// Fails unless `yaml` has exactly one problem, at `key`, whose message contains `says`.
    pub fn refused(yaml: &str, key: &str, says: &str) {
        let found = problems(yaml);
        assert!(
            found.len() == 1
                && found[0].starts_with(&format!("{key}: "))
                && found[0].contains(says),
            "expected `{key}: ...{says}...`, got {found:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{GOOD, problems, refused};

    #[test]
    fn the_base_file_is_good() {
        assert_eq!(problems(GOOD), Vec::<String>::new());
    }

    #[test]
    fn the_summary_names_what_runs_and_no_password() {
        let yaml = GOOD.to_string()
            + "tickets:\n  secret_file: ticket.secret\n  store: \"redis://user:hunter2hunter2@cache:6380/1\"\n";
        let yaml = yaml.replace("auth: jwt", "auth: ticket");
        let raw = super::parse(&yaml).expect("parses");
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let config = super::validate(raw, &fixtures).unwrap_or_else(|p| panic!("{p:?}"));
        let summary = config.summary();
        assert_eq!(
            summary,
            "listen 127.0.0.1:8080 -> upstream 127.0.0.1:9000; admin 127.0.0.1:9090; \
             routes: / ticket; issuers: https://auth.test/ [HS256] from 1 static key(s); \
             tickets: /ws-ticket (ttl 30 s, store redis://cache:6380/1)"
        );
        assert!(!summary.contains("hunter2"));
    }

    #[test]
    fn listeners_threads_and_limits_are_checked() {
        refused(
            &GOOD.replace("127.0.0.1:8080", "localhost:80"),
            "listen",
            "not an IP:port",
        );
        refused(
            &GOOD.replace("127.0.0.1:9090", "127.0.0.1:8080"),
            "admin.listen",
            "must differ",
        );
        refused(
            &GOOD.replace("127.0.0.1:9000", "legacy"),
            "upstream",
            "not a host:port",
        );
        refused(
            &(GOOD.to_string() + "threads: 0\n"),
            "threads",
            "at least 1",
        );
        refused(
            &(GOOD.to_string() + "limits:\n  header_timeout_seconds: 0\n"),
            "limits.header_timeout_seconds",
            "at least 1",
        );
        refused(
            &(GOOD.to_string() + "limits:\n  keepalive_timeout_seconds: 0\n"),
            "limits.keepalive_timeout_seconds",
            "at least 1",
        );
        refused(
            &(GOOD.to_string() + "websocket:\n  idle_timeout_seconds: 0\n"),
            "websocket.idle_timeout_seconds",
            "at least 1",
        );
    }

    #[test]
    fn resume_needs_refresh_and_bounded_settings() {
        refused(
            &(GOOD.to_string() + "websocket:\n  resume_window_seconds: 30\n"),
            "websocket.resume_window_seconds",
            "needs `websocket.refresh_path`",
        );
        let refresh = "websocket:\n  refresh_path: /r\n";
        refused(
            &(GOOD.to_string() + refresh + "  resume_window_seconds: 3601\n"),
            "websocket.resume_window_seconds",
            "at most 3600",
        );
        refused(
            &(GOOD.to_string()
                + refresh
                + "  resume_window_seconds: 5\n  resume_buffer_bytes: 10\n"),
            "websocket.resume_buffer_bytes",
            "between 256 and",
        );
    }

    #[test]
    fn origins_must_be_exact() {
        for origin in ["https://app.test/", "app.test", "https://app.test/x"] {
            refused(
                &format!("{GOOD}cors:\n  allowed_origins: [\"{origin}\"]\n"),
                "cors.allowed_origins[0]",
                "is not an origin",
            );
        }
    }

    #[test]
    fn a_missing_access_log_folder_is_named() {
        refused(
            &(GOOD.to_string() + "access_log:\n  path: /no/such/folder/access.log\n"),
            "access_log.path",
            "does not exist",
        );
    }
}
