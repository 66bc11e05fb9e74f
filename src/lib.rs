//! ticketgate: a WebSocket-auth sidecar on Pingora.
//!
//! Browsers cannot set `Authorization` on a WebSocket upgrade. ticketgate sits in front of
//! a legacy service, verifies bearer JWTs on ordinary requests, trades a JWT for a
//! short-lived single-use ticket that a browser puts in the upgrade URL, and forwards the
//! caller's identity in headers the client cannot forge.
//!
//! # Layout
//! - `config`: the YAML file, validated whole before anything starts.
//! - `reload`: SIGHUP, and the background work of the policy in force (JWKS refresh,
//!   ticket-store upkeep).
//! - `server`: assembles Pingora's services from the config; `drain` ends a graceful
//!   shutdown as soon as no request is left; `limits` gives every connection the header and
//!   keep-alive deadlines Pingora lacks.
//! - `boundary`: the one reading of a request target (canonical path, refused forms) that
//!   routing, forwarding and logging share.
//! - `proxy`: the request's life, one hook per step (`proxy/route`, `proxy/authenticate`,
//!   `proxy/forward`, `proxy/respond`, `proxy/log`).
//! - `identity`: which headers carry a verified caller's identity to the upstream.
//! - `auth`: bearer JWTs, their keys and JWK Sets, and why a credential is refused.
//! - `tickets`: WebSocket tickets, minted statelessly and redeemed once (memory or Redis).
//! - `redact` and `query`: what of a URL may be logged, and query-string parsing.
//! - `access_log`, `metrics`, `admin`: what operators see; `log_filter`: what the error
//!   log may never print.
//! - `fuzzing`: the attacker-facing parsers with their invariants, for `fuzz/` and its
//!   corpus replay.
//! - `demo`: `ticketgate demo`, the whole flow with a built-in upstream, development
//!   identity provider and page.
//!
//! # Life of a request
//! boundary (the target read as the upstream will read it, or 400) -> route (the ticket endpoint, the first matching prefix, or 404) -> authenticate (per the
//! route's `auth`, upgrade or not; a ticket only on an upgrade) -> forward (ticket stripped
//! from the URI, identity headers set, client copies and `Authorization` removed) -> log (one
//! JSON line with the redacted path, metrics; for a WebSocket when it closes).

#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod auth;
pub mod boundary;
pub mod config;
pub mod demo;
pub mod drain;
pub mod fuzzing;
pub mod identity;
pub mod limits;
pub mod log_filter;
pub mod metrics;
pub mod proxy;
pub mod query;
pub mod redact;
pub mod reload;
pub mod server;
pub mod tickets;
