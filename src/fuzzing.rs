//! Entry points for the parsers that see attacker bytes, each asserting what must hold for
//! any input. `fuzz/` drives them with cargo fuzz (nightly); on stable the unit test below
//! replays every corpus file through the same functions, so CI checks the corpus either way.

use std::sync::LazyLock;
use std::time::Duration;

use pingora::http::RequestHeader;

use crate::limits::{H2Headers, Limits, Phase};
use crate::redact::Shapes;
use crate::tickets::codec::{self, Codec};
use crate::{auth, boundary, live, query, redact, subprotocol};

const SHAPES: Shapes = Shapes {
    ticket_param: "ticket",
    ticket_prefix: codec::PREFIX,
};

/// A target that is accepted reads back as itself: its canonical path is canonical, has no
/// dot segment, and routes the same way when read again.
pub fn boundary_read(data: &[u8]) {
    for is_options in [false, true] {
        let Ok(target) = boundary::read(data, is_options) else {
            continue;
        };
        assert!(
            !target.route_path.split('/').any(|s| s == "." || s == ".."),
            "dot segment in {}",
            target.route_path
        );
        if target.path != "*" {
            let again = boundary::read(target.path.as_bytes(), false)
                .unwrap_or_else(|e| panic!("canonical {} refused: {e}", target.path));
            assert_eq!(again.route_path, target.route_path);
            assert!(!again.rewritten, "{} is not canonical", target.path);
        }
    }
}

/// A query without the ticket parameter has none left, and keeps every other pair.
pub fn query_without(data: &[u8]) {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let _ = query::single_value(Some(query), "ticket");
    let others = query::pairs(query).filter(|p| p.name() != "ticket").count();
    match query::without(query, "ticket") {
        Some(kept) => {
            assert!(matches!(
                query::single_value(Some(&kept), "ticket"),
                Ok(None)
            ));
            assert_eq!(query::pairs(&kept).count(), others);
        }
        None => assert_eq!(others, 0),
    }
}

/// Redaction is a fixed point: what it leaves holds nothing it would redact.
pub fn redact_target(data: &[u8]) {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    let once = redact::target(target, &SHAPES);
    assert_eq!(redact::target(&once, &SHAPES), once);
}

static CODEC: LazyLock<Codec> = LazyLock::new(|| Codec::new(&[7; 32]));

/// No input opens as a ticket without the key, and none panics the opener.
pub fn ticket_open(data: &[u8]) {
    let Ok(ticket) = std::str::from_utf8(data) else {
        return;
    };
    assert!(CODEC.open(ticket, 0).is_err(), "forged a ticket");
}

/// Any `Authorization` value yields no token, a refusal, or a bounded non-empty token.
pub fn bearer_token(data: &[u8]) {
    let Ok(mut header) = RequestHeader::build("GET", b"/", None) else {
        return;
    };
    if header
        .insert_header(http::header::AUTHORIZATION, data)
        .is_err()
    {
        return;
    }
    if let Ok(Some(token)) = auth::bearer_token(&header) {
        assert!(!token.is_empty() && token.len() <= auth::MAX_TOKEN_BYTES);
        assert_eq!(token.trim(), token);
    }
}

/// A JWT's parts and claims are read without panicking: an accepted compact form signs
/// exactly the token up to its last dot, and the same payload always reads the same.
pub fn jwt_token(data: &[u8]) {
    if let Ok(token) = std::str::from_utf8(data)
        && let Ok(compact) = auth::compact::Compact::parse(token)
    {
        let last_dot = token.rfind('.').expect("three parts");
        assert_eq!(compact.signing_input, &token[..last_dot]);
    }
    let kept = ["email".to_string(), "aud".to_string()];
    let first = auth::claims::Claims::read(data, &kept).map(|c| c.kept);
    assert_eq!(
        first,
        auth::claims::Claims::read(data, &kept).map(|c| c.kept)
    );
}

/// The upstream's bytes after a 101, cut into writes where the first byte says: the frame
/// tracker's next boundary is where following the bytes lands on one, and it never panics
/// (a close frame must never be spliced into a frame, whatever the upstream sends).
pub fn outgoing_frames(data: &[u8]) {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let step = usize::from(cut).max(1);
    let mut outgoing = live::Outgoing::default();
    outgoing.advance(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
    for write in bytes.chunks(step) {
        let expected = outgoing.boundary_within(write);
        let mut ahead = outgoing.clone();
        let mut first = None;
        for (i, byte) in write.iter().enumerate() {
            ahead.advance(std::slice::from_ref(byte));
            if ahead.at_boundary() && first.is_none() {
                first = Some(i + 1);
            }
        }
        assert_eq!(expected, first);
        outgoing.advance(write);
        assert_eq!(outgoing, ahead);
    }
}

/// An upstream's answer to a handshake, cut into reads where the first byte says: the bytes
/// Pingora is shown and the bytes kept for the relay are the answer, in order, and the
/// relay's start right after the first blank line of a 101's head, never inside it.
pub fn upstream_head(data: &[u8]) {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let mut head = crate::handover::Head::default();
    let (mut shown, mut kept) = (Vec::new(), None);
    for read in bytes.chunks(usize::from(cut).max(1)) {
        if kept.is_some() {
            break;
        }
        match head.read(read) {
            Some(n) => {
                shown.extend_from_slice(&read[..n]);
                kept = Some(shown.len());
            }
            None => shown.extend_from_slice(read),
        }
    }
    if let Some(at) = kept {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + 4);
        assert_eq!(Some(at), end, "the relay's bytes start after the head");
        let status_line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
        assert_eq!(status_line.split(|b| *b == b' ').nth(1), Some(&b"101"[..]));
    }
    assert!(bytes.starts_with(&shown));
}

/// An h2 client's bytes, cut into reads where the first byte says: the frame follower ends
/// where following the bytes one by one ends, the header deadline with it, and it never
/// panics (a frame length or flag an attacker picks must not break the header deadline).
pub fn h2_headers(data: &[u8]) {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        header_timeout: Duration::from_secs(10),
        keepalive_timeout: Duration::from_secs(60),
        write_timeout: Duration::from_secs(60),
    };
    let (chunked, one_by_one) = (Phase::new(limits), Phase::new(limits));
    let (mut by_chunk, mut by_byte) = (H2Headers::default(), H2Headers::default());
    for read in bytes.chunks(usize::from(cut).max(1)) {
        by_chunk.advance(read, &chunked);
        for byte in read {
            by_byte.advance(std::slice::from_ref(byte), &one_by_one);
        }
        assert_eq!(by_chunk, by_byte);
        assert_eq!(
            chunked.deadline().is_none(),
            one_by_one.deadline().is_none()
        );
    }
}

/// Whatever `Sec-WebSocket-Protocol` holds, what the upstream is offered instead holds no
/// credential entry and no marker, and every credential taken out is one the header held.
pub fn subprotocol_offered(data: &[u8]) {
    let offered = subprotocol::Offered::read(data.split(|b| *b == b'\n'));
    if let Some(forwarded) = offered.forwarded() {
        for entry in forwarded.split(", ") {
            assert_ne!(entry, subprotocol::MARKER);
            assert!(
                !entry.starts_with("ticketgate.ticket.")
                    && !entry.starts_with("ticketgate.bearer.")
            );
        }
    }
    let text = String::from_utf8_lossy(data);
    for credential in &offered.credentials {
        let (subprotocol::Carried::Ticket(value) | subprotocol::Carried::Bearer(value)) =
            credential;
        assert!(text.contains(value));
    }
}

/// A refresh's body: a session handle read from it is never empty, at most 64 characters,
/// and URL-safe (it is looked up, never echoed unchecked), and reading never panics.
pub fn refresh_body(data: &[u8]) {
    if let Some(handle) = crate::proxy::refresh::handle_of(data) {
        assert!(!handle.is_empty() && handle.len() <= 64);
        assert!(
            handle
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }
}

/// One fuzz target: attacker bytes in, a panic when an invariant breaks.
pub type Target = fn(&[u8]);

/// The fuzz targets by name, as `fuzz/fuzz_targets/` and `fuzz/corpus/` name them.
/// The resume ring (`resume::ring::Ring`) and the client-frame follower
/// (`live::Outgoing::frames`) on any byte stream, read in pieces of any size: the pieces
/// change nothing (same message count, same replay for every count it can resume), a replay
/// is never offered for more messages than were sent, and nothing panics.
pub fn resume_ring(data: &[u8]) {
    let [cut, cap, bytes @ ..] = data else {
        return;
    };
    let cap = 16 + usize::from(*cap) * 4;
    let mut whole = crate::resume::ring::Ring::new(cap);
    whole.record(bytes);
    let mut pieces = crate::resume::ring::Ring::new(cap);
    let mut client = crate::live::Outgoing::frames();
    for piece in bytes.chunks(usize::from(*cut).max(1)) {
        pieces.record(piece);
        client.advance(piece);
    }
    assert_eq!(whole.messages(), pieces.messages());
    let range = whole.resumable();
    assert_eq!(range, pieces.resumable());
    assert!(whole.replay_after(whole.messages() + 1).is_none());
    for n in (*range.start()..=*range.end()).take(64) {
        let replay = whole.replay_after(n);
        assert!(replay.is_some(), "{n} in {range:?}");
        assert_eq!(replay, pieces.replay_after(n));
    }
}

/// The STOMP guard (`stomp::guard`) on any client bytes, in pieces the first byte sizes: it
/// never panics, what it releases is always a prefix of what came, and when it refuses
/// nothing, the pieces change nothing.
pub fn stomp_guard(data: &[u8]) {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let mut judge = |_: &'static str, destination: &str| destination.starts_with("/topic/");
    let run = |pieces: &mut dyn Iterator<Item = &[u8]>, judge: &mut crate::stomp::guard::Judge| {
        let mut guard = crate::stomp::guard::Guard::default();
        let mut out = Vec::new();
        for piece in pieces {
            let pushed = guard.push(piece, judge);
            out.extend_from_slice(guard.ready());
            guard.sent(guard.ready().len());
            if pushed.is_err() {
                return (out, false);
            }
        }
        (out, true)
    };
    let (whole, whole_ok) = run(&mut std::iter::once(bytes), &mut judge);
    let (pieces, pieces_ok) = run(&mut bytes.chunks(usize::from(cut).max(1)), &mut judge);
    assert!(bytes.starts_with(&whole) && bytes.starts_with(&pieces));
    if whole_ok && pieces_ok {
        assert_eq!(whole, pieces);
    }
}

pub const TARGETS: [(&str, Target); 13] = [
    ("boundary_read", boundary_read),
    ("query_without", query_without),
    ("redact_target", redact_target),
    ("ticket_open", ticket_open),
    ("bearer_token", bearer_token),
    ("jwt_token", jwt_token),
    ("outgoing_frames", outgoing_frames),
    ("subprotocol_offered", subprotocol_offered),
    ("h2_headers", h2_headers),
    ("refresh_body", refresh_body),
    ("upstream_head", upstream_head),
    ("resume_ring", resume_ring),
    ("stomp_guard", stomp_guard),
];

#[cfg(test)]
mod tests {
    use super::TARGETS;

    #[test]
    fn every_corpus_file_passes_its_target() {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        for (name, target) in TARGETS {
            let folder = corpus.join(name);
            let entries =
                std::fs::read_dir(&folder).unwrap_or_else(|e| panic!("{}: {e}", folder.display()));
            let mut replayed = 0;
            for entry in entries {
                let path = entry.expect("corpus entry").path();
                target(&std::fs::read(&path).expect("corpus file"));
                replayed += 1;
            }
            assert!(replayed > 0, "{name} has no corpus");
        }
    }
}
