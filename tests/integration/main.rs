//! End-to-end tests: ticketgate as a built binary between real clients and real servers on
//! loopback ports. One test binary, so the suite links once. They measure real time against
//! a real process, so the crate's one-clock rule (clippy.toml) does not apply here.
#![allow(clippy::disallowed_methods)]

mod common;

mod admin;
mod admission;
mod check;
mod hardening;
mod jwks;
mod jwt;
mod limits;
mod live;
mod logs;
mod redis_store;
mod refresh;
mod relay;
mod reload;
mod resume;
mod routing;
mod stalled;
mod stomp;
mod subprotocol;
mod tickets;
mod tls;
mod websocket;
