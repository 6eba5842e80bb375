//! The TCP deframer (src/transport/tcp/deframe.rs), fed through arbitrary read sizes:
//! arbitrary bytes never panic it, and it hands out exactly the frames a plain sequential
//! reading of the stream finds (closing at the first length over the maximum, keeping only an
//! unfinished frame's front); a well-formed stream of arbitrary frames, however it is cut,
//! comes back frame for frame, with nothing left over and the connection open.
#![no_main]

use arbitrary::Arbitrary;
use herald::transport::fuzzing::{deframe, encode};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Raw stream bytes.
    raw: Vec<u8>,
    /// Frames for a well-formed stream.
    frames: Vec<Vec<u8>>,
    /// Read sizes, in turn (0: the socket would block).
    reads: Vec<u16>,
    /// The largest frame.
    max: u16,
}

/// The frames a sequential reading of `data` finds, whether a length over `max` ends it, and
/// the bytes of an unfinished frame at the end.
fn reference(data: &[u8], max: usize) -> (Vec<&[u8]>, bool, usize) {
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some(prefix) = data.get(at..at + 4) {
        let len = u32::from_le_bytes(prefix.try_into().unwrap()) as usize;
        if len > max {
            return (frames, true, 0);
        }
        let Some(frame) = data.get(at + 4..at + 4 + len) else {
            break;
        };
        frames.push(frame);
        at += 4 + len;
    }
    (frames, false, data.len() - at)
}

fuzz_target!(|input: Input| {
    let max = usize::from(input.max);
    let reads: Vec<usize> = input.reads.iter().map(|&r| usize::from(r)).collect();

    let got = deframe(&input.raw, &reads, max);
    let (frames, closed, leftover) = reference(&input.raw, max);
    assert_eq!(
        got.closed, closed,
        "closes exactly at a length over the maximum"
    );
    assert!(got.frames.iter().all(|f| f.len() <= max));
    assert!(
        got.frames.iter().map(|b| &b[..]).eq(frames.iter().copied()),
        "the frames a sequential reading finds, in order"
    );
    if !closed {
        assert_eq!(got.leftover, leftover, "only an unfinished frame is kept");
    }

    let frames: Vec<&[u8]> = input
        .frames
        .iter()
        .map(|f| &f[..f.len().min(max)])
        .collect();
    let stream = encode(&frames);
    let got = deframe(&stream, &reads, max);
    assert!(!got.closed);
    assert_eq!(got.leftover, 0);
    assert!(
        got.frames.iter().map(|b| &b[..]).eq(frames.iter().copied()),
        "a well-formed stream round-trips"
    );
});
