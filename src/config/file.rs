//! The YAML file exactly as users write it. Every struct denies unknown fields, because a
//! misspelt key (say `audience:` for `audiences:`) would otherwise silently disable a check.
//! Nothing here is validated beyond its shape; `config::validate` turns this into `Config`.
//!
//! It also serialises, so tests and the demo build a config as a typed value and write it
//! out as the YAML a user would, instead of editing YAML text; and it describes itself as a
//! JSON Schema (`schema`, checked in as `conf/ticketgate.schema.json`) so editors complete and
//! check the file.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub listen: String,
    pub upstream: String,
    pub admin: Admin,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<Jwt>,
    pub routes: Vec<Route>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tickets: Option<Tickets>,
    #[serde(default)]
    pub forward: Forward,
    #[serde(default)]
    pub cors: Cors,
    #[serde(default)]
    pub websocket: Websocket,
    #[serde(default)]
    pub access_log: AccessLog,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub revocations: Revocations,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admission: Option<Admission>,
}

/// With `tls:`, `listen` serves HTTPS and wss:// only (TLS 1.2 and 1.3); SIGHUP re-reads the files.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain, the server's certificate first.
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) matching the certificate.
    pub key_file: String,
    /// Also offer h2 through ALPN for requests other than WebSocket upgrades (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http2: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub listen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Jwt {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leeway_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_size: Option<usize>,
    pub issuers: Vec<Issuer>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Issuer {
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub algorithms: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
    #[serde(default)]
    pub public_key_files: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_refresh_seconds: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub prefix: String,
    pub auth: String,
    /// The STOMP destinations callers of this route may subscribe and send to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stomp: Option<Stomp>,
}

/// A route's `stomp:` patterns: literal text, `*` (one segment), `**` (the rest, last only),
/// `{claim}` (the caller's claim).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stomp {
    #[serde(default)]
    pub subscribe: Vec<String>,
    #[serde(default)]
    pub send: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tickets {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issue_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    pub secret_file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<Store>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_wait_replicas: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_param: Option<String>,
}

/// `tickets.store`: `memory`, a Redis URL, or one of the structured forms.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Store {
    Url(String),
    Cluster(ClusterStore),
    Sentinel(SentinelStore),
}

const STORE_EXPECTED: &str = "\"memory\", a redis:// or rediss:// URL, {redis_cluster: [url, ...]} or {redis_sentinel: {master, nodes: [url, ...], db}}";
const STORE_FORMS: &[&str] = &["redis_cluster", "redis_sentinel"];

/// By hand, not `untagged`: an untagged enum answers any mistake inside a form with the list
/// of forms, while this reads the form's key first, so a misspelt form
/// (`tickets.store.redis_clustr`) or a misspelt key inside one
/// (`tickets.store.redis_sentinel.mastr`) is named.
impl<'de> Deserialize<'de> for Store {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StoreVisitor)
    }
}

struct StoreVisitor;

impl<'de> serde::de::Visitor<'de> for StoreVisitor {
    type Value = Store;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(STORE_EXPECTED)
    }

    fn visit_str<E: serde::de::Error>(self, url: &str) -> Result<Store, E> {
        Ok(Store::Url(url.to_string()))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Store, A::Error> {
        use serde::de::Error;
        let Some(form) = map.next_key::<String>()? else {
            return Err(A::Error::invalid_length(0, &self));
        };
        let store = match form.as_str() {
            "redis_cluster" => Store::Cluster(ClusterStore {
                redis_cluster: map.next_value()?,
            }),
            "redis_sentinel" => Store::Sentinel(SentinelStore {
                redis_sentinel: map.next_value()?,
            }),
            other => return Err(A::Error::unknown_field(other, STORE_FORMS)),
        };
        match map.next_key::<String>()? {
            Some(extra) => Err(A::Error::custom(format!(
                "`{extra}` beside `{form}`: a store has one form"
            ))),
            None => Ok(store),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterStore {
    pub redis_cluster: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SentinelStore {
    pub redis_sentinel: Sentinel,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sentinel {
    pub master: String,
    pub nodes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_header: Option<String>,
    #[serde(default)]
    pub claim_headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub forward_authorization: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Websocket {
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_at_login_expiry: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_path: Option<String>,
    /// > 0: a client whose connection broke may resume within this window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_window_seconds: Option<u64>,
    /// The latest upstream bytes kept per socket for a resume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_buffer_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Admission {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tickets_per_second: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_websockets: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrades_per_second: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_websockets_per_subject: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_timeout_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepalive_timeout_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Revocations {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// The JSON Schema of the config file, as `ticketgate schema` prints it.
pub fn schema() -> String {
    let schema = schemars::schema_for!(File);
    serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_checked_in_schema_is_current() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/ticketgate.schema.json");
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == super::schema(),
            "conf/ticketgate.schema.json is stale: run `ticketgate schema > conf/ticketgate.schema.json`"
        );
    }
}
