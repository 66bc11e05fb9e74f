//! A resumable socket's latest upstream messages: every byte the upstream sends is followed
//! frame by frame (RFC 6455 §5.2, server frames, unmasked), the data frames of each message
//! kept until the message ends, then the whole message kept in the ring, numbered from the
//! connection's first, until `cap` bytes of newer ones push it out. Control frames are not
//! kept (a ping the client missed needs no answer), but one in progress is, so a replay
//! never starts inside a frame.
//!
//! Nothing is allocated before a message flows: an idle socket's ring is empty.

use std::collections::VecDeque;
use std::ops::RangeInclusive;

use crate::live::frame_header;

/// The latest whole messages, the one in progress, and where the stream is.
#[derive(Debug)]
pub struct Ring {
    cap: usize,
    kept: VecDeque<Box<[u8]>>,
    kept_bytes: usize,
    /// The number of the oldest kept message (the count of messages before it).
    first: u64,
    /// How many messages have ended.
    ended: u64,
    /// The data frames of the message in progress, so far.
    partial: Vec<u8>,
    /// The message in progress outgrew `cap`: it cannot be replayed.
    partial_lost: bool,
    /// The control frame in progress, so far (at most 2 + 8 + 125 bytes).
    control: Vec<u8>,
    frame: Frame,
}

/// Where the byte stream is within a frame.
#[derive(Debug, Clone, Copy)]
enum Frame {
    /// The header's bytes seen so far.
    Header {
        seen: [u8; 14],
        len: u8,
    },
    Payload {
        left: u64,
        control: bool,
        fin: bool,
    },
}

const AT_HEADER: Frame = Frame::Header {
    seen: [0; 14],
    len: 0,
};

impl Ring {
    pub fn new(cap: usize) -> Self {
        Ring {
            cap,
            kept: VecDeque::new(),
            kept_bytes: 0,
            first: 0,
            ended: 0,
            partial: Vec::new(),
            partial_lost: false,
            control: Vec::new(),
            frame: AT_HEADER,
        }
    }

    /// How many messages have ended so far.
    pub fn messages(&self) -> u64 {
        self.ended
    }

    /// Holding `cap` bytes or more: a held socket reads no more from its upstream.
    pub fn full(&self) -> bool {
        self.kept_bytes + self.partial.len() >= self.cap
    }

    /// The counts of messages received with which a client can resume (none while the
    /// message in progress outgrew the ring).
    pub fn resumable(&self) -> RangeInclusive<u64> {
        if self.partial_lost {
            return u64::MAX..=self.ended;
        }
        self.first..=self.ended
    }

    /// What a client that received `received` messages is sent to pick up where it was:
    /// every kept message after those, then the message and frame in progress. `None` when
    /// a message it needs is no longer kept, or when it claims messages never sent.
    pub fn replay_after(&self, received: u64) -> Option<Vec<u8>> {
        if received < self.first || received > self.ended || self.partial_lost {
            return None;
        }
        let skip = usize::try_from(received - self.first).ok()?;
        let mut bytes = Vec::new();
        for message in self.kept.iter().skip(skip) {
            bytes.extend_from_slice(message);
        }
        bytes.extend_from_slice(&self.partial);
        bytes.extend_from_slice(&self.control);
        Some(bytes)
    }

    /// Follows `bytes`, read from the upstream in this order.
    pub fn record(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.frame {
                Frame::Header { mut seen, mut len } => {
                    let byte = bytes[0];
                    bytes = &bytes[1..];
                    seen[usize::from(len)] = byte;
                    len += 1;
                    let control = seen[0] & 0x08 != 0;
                    self.keep(control, &[byte]);
                    self.frame = match frame_header(&seen[..usize::from(len)]) {
                        Some((left, _)) => Frame::Payload {
                            left,
                            control,
                            fin: seen[0] & 0x80 != 0,
                        },
                        None => Frame::Header { seen, len },
                    };
                }
                Frame::Payload { left, control, fin } => {
                    let take = usize::try_from(left).map_or(bytes.len(), |l| l.min(bytes.len()));
                    self.keep(control, &bytes[..take]);
                    bytes = &bytes[take..];
                    self.frame = Frame::Payload {
                        left: left - take as u64,
                        control,
                        fin,
                    };
                }
            }
            if let Frame::Payload {
                left: 0,
                control,
                fin,
            } = self.frame
            {
                self.frame_ended(control, fin);
            }
        }
    }

    fn keep(&mut self, control: bool, bytes: &[u8]) {
        if control {
            self.control.extend_from_slice(bytes);
        } else if !self.partial_lost {
            if self.partial.len() + bytes.len() > self.cap {
                self.partial_lost = true;
                self.partial = Vec::new();
            } else {
                self.partial.extend_from_slice(bytes);
            }
        }
    }

    fn frame_ended(&mut self, control: bool, fin: bool) {
        self.frame = AT_HEADER;
        if control {
            self.control = Vec::new();
            return;
        }
        if !fin {
            return;
        }
        self.ended += 1;
        if std::mem::take(&mut self.partial_lost) {
            self.drop_all();
            return;
        }
        let message = std::mem::take(&mut self.partial).into_boxed_slice();
        self.kept_bytes += message.len();
        self.kept.push_back(message);
        while self.kept_bytes > self.cap {
            if let Some(oldest) = self.kept.pop_front() {
                self.kept_bytes -= oldest.len();
                self.first += 1;
            }
        }
    }

    /// Every message so far is gone (one outgrew the ring).
    fn drop_all(&mut self) {
        self.kept = VecDeque::new();
        self.kept_bytes = 0;
        self.first = self.ended;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A server frame: FIN or not, opcode, payload.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![if fin { 0x80 | opcode } else { opcode }];
        match payload.len() {
            n if n < 126 => bytes.push(n as u8),
            n if n <= 0xffff => {
                bytes.push(126);
                bytes.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                bytes.push(127);
                bytes.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn a_replay_is_the_messages_after_those_received_then_the_one_in_progress() {
        let mut ring = Ring::new(1024);
        let (one, two) = (frame(true, 1, b"one"), frame(true, 2, b"two"));
        let ping = frame(true, 9, b"p");
        let (three_a, three_b) = (frame(false, 1, b"thr"), frame(true, 0, b"ee"));
        let mut stream = [one.clone(), ping.clone(), two.clone(), three_a.clone()].concat();
        stream.extend_from_slice(&three_b[..2]);
        ring.record(&stream);
        assert_eq!(ring.messages(), 2);
        let mut expected = [two.clone(), three_a.clone()].concat();
        expected.extend_from_slice(&three_b[..2]);
        assert_eq!(
            ring.replay_after(1),
            Some(expected),
            "the ping is not replayed"
        );
        assert_eq!(ring.replay_after(3), None, "never sent");
        ring.record(&three_b[2..]);
        assert_eq!(ring.replay_after(3), Some(Vec::new()));
        assert_eq!(
            ring.replay_after(0).map(|r| r.len()),
            Some(one.len() + two.len() + three_a.len() + three_b.len())
        );
    }

    #[test]
    fn a_control_frame_in_progress_is_replayed_so_the_stream_goes_on_at_a_frame_boundary() {
        let mut ring = Ring::new(1024);
        let ping = frame(true, 9, b"ping");
        ring.record(&ping[..3]);
        assert_eq!(ring.replay_after(0), Some(ping[..3].to_vec()));
    }

    #[test]
    fn old_messages_leave_when_newer_ones_need_the_room() {
        let mut ring = Ring::new(100);
        for n in 0..10u8 {
            ring.record(&frame(true, 2, &[n; 40]));
        }
        assert_eq!(ring.messages(), 10);
        assert!(
            ring.replay_after(7).is_none(),
            "two 42-byte messages fit in 100"
        );
        assert_eq!(ring.replay_after(8).map(|r| r.len()), Some(84));
        assert_eq!(ring.kept_bytes, 84);
        assert!(!ring.full());
    }

    #[test]
    fn a_message_larger_than_the_ring_cannot_be_replayed_and_clears_it() {
        let mut ring = Ring::new(100);
        ring.record(&frame(true, 2, b"small"));
        ring.record(&frame(false, 2, &[1; 80]));
        ring.record(&frame(true, 0, &[1; 80]));
        assert_eq!(ring.messages(), 2);
        assert!(ring.replay_after(1).is_none());
        assert_eq!(ring.replay_after(2), Some(Vec::new()));
    }

    proptest! {
        /// Whatever messages come and however the stream is cut, a replay after any message
        /// still kept is exactly the stream's bytes from there, control frames left out.
        #[test]
        fn a_replay_is_the_stream_from_the_message_asked_for(
            messages in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..200), 1usize..3, any::<bool>()), 0..12),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut stream = Vec::new();
            let mut starts = Vec::new();
            let mut data_only = Vec::new();
            for (payload, fragments, ping) in &messages {
                starts.push(data_only.len());
                let pieces: Vec<&[u8]> = payload.chunks(payload.len().div_ceil(*fragments).max(1)).collect();
                let pieces = if pieces.is_empty() { vec![&[][..]] } else { pieces };
                for (i, piece) in pieces.iter().enumerate() {
                    let opcode = if i == 0 { 2 } else { 0 };
                    let data = frame(i + 1 == pieces.len(), opcode, piece);
                    stream.extend_from_slice(&data);
                    data_only.extend_from_slice(&data);
                    if *ping {
                        stream.extend_from_slice(&frame(true, 9, b"hi"));
                    }
                }
            }
            let mut ring = Ring::new(1 << 20);
            let mut at = 0;
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            for cut in cuts.into_iter().chain([stream.len()]) {
                ring.record(&stream[at..cut.max(at)]);
                at = cut.max(at);
            }
            prop_assert_eq!(ring.messages(), messages.len() as u64);
            for (n, start) in starts.iter().enumerate() {
                prop_assert_eq!(ring.replay_after(n as u64), Some(data_only[*start..].to_vec()));
            }
        }
    }
}
