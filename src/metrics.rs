//! Every metric ticketgate exports, in one registry owned by the process (not prometheus'
//! global one, so tests can run several gates side by side). Help texts say what an
//! operator reads from each.

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::live::SocketEnd;

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    store_duration: HistogramVec,
    auth_failures: IntCounterVec,
    upstream_errors: IntCounter,
    jwks_refreshes: IntCounterVec,
    tickets_issued: IntCounter,
    tickets_redeemed: IntCounter,
    tickets_rejected: IntCounterVec,
    websocket_connections: IntGauge,
    websockets_closed: IntCounterVec,
    session_refreshes: IntCounterVec,
    admission_refusals: IntCounterVec,
    stomp_refusals: IntCounterVec,
    revocations: IntCounter,
    ready: IntGauge,
    reloads: IntCounterVec,
    last_reload_successful: IntGauge,
    tls_handshake_failures: IntCounterVec,
    /// Registered once a certificate is served: a 0 would read as "expired in 1970".
    tls_certificate_expiry: IntGauge,
    tls_certificate_exported: std::sync::Once,
}

/// The families whose label values a domain's enum declares.
#[derive(Debug, Clone, Copy)]
pub enum Family {
    /// `ticketgate_tickets_rejected_total`: `auth::error::TicketRejection`.
    TicketRejections,
    /// `ticketgate_tls_handshake_failures_total`: `tls::refusal::Refusal`.
    TlsRefusals,
    /// `ticketgate_session_refreshes_total`: `refusal::RefreshResult`.
    SessionRefreshes,
    /// `ticketgate_admission_refused_total`: `admission::Refusal`.
    AdmissionRefusals,
    /// `ticketgate_stomp_frames_refused_total`: `stomp::guard::COMMANDS` and `unknown`.
    StompRefusals,
}

/// The `result`s of `ticketgate_config_reloads_total`: success first.
const RELOAD_RESULTS: [&str; 2] = ["success", "failure"];
/// The `result`s of `ticketgate_jwks_refreshes_total`: success first.
const JWKS_RESULTS: [&str; 2] = ["ok", "error"];

/// Building a fixed set of well-formed metrics cannot fail; if it did, it would be a bug in
/// this file, found by every test on its first line.
fn must<T>(result: prometheus::Result<T>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("metric definition is invalid: {e}"),
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let metrics = Metrics {
            requests: must(IntCounterVec::new(
                Opts::new(
                    "ticketgate_requests_total",
                    "Requests answered, by matched route prefix and status code.",
                ),
                &["route", "status"],
            )),
            request_duration: must(HistogramVec::new(
                HistogramOpts::new(
                    "ticketgate_request_duration_seconds",
                    "Time from request to end of response (to close, for WebSockets), by route.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 60.0, 600.0, 3600.0,
                ]),
                &["route"],
            )),
            store_duration: must(HistogramVec::new(
                HistogramOpts::new(
                    "ticketgate_ticket_store_duration_seconds",
                    "Round trips to the shared Redis by operation (redeem, revoke, check), retries and WAIT included; a rising tail warns before an outage.",
                )
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5,
                ]),
                &["operation"],
            )),
            auth_failures: must(IntCounterVec::new(
                Opts::new(
                    "ticketgate_auth_failures_total",
                    "Credentials refused, by reason; a jump in one reason points at its cause.",
                ),
                &["reason"],
            )),
            upstream_errors: must(IntCounter::new(
                "ticketgate_upstream_errors_total",
                "Requests that failed because the upstream could not be reached or broke off.",
            )),
            jwks_refreshes: must(IntCounterVec::new(
                Opts::new(
                    "ticketgate_jwks_refreshes_total",
                    "JWK Set fetches by issuer and result; failures mean rotated keys may be missed.",
                ),
                &["issuer", "result"],
            )),
            tickets_issued: must(IntCounter::new(
                "ticketgate_tickets_issued_total",
                "Tickets handed out by the ticket endpoint.",
            )),
            tickets_redeemed: must(IntCounter::new(
                "ticketgate_tickets_redeemed_total",
                "Tickets that opened a WebSocket; far fewer than issued means clients fail between the two.",
            )),
            tickets_rejected: must(IntCounterVec::new(
                Opts::new(
                    "ticketgate_tickets_rejected_total",
                    "Tickets refused, by reason; many `replayed` or `invalid` suggest tickets being guessed or stolen.",
                ),
                &["reason"],
            )),
            websocket_connections: must(IntGauge::new(
                "ticketgate_websocket_connections",
                "Upgraded connections open now.",
            )),
            websockets_closed: must(IntCounterVec::new(
                Opts::new(
                    "ticketgate_websocket_closed_total",
                    "WebSockets ended, by reason: normal, login_expired, revoked, idle, shutdown or error.",
                ),
                &["reason"],
            )),
            session_refreshes: must(IntCounterVec::new(
                Opts::new(
                    "ticketgate_session_refreshes_total",
                    "POSTs to websocket.refresh_path by result; extended ones are reconnects saved, identity_changed ones are sockets that will close at their old expiry.",
                ),
                &["result"],
            )),
            admission_refusals: must(IntCounterVec::new(
                Opts::new(
                    "ticketgate_admission_refused_total",
                    "Tickets not issued now (429 busy, 503 upstream_unavailable), by reason; sustained, the replica is sized below its storms.",
                ),
                &["reason"],
            )),
            stomp_refusals: must(IntCounterVec::new(
                Opts::new(
                    "ticketgate_stomp_frames_refused_total",
                    "STOMP frames refused on stomp routes (a forbidden destination or a malformed frame), by command; the socket closed with 1008.",
                ),
                &["command"],
            )),
            revocations: must(IntCounter::new(
                "ticketgate_revocations_total",
                "POST /revoke calls that revoked a subject's logins; a burst may mean an incident.",
            )),
            ready: must(IntGauge::new(
                "ticketgate_ready",
                "1 when /readyz would answer 200 (keys loaded, ticket store reachable); for alerts.",
            )),
            reloads: must(IntCounterVec::new(
                Opts::new(
                    "ticketgate_config_reloads_total",
                    "SIGHUP reloads by result; a failure means the process still serves the previous config.",
                ),
                &["result"],
            )),
            last_reload_successful: must(IntGauge::new(
                "ticketgate_config_last_reload_successful",
                "1 when the last reload took effect (and at start), 0 when the file on disk is not what runs.",
            )),
            tls_handshake_failures: must(IntCounterVec::new(
                Opts::new(
                    "ticketgate_tls_handshake_failures_total",
                    "TLS handshakes on the data plane that did not complete, by reason.",
                ),
                &["reason"],
            )),
            tls_certificate_expiry: must(IntGauge::new(
                "ticketgate_tls_certificate_expiry_timestamp_seconds",
                "When the certificate new TLS handshakes present expires (its notAfter, Unix seconds).",
            )),
            tls_certificate_exported: std::sync::Once::new(),
            registry,
        };
        metrics.last_reload_successful.set(1);
        metrics.start_at_zero();
        metrics.register_all();
        metrics
    }

    /// Every label value a family can take, at 0 from the start: `rate()` and `increase()`
    /// then see the first event, and a dashboard or alert finds the series before it happens.
    fn start_at_zero(&self) {
        for result in RELOAD_RESULTS {
            self.reloads.with_label_values(&[result]);
        }
        for end in SocketEnd::ALL {
            self.websockets_closed.with_label_values(&[end.label()]);
        }
    }

    /// The labels of the families whose values the domains declare (their enums live above
    /// this module), at 0 from the start.
    pub fn start_at_zero_for(&self, family: Family, labels: &[&str]) {
        let family = match family {
            Family::TicketRejections => &self.tickets_rejected,
            Family::TlsRefusals => &self.tls_handshake_failures,
            Family::SessionRefreshes => &self.session_refreshes,
            Family::AdmissionRefusals => &self.admission_refusals,
            Family::StompRefusals => &self.stomp_refusals,
        };
        for label in labels {
            family.with_label_values(&[label]);
        }
    }

    /// `reason`: `admission::Refusal::label`.
    pub fn admission_refused(&self, reason: &str) {
        self.admission_refusals.with_label_values(&[reason]).inc();
    }

    /// `command`: the refused frame's command, `stomp::guard::Refused::label`.
    pub fn stomp_frame_refused(&self, command: &str) {
        self.stomp_refusals.with_label_values(&[command]).inc();
    }

    /// `result`: `refusal::RefreshResult::label`.
    pub fn session_refreshed(&self, result: &str) {
        self.session_refreshes.with_label_values(&[result]).inc();
    }

    /// An issuer whose keys are fetched: its refresh results start at 0.
    pub fn jwks_issuer(&self, issuer: &str) {
        for result in JWKS_RESULTS {
            self.jwks_refreshes.with_label_values(&[issuer, result]);
        }
    }

    fn register_all(&self) {
        let collectors: [Box<dyn prometheus::core::Collector>; 19] = [
            Box::new(self.reloads.clone()),
            Box::new(self.last_reload_successful.clone()),
            Box::new(self.ready.clone()),
            Box::new(self.requests.clone()),
            Box::new(self.request_duration.clone()),
            Box::new(self.store_duration.clone()),
            Box::new(self.auth_failures.clone()),
            Box::new(self.upstream_errors.clone()),
            Box::new(self.jwks_refreshes.clone()),
            Box::new(self.tickets_issued.clone()),
            Box::new(self.tickets_redeemed.clone()),
            Box::new(self.tickets_rejected.clone()),
            Box::new(self.websocket_connections.clone()),
            Box::new(self.websockets_closed.clone()),
            Box::new(self.session_refreshes.clone()),
            Box::new(self.admission_refusals.clone()),
            Box::new(self.stomp_refusals.clone()),
            Box::new(self.revocations.clone()),
            Box::new(self.tls_handshake_failures.clone()),
        ];
        for collector in collectors {
            must(self.registry.register(collector));
        }
    }

    pub fn request_done(&self, route: &str, status: u16, duration: Duration) {
        self.requests
            .with_label_values(&[route, &status.to_string()])
            .inc();
        self.request_duration
            .with_label_values(&[route])
            .observe(duration.as_secs_f64());
    }

    /// A shared Redis is in use: its operations' series start empty.
    pub fn store_operations(&self, operations: &[&str]) {
        for operation in operations {
            self.store_duration.with_label_values(&[operation]);
        }
    }

    pub fn store_round_trip(&self, operation: &str, duration: Duration) {
        self.store_duration
            .with_label_values(&[operation])
            .observe(duration.as_secs_f64());
    }

    /// `reason`: `AuthError::reason`.
    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures.with_label_values(&[reason]).inc();
    }

    pub fn upstream_error(&self) {
        self.upstream_errors.inc();
    }

    pub fn jwks_refresh(&self, issuer: &str, ok: bool) {
        let result = JWKS_RESULTS[usize::from(!ok)];
        self.jwks_refreshes
            .with_label_values(&[issuer, result])
            .inc();
    }

    pub fn ticket_issued(&self) {
        self.tickets_issued.inc();
    }

    pub fn ticket_redeemed(&self) {
        self.tickets_redeemed.inc();
    }

    /// `reason`: `TicketRejection::label`.
    pub fn ticket_rejected(&self, reason: &str) {
        self.tickets_rejected.with_label_values(&[reason]).inc();
    }

    pub fn websocket_opened(&self) {
        self.websocket_connections.inc();
    }

    pub fn websocket_closed(&self, end: SocketEnd) {
        self.websocket_connections.dec();
        self.websockets_closed
            .with_label_values(&[end.label()])
            .inc();
    }

    pub fn revoked(&self) {
        self.revocations.inc();
    }

    pub fn reloaded(&self, ok: bool) {
        let result = RELOAD_RESULTS[usize::from(!ok)];
        self.reloads.with_label_values(&[result]).inc();
        self.last_reload_successful.set(i64::from(ok));
    }

    /// `reason`: `tls::refusal::Refusal::label`.
    pub fn tls_handshake_failed(&self, reason: &str) {
        self.tls_handshake_failures
            .with_label_values(&[reason])
            .inc();
    }

    /// The certificate new handshakes present expires at `expires_at` (Unix seconds).
    pub fn tls_certificate(&self, expires_at: i64) {
        self.tls_certificate_expiry.set(expires_at);
        self.tls_certificate_exported.call_once(|| {
            must(
                self.registry
                    .register(Box::new(self.tls_certificate_expiry.clone())),
            );
        });
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on a malformed metric family, which `new` rules out.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::error!("cannot encode metrics: {e}");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
