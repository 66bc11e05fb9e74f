//! Answers ticketgate writes itself on the data plane: a `Reply`, or a refusal
//! (`crate::refusal`) turned into one. No body or header here is ever built from the
//! request's credentials.

use bytes::Bytes;
use http::HeaderName;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use crate::admission::{self, Admission, AdmissionConfig};
pub use crate::refusal::Rejection;

/// A complete response ticketgate writes.
pub struct Reply {
    pub status: u16,
    pub body: Option<serde_json::Value>,
    pub headers: Vec<(HeaderName, String)>,
    /// Set when the reply is a refusal, for the access log and metrics.
    pub rejection: Option<Rejection>,
}

impl Reply {
    pub fn new(
        status: u16,
        body: Option<serde_json::Value>,
        headers: Vec<(HeaderName, String)>,
    ) -> Self {
        Reply {
            status,
            body,
            headers,
            rejection: None,
        }
    }
}

impl From<Rejection> for Reply {
    fn from(rejection: Rejection) -> Self {
        Reply {
            status: rejection.status(),
            body: Some(rejection.body()),
            headers: rejection.headers(),
            rejection: Some(rejection),
        }
    }
}

/// Writes the reply; JSON bodies are never cached. After a refusal of an upgrade, or of a
/// request with a body, the connection is closed: the body was never read, so it cannot
/// carry another request. A bodiless refusal keeps the connection, so a browser asking again
/// after its `Retry-After` (or a client hammering the ticket endpoint) costs no new
/// connection.
pub async fn send(session: &mut Session, reply: Reply) -> pingora::Result<()> {
    if reply.status >= 400 && (session.is_upgrade_req() || !session.is_body_empty()) {
        session.set_keepalive(None);
    }
    let body = reply.body.map(|json| Bytes::from(json.to_string()));
    let mut header = ResponseHeader::build(reply.status, Some(4 + reply.headers.len()))?;
    header.insert_header(
        CONTENT_LENGTH,
        body.as_ref().map_or(0, Bytes::len).to_string(),
    )?;
    if body.is_some() {
        header.insert_header(CONTENT_TYPE, "application/json")?;
        header.insert_header(CACHE_CONTROL, "no-store")?;
    }
    for (name, value) in reply.headers {
        header.append_header(name, value)?;
    }
    session
        .write_response_header(Box::new(header), body.is_none())
        .await?;
    if body.is_some() {
        session.write_response_body(body, true).await?;
    }
    Ok(())
}

/// An admission refusal, with its wait picked in `[base, 2 * base]`.
pub fn not_now(refusal: admission::Refusal, config: &AdmissionConfig) -> Reply {
    let mut random = [0u8; 4];
    // A failed generator only makes the wait the base one.
    let _ = aws_lc_rs::rand::fill(&mut random);
    let wait = admission::retry_after(config.retry_after, u32::from_be_bytes(random));
    Rejection::NotNow(refusal, wait).into()
}

/// `Ok` when `subject` may have one more socket under `config`; else the refusal to send: too
/// many sockets (with its wait), or the store that counts them unreachable.
pub async fn room_for(
    admission: &Admission,
    config: &AdmissionConfig,
    subject: &str,
) -> Result<(), Reply> {
    match admission.subject_has_room(config, subject).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(refusal)) => Err(not_now(refusal, config)),
        Err(_) => Err(Rejection::StoreUnavailable.into()),
    }
}
