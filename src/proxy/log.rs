//! The last step of a request's life: one access-log line and its metrics.

use std::time::Instant;

use pingora::proxy::Session;

use crate::access_log::{self, AccessLog, Entry};
use crate::config::AuthMode;
use crate::metrics::Metrics;
use crate::{query, redact};

/// What the earlier steps learnt about a request, as the log needs it.
pub struct Outcome<'a> {
    pub started: Instant,
    pub route: &'a str,
    pub auth: AuthMode,
    pub subject: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub ticket_param: &'a str,
}

pub fn record(session: &Session, outcome: Outcome, access_log: &AccessLog, metrics: &Metrics) {
    let duration = outcome.started.elapsed();
    let status = session
        .response_written()
        .map_or(0, |response| response.status.as_u16());
    metrics.request_done(outcome.route, status, duration);
    let req = session.req_header();
    let target = query::target(&req.uri);
    access_log.write(&Entry {
        ts: access_log::now(),
        method: req.method.as_str(),
        path: &redact::target(target, outcome.ticket_param),
        route: outcome.route,
        status,
        duration_ms: duration.as_secs_f64() * 1000.0,
        subject: outcome.subject,
        auth: outcome.auth.as_str(),
        reason: outcome.reason,
    });
}
