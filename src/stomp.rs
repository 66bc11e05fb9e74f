//! STOMP destinations by claim: on a route with `stomp:`, the client's SUBSCRIBE and SEND
//! frames are judged by the caller's claims before any byte of them reaches the broker.
//! `pattern` says which destinations a caller may use, `guard` reads the frames.

pub mod guard;
pub mod pattern;

use std::collections::BTreeSet;

use pattern::{ClaimLists, Pattern};

/// A route's `stomp:` rules: the destinations its callers may subscribe to and send to.
#[derive(Debug)]
pub struct StompRules {
    pub subscribe: Vec<Pattern>,
    pub send: Vec<Pattern>,
}

/// The claim every caller has: its subject, not read as a list.
pub const SUBJECT_CLAIM: &str = "sub";

impl StompRules {
    /// Whether a `command` frame to `destination` may pass for a caller with `claims`: a
    /// SUBSCRIBE or SEND when a pattern of its command matches; anything else always.
    pub fn allows(&self, command: &str, destination: &str, claims: &ClaimLists) -> bool {
        let patterns = match command {
            "SUBSCRIBE" => &self.subscribe,
            "SEND" => &self.send,
            _ => return true,
        };
        patterns.iter().any(|p| p.matches(destination, claims))
    }

    /// The claims the patterns name, besides the subject.
    pub fn listed_claims(&self) -> BTreeSet<String> {
        self.subscribe
            .iter()
            .chain(&self.send)
            .flat_map(Pattern::claims)
            .filter(|name| *name != SUBJECT_CLAIM)
            .map(str::to_owned)
            .collect()
    }
}

/// A server WebSocket text frame holding a STOMP `ERROR` frame with `message` (and
/// `receipt-id` when the refused frame asked for a receipt): sent before ticketgate's close
/// frame on a STOMP route, so STOMP clients report why.
pub fn error_frame(message: &str, receipt: Option<&str>) -> Vec<u8> {
    let mut stomp = format!("ERROR\nmessage:{}\n", escaped(message));
    if let Some(receipt) = receipt {
        stomp.push_str(&format!("receipt-id:{}\n", escaped(receipt)));
    }
    stomp.push_str("\n\0");
    let mut frame = vec![0x81];
    match stomp.len() {
        n if n < 126 => frame.push(n as u8),
        n => {
            frame.push(126);
            frame.extend_from_slice(&(n.min(usize::from(u16::MAX)) as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(stomp.as_bytes());
    frame
}

/// A header value with STOMP 1.2's escapes.
fn escaped(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
        .replace(':', "\\c")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_frame_names_the_reason_and_the_receipt_escaped() {
        let frame = error_frame("forbidden destination", Some("r:1\n"));
        assert_eq!(frame[0], 0x81);
        assert_eq!(usize::from(frame[1]), frame.len() - 2);
        assert_eq!(
            &frame[2..],
            b"ERROR\nmessage:forbidden destination\nreceipt-id:r\\c1\\n\n\n\0"
        );
    }
}
