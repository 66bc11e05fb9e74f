//! Gate configs as typed values: `ticketgate::config::file::File`, the very struct the
//! config parser reads, built here in Rust and written out as YAML by `Gate::start`. A test
//! changes a field (`file.jwt_mut().leeway_seconds = Some(0)`), not a piece of YAML text,
//! so a renamed key breaks the build instead of silently testing something else.

use std::net::SocketAddr;

pub use ticketgate::config::file::{
    Admin, Admission, Cors, File, Forward, Issuer, Jwt, Limits, Route, Store, Tickets, Tls,
    Websocket,
};

use super::{fixture, tokens};

/// Where an issuer's keys come from.
pub enum Keys {
    /// Static keys for every algorithm family.
    AllStatic,
    /// The HS256 secret only.
    Hs256,
    /// The HS256 secret and the RSA public key, for HS256 and RS256.
    HsAndRs,
    /// A JWK Set URL, refreshed every `refresh_seconds`.
    Jwks { url: String, refresh_seconds: u64 },
}

/// The tests' one issuer (`https://auth.test/`, audience `chat-api`) with `keys`.
pub fn issuer(keys: Keys) -> Issuer {
    let mut issuer = Issuer {
        issuer: tokens::ISSUER.into(),
        audiences: vec![tokens::AUDIENCE.into()],
        ..Default::default()
    };
    let algorithms: &[&str] = match keys {
        Keys::AllStatic => {
            issuer.secret_file = Some(fixture("hs.secret"));
            issuer.public_key_files = [
                "rsa.pub.pem",
                "ec256.pub.pem",
                "ec384.pub.pem",
                "ed25519.pub.pem",
            ]
            .map(fixture)
            .to_vec();
            &[
                "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                "ES256", "ES384", "EdDSA",
            ]
        }
        Keys::Hs256 => {
            issuer.secret_file = Some(fixture("hs.secret"));
            &["HS256"]
        }
        Keys::HsAndRs => {
            issuer.secret_file = Some(fixture("hs.secret"));
            issuer.public_key_files = vec![fixture("rsa.pub.pem")];
            &["HS256", "RS256"]
        }
        Keys::Jwks {
            url,
            refresh_seconds,
        } => {
            issuer.jwks_url = Some(url);
            issuer.jwks_refresh_seconds = Some(refresh_seconds);
            &["RS256", "ES256"]
        }
    };
    issuer.algorithms = algorithms.iter().map(|a| a.to_string()).collect();
    issuer
}

pub fn route(prefix: &str, auth: &str) -> Route {
    Route {
        prefix: prefix.into(),
        auth: auth.into(),
        stomp: None,
    }
}

/// The upstream and `issuer`, leeway 5 s, a one-second shutdown grace; no routes yet.
pub fn base(upstream: SocketAddr, issuer: Issuer) -> File {
    File {
        upstream: upstream.to_string(),
        shutdown_grace_seconds: Some(1),
        jwt: Some(Jwt {
            leeway_seconds: Some(5),
            cache_size: None,
            issuers: vec![issuer],
        }),
        ..Default::default()
    }
}

/// Identity headers: the subject and the `email` claim.
pub fn identity_headers() -> Forward {
    Forward {
        subject_header: Some("X-Auth-Subject".into()),
        claim_headers: [("email".to_string(), "X-Auth-Email".to_string())].into(),
        forward_authorization: false,
    }
}

/// `base` with a public route, a JWT route for everything else, and identity headers.
pub fn jwt(upstream: SocketAddr, keys: Keys) -> File {
    File {
        routes: vec![route("/public", "none"), route("/", "jwt")],
        forward: identity_headers(),
        ..base(upstream, issuer(keys))
    }
}

/// Knobs of `tickets`.
pub struct TicketOptions {
    pub ttl_seconds: u64,
    pub store: Store,
    /// `tickets.redis_wait_replicas`.
    pub wait_replicas: Option<u32>,
    pub websocket_origins: Vec<String>,
    pub idle_timeout_seconds: u64,
    /// `websocket.refresh_path`.
    pub refresh_path: Option<String>,
    /// `websocket.resume_window_seconds`.
    pub resume_window_seconds: Option<u64>,
}

impl Default for TicketOptions {
    fn default() -> Self {
        TicketOptions {
            ttl_seconds: 30,
            store: Store::Url("memory".into()),
            wait_replicas: None,
            websocket_origins: Vec::new(),
            idle_timeout_seconds: 3600,
            refresh_path: None,
            resume_window_seconds: None,
        }
    }
}

/// A ticket route `/ws`, the ticket endpoint `/ws-ticket`, a public route and a JWT route,
/// HS256/RS256 static keys, identity headers, and CORS for `https://app.test`.
pub fn tickets(upstream: SocketAddr, options: &TicketOptions) -> File {
    File {
        routes: vec![
            route("/ws", "ticket"),
            route("/public", "none"),
            route("/", "jwt"),
        ],
        tickets: Some(Tickets {
            issue_path: Some("/ws-ticket".into()),
            ttl_seconds: Some(options.ttl_seconds),
            secret_file: fixture("ticket.secret"),
            store: Some(options.store.clone()),
            redis_wait_replicas: options.wait_replicas,
            query_param: None,
        }),
        forward: identity_headers(),
        cors: Cors {
            allowed_origins: vec!["https://app.test".into()],
        },
        websocket: Websocket {
            allowed_origins: options.websocket_origins.clone(),
            idle_timeout_seconds: Some(options.idle_timeout_seconds),
            close_at_login_expiry: None,
            refresh_path: options.refresh_path.clone(),
            resume_window_seconds: options.resume_window_seconds,
            resume_buffer_bytes: None,
        },
        ..base(upstream, issuer(Keys::HsAndRs))
    }
}

/// Short-hands for the parts tests change most.
pub trait Edit {
    fn jwt_mut(&mut self) -> &mut Jwt;
    fn issuer_mut(&mut self) -> &mut Issuer;
    fn tickets_mut(&mut self) -> &mut Tickets;
}

impl Edit for File {
    fn jwt_mut(&mut self) -> &mut Jwt {
        self.jwt.as_mut().expect("a jwt section")
    }

    fn issuer_mut(&mut self) -> &mut Issuer {
        &mut self.jwt_mut().issuers[0]
    }

    fn tickets_mut(&mut self) -> &mut Tickets {
        self.tickets.as_mut().expect("a tickets section")
    }
}
