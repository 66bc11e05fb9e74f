//! The ticket format: `tg1.<payload>.<tag>`, both parts base64url without padding.
//!
//! The payload is 16 random bytes (the ticket's identity in the store), the expiry as
//! big-endian Unix seconds, and the caller's `Identity` as JSON. The tag is HMAC-SHA256 over
//! `tg1.<payload>` with `tickets.secret_file`, checked in constant time. Tickets are minted
//! without touching the store; replicas sharing the secret accept each other's tickets.
//!
//! The `tg1.` prefix and the separate secret keep the two credentials apart: a ticket never
//! parses as a JWT and a JWT never carries the prefix or the tag.

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::auth::Identity;
use crate::auth::error::TicketProblem;

pub const PREFIX: &str = "tg1.";
/// The contract's bound: a ticket fits any URL and any log redaction.
pub const MAX_TICKET_CHARS: usize = 256;
pub const ID_BYTES: usize = 16;
const EXPIRY_BYTES: usize = 8;

pub type TicketId = [u8; ID_BYTES];

/// A ticket whose tag verified and which has not expired.
pub struct Ticket {
    pub id: TicketId,
    pub expires_at: u64,
    pub identity: Identity,
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the caller's identity is too large to fit a {MAX_TICKET_CHARS}-character ticket")]
    TooLarge,
    #[error("the system random generator failed")]
    Random,
}

pub struct Codec {
    key: hmac::Key,
    random: SystemRandom,
}

impl Codec {
    pub fn new(secret: &[u8]) -> Self {
        Codec {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            random: SystemRandom::new(),
        }
    }

    pub fn seal(&self, identity: &Identity, expires_at: u64) -> Result<String, SealError> {
        let mut payload = vec![0u8; ID_BYTES];
        self.random
            .fill(&mut payload)
            .map_err(|_| SealError::Random)?;
        payload.extend_from_slice(&expires_at.to_be_bytes());
        serde_json::to_writer(&mut payload, identity).map_err(|_| SealError::TooLarge)?;
        let mut ticket = String::with_capacity(MAX_TICKET_CHARS);
        ticket.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(&payload, &mut ticket);
        let tag = hmac::sign(&self.key, ticket.as_bytes());
        ticket.push('.');
        URL_SAFE_NO_PAD.encode_string(tag.as_ref(), &mut ticket);
        if ticket.len() > MAX_TICKET_CHARS {
            return Err(SealError::TooLarge);
        }
        Ok(ticket)
    }

    /// Verifies the tag first (nothing in an unverified ticket is looked at), then expiry.
    pub fn open(&self, ticket: &str, now: u64) -> Result<Ticket, TicketProblem> {
        if ticket.len() > MAX_TICKET_CHARS || !ticket.starts_with(PREFIX) {
            return Err(TicketProblem::Invalid);
        }
        let (signed, tag) = ticket.rsplit_once('.').ok_or(TicketProblem::Invalid)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TicketProblem::Invalid)?;
        hmac::verify(&self.key, signed.as_bytes(), &tag).map_err(|_| TicketProblem::Invalid)?;
        let payload = URL_SAFE_NO_PAD
            .decode(&signed[PREFIX.len()..])
            .map_err(|_| TicketProblem::Invalid)?;
        let (id, rest) = payload
            .split_first_chunk::<ID_BYTES>()
            .ok_or(TicketProblem::Invalid)?;
        let (expiry, identity) = rest
            .split_first_chunk::<EXPIRY_BYTES>()
            .ok_or(TicketProblem::Invalid)?;
        let expires_at = u64::from_be_bytes(*expiry);
        if now >= expires_at {
            return Err(TicketProblem::Expired);
        }
        let identity = serde_json::from_slice(identity).map_err(|_| TicketProblem::Invalid)?;
        Ok(Ticket {
            id: *id,
            expires_at,
            identity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Identity {
        Identity {
            subject: "alice".into(),
            claims: [("email".to_string(), "alice@example.com".to_string())].into(),
        }
    }

    #[test]
    fn a_sealed_ticket_opens_with_its_identity() {
        let codec = Codec::new(&[7; 32]);
        let ticket = codec.seal(&alice(), 1_000).expect("seal");
        assert!(ticket.starts_with(PREFIX) && ticket.len() <= MAX_TICKET_CHARS);
        assert!(
            ticket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        );
        let opened = codec.open(&ticket, 999).expect("open");
        assert_eq!(opened.identity, alice());
        assert_eq!(opened.expires_at, 1_000);
    }

    #[test]
    fn every_ticket_is_unique() {
        let codec = Codec::new(&[7; 32]);
        let a = codec.seal(&alice(), 1_000).expect("seal");
        let b = codec.seal(&alice(), 1_000).expect("seal");
        assert_ne!(a, b);
    }

    #[test]
    fn expiry_tampering_and_other_secrets_are_refused() {
        let codec = Codec::new(&[7; 32]);
        let ticket = codec.seal(&alice(), 1_000).expect("seal");
        assert!(matches!(
            codec.open(&ticket, 1_000),
            Err(TicketProblem::Expired)
        ));
        let other = Codec::new(&[8; 32]);
        assert!(matches!(
            other.open(&ticket, 0),
            Err(TicketProblem::Invalid)
        ));
        let mut flipped = ticket.clone().into_bytes();
        flipped[PREFIX.len() + 3] ^= 0x01;
        let flipped = String::from_utf8(flipped).expect("ascii");
        assert!(matches!(
            codec.open(&flipped, 0),
            Err(TicketProblem::Invalid)
        ));
        assert!(matches!(
            codec.open(&ticket[..ticket.len() - 4], 0),
            Err(TicketProblem::Invalid)
        ));
        assert!(matches!(codec.open("tg1.", 0), Err(TicketProblem::Invalid)));
    }

    #[test]
    fn an_oversized_identity_is_refused_at_issuance() {
        let codec = Codec::new(&[7; 32]);
        let huge = Identity {
            subject: "x".repeat(300),
            claims: Default::default(),
        };
        assert!(matches!(codec.seal(&huge, 1_000), Err(SealError::TooLarge)));
    }
}
