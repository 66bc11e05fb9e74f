//! A resume, answered by ticketgate itself: the upstream is already connected and must not
//! see a second handshake, so the 101 is ticketgate's (RFC 6455 §4.2.2), and the client's
//! connection goes to its socket's relay (`resume::Door`) once Pingora let go of the request.

use std::sync::Arc;

use aws_lc_rs::digest;
use base64::Engine;
use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, UPGRADE,
};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use super::admit::Resuming;
use super::upgrade;
use crate::connection::{self, Handover};
use crate::resume::{Door, Joining, Knock};
use crate::subprotocol;

/// RFC 6455 §1.3: the GUID a server appends to the client's key.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A resume answered with 101, its connection not yet with its socket.
pub struct Rejoin {
    door: Arc<Door>,
    received: u64,
    client: Option<Arc<Handover>>,
}

/// `Sec-WebSocket-Accept` for `key`: base64 of the SHA-1 of the key and the GUID.
pub fn accept_of(key: &[u8]) -> String {
    let mut context = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    context.update(key);
    context.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(context.finish())
}

/// Writes the 101 and asks for the connection to be handed over once it is out.
pub async fn answer(session: &mut Session, resuming: Resuming) -> pingora::Result<Rejoin> {
    let key = session
        .req_header()
        .headers
        .get(SEC_WEBSOCKET_KEY)
        .map(|key| accept_of(key.as_bytes()))
        .unwrap_or_default();
    let mut response = ResponseHeader::build(101, Some(4))?;
    response.insert_header(UPGRADE, "websocket")?;
    response.insert_header(CONNECTION, "Upgrade")?;
    response.insert_header(SEC_WEBSOCKET_ACCEPT, key)?;
    if let Some(token) = &resuming.next_token {
        response.insert_header(upgrade::RESUME_HEADER, token.as_str())?;
    }
    if resuming.answer_marker {
        response.insert_header(SEC_WEBSOCKET_PROTOCOL, subprotocol::MARKER)?;
    }
    if let Some(ending) = connection::ending(session) {
        ending.upgrading(None);
    }
    let client = connection::hand_over(session);
    session
        .write_response_header(Box::new(response), false)
        .await?;
    Ok(Rejoin {
        door: resuming.door,
        received: resuming.received,
        client,
    })
}

/// The resumed connection goes to its socket (not when its 101 never got out: the socket
/// stays held until its window passes).
pub fn join(rejoin: Rejoin) {
    if let Some(client) = rejoin.client.and_then(|handover| handover.take()) {
        rejoin.door.knock(Knock::Join(Joining {
            client: Box::new(client),
            received: rejoin.received,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::accept_of;

    #[test]
    fn the_accept_value_is_rfc_6455s_example() {
        assert_eq!(
            accept_of(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
