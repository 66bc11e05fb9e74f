//! Where an h2 client's bytes are, frame by frame (RFC 9113 §4.1), so the header deadline
//! covers h2 too: Pingora's h2 handshake and its wait for a stream have no timeout of their
//! own, and a header block split over CONTINUATION frames can be left unfinished forever.
//! Only frame headers are read; payloads are skipped by their length.

use super::Phase;

/// The client connection preface (§3.4): a fixed 24 bytes.
const PREFACE_LEN: u8 = 24;
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// Follows the client's bytes; tells the connection's `Phase` when a header block begins and
/// when it is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H2Headers {
    state: State,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Preface {
        left: u8,
    },
    FrameHeader {
        seen: [u8; FRAME_HEADER_LEN],
        len: u8,
    },
    Payload {
        left: u32,
        ends_block: bool,
    },
}

impl Default for H2Headers {
    fn default() -> Self {
        H2Headers {
            state: State::Preface { left: PREFACE_LEN },
        }
    }
}

/// What a completed frame header means for the header deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Begins { ends: bool },
    Continues { ends: bool },
    Other,
}

impl H2Headers {
    /// Follows `bytes`, read from the client in this order.
    pub fn advance(&mut self, mut bytes: &[u8], phase: &Phase) {
        while !bytes.is_empty() {
            let taken = match &mut self.state {
                State::Preface { left } => {
                    let take = usize::from(*left).min(bytes.len());
                    *left -= take as u8;
                    if *left == 0 {
                        self.state = frame_header();
                    }
                    take
                }
                State::FrameHeader { seen, len } => {
                    seen[usize::from(*len)] = bytes[0];
                    *len += 1;
                    if usize::from(*len) == FRAME_HEADER_LEN {
                        let header = *seen;
                        self.begin_payload(&header, phase);
                    }
                    1
                }
                State::Payload { left, ends_block } => {
                    let take = (*left as usize).min(bytes.len());
                    *left -= take as u32;
                    if *left == 0 {
                        if *ends_block {
                            phase.open();
                        }
                        self.state = frame_header();
                    }
                    take
                }
            };
            bytes = &bytes[taken..];
        }
    }

    fn begin_payload(&mut self, header: &[u8; FRAME_HEADER_LEN], phase: &Phase) {
        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]);
        let ends = match classify(header[3], header[4]) {
            Block::Begins { ends } => {
                phase.header_begun();
                ends
            }
            Block::Continues { ends } => ends,
            Block::Other => false,
        };
        if length == 0 {
            if ends {
                phase.open();
            }
            self.state = frame_header();
        } else {
            self.state = State::Payload {
                left: length,
                ends_block: ends,
            };
        }
    }
}

fn frame_header() -> State {
    State::FrameHeader {
        seen: [0; FRAME_HEADER_LEN],
        len: 0,
    }
}

fn classify(kind: u8, flags: u8) -> Block {
    let ends = flags & END_HEADERS != 0;
    match kind {
        HEADERS => Block::Begins { ends },
        CONTINUATION => Block::Continues { ends },
        _ => Block::Other,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::limits::Limits;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, payload: usize) -> Vec<u8> {
        let mut frame = (payload as u32).to_be_bytes()[1..].to_vec();
        frame.extend([kind, flags, 0, 0, 0, 1]);
        frame.extend(std::iter::repeat_n(0u8, payload));
        frame
    }

    fn phase() -> Phase {
        Phase::new(Limits {
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_holds_until_the_first_header_block_is_complete() {
        let (phase, mut h2) = (phase(), H2Headers::default());
        h2.advance(PREFACE, &phase);
        h2.advance(&frame(0x4, 0, 12), &phase); // SETTINGS
        assert!(phase.deadline().is_some(), "no header yet");
        let headers = frame(HEADERS, 0, 30);
        h2.advance(&headers[..20], &phase);
        assert!(phase.deadline().is_some(), "header block half in");
        h2.advance(&headers[20..], &phase);
        assert!(phase.deadline().is_some(), "no END_HEADERS yet");
        h2.advance(&frame(CONTINUATION, END_HEADERS, 5), &phase);
        assert!(phase.deadline().is_none(), "the block is complete");
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_header_block_has_its_own_deadline() {
        let (phase, mut h2) = (phase(), H2Headers::default());
        h2.advance(PREFACE, &phase);
        h2.advance(&frame(HEADERS, END_HEADERS, 10), &phase);
        assert!(phase.deadline().is_none());
        tokio::time::advance(Duration::from_secs(30)).await;
        h2.advance(&frame(HEADERS, 0, 10), &phase);
        let deadline = phase.deadline().expect("a header block began");
        assert_eq!(deadline - crate::clock::now(), Duration::from_secs(10));
        h2.advance(&frame(CONTINUATION, END_HEADERS, 0), &phase);
        assert!(phase.deadline().is_none());
    }

    proptest! {
        /// However the bytes are cut, the phase is open exactly when the last header event
        /// the bytes so far reach is the end of a block (the last byte of a frame carrying
        /// END_HEADERS), and waits for a header while a block has begun without ending.
        #[test]
        fn the_phase_follows_the_header_blocks(
            frames in prop::collection::vec(
                (prop_oneof![Just(0u8), Just(HEADERS), Just(CONTINUATION), Just(0x8u8)],
                 any::<bool>(), 0usize..300),
                1..8),
            cuts in prop::collection::vec(1usize..100, 1..20),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()?;
            let _guard = runtime.enter();
            let mut wire = PREFACE.to_vec();
            // (position, open after it)
            let mut events = Vec::new();
            for (kind, end, payload) in &frames {
                let flags = if *end { END_HEADERS } else { 0 };
                let start = wire.len();
                wire.extend(frame(*kind, flags, *payload));
                if *kind == HEADERS {
                    events.push((start + FRAME_HEADER_LEN, false));
                }
                if *end && matches!(*kind, HEADERS | CONTINUATION) {
                    events.push((wire.len(), true));
                }
            }
            let (phase, mut h2) = (phase(), H2Headers::default());
            let (mut at, mut cut) = (0, cuts.iter().cycle());
            while at < wire.len() {
                let step = (*cut.next().unwrap_or(&1)).min(wire.len() - at);
                h2.advance(&wire[at..at + step], &phase);
                at += step;
                let open = events
                    .iter()
                    .rev()
                    .find(|(position, _)| *position <= at)
                    .is_some_and(|(_, open)| *open);
                prop_assert_eq!(phase.deadline().is_none(), open, "at byte {}", at);
            }
        }
    }
}
