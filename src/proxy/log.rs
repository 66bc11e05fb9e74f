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
    let line = Line {
        started: outcome.started,
        route: outcome.route,
        auth: outcome.auth,
        subject: outcome.subject,
        method: session.req_header().method.as_str(),
        protocol: protocol(session.req_header().version),
        path: &logged_target(session, &outcome.shapes),
        status: status(session),
    };
    write(&line, outcome.reason, access_log, metrics);
}

/// The line of a relayed socket, known when Pingora lets go of its request and written
/// when the socket ends (`Relayed::record`): its own copy of what the session held.
pub struct Relayed {
    started: Instant,
    route: String,
    auth: AuthMode,
    subject: Option<String>,
    method: String,
    protocol: &'static str,
    path: String,
    status: u16,
}

impl Relayed {
    pub fn of(session: &Session, outcome: &Outcome) -> Self {
        Relayed {
            started: outcome.started,
            route: outcome.route.to_string(),
            auth: outcome.auth,
            subject: outcome.subject.map(str::to_string),
            method: session.req_header().method.as_str().to_string(),
            protocol: protocol(session.req_header().version),
            path: logged_target(session, &outcome.shapes).into_owned(),
            status: status(session),
        }
    }

    pub fn record(&self, reason: Option<&str>, access_log: &AccessLog, metrics: &Metrics) {
        let line = Line {
            started: self.started,
            route: &self.route,
            auth: self.auth,
            subject: self.subject.as_deref(),
            method: &self.method,
            protocol: self.protocol,
            path: &self.path,
            status: self.status,
        };
        write(&line, reason, access_log, metrics);
    }
}

/// One access-log line's facts, borrowed from a session or from a `Relayed`.
struct Line<'a> {
    started: Instant,
    route: &'a str,
    auth: AuthMode,
    subject: Option<&'a str>,
    method: &'a str,
    protocol: &'static str,
    path: &'a str,
    status: u16,
}

fn status(session: &Session) -> u16 {
    session
        .response_written()
        .map_or(0, |response| response.status.as_u16())
}

fn write(line: &Line, reason: Option<&str>, access_log: &AccessLog, metrics: &Metrics) {
    let duration = line.started.elapsed();
    metrics.request_done(line.route, line.status, duration);
    access_log.write(&Entry {
        ts: crate::clock::timestamp(),
        method: line.method,
        protocol: line.protocol,
        path: line.path,
        route: line.route,
        status: line.status,
        duration_ms: whole_microseconds_as_ms(duration),
        subject: line.subject,
        auth: line.auth.as_str(),
        reason,
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
