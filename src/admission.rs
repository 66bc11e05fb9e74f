//! Admission: the ticket endpoint is the valve of a reconnect storm. A browser cannot read the
//! status of a refused WebSocket handshake, but it reads the answer to its ticket request, so
//! that is where ticketgate says "not now, come back in N seconds" — before any signature is
//! checked, so a refusal costs a lock and some arithmetic, not a verification.
//!
//! This replica's state lives here (`Admission`: the ticket budget's bucket, the open sockets,
//! whether the upstream is known down); the limits are the policy's (`AdmissionConfig`), so a
//! reload changes them without forgetting the state.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::shared_redis::SharedError;
use crate::subjects::Subjects;

/// The `admission:` settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmissionConfig {
    /// Tickets this replica issues per second (a token bucket holding one second's worth).
    pub tickets_per_second: Option<f64>,
    /// Open WebSockets on this replica past which no ticket is issued.
    pub max_websockets: Option<usize>,
    /// New upstream WebSockets this replica opens per second: tickets are paced to it
    /// (`connect_after_ms`), and an upgrade beyond it is refused.
    pub upgrades_per_second: Option<f64>,
    /// Open WebSockets of one subject (on every replica sharing the store) past which that
    /// subject gets no ticket and no bearer upgrade.
    pub max_websockets_per_subject: Option<usize>,
    /// The base of the advice: each refusal picks a wait in `[base, 2 * base]`.
    pub retry_after: Duration,
}

/// Why a ticket was not issued now: the `reason` of `ticketgate_admission_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Past `tickets_per_second`.
    TicketsRate,
    /// `max_websockets` sockets are open.
    Websockets,
    /// The upstream's last connect failed and none succeeded since.
    UpstreamUnavailable,
    /// An upgrade beyond `upgrades_per_second` (its client did not wait `connect_after_ms`).
    UpgradesRate,
    /// The subject has `max_websockets_per_subject` sockets open.
    Subject,
}

impl Refusal {
    pub const ALL: [Refusal; 5] = [
        Refusal::TicketsRate,
        Refusal::Websockets,
        Refusal::UpstreamUnavailable,
        Refusal::UpgradesRate,
        Refusal::Subject,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::TicketsRate => "tickets_rate",
            Refusal::Websockets => "websockets",
            Refusal::UpstreamUnavailable => "upstream_unavailable",
            Refusal::UpgradesRate => "upgrades_rate",
            Refusal::Subject => "subject",
        }
    }
}

/// This replica's admission state.
#[derive(Default)]
pub struct Admission {
    /// The open sockets of each subject (shared through Redis when the store is).
    pub subjects: Subjects,
    tickets: Mutex<Bucket>,
    upgrades: Mutex<Bucket>,
    /// When the next paced upgrade is due (the budget's theoretical arrival time).
    next_upgrade: Mutex<Option<Instant>>,
    open_websockets: AtomicUsize,
    upstream_down: AtomicBool,
}

/// A token bucket: `tokens` left at `at`, refilled at the configured rate up to its burst.
#[derive(Default)]
struct Bucket {
    tokens: f64,
    at: Option<Instant>,
}

impl Bucket {
    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let elapsed = self.at.map_or(f64::MAX, |at| (now - at).as_secs_f64());
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = Some(now);
    }
}

/// The ticket budget's burst: one second's worth, so a quiet replica answers a burst of
/// logins at once.
fn ticket_burst(rate: f64) -> f64 {
    rate.max(1.0)
}

/// The upgrade budget's burst: a twentieth of a second's worth (at least two), so that in any
/// second the upstream sees at most the budget plus a twentieth (burst + one second's
/// refill), however the upgrades bunch, with room left under a tenth for upgrades the
/// upstream answers a little after their token was taken. A whole second's burst would let
/// twice the budget through in the first second of a storm.
fn upgrade_burst(rate: f64) -> f64 {
    (rate / 20.0).max(2.0)
}

/// The schedule's burst, half the bucket's: when the schedule is full, the bucket keeps the
/// other half in reserve, so a client arriving a little after its slot does not push the
/// next one, arriving on time, out of the budget.
fn schedule_burst(rate: f64) -> f64 {
    (rate / 40.0).max(1.0)
}

/// Whether `bucket`, refilled at `rate` up to `burst(rate)` (`None`: no budget), has a token at
/// `now`; with `take`, also takes it.
fn draw(
    bucket: &Mutex<Bucket>,
    (rate, burst): (Option<f64>, fn(f64) -> f64),
    now: Instant,
    take: bool,
    refusal: Refusal,
) -> Result<(), Refusal> {
    let Some(rate) = rate else {
        return Ok(());
    };
    let mut bucket = bucket.lock().unwrap_or_else(|e| e.into_inner());
    bucket.refill(rate, burst(rate), now);
    if bucket.tokens < 1.0 {
        return Err(refusal);
    }
    if take {
        bucket.tokens -= 1.0;
    }
    Ok(())
}

impl Admission {
    /// With `subjects` counting each subject's sockets (shared through Redis or not).
    pub fn with_subjects(subjects: Subjects) -> Self {
        Admission {
            subjects,
            ..Admission::default()
        }
    }

    /// Whether a ticket may be issued at all now, decided before the caller's credentials
    /// are looked at: credentials that fail verification never use the budget.
    pub fn before_verification(
        &self,
        config: &AdmissionConfig,
        now: Instant,
    ) -> Result<(), Refusal> {
        if self.upstream_down.load(Ordering::Acquire) {
            return Err(Refusal::UpstreamUnavailable);
        }
        if config
            .max_websockets
            .is_some_and(|max| self.open_websockets.load(Ordering::Acquire) >= max)
        {
            return Err(Refusal::Websockets);
        }
        draw(
            &self.tickets,
            (config.tickets_per_second, ticket_burst),
            now,
            false,
            Refusal::TicketsRate,
        )
    }

    /// A verified caller takes a ticket from the budget (another may have taken the last one
    /// since `before_verification`).
    pub fn take_ticket(&self, config: &AdmissionConfig, now: Instant) -> Result<(), Refusal> {
        draw(
            &self.tickets,
            (config.tickets_per_second, ticket_burst),
            now,
            true,
            Refusal::TicketsRate,
        )
    }

    /// When a ticket issued now should be used: 0 while upgrades come slower than
    /// `upgrades_per_second` (its burst included), else the wait until its upgrade fits
    /// the budget. Each ticket issued takes its place in the schedule (the upgrade bucket's
    /// twin at the same rate, with half its burst, so a client that waits finds its token).
    pub fn schedule_upgrade(&self, config: &AdmissionConfig, now: Instant) -> Duration {
        let Some(rate) = config.upgrades_per_second else {
            return Duration::ZERO;
        };
        let interval = Duration::from_secs_f64(1.0 / rate);
        let burst = interval.mul_f64(schedule_burst(rate) - 1.0);
        let mut next = self.next_upgrade.lock().unwrap_or_else(|e| e.into_inner());
        let due = next.map_or(now, |due| due.max(now));
        *next = Some(due + interval);
        due.saturating_duration_since(now + burst)
    }

    /// Whether an upgrade may go to the upstream now (checked before its credentials are, so
    /// a refused one consumes no ticket).
    pub fn before_upgrade(&self, config: &AdmissionConfig, now: Instant) -> Result<(), Refusal> {
        draw(
            &self.upgrades,
            (config.upgrades_per_second, upgrade_burst),
            now,
            false,
            Refusal::UpgradesRate,
        )
    }

    /// An authenticated upgrade takes its place in the upgrade budget.
    pub fn take_upgrade(&self, config: &AdmissionConfig, now: Instant) -> Result<(), Refusal> {
        draw(
            &self.upgrades,
            (config.upgrades_per_second, upgrade_burst),
            now,
            true,
            Refusal::UpgradesRate,
        )
    }

    pub fn websocket_opened(&self) {
        self.open_websockets.fetch_add(1, Ordering::AcqRel);
    }

    pub fn websocket_closed(&self) {
        let _ = self
            .open_websockets
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// A connect to the upstream failed: until one succeeds, tickets are refused.
    pub fn upstream_failed(&self) {
        self.upstream_down.store(true, Ordering::Release);
    }

    pub fn upstream_reached(&self) {
        self.upstream_down.store(false, Ordering::Release);
    }

    /// Whether `subject` may have one more socket (checked once its credentials verified).
    pub async fn subject_has_room(
        &self,
        config: &AdmissionConfig,
        subject: &str,
    ) -> Result<Result<(), Refusal>, SharedError> {
        let Some(max) = config.max_websockets_per_subject else {
            return Ok(Ok(()));
        };
        let open = self.subjects.open_of(subject).await?;
        Ok(if open >= max {
            Err(Refusal::Subject)
        } else {
            Ok(())
        })
    }

    pub fn upstream_is_down(&self) -> bool {
        self.upstream_down.load(Ordering::Acquire)
    }
}

/// How often a replica that knows its upstream down tries to reach it: browsers only ask for
/// tickets, which are refused meanwhile, so without this nothing would ever connect again.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// One probe round: while the upstream is known down, one TCP connect to `upstream`; a
/// connect marks it reached. Returns the wait before the next round.
pub async fn probe(admission: &Admission, upstream: std::net::SocketAddr) -> Duration {
    if admission.upstream_is_down() {
        let connect = tokio::net::TcpStream::connect(upstream);
        if let Ok(Ok(_)) = tokio::time::timeout(PROBE_EVERY, connect).await {
            admission.upstream_reached();
        }
    }
    PROBE_EVERY
}

/// How long a refused client should wait: a whole number of seconds in `[base, 2 * base]`,
/// picked per answer, so refused clients do not come back together. `random` is any value.
pub fn retry_after(base: Duration, random: u32) -> u64 {
    let base = base.as_secs().max(1);
    base + u64::from(random) % (base + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rate: Option<f64>, max: Option<usize>) -> AdmissionConfig {
        AdmissionConfig {
            tickets_per_second: rate,
            max_websockets: max,
            upgrades_per_second: None,
            max_websockets_per_subject: None,
            retry_after: Duration::from_secs(5),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tickets_are_paced_to_the_upgrade_budget_after_a_short_burst() {
        let admission = Admission::default();
        let paced = AdmissionConfig {
            upgrades_per_second: Some(40.0),
            ..config(None, None)
        };
        let now = crate::clock::now();
        let waits: Vec<u128> = (0..8)
            .map(|_| admission.schedule_upgrade(&paced, now).as_millis())
            .collect();
        assert_eq!(waits, [0, 25, 50, 75, 100, 125, 150, 175]);
        let quiet = now + Duration::from_secs(10);
        assert_eq!(
            admission.schedule_upgrade(&paced, quiet),
            Duration::ZERO,
            "quiet again"
        );
        for _ in 0..2 {
            assert_eq!(admission.before_upgrade(&paced, now), Ok(()));
            assert_eq!(admission.take_upgrade(&paced, now), Ok(()));
        }
        assert_eq!(
            admission.before_upgrade(&paced, now),
            Err(Refusal::UpgradesRate)
        );
        assert_eq!(
            admission.before_upgrade(&paced, now + Duration::from_millis(25)),
            Ok(()),
            "the next one fits its slot"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_late_for_its_slot_does_not_push_the_next_one_out() {
        let admission = Admission::default();
        let paced = AdmissionConfig {
            upgrades_per_second: Some(10.0),
            ..config(None, None)
        };
        let now = crate::clock::now();
        let slots: Vec<Duration> = (0..20)
            .map(|_| admission.schedule_upgrade(&paced, now))
            .collect();
        // Every client arrives 30 ms after its slot, but the next on time.
        for pair in slots.chunks(2) {
            for (slot, late) in pair.iter().zip([30, 0]) {
                let at = now + *slot + Duration::from_millis(late);
                assert_eq!(admission.take_upgrade(&paced, at), Ok(()), "slot {slot:?}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_second_lets_more_than_the_upgrade_budget_and_a_twentieth_through() {
        let admission = Admission::default();
        let paced = AdmissionConfig {
            upgrades_per_second: Some(100.0),
            ..config(None, None)
        };
        let start = crate::clock::now();
        // An upgrade knocks every millisecond for three seconds, after a quiet spell.
        let admitted: Vec<u64> = (0..3000u64)
            .filter(|ms| {
                let now = start + Duration::from_millis(*ms);
                admission.take_upgrade(&paced, now).is_ok()
            })
            .collect();
        let busiest = (0..2000u64)
            .map(|from| {
                admitted
                    .iter()
                    .filter(|t| (from..from + 1000).contains(*t))
                    .count()
            })
            .max()
            .unwrap_or(0);
        assert!(
            (100..=105).contains(&busiest),
            "at most the burst (5) and one second's refill (100): {busiest}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_ticket_budget_holds_a_second_and_refills_at_its_rate() {
        let admission = Admission::default();
        let budget = config(Some(10.0), None);
        let now = crate::clock::now();
        for _ in 0..10 {
            assert_eq!(admission.before_verification(&budget, now), Ok(()));
            assert_eq!(admission.take_ticket(&budget, now), Ok(()));
        }
        assert_eq!(
            admission.before_verification(&budget, now),
            Err(Refusal::TicketsRate),
            "refused before any verification"
        );
        let later = now + Duration::from_millis(300);
        let taken = (0..10)
            .filter(|_| admission.take_ticket(&budget, later).is_ok())
            .count();
        assert_eq!(taken, 3, "300 ms at 10 a second");
        let much_later = later + Duration::from_secs(60);
        let taken = (0..30)
            .filter(|_| admission.take_ticket(&budget, much_later).is_ok())
            .count();
        assert_eq!(
            taken, 10,
            "the burst is one second's worth, however long it was quiet"
        );
    }

    #[test]
    fn open_sockets_and_the_upstream_gate_issuance() {
        let admission = Admission::default();
        let two = config(None, Some(2));
        let now = crate::clock::now();
        admission.websocket_opened();
        assert_eq!(admission.before_verification(&two, now), Ok(()));
        admission.websocket_opened();
        assert_eq!(
            admission.before_verification(&two, now),
            Err(Refusal::Websockets)
        );
        admission.websocket_closed();
        assert_eq!(admission.before_verification(&two, now), Ok(()));
        admission.upstream_failed();
        assert_eq!(
            admission.before_verification(&two, now),
            Err(Refusal::UpstreamUnavailable)
        );
        admission.upstream_reached();
        assert_eq!(admission.before_verification(&two, now), Ok(()));
    }

    #[test]
    fn the_advice_is_spread_over_base_to_twice_base() {
        let base = Duration::from_secs(5);
        let advised: std::collections::BTreeSet<u64> =
            (0..1000).map(|r| retry_after(base, r)).collect();
        assert_eq!(advised, (5..=10).collect());
    }
}
