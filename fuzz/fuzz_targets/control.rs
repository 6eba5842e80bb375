//! Status and evicted frames (recovery's control frames): arbitrary contents written with
//! `write_control`, signed with the test key, parse and verify to exactly what was written;
//! the same frame with one byte changed never both parses and verifies; and whatever parses
//! as a control frame is written back byte for byte by `write_control`.
#![no_main]

use arbitrary::Arbitrary;
use herald::EventId;
use herald::wire::{ControlFrame, Flags, Frame, FrameKind, MAX_RANGES, write_control};
use herald_fuzz::{ArbHeader, test_keyring};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    header: ArbHeader,
    evicted: bool,
    incomplete: bool,
    target_node: u64,
    target_incarnation: u64,
    consumed: u64,
    /// Gaps and lengths: turned into ascending, separate ranges.
    ranges: Vec<(u16, u16)>,
    ids: Vec<[u8; 16]>,
    index: u32,
    xor: u8,
}

fuzz_target!(|input: Input| {
    let keyring = test_keyring();
    let mut fields = input.header.fields();
    fields.kind = if input.evicted {
        FrameKind::Evicted
    } else {
        FrameKind::Status
    };
    fields.flags = if input.evicted && input.incomplete {
        Flags::IDS_INCOMPLETE
    } else {
        Flags::EMPTY
    };
    let mut ranges = Vec::new();
    let mut next = 1u64;
    for &(gap, len) in input.ranges.iter().take(MAX_RANGES) {
        let first = next + u64::from(gap);
        let last = first + u64::from(len);
        ranges.push((first, last));
        next = last + 2;
    }
    let ids: Vec<EventId> = if input.evicted {
        input
            .ids
            .iter()
            .take(64)
            .map(|b| EventId::from_bytes(*b))
            .collect()
    } else {
        Vec::new()
    };
    let control = ControlFrame {
        target_node: input.target_node,
        target_incarnation: input.target_incarnation,
        consumed: if input.evicted { 0 } else { input.consumed },
        ranges: &ranges,
        ids: &ids,
    };
    let mut buf = vec![0u8; 4096];
    let mut frame = write_control(&mut buf, &fields, &control, &keyring)
        .expect("fits")
        .to_vec();
    let parsed = Frame::parse(&frame).expect("our own control frame parses");
    assert_eq!(parsed.header_fields(), fields);
    assert_eq!(
        parsed.records().count(),
        0,
        "a control frame has no records"
    );
    let c = parsed.control().expect("a control body");
    assert_eq!(c.target_node(), control.target_node);
    assert_eq!(c.target_incarnation(), control.target_incarnation);
    assert_eq!(c.consumed(), control.consumed);
    assert!(c.ranges().eq(ranges.iter().copied()));
    assert!(parsed.events().eq(ids.iter().copied()));
    // Parsed back and written again: the same bytes.
    let mut again = vec![0u8; 4096];
    let back: Vec<(u64, u64)> = c.ranges().collect();
    let back_ids: Vec<EventId> = parsed.events().collect();
    let rewritten = write_control(
        &mut again,
        &parsed.header_fields(),
        &ControlFrame {
            target_node: c.target_node(),
            target_incarnation: c.target_incarnation(),
            consumed: c.consumed(),
            ranges: &back,
            ids: &back_ids,
        },
        &keyring,
    )
    .expect("fits");
    assert_eq!(rewritten, &frame[..]);
    keyring.verify(parsed).expect("our own frame verifies");

    let xor = if input.xor == 0 { 1 } else { input.xor };
    let i = input.index as usize % frame.len();
    frame[i] ^= xor;
    if let Ok(f) = Frame::parse(&frame) {
        assert!(
            keyring.verify(f).is_err(),
            "a changed byte {i} still verifies"
        );
    }
});
