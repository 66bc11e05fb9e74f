//! STOMP destinations by claim: on a route with `stomp:`, the client's SUBSCRIBE and SEND
//! frames are judged by the caller's claims before any byte of them reaches the broker.
//! `pattern` says which destinations a caller may use.

pub mod guard;
pub mod pattern;
