//! Credentials in `Sec-WebSocket-Protocol`, for clients that keep them out of URLs: an
//! upgrade may offer `ticketgate.ticket.<ticket>` or `ticketgate.bearer.<JWT>` as one of its
//! protocols, and `ticketgate` as the protocol the handshake's answer names when the
//! application offers none (a browser fails a handshake whose answer picks none of the
//! protocols it offered). The Kubernetes API server carries bearer tokens the same way. A
//! resume names its socket the same way: `ticketgate.resume.<token>.<count>` (`crate::resume`).
//!
//! This reads the header; the proxy takes the credential and the marker out before the
//! upstream and answers with the marker when nothing else was offered.

/// The entry naming ticketgate itself, answered when no application protocol remains.
pub const MARKER: &str = "ticketgate";
const TICKET_PREFIX: &str = "ticketgate.ticket.";
const BEARER_PREFIX: &str = "ticketgate.bearer.";
const RESUME_PREFIX: &str = "ticketgate.resume.";

/// A credential offered as a protocol entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried<'a> {
    Ticket(&'a str),
    Bearer(&'a str),
}

/// What an upgrade's `Sec-WebSocket-Protocol` offers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Offered<'a> {
    /// The credential entries, in order (more than one is refused).
    pub credentials: Vec<Carried<'a>>,
    /// Whether `ticketgate` was offered.
    pub marker: bool,
    /// Resume entries: what follows `ticketgate.resume.` (more than one is refused).
    pub resumes: Vec<&'a str>,
    /// The application's own protocols, in order.
    pub others: Vec<&'a str>,
    /// Whether the header held anything that is not text (then nothing is taken from it).
    pub unreadable: bool,
}

impl<'a> Offered<'a> {
    /// Reads every `Sec-WebSocket-Protocol` value (a comma-separated list each).
    pub fn read(values: impl Iterator<Item = &'a [u8]>) -> Self {
        let mut offered = Offered::default();
        for value in values {
            let Ok(text) = std::str::from_utf8(value) else {
                offered.unreadable = true;
                continue;
            };
            for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                offered.add(entry);
            }
        }
        offered
    }

    fn add(&mut self, entry: &'a str) {
        if entry == MARKER {
            self.marker = true;
        } else if let Some(ticket) = entry.strip_prefix(TICKET_PREFIX) {
            self.credentials.push(Carried::Ticket(ticket));
        } else if let Some(token) = entry.strip_prefix(BEARER_PREFIX) {
            self.credentials.push(Carried::Bearer(token));
        } else if let Some(resume) = entry.strip_prefix(RESUME_PREFIX) {
            self.resumes.push(resume);
        } else {
            self.others.push(entry);
        }
    }

    /// Whether ticketgate has anything to take out of the header.
    pub fn concerns_us(&self) -> bool {
        !self.unreadable
            && (self.marker || !self.credentials.is_empty() || !self.resumes.is_empty())
    }

    /// The header the upstream gets instead: the application's protocols, or none.
    pub fn forwarded(&self) -> Option<String> {
        (!self.others.is_empty()).then(|| self.others.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn read(values: &[&str]) -> Offered<'static> {
        let values: Vec<&'static [u8]> = values
            .iter()
            .map(|v| &*Box::leak(v.as_bytes().to_vec().into_boxed_slice()))
            .collect();
        Offered::read(values.into_iter())
    }

    #[test]
    fn credentials_and_the_marker_are_taken_out() {
        let offered = read(&["ticketgate, ticketgate.ticket.tg2.abc", "v12.stomp"]);
        assert_eq!(offered.credentials, vec![Carried::Ticket("tg2.abc")]);
        assert!(offered.marker && offered.concerns_us());
        assert_eq!(offered.forwarded().as_deref(), Some("v12.stomp"));

        let offered = read(&["ticketgate.bearer.a.b.c , ticketgate"]);
        assert_eq!(offered.credentials, vec![Carried::Bearer("a.b.c")]);
        assert_eq!(offered.forwarded(), None);
    }

    #[test]
    fn application_protocols_alone_are_not_ours() {
        let offered = read(&["v12.stomp, v11.stomp", "TicketGate.ticket.x"]);
        assert!(!offered.concerns_us());
        assert_eq!(
            offered.others,
            vec!["v12.stomp", "v11.stomp", "TicketGate.ticket.x"]
        );
    }

    #[test]
    fn every_credential_entry_counts() {
        let offered = read(&["ticketgate.ticket.a, ticketgate.bearer.b, ticketgate.ticket."]);
        assert_eq!(offered.credentials.len(), 3);
    }

    proptest! {
        /// Whatever the list, no credential or marker survives into what the upstream gets,
        /// and every application protocol does, in order.
        #[test]
        fn the_forwarded_list_is_the_application_protocols(
            entries in prop::collection::vec(
                prop_oneof![
                    "[a-z0-9.]{1,12}",
                    Just("ticketgate".to_string()),
                    "ticketgate\\.ticket\\.[A-Za-z0-9._-]{0,20}",
                    "ticketgate\\.bearer\\.[A-Za-z0-9._-]{0,20}",
                ],
                0..8,
            ),
        ) {
            let header = entries.join(", ");
            let offered = Offered::read(std::iter::once(header.as_bytes()));
            let forwarded = offered.forwarded().unwrap_or_default();
            let kept: Vec<&str> = forwarded.split(", ").filter(|e| !e.is_empty()).collect();
            let expected: Vec<&str> = entries
                .iter()
                .map(String::as_str)
                .filter(|e| {
                    *e != MARKER
                        && !e.starts_with(TICKET_PREFIX)
                        && !e.starts_with(BEARER_PREFIX)
                })
                .collect();
            prop_assert_eq!(kept, expected);
        }
    }
}
