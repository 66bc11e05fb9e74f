//! End-to-end tests: ticketgate as a built binary between real clients and real servers on
//! loopback ports. One test binary, so the suite links once.

mod common;

mod admin;
mod check;
mod hardening;
mod jwks;
mod jwt;
mod limits;
mod live;
mod logs;
mod redis_store;
mod reload;
mod routing;
mod stalled;
mod subprotocol;
mod tickets;
mod tls;
mod websocket;
