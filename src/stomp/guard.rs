//! The reader of a client's STOMP frames on a `stomp:` route, between the client and the
//! broker: the client's bytes are WebSocket frames (RFC 6455 §5.2, masked), their data
//! payloads one stream of STOMP frames (several to a message, or one across messages and
//! fragments, heart-beat EOLs between them). Each SUBSCRIBE and SEND is judged on its header
//! block (STOMP 1.2 escapes undone) before any byte of it is released to the broker; every
//! other byte passes as it came, the WebSocket framing included.
//!
//! The guard holds back the bytes from the first byte of a STOMP frame whose header block is
//! not yet judged (at most `MAX_HEADER` of payload, and `MAX_HELD` raw bytes with framing) and
//! releases everything before it. A refused frame is never released: the relay then closes
//! the socket, so the broker may see the framing of a WebSocket frame cut short, never a byte
//! of the refused STOMP frame.

use std::borrow::Cow;

use crate::live::frame_header;

/// The most a STOMP header block may hold.
pub const MAX_HEADER: usize = 8 * 1024;
/// The most raw bytes held while a header block is judged (its WebSocket framing included:
/// a header block cut into one-byte fragments carries six bytes of framing per byte).
const MAX_HELD: usize = 8 * MAX_HEADER;

/// The client commands of STOMP 1.0-1.2 (the metric's labels, less `unknown`).
fn commands() -> impl Iterator<Item = &'static str> {
    Refused::LABELS
        .into_iter()
        .filter(|c| *c != UNKNOWN_COMMAND)
}

impl Refused {
    /// The `command` label of `ticketgate_stomp_frames_refused_total`: every value.
    pub const LABELS: [&'static str; 12] = [
        "CONNECT",
        "STOMP",
        "SEND",
        "SUBSCRIBE",
        "UNSUBSCRIBE",
        "BEGIN",
        "COMMIT",
        "ABORT",
        "ACK",
        "NACK",
        "DISCONNECT",
        UNKNOWN_COMMAND,
    ];

    /// The refused frame's command, or `unknown` when it had none of STOMP's.
    pub fn label(&self) -> &'static str {
        self.command.unwrap_or(UNKNOWN_COMMAND)
    }
}

/// The label of a refused frame without a STOMP command.
const UNKNOWN_COMMAND: &str = "unknown";

/// A frame the guard refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The frame's command, when it was one of STOMP's.
    pub command: Option<&'static str>,
    pub why: Why,
    /// The frame's `receipt` header, for the ERROR's `receipt-id`.
    pub receipt: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// A SUBSCRIBE or SEND whose destination no pattern of its command allows.
    Forbidden,
    /// Not STOMP, a header block over `MAX_HEADER`, a bad escape, `destination` twice.
    Malformed,
}

/// What a judged frame asks for: its command (SUBSCRIBE or SEND) and destination.
pub type Judge<'a> = dyn FnMut(&'static str, &str) -> bool + 'a;

/// The guard's state for one socket.
#[derive(Debug, Default)]
pub struct Guard {
    /// Raw bytes read and not yet written on: the first `released` may go.
    held: Vec<u8>,
    released: usize,
    /// How far `held` has been read.
    read: usize,
    ws: Websocket,
    stomp: Stomp,
    /// The header block in judgement, unmasked (its buffer reused while frames flow).
    header: Vec<u8>,
}

/// Where the raw stream is within a WebSocket frame.
#[derive(Debug)]
enum Websocket {
    Header {
        seen: [u8; 14],
        len: u8,
    },
    Payload {
        left: u64,
        mask: [u8; 4],
        at: u8,
        data: bool,
    },
}

impl Default for Websocket {
    fn default() -> Self {
        Websocket::Header {
            seen: [0; 14],
            len: 0,
        }
    }
}

/// Where the payload stream is within STOMP frames.
#[derive(Debug, Default)]
enum Stomp {
    /// Between frames (heart-beat EOLs pass).
    #[default]
    Between,
    /// In a header block (its bytes in `Guard::header`), from this raw offset in `held`.
    Header { from: usize },
    /// In a body: how much of it is left, when `content-length` said; else up to its NUL.
    Body { left: Option<u64> },
    /// The body ended: its NUL is next.
    Nul,
}

impl Guard {
    /// Reads `bytes`, the next of the client's; judges every SUBSCRIBE and SEND whose header
    /// block ends among them.
    pub fn push(&mut self, bytes: &[u8], judge: &mut Judge) -> Result<(), Refused> {
        self.held.extend_from_slice(bytes);
        let before = self.released;
        let read = self.read_held(judge);
        // Everything before a frame in judgement goes; after a refusal outside a header block
        // (a body without its NUL), nothing more.
        self.released = match (&self.stomp, &read) {
            (Stomp::Header { from, .. }, _) => *from,
            (_, Err(_)) => before,
            _ => self.read,
        };
        read?;
        if self.held.len() - self.released > MAX_HELD {
            return Err(malformed(None, None));
        }
        Ok(())
    }

    fn read_held(&mut self, judge: &mut Judge) -> Result<(), Refused> {
        while self.read < self.held.len() {
            if self.skip_body() {
                continue;
            }
            let byte = self.held[self.read];
            let at = self.read;
            self.read += 1;
            if let Some(payload) = self.ws.step(byte) {
                self.stomp_byte(payload, at, judge)?;
            }
        }
        Ok(())
    }

    /// Between STOMP frames, nothing held: a resumed client may start afresh.
    pub fn between_frames(&self) -> bool {
        matches!(self.stomp, Stomp::Between) && self.held.is_empty()
    }

    /// The bytes that may go to the broker now.
    pub fn ready(&self) -> &[u8] {
        &self.held[..self.released]
    }

    /// `n` bytes of `ready` went out.
    pub fn sent(&mut self, n: usize) {
        self.held.drain(..n);
        self.released -= n;
        self.read -= n;
        if let Stomp::Header { from, .. } = &mut self.stomp {
            *from -= n;
        }
    }

    /// The client is quiet: nothing held is given back (an idle socket keeps no buffer).
    pub fn rest(&mut self) {
        if self.held.is_empty() {
            self.held = Vec::new();
        }
        if !matches!(self.stomp, Stomp::Header { .. }) {
            self.header = Vec::new();
        }
    }

    /// Inside a data frame's payload and a body whose length `content-length` gave, the
    /// bytes need no reading: skipped at once. False when not there.
    fn skip_body(&mut self) -> bool {
        let Stomp::Body {
            left: Some(body_left),
        } = &mut self.stomp
        else {
            return false;
        };
        let Websocket::Payload {
            left: frame_left,
            at,
            data: true,
            ..
        } = &mut self.ws
        else {
            return false;
        };
        let available = (self.held.len() - self.read) as u64;
        let n = available.min(*frame_left).min(*body_left);
        if n == 0 {
            return false;
        }
        *frame_left -= n;
        *body_left -= n;
        *at = ((u64::from(*at) + n) % 4) as u8;
        self.read += n as usize;
        self.ws.end_empty();
        self.end_empty_body();
        true
    }

    fn stomp_byte(&mut self, byte: u8, at: usize, judge: &mut Judge) -> Result<(), Refused> {
        match &mut self.stomp {
            Stomp::Between => {
                if !matches!(byte, b'\n' | b'\r') {
                    self.header.clear();
                    self.header.push(byte);
                    self.stomp = Stomp::Header { from: at };
                }
            }
            Stomp::Header { .. } => {
                let header = &mut self.header;
                header.push(byte);
                if header.len() > MAX_HEADER {
                    return Err(malformed(None, None));
                }
                if byte == b'\n' && (header.ends_with(b"\n\n") || header.ends_with(b"\n\r\n")) {
                    self.stomp = Stomp::Body {
                        left: read_header(header, judge)?,
                    };
                    self.end_empty_body();
                }
            }
            Stomp::Body { left: Some(left) } => {
                *left -= 1;
                self.end_empty_body();
            }
            Stomp::Body { left: None } => {
                if byte == 0 {
                    self.stomp = Stomp::Between;
                }
            }
            Stomp::Nul => {
                if byte != 0 {
                    return Err(malformed(None, None));
                }
                self.stomp = Stomp::Between;
            }
        }
        Ok(())
    }

    fn end_empty_body(&mut self) {
        if let Stomp::Body { left: Some(0) } = self.stomp {
            self.stomp = Stomp::Nul;
        }
    }
}

impl Websocket {
    /// Follows one raw byte; the unmasked payload byte when it is one of a data frame's.
    fn step(&mut self, byte: u8) -> Option<u8> {
        match self {
            Websocket::Header { seen, len } => {
                seen[usize::from(*len)] = byte;
                *len += 1;
                let header = &seen[..usize::from(*len)];
                if let Some((left, mask)) = frame_header(header) {
                    let data = header[0] & 0x08 == 0;
                    *self = Websocket::Payload {
                        left,
                        mask,
                        at: 0,
                        data,
                    };
                    self.end_empty();
                }
                None
            }
            Websocket::Payload {
                left,
                mask,
                at,
                data,
            } => {
                let payload = byte ^ mask[usize::from(*at)];
                *at = (*at + 1) % 4;
                *left -= 1;
                let data = *data;
                self.end_empty();
                data.then_some(payload)
            }
        }
    }

    fn end_empty(&mut self) {
        if let Websocket::Payload { left: 0, .. } = self {
            *self = Websocket::default();
        }
    }
}

fn malformed(command: Option<&'static str>, receipt: Option<String>) -> Refused {
    Refused {
        command,
        why: Why::Malformed,
        receipt,
    }
}

/// Reads a header block (command line, header lines, the blank line), judges a SUBSCRIBE or
/// SEND, and says how long the body is when `content-length` does.
fn read_header(block: &[u8], judge: &mut Judge) -> Result<Option<u64>, Refused> {
    let text = std::str::from_utf8(block).map_err(|_| malformed(None, None))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next().unwrap_or_default();
    let command = commands()
        .find(|c| *c == first)
        .ok_or_else(|| malformed(None, None))?;
    // STOMP 1.2 §Value Encoding: every frame but CONNECT and CONNECTED escapes its headers.
    let escaped = !matches!(command, "CONNECT" | "STOMP");
    let (mut destination, mut receipt, mut length) = (None, None, None);
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| malformed(Some(command), receipt.clone()))?;
        let unescape = |text| match escaped {
            true => unescaped(text).ok_or_else(|| malformed(Some(command), None)),
            false => Ok(Cow::Borrowed(text)),
        };
        let (name, value) = (unescape(name)?, unescape(value)?);
        match &*name {
            "destination" if destination.is_some() => {
                return Err(malformed(Some(command), receipt));
            }
            "destination" => destination = Some(value),
            // STOMP 1.2: of a repeated header, the first counts.
            "receipt" if receipt.is_none() => receipt = Some(value.into_owned()),
            "content-length" if length.is_none() => {
                length = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| malformed(Some(command), receipt.clone()))?,
                );
            }
            _ => {}
        }
    }
    if matches!(command, "SUBSCRIBE" | "SEND") {
        let Some(destination) = destination else {
            return Err(malformed(Some(command), receipt));
        };
        if !judge(command, &destination) {
            return Err(Refused {
                command: Some(command),
                why: Why::Forbidden,
                receipt,
            });
        }
    }
    Ok(length)
}

/// A header name or value with STOMP 1.2's escapes undone (`\r`, `\n`, `\c`, `\\`); `None`
/// for any other backslash.
fn unescaped(text: &str) -> Option<Cow<'_, str>> {
    if !text.contains('\\') {
        return Some(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            'r' => '\r',
            'n' => '\n',
            'c' => ':',
            '\\' => '\\',
            _ => return None,
        });
    }
    Some(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A client frame: FIN or not, opcode, masked payload.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut bytes = vec![if fin { 0x80 | opcode } else { opcode }];
        match payload.len() {
            n if n < 126 => bytes.push(0x80 | n as u8),
            n => {
                bytes.push(0x80 | 126);
                bytes.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        bytes.extend_from_slice(&mask);
        bytes.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        bytes
    }

    /// Allows destinations under `/topic/ok`.
    fn allow_ok(_: &'static str, destination: &str) -> bool {
        destination.starts_with("/topic/ok")
    }

    /// Pushes `bytes` in pieces cut at `cuts`; what was released, and the refusal, if any.
    fn run(bytes: &[u8], cuts: &[usize]) -> (Vec<u8>, Option<Refused>) {
        let mut guard = Guard::default();
        let mut out = Vec::new();
        let mut from = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        for cut in cuts.into_iter().chain([bytes.len()]) {
            let pushed = guard.push(&bytes[from..cut.max(from)], &mut allow_ok);
            out.extend_from_slice(guard.ready());
            guard.sent(guard.ready().len());
            from = cut.max(from);
            if let Err(refused) = pushed {
                return (out, Some(refused));
            }
        }
        (out, None)
    }

    const CONNECT: &[u8] = b"CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0";
    const ALLOWED: &[u8] = b"SUBSCRIBE\nid:0\ndestination:/topic/ok\n\n\0";
    const FORBIDDEN: &[u8] = b"SUBSCRIBE\nid:1\ndestination:/topic/secret\nreceipt:r-7\n\n\0";

    #[test]
    fn allowed_frames_pass_byte_for_byte_and_a_forbidden_one_never() {
        let allowed = [frame(true, 1, CONNECT), frame(true, 1, ALLOWED)].concat();
        assert_eq!(run(&allowed, &[]), (allowed.clone(), None));
        let with_forbidden = [allowed.clone(), frame(true, 1, FORBIDDEN)].concat();
        let (out, refused) = run(&with_forbidden, &[]);
        let header_of_the_third = allowed.len() + 2 + 4;
        assert_eq!(out, with_forbidden[..header_of_the_third].to_vec());
        assert_eq!(
            refused,
            Some(Refused {
                command: Some("SUBSCRIBE"),
                why: Why::Forbidden,
                receipt: Some("r-7".into())
            })
        );
    }

    #[test]
    fn several_frames_in_one_message_and_heart_beats_are_read() {
        let message = [b"\n\r\n".as_slice(), ALLOWED, b"\n", FORBIDDEN].concat();
        let (out, refused) = run(&frame(true, 1, &message), &[]);
        assert_eq!(refused.map(|r| r.why), Some(Why::Forbidden));
        assert!(
            out.len() < 6 + 3 + ALLOWED.len() + 1 + 1,
            "nothing of the second frame"
        );
    }

    #[test]
    fn a_destination_escaped_to_look_allowed_is_judged_unescaped() {
        // An escape STOMP 1.2 does not define is malformed, not read past.
        let sneaky = b"SEND\ndestination:/topic/o\\k\n\n\0";
        assert_eq!(
            run(&frame(true, 1, sneaky), &[]).1.map(|r| r.why),
            Some(Why::Malformed)
        );
        let newline = b"SEND\ndestination:/topic/secret\\n/topic/ok\n\n\0";
        assert_eq!(
            run(&frame(true, 1, newline), &[]).1.map(|r| r.why),
            Some(Why::Forbidden)
        );
    }

    #[test]
    fn every_malformed_shape_is_refused() {
        let twice = b"SEND\ndestination:/topic/ok\ndestination:/topic/secret\n\n\0".as_slice();
        let long = [b"SEND\nx:".as_slice(), &[b'a'; MAX_HEADER], b"\n\n\0"].concat();
        for bad in [
            twice,
            b"HELLO\n\n\0",
            b"SEND\n\n\0",
            b"SEND\nnocolon\n\n\0",
            b"SEND\ndestination:/topic/ok\ncontent-length:x\n\n\0",
            b"SEND\ndestination:/topic/ok\ncontent-length:1\n\nab\0",
            &long,
        ] {
            let (out, refused) = run(&frame(true, 2, bad), &[]);
            assert_eq!(
                refused.map(|r| r.why),
                Some(Why::Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
            assert!(out.len() <= 4 + 2 + 4, "nothing of the frame itself");
        }
    }

    #[test]
    fn a_body_with_nuls_after_an_allowed_destination_is_not_read_as_frames() {
        let body = b"a\0SUBSCRIBE\ndestination:/topic/secret\n\n";
        let send = [
            format!(
                "SEND\ndestination:/topic/ok\ncontent-length:{}\n\n",
                body.len()
            )
            .as_bytes(),
            body,
            b"\0",
        ]
        .concat();
        let bytes = frame(true, 2, &send);
        assert_eq!(run(&bytes, &[]), (bytes.clone(), None));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// However the frames are fragmented and the bytes cut, allowed frames pass whole and
        /// the forbidden SUBSCRIBE is refused with nothing of it released.
        #[test]
        fn a_subscribe_split_anywhere_is_judged_the_same(
            fragment in 1usize..20,
            cuts in proptest::collection::vec(any::<usize>(), 0..10),
        ) {
            let payload = [CONNECT, ALLOWED, FORBIDDEN].concat();
            let pieces: Vec<&[u8]> = payload.chunks(fragment).collect();
            let mut bytes = Vec::new();
            for (i, piece) in pieces.iter().enumerate() {
                bytes.extend(frame(i + 1 == pieces.len(), if i == 0 { 1 } else { 0 }, piece));
            }
            let (out, refused) = run(&bytes, &cuts);
            prop_assert_eq!(refused.map(|r| r.why), Some(Why::Forbidden));
            // Unmask what was released: it holds the allowed frames and nothing after them.
            let mut guard_view = Websocket::default();
            let payload_out: Vec<u8> = out.iter().filter_map(|b| guard_view.step(*b)).collect();
            let allowed_end = CONNECT.len() + ALLOWED.len();
            prop_assert_eq!(&payload_out[..], &payload[..allowed_end]);
        }
    }
}
