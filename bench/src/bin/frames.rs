//! What following the upstream's frames costs ticketgate per message (`live::Outgoing`, which
//! lets a close frame go between two frames): the tracker fed the bytes of a stream of
//! server-to-client frames in the writes Pingora would make, timed over many frames.
//!
//!     cargo run --release -p ticketgate-bench --bin frames
//!
//! Prints nanoseconds per frame for the echo benchmark's message size and for larger ones;
//! compare with the echo scenario's server CPU per message (BENCHMARKS.md).

use std::hint::black_box;
use std::time::Instant;

use ticketgate::live::Outgoing;

/// An unmasked binary frame with `payload` bytes.
fn frame(payload: usize) -> Vec<u8> {
    let mut frame = vec![0x82];
    match payload {
        0..=125 => frame.push(payload as u8),
        126..=65535 => {
            frame.push(126);
            frame.extend_from_slice(&(payload as u16).to_be_bytes());
        }
        _ => {
            frame.push(127);
            frame.extend_from_slice(&(payload as u64).to_be_bytes());
        }
    }
    frame.resize(frame.len() + payload, b'x');
    frame
}

fn main() {
    for payload in [128usize, 1024, 65_536] {
        let one = frame(payload);
        let frames = (64 * 1024 * 1024 / one.len()).clamp(1_000, 2_000_000);
        let mut outgoing = Outgoing::default();
        outgoing.advance(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        let started = Instant::now();
        for _ in 0..frames {
            // One write per frame, as a relay of whole frames makes them.
            outgoing.advance(black_box(&one));
        }
        let elapsed = started.elapsed();
        assert!(outgoing.at_boundary());
        println!(
            "{payload:>6}-byte frames: {:>7.1} ns per frame ({frames} frames)",
            elapsed.as_nanos() as f64 / frames as f64
        );
    }
}
