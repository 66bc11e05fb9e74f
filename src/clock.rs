//! The clocks, in the units tokens and tickets carry, and the one place that reads them:
//! clippy's `disallowed-methods` (clippy.toml) keeps every other module off
//! `Instant::now`, `SystemTime::now` and `Utc::now`. Code that decides on time takes `now` as
//! a parameter; only the edges (a request arriving, a round of upkeep) read it here. The
//! monotonic clock is tokio's, so a test under `tokio::time::pause()` moves it at will.
#![allow(clippy::disallowed_methods)]

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Now, on the monotonic clock deadlines and durations are measured on.
pub fn now() -> Instant {
    Instant::now()
}

/// Unix seconds now (0 on a clock set before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix milliseconds now.
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The current time as RFC 3339 UTC with milliseconds, as log lines carry it.
pub fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
