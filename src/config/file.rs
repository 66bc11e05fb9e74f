//! The YAML file exactly as users write it. Every struct denies unknown fields, because a
//! misspelt key (say `audience:` for `audiences:`) would otherwise silently disable a check.
//! Nothing here is validated beyond its shape; `config::validate` turns this into `Config`.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub listen: String,
    pub upstream: String,
    pub admin: Admin,
    pub threads: Option<usize>,
    pub shutdown_grace_seconds: Option<u64>,
    pub jwt: Option<Jwt>,
    pub routes: Vec<Route>,
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jwt {
    pub leeway_seconds: Option<u64>,
    pub cache_size: Option<usize>,
    pub issuers: Vec<Issuer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Issuer {
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub algorithms: Vec<String>,
    pub secret_file: Option<String>,
    #[serde(default)]
    pub public_key_files: Vec<String>,
    pub jwks_file: Option<String>,
    pub jwks_url: Option<String>,
    pub jwks_refresh_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub prefix: String,
    pub auth: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tickets {
    pub issue_path: Option<String>,
    pub ttl_seconds: Option<u64>,
    pub secret_file: String,
    pub store: Option<String>,
    pub query_param: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    pub subject_header: Option<String>,
    #[serde(default)]
    pub claim_headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub forward_authorization: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Websocket {
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    pub idle_timeout_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    pub path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub header_timeout_seconds: Option<u64>,
    pub keepalive_timeout_seconds: Option<u64>,
}
