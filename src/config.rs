//! Loads the YAML config and validates all of it before anything starts.
//!
//! Every problem is collected and reported at once, each naming its key path
//! (`jwt.issuers[0].algorithms[1]: unknown algorithm "RS257"`), because an operator fixing a
//! file one error per restart loses patience fast. Messages never quote key or secret file
//! contents.

mod file;

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderName;
use jsonwebtoken::{Algorithm, AlgorithmFamily};

use crate::access_log::AccessLogTarget;
use crate::auth::jwt::{IssuerConfig, JwtConfig};
use crate::auth::keys::{self, VerifyKey};
use crate::boundary;
use crate::identity::{ForwardConfig, IdentityHeader};
use crate::limits::Limits;
use crate::tickets::{StoreConfig, TicketsConfig};

const DEFAULT_ISSUE_PATH: &str = "/ws-ticket";
const DEFAULT_TICKET_TTL_SECONDS: u64 = 30;
const MAX_TICKET_TTL_SECONDS: u64 = 3600;
const MIN_TICKET_SECRET_BYTES: usize = 32;
const DEFAULT_JWKS_REFRESH_SECONDS: u64 = 300;
const DEFAULT_LEEWAY_SECONDS: u64 = 60;
const DEFAULT_TOKEN_CACHE_SIZE: usize = 10_000;
const DEFAULT_SHUTDOWN_GRACE_SECONDS: u64 = 10;
const DEFAULT_WEBSOCKET_IDLE_SECONDS: u64 = 3600;
const DEFAULT_HEADER_TIMEOUT_SECONDS: u64 = 10;
const DEFAULT_KEEPALIVE_TIMEOUT_SECONDS: u64 = 60;

/// The validated configuration: every address parsed, every key file read and parsed.
pub struct Config {
    pub listen: SocketAddr,
    /// `host:port`, resolved when the server starts (so `check` needs no DNS).
    pub upstream: String,
    pub admin_listen: SocketAddr,
    pub threads: usize,
    pub shutdown_grace: Duration,
    pub jwt: JwtConfig,
    pub routes: Vec<Route>,
    pub tickets: Option<TicketsConfig>,
    pub forward: ForwardConfig,
    pub cors_allowed_origins: Vec<String>,
    pub websocket: WebsocketConfig,
    pub access_log: AccessLogTarget,
    pub limits: Limits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    None,
    Jwt,
    Ticket,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::None => "none",
            AuthMode::Jwt => "jwt",
            AuthMode::Ticket => "ticket",
        }
    }
}

pub struct Route {
    /// As configured; also the `route` label of metrics.
    pub prefix: String,
    pub auth: AuthMode,
}

pub struct WebsocketConfig {
    pub allowed_origins: Vec<String>,
    pub idle_timeout: Duration,
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
        (if key == "." { String::new() } else { key }, line, message)
    })
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
    let jwt = jwt_config(raw.jwt, base, &mut problems);
    let tickets = raw.tickets.map(|t| tickets_config(t, base, &mut problems));
    let routes = routes(raw.routes, &jwt, tickets.is_some(), &mut problems);
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
    let forward = forward_config(raw.forward, &mut problems);
    let cors_allowed_origins = origins(
        raw.cors.allowed_origins,
        "cors.allowed_origins",
        &mut problems,
    );
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
    };
    if websocket.idle_timeout.is_zero() {
        problems.add("websocket.idle_timeout_seconds", "must be at least 1");
    }
    let access_log = access_log_target(raw.access_log.path, base, &mut problems);
    let limits = limits(&raw.limits, &mut problems);

    let (Some(listen), Some(admin_listen)) = (listen, admin_listen) else {
        return Err(problems.0);
    };
    if !problems.0.is_empty() {
        return Err(problems.0);
    }
    Ok(Config {
        listen,
        upstream: raw.upstream,
        admin_listen,
        threads,
        shutdown_grace: Duration::from_secs(
            raw.shutdown_grace_seconds
                .unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECONDS),
        ),
        jwt,
        routes,
        tickets,
        forward,
        cors_allowed_origins,
        websocket,
        access_log,
        limits,
    })
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

fn jwt_config(raw: Option<file::Jwt>, base: &Path, problems: &mut Problems) -> JwtConfig {
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
    } else if raw.jwks_url.is_none() {
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

fn routes(
    raw: Vec<file::Route>,
    jwt: &JwtConfig,
    has_tickets: bool,
    problems: &mut Problems,
) -> Vec<Route> {
    if raw.is_empty() {
        problems.add("routes", "at least one route is required");
    }
    let mut seen = HashSet::new();
    raw.into_iter()
        .enumerate()
        .filter_map(|(i, route)| {
            let key = format!("routes[{i}]");
            if !route.prefix.starts_with('/') || route.prefix.contains(['?', '#']) {
                problems.add(
                    format!("{key}.prefix"),
                    format!("{:?} must be a path starting with '/'", route.prefix),
                );
            } else if !is_canonical(&route.prefix) {
                problems.add(
                    format!("{key}.prefix"),
                    format!(
                        "{:?} is not a canonical path (no escapes, `;`, `//` or dot segments): requests are matched in canonical form, so it would never match",
                        route.prefix
                    ),
                );
            }
            if !seen.insert(route.prefix.trim_end_matches('/').to_string()) {
                problems.add(
                    format!("{key}.prefix"),
                    "duplicate prefix: this route would never match",
                );
            }
            let auth = match route.auth.as_str() {
                "none" => AuthMode::None,
                "jwt" => AuthMode::Jwt,
                "ticket" => AuthMode::Ticket,
                other => {
                    problems.add(
                        format!("{key}.auth"),
                        format!("unknown auth {other:?} (expected none, jwt or ticket)"),
                    );
                    return None;
                }
            };
            if auth != AuthMode::None && jwt.issuers.is_empty() {
                problems.add(
                    format!("{key}.auth"),
                    format!("`auth: {}` needs `jwt.issuers`", auth.as_str()),
                );
            }
            if auth == AuthMode::Ticket && !has_tickets {
                problems.add(
                    format!("{key}.auth"),
                    "`auth: ticket` needs a `tickets` section",
                );
            }
            Some(Route {
                prefix: route.prefix,
                auth,
            })
        })
        .collect()
}

/// Whether requests can match `prefix`: routes compare canonical route paths.
fn is_canonical(prefix: &str) -> bool {
    boundary::read(prefix.as_bytes(), false).is_ok_and(|t| t.route_path == prefix)
}

fn tickets_config(raw: file::Tickets, base: &Path, problems: &mut Problems) -> TicketsConfig {
    let issue_path = raw
        .issue_path
        .unwrap_or_else(|| DEFAULT_ISSUE_PATH.to_string());
    if !issue_path.starts_with('/') || issue_path.contains(['?', '#']) {
        problems.add(
            "tickets.issue_path",
            format!("{issue_path:?} must be a path starting with '/'"),
        );
    }
    let ttl = raw.ttl_seconds.unwrap_or(DEFAULT_TICKET_TTL_SECONDS);
    if ttl == 0 || ttl > MAX_TICKET_TTL_SECONDS {
        problems.add(
            "tickets.ttl_seconds",
            format!("must be between 1 and {MAX_TICKET_TTL_SECONDS}"),
        );
    }
    let secret = match keys::read_key_file(&resolve(base, &raw.secret_file)) {
        Ok(secret) if secret.len() < MIN_TICKET_SECRET_BYTES => {
            problems.add(
                "tickets.secret_file",
                format!("the secret must be at least {MIN_TICKET_SECRET_BYTES} bytes"),
            );
            Vec::new()
        }
        Ok(secret) => secret,
        Err(e) => {
            problems.add("tickets.secret_file", e);
            Vec::new()
        }
    };
    let store = store_config(raw.store.as_deref().unwrap_or("memory"), problems);
    let query_param = raw.query_param.unwrap_or_else(|| "ticket".to_string());
    if query_param.is_empty()
        || !query_param
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        problems.add(
            "tickets.query_param",
            "must be a non-empty name of letters, digits, '-', '_' or '.'",
        );
    }
    TicketsConfig {
        issue_path,
        ttl: Duration::from_secs(ttl),
        secret,
        store,
        query_param,
    }
}

fn store_config(value: &str, problems: &mut Problems) -> StoreConfig {
    if value == "memory" {
        return StoreConfig::Memory;
    }
    match reqwest::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "redis" | "rediss") && url.host().is_some() => {
            StoreConfig::Redis(value.to_string())
        }
        // Not echoed: a Redis URL may carry a password.
        _ => {
            problems.add(
                "tickets.store",
                "must be \"memory\" or a redis://host:port/db URL",
            );
            StoreConfig::Memory
        }
    }
}

fn forward_config(raw: file::Forward, problems: &mut Problems) -> ForwardConfig {
    let subject_header = header_name(
        raw.subject_header.as_deref().unwrap_or("X-Auth-Subject"),
        "forward.subject_header",
        problems,
    );
    let claim_headers = raw
        .claim_headers
        .iter()
        .filter_map(|(claim, header)| {
            let name = header_name(header, &format!("forward.claim_headers.{claim}"), problems);
            Some((claim.clone(), name?))
        })
        .collect();
    ForwardConfig {
        subject_header: subject_header.unwrap_or_else(|| IdentityHeader {
            name: HeaderName::from_static("x-auth-subject"),
            spelling: Bytes::from_static(b"X-Auth-Subject"),
        }),
        claim_headers,
        forward_authorization: raw.forward_authorization,
    }
}

/// Header names that carry identity must not be ones the proxy or HTTP itself depends on.
fn header_name(value: &str, key: &str, problems: &mut Problems) -> Option<IdentityHeader> {
    const RESERVED: [&str; 7] = [
        "authorization",
        "host",
        "connection",
        "upgrade",
        "content-length",
        "transfer-encoding",
        "cookie",
    ];
    match HeaderName::from_bytes(value.as_bytes()) {
        Ok(name) if RESERVED.contains(&name.as_str()) => {
            problems.add(
                key,
                format!("{value:?} is reserved and cannot carry identity"),
            );
            None
        }
        Ok(name) => Some(IdentityHeader {
            name,
            spelling: Bytes::copy_from_slice(value.as_bytes()),
        }),
        Err(_) => {
            problems.add(key, format!("{value:?} is not a valid header name"));
            None
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
