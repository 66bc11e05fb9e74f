//! The ticket format: `tg2.<sealed>`, base64url without padding, where `sealed` is a
//! 12-byte random nonce followed by AES-256-GCM-SIV (RFC 8452) over the payload, tag last.
//!
//! The payload is 16 random bytes (the ticket's identity in the store), its `Lifetime` as
//! three big-endian values (expiry and the expiry of the login that bought it in Unix
//! seconds, minting in Unix milliseconds), the 8-byte id of the process run that minted it, and the caller's `Identity`
//! as JSON. Encrypting it means a proxy or CDN in front that logs URLs
//! learns neither `sub` nor any claim; authenticating it means nothing in an unverified
//! ticket is ever looked at.
//!
//! The key is derived with HKDF-SHA256 from `tickets.secret_file`, so the file's bytes are
//! never used as a cipher key directly. GCM-SIV is chosen for its nonce handling: random
//! 96-bit nonces are fine at millions of tickets per key, and even a repeated nonce would
//! only reveal that two tickets are equal (they never are: each holds a random id), where
//! plain AES-GCM would lose its authenticity. Tickets are minted without touching the store;
//! replicas sharing the secret accept each other's tickets.
//!
//! The `tg2.` prefix and the separate secret keep the two credentials apart: a ticket never
//! parses as a JWT and a JWT never carries the prefix.

use aws_lc_rs::aead::{AES_256_GCM_SIV, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::{hkdf, hmac};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use std::collections::BTreeMap;

use crate::auth::error::TicketProblem;
use crate::auth::{Identity, IssuerTag};

/// The caller as a ticket carries it: this codec's own wire format, with one-letter field
/// names because a ticket must stay under 256 characters.
#[derive(serde::Serialize, serde::Deserialize)]
struct Carried {
    /// `IssuerTag`, base64url; absent in tickets of earlier versions (no refresh then).
    #[serde(rename = "i", default, skip_serializing_if = "String::is_empty")]
    issuer: String,
    #[serde(rename = "s")]
    subject: String,
    #[serde(rename = "c", default, skip_serializing_if = "BTreeMap::is_empty")]
    claims: BTreeMap<String, String>,
    /// The claims STOMP patterns name, as lists.
    #[serde(rename = "l", default, skip_serializing_if = "BTreeMap::is_empty")]
    lists: BTreeMap<String, Vec<String>>,
}

pub const PREFIX: &str = "tg2.";
/// The contract's bound: a ticket fits any URL and any log redaction.
pub const MAX_TICKET_CHARS: usize = 256;
pub const ID_BYTES: usize = 16;
pub const RUN_BYTES: usize = 8;
const TIME_BYTES: usize = 8;
const TAG_BYTES: usize = 16;
const KEY_SALT: &[u8] = b"ticketgate tickets";
const KEY_INFO: &[u8] = b"tg2 aes-256-gcm-siv";
const SESSION_INFO: &[u8] = b"tg2 session handle";
const RESUME_LABEL: &[u8] = b"resume";
/// A session handle's bytes: 128 bits, 22 base64url characters.
const SESSION_BYTES: usize = 16;

pub type TicketId = [u8; ID_BYTES];
/// Which run of a process minted a ticket: a store that forgets on restart refuses the rest.
pub type RunId = [u8; RUN_BYTES];

/// When a ticket was minted (Unix milliseconds: a revocation must tell a ticket minted just
/// before it from one just after) and stops being redeemable, and when the login that bought
/// it expires (a WebSocket it opens is closed then); Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub minted_at_ms: u64,
    pub expires_at: u64,
    pub login_expires_at: u64,
}

/// A ticket whose seal opened and which has not expired.
pub struct Ticket {
    pub id: TicketId,
    /// The handle of the socket it opens (`Codec::session_of`).
    pub session: String,
    /// The socket's first resume token (`Codec::resume_of`).
    pub resume: String,
    pub lifetime: Lifetime,
    pub run: RunId,
    pub identity: Identity,
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the caller's identity is too large to fit a {MAX_TICKET_CHARS}-character ticket")]
    TooLarge,
    #[error("the system random generator failed")]
    Random,
    #[error("the ticket cipher failed")]
    Cipher,
}

pub struct Codec {
    key: LessSafeKey,
    /// Derives a ticket's session handle from its id (`session_of`).
    session_key: hmac::Key,
    random: SystemRandom,
}

/// A ticket and the handle of the socket it will open.
pub struct Sealed {
    pub ticket: String,
    pub session: String,
    /// The socket's first resume token (`Codec::resume_of`).
    pub resume: String,
}

impl Codec {
    pub fn new(secret: &[u8]) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, KEY_SALT).extract(secret);
        let okm = prk
            .expand(&[KEY_INFO], &AES_256_GCM_SIV)
            .expect("HKDF-SHA256 yields a 32-byte key");
        let session_key = prk
            .expand(&[SESSION_INFO], hmac::HMAC_SHA256)
            .expect("HKDF-SHA256 yields an HMAC-SHA256 key");
        Codec {
            key: LessSafeKey::new(UnboundKey::from(okm)),
            session_key: hmac::Key::from(session_key),
            random: SystemRandom::new(),
        }
    }

    /// A random value of `N` bytes from the system generator.
    pub fn random<const N: usize>(&self) -> Result<[u8; N], SealError> {
        let mut bytes = [0u8; N];
        self.random
            .fill(&mut bytes)
            .map_err(|_| SealError::Random)?;
        Ok(bytes)
    }

    /// The session handle of the socket a ticket with this `id` opens: HMAC-SHA256 under a
    /// key of its own derived from the ticket secret, cut to 128 bits. Derived, not carried,
    /// so a ticket grows by nothing; any replica sharing the secret derives the same handle,
    /// and the handle tells nothing of the ticket (nor the ticket of the handle, without the
    /// secret).
    pub fn session_of(&self, id: &TicketId) -> String {
        let tag = hmac::sign(&self.session_key, id);
        URL_SAFE_NO_PAD.encode(&tag.as_ref()[..SESSION_BYTES])
    }

    /// The first resume token of the socket a ticket with this `id` opens: derived as the
    /// session handle is (the same key over the id and a label of its own), so the replica
    /// that redeems the ticket knows the token the issuing replica answered with.
    pub fn resume_of(&self, id: &TicketId) -> String {
        let mut context = hmac::Context::with_key(&self.session_key);
        context.update(id);
        context.update(RESUME_LABEL);
        URL_SAFE_NO_PAD.encode(&context.sign().as_ref()[..SESSION_BYTES])
    }

    pub fn seal(
        &self,
        identity: &Identity,
        lifetime: Lifetime,
        run: &RunId,
    ) -> Result<Sealed, SealError> {
        let nonce: [u8; NONCE_LEN] = self.random()?;
        let id: TicketId = self.random()?;
        let mut sealed = Vec::with_capacity(MAX_TICKET_CHARS);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&id);
        for time in [
            lifetime.expires_at,
            lifetime.minted_at_ms,
            lifetime.login_expires_at,
        ] {
            sealed.extend_from_slice(&time.to_be_bytes());
        }
        sealed.extend_from_slice(run);
        let carried = Carried {
            issuer: URL_SAFE_NO_PAD.encode(identity.issuer.0),
            subject: identity.subject.clone(),
            claims: identity.claims.clone(),
            lists: identity.lists.clone(),
        };
        serde_json::to_writer(&mut sealed, &carried).map_err(|_| SealError::TooLarge)?;
        let (_, payload) = sealed.split_at_mut(NONCE_LEN);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(PREFIX),
                payload,
            )
            .map_err(|_| SealError::Cipher)?;
        sealed.extend_from_slice(tag.as_ref());
        let mut ticket = String::with_capacity(MAX_TICKET_CHARS);
        ticket.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(&sealed, &mut ticket);
        if ticket.len() > MAX_TICKET_CHARS {
            return Err(SealError::TooLarge);
        }
        Ok(Sealed {
            ticket,
            session: self.session_of(&id),
            resume: self.resume_of(&id),
        })
    }

    /// Opens the seal first (nothing in an unauthenticated ticket is looked at), then checks
    /// expiry.
    pub fn open(&self, ticket: &str, now: u64) -> Result<Ticket, TicketProblem> {
        if ticket.len() > MAX_TICKET_CHARS {
            return Err(TicketProblem::Invalid);
        }
        let encoded = ticket.strip_prefix(PREFIX).ok_or(TicketProblem::Invalid)?;
        let mut sealed = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| TicketProblem::Invalid)?;
        if sealed.len() < NONCE_LEN + TAG_BYTES {
            return Err(TicketProblem::Invalid);
        }
        let (nonce, payload) = sealed.split_at_mut(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| TicketProblem::Invalid)?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(PREFIX), payload)
            .map_err(|_| TicketProblem::Invalid)?;
        let (id, rest) = plain
            .split_first_chunk::<ID_BYTES>()
            .ok_or(TicketProblem::Invalid)?;
        let (times, rest) = rest
            .split_first_chunk::<{ 3 * TIME_BYTES }>()
            .ok_or(TicketProblem::Invalid)?;
        let (run, identity) = rest
            .split_first_chunk::<RUN_BYTES>()
            .ok_or(TicketProblem::Invalid)?;
        let time = |i: usize| {
            let mut bytes = [0; TIME_BYTES];
            bytes.copy_from_slice(&times[i * TIME_BYTES..(i + 1) * TIME_BYTES]);
            u64::from_be_bytes(bytes)
        };
        let lifetime = Lifetime {
            expires_at: time(0),
            minted_at_ms: time(1),
            login_expires_at: time(2),
        };
        if now >= lifetime.expires_at {
            return Err(TicketProblem::Expired);
        }
        let carried: Carried =
            serde_json::from_slice(identity).map_err(|_| TicketProblem::Invalid)?;
        let mut issuer = IssuerTag::default();
        if let Ok(tag) = URL_SAFE_NO_PAD.decode(&carried.issuer)
            && let Ok(tag) = <[u8; 8]>::try_from(tag.as_slice())
        {
            issuer = IssuerTag(tag);
        }
        let identity = Identity {
            issuer,
            subject: carried.subject,
            claims: carried.claims,
            lists: carried.lists,
        };
        Ok(Ticket {
            session: self.session_of(id),
            resume: self.resume_of(id),
            id: *id,
            lifetime,
            run: *run,
            identity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: RunId = [3; RUN_BYTES];

    fn until(expires_at: u64) -> Lifetime {
        Lifetime {
            minted_at_ms: (expires_at - 30) * 1000,
            expires_at,
            login_expires_at: expires_at + 600,
        }
    }

    fn alice() -> Identity {
        Identity {
            issuer: IssuerTag::of("https://auth.example.com/"),
            subject: "alice".into(),
            claims: [("email".to_string(), "alice@example.com".to_string())].into(),
            lists: Default::default(),
        }
    }

    #[test]
    fn a_sealed_ticket_opens_with_its_identity() {
        let codec = Codec::new(&[7; 32]);
        let ticket = codec
            .seal(&alice(), until(1_000), &RUN)
            .expect("seal")
            .ticket;
        assert!(ticket.starts_with(PREFIX) && ticket.len() <= MAX_TICKET_CHARS);
        assert!(
            ticket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        );
        let opened = codec.open(&ticket, 999).expect("open");
        assert_eq!(opened.identity, alice());
        assert_eq!(opened.lifetime, until(1_000));
    }

    #[test]
    fn a_ticket_reveals_nothing_about_its_caller() {
        let codec = Codec::new(&[7; 32]);
        let ticket = codec
            .seal(&alice(), until(1_000), &RUN)
            .expect("seal")
            .ticket;
        let bytes = URL_SAFE_NO_PAD
            .decode(&ticket[PREFIX.len()..])
            .expect("base64url");
        for needle in [&b"alice"[..], b"example.com", &1_000u64.to_be_bytes()] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle));
        }
        assert_eq!(codec.open(&ticket, 999).expect("open").run, RUN);
    }

    #[test]
    fn a_ticket_carries_the_claim_lists_stomp_patterns_name() {
        let codec = Codec::new(&[7; 32]);
        let mut identity = alice();
        identity.lists = [(
            "rooms".to_string(),
            vec!["r1".to_string(), "r2".to_string()],
        )]
        .into();
        let sealed = codec.seal(&identity, until(1_000), &RUN).expect("seal");
        assert_eq!(
            codec.open(&sealed.ticket, 999).expect("open").identity,
            identity
        );
    }

    #[test]
    fn a_tickets_session_handle_is_derived_alike_at_both_ends_and_nowhere_else() {
        let codec = Codec::new(&[7; 32]);
        let sealed = codec.seal(&alice(), until(1_000), &RUN).expect("seal");
        let opened = codec.open(&sealed.ticket, 999).expect("open");
        assert_eq!(opened.session, sealed.session, "issuer and holder agree");
        assert_eq!(sealed.session.len(), 22, "128 bits, base64url");
        assert!(!sealed.ticket.contains(&sealed.session));
        let other = Codec::new(&[8; 32]);
        assert_ne!(
            other.session_of(&opened.id),
            sealed.session,
            "keyed by the secret"
        );
        let again = codec.seal(&alice(), until(1_000), &RUN).expect("seal");
        assert_ne!(again.session, sealed.session);
    }

    #[test]
    fn every_ticket_is_unique() {
        let codec = Codec::new(&[7; 32]);
        let a = codec
            .seal(&alice(), until(1_000), &RUN)
            .expect("seal")
            .ticket;
        let b = codec
            .seal(&alice(), until(1_000), &RUN)
            .expect("seal")
            .ticket;
        assert_ne!(a, b);
    }

    #[test]
    fn expiry_tampering_and_other_secrets_are_refused() {
        let codec = Codec::new(&[7; 32]);
        let ticket = codec
            .seal(&alice(), until(1_000), &RUN)
            .expect("seal")
            .ticket;
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
        assert!(matches!(codec.open("tg2.", 0), Err(TicketProblem::Invalid)));
    }

    #[test]
    fn an_oversized_identity_is_refused_at_issuance() {
        let codec = Codec::new(&[7; 32]);
        let huge = Identity {
            issuer: IssuerTag::default(),
            subject: "x".repeat(300),
            claims: Default::default(),
            lists: Default::default(),
        };
        assert!(matches!(
            codec.seal(&huge, until(1_000), &RUN),
            Err(SealError::TooLarge)
        ));
    }
}
