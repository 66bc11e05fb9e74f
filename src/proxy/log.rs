//! The last step of a request's life: one access-log line and its metrics.

use std::borrow::Cow;
use tokio::time::Instant;

use pingora::proxy::Session;

use super::route::AuthMode;
use crate::access_log::{AccessLog, Entry};
use crate::metrics::Metrics;
use crate::redact::{self, Shapes};

/// What the earlier steps learnt about a request, as the log needs it.
pub struct Outcome<'a> {
    pub started: Instant,
    pub route: &'a str,
    pub auth: AuthMode,
    pub subject: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub shapes: Shapes<'a>,
}

/// The request target as the client sent it, redacted: what both the access log and
/// Pingora's error log (`request_summary`) print.
pub fn logged_target<'a>(session: &'a Session, shapes: &Shapes) -> Cow<'a, str> {
    match String::from_utf8_lossy(session.req_header().raw_path()) {
        Cow::Borrowed(text) => redact::target(text, shapes),
        Cow::Owned(text) => Cow::Owned(redact::target(&text, shapes).into_owned()),
    }
}

pub fn record(session: &Session, outcome: Outcome, access_log: &AccessLog, metrics: &Metrics) {
    let duration = outcome.started.elapsed();
    let status = session
        .response_written()
        .map_or(0, |response| response.status.as_u16());
    metrics.request_done(outcome.route, status, duration);
    access_log.write(&Entry {
        ts: crate::clock::timestamp(),
        method: session.req_header().method.as_str(),
        protocol: protocol(session.req_header().version),
        path: &logged_target(session, &outcome.shapes),
        route: outcome.route,
        status,
        duration_ms: whole_microseconds_as_ms(duration),
        subject: outcome.subject,
        auth: outcome.auth.as_str(),
        reason: outcome.reason,
    });
}

fn protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_09 => "HTTP/0.9",
        _ => "HTTP/1.1",
    }
}

/// Milliseconds to three decimals (whole microseconds): `1.623`, not `1.6227889999999998`.
fn whole_microseconds_as_ms(duration: std::time::Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}
