//! ticketgate: a WebSocket-auth sidecar on Pingora.
//!
//! Browsers cannot set `Authorization` on a WebSocket upgrade. ticketgate sits in front of
//! a legacy service, verifies bearer JWTs on ordinary requests, trades a JWT for a
//! short-lived single-use ticket that a browser puts in the upgrade URL, and forwards the
//! caller's identity in headers the client cannot forge.
//!
//! # Layout
//! - `config`: the YAML file, validated whole before anything starts (one validator per
//!   section in `config/`); it builds each domain's own settings type.
//! - `server`: assembles Pingora's services from the config; `reload` re-reads it on SIGHUP
//!   and keeps the policy's background work (JWKS refresh, ticket-store upkeep) going;
//!   `lifecycle` holds the one shape of periodic work and the drain that ends a graceful
//!   shutdown as soon as no request is left; `limits` gives every connection the header
//!   and keep-alive deadlines Pingora lacks.
//! - `boundary`: the one reading of a request target (canonical path, refused forms) that
//!   routing, forwarding and logging share.
//! - `proxy`: the request's life, one hook per step (`proxy/route`, `proxy/authenticate`,
//!   `proxy/forward`, `proxy/respond`, `proxy/log`), each decided by the request's own
//!   snapshot of the policy (`proxy/policy`).
//! - `auth`: bearer JWTs, their keys and JWK Sets, and why a credential is refused; it says
//!   who is calling and until when.
//! - `identity`: what the upstream is told about the caller: which headers, built once per
//!   verified token and cached until it expires (`identity/cache`).
//! - `tickets`: WebSocket tickets, sealed statelessly (`tickets/codec`) and redeemed once
//!   (`tickets/store`: the `UsedTickets` trait over memory and Redis).
//! - `redact` and `query`: what of a URL may be logged, and query-string parsing;
//!   `subprotocol`: credentials offered in `Sec-WebSocket-Protocol`.
//! - `tls`: the data plane's certificate and handshake settings; `tls/handshake` terminates
//!   TLS ahead of `connection`, counting each failed handshake by reason.
//! - `connection`: the stream every connection is wrapped in, where `limits` (header and
//!   keep-alive deadlines) and `live` (closing a WebSocket whose login ended) act; after a
//!   101 it and the upstream's connection (`handover`) go to `relay`, which carries the socket
//!   in place of Pingora;
//!   `revocations`: revoked logins, shared through Redis between replicas; `refreshes`:
//!   session refresh across replicas sharing Redis; `admission`: the ticket endpoint as the
//!   valve of a reconnect storm.
//! - `shared_redis`: the Redis replicas share (node, Cluster or Sentinel; TLS, ACL users,
//!   `WAIT`), which used tickets and revocations both go through.
//! - `access_log`, `metrics`, `admin`: what operators see; `refusal`: every refusal's
//!   status, code and label, on both listeners; `log_filter`: what the error log may never
//!   print.
//! - `fuzzing` (feature `fuzzing`): the attacker-facing parsers with their invariants, for
//!   `fuzz/` and its corpus replay.
//! - `demo` (feature `demo`): `ticketgate demo`, the whole flow with a built-in upstream,
//!   development identity provider and page. Off by default, so a production build cannot
//!   serve an identity provider that logs anyone in.
//!
//! # Life of a request
//! boundary (the target read as the upstream will read it, or 400) -> route (the ticket
//! endpoint, the first prefix matching the canonical path, or 404) -> authenticate (per the
//! route's `auth`, upgrade or not; a ticket only on a complete opening handshake) -> forward
//! (the canonical target without the ticket, identity headers set, client copies and
//! `Authorization` removed) -> log (one JSON line with the redacted target, metrics; for a
//! WebSocket when it closes).

pub mod access_log;
pub mod admin;
pub mod admission;
pub mod auth;
pub mod boundary;
pub mod clock;
pub mod config;
pub mod connection;
#[cfg(feature = "demo")]
pub mod demo;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod handover;
pub mod identity;
pub mod lifecycle;
pub mod limits;
pub mod live;
pub mod log_filter;
pub mod metrics;
pub mod proxy;
pub mod query;
pub mod redact;
pub mod refreshes;
pub mod refusal;
pub mod relay;
pub mod reload;
pub mod resume;
pub mod revocations;
pub mod server;
pub mod shared_redis;
pub mod stomp;
pub mod subjects;
pub mod subprotocol;
pub mod tickets;
pub mod tls;

#[cfg(test)]
mod vocabulary;
